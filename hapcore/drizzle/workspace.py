"""The workspace of one detector's drizzle work: grid, pixel maps, CR masks, worker pool.

A :class:`DrizzleWorkspace` is opened by the task that drizzles (one filter product with its
exposure products, or the total product) and closed by the same task when its work is done:
its worker pool and per-process scratch folder never outlive that task. What later tasks need
persists in the workspace's ``work_dir``
(``output_dir/.hapsvm-work/drizzle-<detector>-<grid fingerprint>/``, `open_detector_workspace`):
the compressed CR masks (the total product reads the filter products themselves).

The scratch (partial drizzles, medians: ~1 GB for a full-frame UVIS filter) is on a tmpfs
(``/dev/shm``) when there is one with room for it, else in ``work_dir``: these arrays live for
seconds, and on a disk they cost the writes, and on a file system mounted with ``discard`` a
slow deletion, for nothing. A tmpfs folder is named after the process, so one left by a killed
process is removed by the next workspace opened on this machine.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from hapcore.atomic import atomic_output
from hapcore.drizzle.chip_partials import clear_chip_cache
from hapcore.drizzle.grid import OutputGrid, build_detector_grid
from hapcore.drizzle.inputs import sci_extvers
from hapcore.drizzle.jobs import (
    ChipStatsJob,
    emit_records,
    run_captured,
    run_chip_stats,
    split_by_chip,
)
from hapcore.drizzle.pixmap import PixmapCache
from hapcore.processes import stop_pool, worker_context

__all__ = [
    "INLINE_MAX_INPUT_PIXELS",
    "DrizzleWorkspace",
    "filter_cr_mask_files",
    "open_detector_workspace",
    "release_worker_pools",
    "remove_work_files",
    "scratch_parent",
]

log = logging.getLogger(f"hapsvm.{__name__}")


#: Seconds an unused worker pool is kept for the next workspace before its processes end.
POOL_IDLE_SECONDS = 5.0

#: A detector whose exposures hold at most this many chip pixels is drizzled in the calling
#: process (`open_detector_workspace`): starting workers (~1.5 s of CPU each, their imports)
#: costs more than they save. Three full-frame WFC3/IR exposures (3.1 Mpix), the drizzle stage
#: of commit 62a2d9f at load 2.6: 1 worker 4.7 s CPU / 4.7 s wall, 2 workers 7.3 s / 7.3 s.
INLINE_MAX_INPUT_PIXELS = 4_500_000


class _ReusableWorkerPools:
    """Worker processes that successive workspaces of this process take over (cf. loky's
    reusable executor).

    Each task opens and closes its own workspace; spawning a fresh pool for each would cost
    ~1-2 s of worker start-up (imports) per task. A released pool is kept for
    `POOL_IDLE_SECONDS` so that the next task's workspace finds it warm, then shut down, so its
    processes do not hold memory through later stages. Nothing outside a workspace touches it:
    the work submitted to it is always owned, and waited for, by the workspace that submitted it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[int, ProcessPoolExecutor] = {}
        self._users: dict[int, int] = {}
        self._timers: dict[int, threading.Timer] = {}

    def acquire(self, n_workers: int) -> ProcessPoolExecutor:
        with self._lock:
            timer = self._timers.pop(n_workers, None)
            if timer is not None:
                timer.cancel()
            pool = self._pools.get(n_workers)
            if pool is not None and getattr(pool, "_broken", False):
                pool = None     # a worker died (killed, out of memory): start a new pool
            if pool is None:
                # spawned, without the caller's main module (hapcore.processes); not a fork
                # server: its workers would not be this process's children, and their CPU time
                # and memory would vanish from the accounting of runs and benchmarks
                pool = self._pools[n_workers] = ProcessPoolExecutor(
                    max_workers=n_workers, mp_context=worker_context())
            self._users[n_workers] = self._users.get(n_workers, 0) + 1
            return pool

    def release(self, n_workers: int) -> None:
        with self._lock:
            self._users[n_workers] = max(0, self._users.get(n_workers, 0) - 1)
            if self._users[n_workers] or n_workers not in self._pools:
                return
            timer = threading.Timer(POOL_IDLE_SECONDS, self._shutdown_if_idle, (n_workers,))
            timer.daemon = True
            self._timers[n_workers] = timer
            timer.start()

    def _shutdown_if_idle(self, n_workers: int) -> None:
        with self._lock:
            if self._users.get(n_workers):
                return
            self._timers.pop(n_workers, None)
            pool = self._pools.pop(n_workers, None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def stop_all(self) -> None:
        """Stop every pool now, busy or not: queued jobs cancelled, running ones ended
        (:func:`hapcore.processes.stop_pool`; the run is being interrupted)."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
        for pool in pools:
            stop_pool(pool)

    def shutdown(self) -> None:
        """End every idle pool now (at interpreter exit, and for tests)."""
        with self._lock:
            idle = [n for n in self._pools if not self._users.get(n)]
            for n in idle:
                timer = self._timers.pop(n, None)
                if timer is not None:
                    timer.cancel()
        for n in idle:
            self._shutdown_if_idle(n)


_WORKER_POOLS = _ReusableWorkerPools()
atexit.register(_WORKER_POOLS.shutdown)

#: Where the scratch goes when it fits in memory (a tmpfs: no disk writes, instant deletion).
_MEMORY_ROOT = Path("/dev/shm")
#: Scratch folders on the tmpfs: ``<prefix><pid>-<random>``.
_MEMORY_PREFIX = "hapsvm-drizzle-"
#: Room a tmpfs must keep beside the scratch (others use it too).
_MEMORY_RESERVE = 1 << 30


def _scratch_bytes(grid: OutputGrid | None, input_pixels: int | None = None) -> int:
    """A generous size of one workspace's scratch: ~8 float32 grid-sized images (partials of
    4-8 exposures, the median and its coverage), or, with the chip pixels of the detector's
    exposures (``input_pixels``) known, their separate drizzles (science and weight, float32,
    each about its chip's area) and two grid images, if more (8 full-frame UVIS exposures:
    1.32 GB; 1.17 GB measured)."""
    if grid is None:
        return 0
    grid_pixels = int(grid.shape[0]) * int(grid.shape[1])
    estimate = 8 * 4 * grid_pixels
    if input_pixels:
        estimate = max(estimate, 2 * 4 * int(input_pixels) + 2 * 4 * grid_pixels)
    return estimate


def scratch_parent(needed: int) -> Path | None:
    """The tmpfs folder for a scratch of ``needed`` bytes, or None (scratch on disk).

    Folders that processes no longer running left there (killed runs) are removed first.
    """
    root = _MEMORY_ROOT
    try:
        if not (root.is_dir() and os.access(root, os.W_OK | os.X_OK)):
            return None
        _remove_orphans(root)
        stat = os.statvfs(root)
    except OSError:
        return None
    free = stat.f_bavail * stat.f_frsize
    return root if free >= needed + _MEMORY_RESERVE else None


def _remove_orphans(root: Path) -> None:
    for folder in root.glob(f"{_MEMORY_PREFIX}*"):
        try:
            pid = int(folder.name[len(_MEMORY_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        log.debug("removing %s (its process %d has ended)", folder, pid)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def release_worker_pools() -> None:
    """End the idle worker pools now instead of `POOL_IDLE_SECONDS` later.

    Called when a stage's last task is done: the workers' memory is then freed before the next
    stage, and their resource usage (CPU, peak memory) is counted among this process's children,
    which is what runs and benchmarks report.
    """
    _WORKER_POOLS.shutdown()


class DrizzleWorkspace:
    """Grid, pixel-map cache, scratch folder, CR masks and worker pool of one detector's run.

    Parameters
    ----------
    grid : OutputGrid
        The detector's meta WCS (`build_detector_grid`).
    output_dir : path-like
        Where the SVM copies are and the products go.
    n_workers : int, optional
        Worker processes (1 = everything in this process).
    pixmap_step : int, optional
        Node spacing of the interpolated pixel maps.
    work_dir : path-like, optional
        Persistent folder for the CR masks (see `open_detector_workspace`): a later workspace on
        the same folder finds the CR masks this one computed. None: they live in the scratch
        folder and disappear with it.
    input_pixels : int, optional
        Chip pixels of the exposures drizzled: the scratch's size estimate (`scratch_parent`).

    Notes
    -----
    Use as a context manager; closing deletes the per-process scratch folder (partial drizzles,
    medians; on a tmpfs when there is room, `scratch_parent`), never ``work_dir``. Pixel maps
    are computed where they are needed (0.1 s per UVIS chip; ``pixmap_cache`` keeps some in
    this process's memory).
    """

    def __init__(self, grid: OutputGrid, *, output_dir: str | os.PathLike, n_workers: int = 2,
                 pixmap_step: int = 64, work_dir: str | os.PathLike | None = None,
                 input_pixels: int | None = None):
        self.grid = grid
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        parent = self.output_dir
        if work_dir is not None:
            parent = Path(work_dir)
            parent.mkdir(parents=True, exist_ok=True)
        memory = scratch_parent(_scratch_bytes(grid, input_pixels))
        self._link: Path | None = None
        if memory is not None:
            self.scratch = Path(tempfile.mkdtemp(prefix=f"{_MEMORY_PREFIX}{os.getpid()}-",
                                                 dir=memory))
            # where the disk scratch would be, a link to it: an open workspace shows in the
            # output directory (`.drizzle-scratch-*`) wherever its arrays are
            self._link = parent / f".drizzle-scratch-{self.scratch.name}"
            try:
                os.symlink(self.scratch, self._link)
            except OSError:          # a file system without symbolic links
                self._link = None
        else:
            self.scratch = Path(tempfile.mkdtemp(prefix=".drizzle-scratch-", dir=parent))
        self.work_dir = Path(work_dir) if work_dir is not None else self.scratch
        self.pixmap_cache = PixmapCache(None, step=pixmap_step)
        self.n_workers = max(1, int(n_workers))
        #: one worker job per chip, not per exposure (`hapcore.drizzle.jobs.split_by_chip`);
        #: False gives the same results by whole exposures (a parity test's reference)
        self.split_chips = True
        self.cr_masks: dict[tuple[str, int], Path] = {}
        #: per (exposure file, extver): (first-pass count, final count, chip pixels)
        self.cr_stats: dict[tuple[str, int], tuple[int, int, int]] = {}
        #: exposure products written by the workspace's jobs (exposure file -> product)
        self.written: dict[str, Path] = {}
        #: drizzle parameters whose sky statistics `chip_stats` computes along (the total's)
        self.sky_prefetch: list = []
        self._stats: dict[tuple, dict] = {}
        self._pool: ProcessPoolExecutor | None = None
        # background jobs (`submit_background`): queued here, handed to the pool only while it
        # has an idle worker; _inflight counts every job the pool holds
        self._lock = threading.RLock()
        self._background: deque = deque()
        self._inflight = 0

    def cr_mask_file(self, edp, extver: int) -> Path:
        """Where the CR mask of ``edp``'s chip ``extver`` is kept.

        The name carries a hash of the SVM copy's path, size and modification time, so masks
        of an earlier version of the copy (a new alignment) are never picked up.
        """
        path = self.svm_path(edp).resolve()
        stat = path.stat()
        key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return self.work_dir / f"crmask-{edp.product_basename}-sci{int(extver)}-{key}.npy"

    def find_cr_masks(self, edp) -> dict[int, Path]:
        """CR masks of ``edp``'s chips: in memory, else on disk in ``work_dir``."""
        found = {ext: f for (name, ext), f in self.cr_masks.items() if name == edp.full_filename}
        for extver in sci_extvers(self.svm_path(edp)):
            if extver in found:
                continue
            file = self.cr_mask_file(edp, extver)
            if file.exists():
                found[extver] = file
        return dict(sorted(found.items()))

    def __enter__(self) -> DrizzleWorkspace:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            # the run is interrupted (SIGTERM, Ctrl-C: hap_models.errors.RunInterrupted,
            # Prefect's TerminationSignal, KeyboardInterrupt): stop the workers now instead of
            # letting the pool finish their jobs; what they leave is scratch or temporary files
            _WORKER_POOLS.stop_all()
        self.close()

    def close(self) -> None:
        with self._lock:
            for future, _, _ in self._background:
                future.cancel()
            self._background.clear()
        if self._pool is not None:
            _WORKER_POOLS.release(self.n_workers)
            self._pool = None
        # chips this process kept for its own drizzles (`load_chip`): not held into later stages
        clear_chip_cache()
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._link is not None:
            self._link.unlink(missing_ok=True)

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = _WORKER_POOLS.acquire(self.n_workers)
        return self._pool

    def map(self, fn, jobs: list) -> list:
        """Run ``fn`` over ``jobs`` in the worker pool (or inline), re-emitting worker logs.

        Background jobs already running finish first (at most one per worker); queued ones
        wait until these jobs are done.
        """
        if self.n_workers <= 1 or len(jobs) <= 1:
            return [fn(job) for job in jobs]
        pool = self._get_pool()
        with self._lock:
            self._inflight += len(jobs)
        futures = []
        for job in jobs:
            future = pool.submit(run_captured, fn, job)
            future.add_done_callback(self._job_done)
            futures.append(future)
        return [emit_records(*future.result()) for future in futures]

    def submit_background(self, fn, job) -> Future:
        """Run ``fn(job)`` in a worker whenever one would otherwise be idle.

        Work of this process (medians, writing products) leaves the workers idle; background
        jobs fill those gaps without delaying `map` by more than one job per worker. Collect
        the result with `background_result` (which re-emits the job's log records). With one
        worker the job runs in this process, at collection.

        Returns
        -------
        concurrent.futures.Future
            Resolves to ``(result, log records)``.
        """
        future: Future = Future()
        with self._lock:
            self._background.append((future, fn, job))
        if self.n_workers > 1:
            self._feed()
        return future

    def background_result(self, future: Future):
        """The result of a `submit_background` job (waits for it; runs it here if still
        queued with no pool), its worker's log records re-emitted here."""
        if not future.done():
            with self._lock:
                queued = [item for item in self._background if item[0] is future]
                if queued and self.n_workers <= 1:
                    self._background.remove(queued[0])
            if queued and self.n_workers <= 1:
                _, fn, job = queued[0]
                return fn(job)
        return emit_records(*future.result())

    def _feed(self) -> None:
        """Hand queued background jobs to idle workers (called after every job completes)."""
        with self._lock:
            while self._background and self._inflight < self.n_workers:
                future, fn, job = self._background.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                self._inflight += 1
                inner = self._get_pool().submit(run_captured, fn, job)
                inner.add_done_callback(lambda done, outer=future: self._background_done(
                    done, outer))

    def _job_done(self, _future) -> None:
        with self._lock:
            self._inflight -= 1
        self._feed()

    def _background_done(self, inner: Future, outer: Future) -> None:
        with self._lock:
            self._inflight -= 1
        if inner.cancelled():
            outer.cancel()
        elif inner.exception() is not None:
            outer.set_exception(inner.exception())
        else:
            outer.set_result(inner.result())
        self._feed()

    def svm_path(self, edp) -> Path:
        return self.output_dir / edp.full_filename

    # -- cached steps -------------------------------------------------------------------

    def chip_stats(self, edps, pars, *, static: bool) -> dict[str, dict]:
        """Sky statistics (and low-pixel masks) per exposure, memoised by settings.

        The statistics of ``sky_prefetch``'s settings (the total product's, set by
        `open_detector_workspace`) are computed in the same pass over the chips, and every
        sky statistic is kept in ``work_dir`` (``skystats-*.json``), where the total product's
        workspace finds them instead of reading every chip again.
        """
        todo, keys = [], {}
        extra = [_sky_settings(p) for p in self.sky_prefetch
                 if _sky_settings(p) != _sky_settings(pars)]
        for edp in edps:
            path = self.svm_path(edp)
            key = (edp.full_filename,) + _sky_settings(pars) + (
                pars.static_sig if static else None,)
            keys[edp.full_filename] = key
            if key in self._stats or key in [k for k, _ in todo]:
                continue
            if not static and self._persisted_stats(path, key):
                continue
            tag = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
            todo.append((key, ChipStatsJob(
                path, pars.skystat, pars.sky_bits, pars.skylower, pars.skyupper, pars.skyclip,
                pars.skylsigma, pars.skyusigma, pars.static_sig if static else None,
                self.scratch, tag, extra=tuple(extra))))
        for (key, job), result in zip(todo, self._chip_stats(todo)):
            self._stats[key] = result
            self._persist_stats(job.path, key, result)
            for settings, skies in zip(job.extra, result.pop("extra", [])):
                other = (key[0],) + settings + (None,)
                self._stats[other] = {"sky": skies, "low": {}, "empty": result["empty"]}
                self._persist_stats(job.path, other, self._stats[other])
        return {name: self._stats[key] for name, key in keys.items()}

    def _chip_stats(self, todo: list) -> list[dict]:
        """`run_chip_stats` of the jobs, by chip, merged back into one result per job."""
        jobs, owner = split_by_chip([job for _, job in todo],
                                    lambda job: sci_extvers(job.path), split=self.split_chips)
        merged = [{"sky": {}, "low": {}, "empty": [], "extra": [{} for _ in job.extra]}
                  for _, job in todo]
        for i, part in zip(owner, self.map(run_chip_stats, jobs)):
            for name in ("sky", "low"):
                merged[i][name].update(part[name])
            merged[i]["empty"] = sorted(merged[i]["empty"] + part["empty"])
            for skies, more in zip(merged[i]["extra"], part["extra"]):
                skies.update(more)
        return merged

    def _stats_file(self, path: Path, key: tuple) -> Path:
        stat = path.stat()
        text = repr((str(path.resolve()), stat.st_size, stat.st_mtime_ns) + key[1:-1])
        return self.work_dir / f"skystats-{hashlib.sha1(text.encode()).hexdigest()[:16]}.json"

    def _persist_stats(self, path: Path, key: tuple, result: dict) -> None:
        record = {"sky": {str(k): v for k, v in result["sky"].items()},
                  "empty": list(result["empty"])}
        with atomic_output(self._stats_file(path, key)) as tmp:
            Path(tmp).write_text(json.dumps(record), encoding="utf-8")

    def _persisted_stats(self, path: Path, key: tuple) -> bool:
        """Load the persisted sky statistics of ``key`` into memory; False if there are none."""
        try:
            record = json.loads(self._stats_file(path, key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        self._stats[key] = {"sky": {int(k): float(v) for k, v in record["sky"].items()},
                            "low": {}, "empty": list(record["empty"])}
        return True


def _sky_settings(pars) -> tuple:
    """The parameters a sky statistic depends on."""
    return (pars.skystat, pars.sky_bits, pars.skylower, pars.skyupper, pars.skyclip,
            pars.skylsigma, pars.skyusigma)


def open_detector_workspace(total, *, output_dir: str | os.PathLike, n_workers: int = 2,
                            grid: OutputGrid | None = None) -> DrizzleWorkspace:
    """A workspace whose pixel maps and CR masks persist between processes.

    They live in ``output_dir/.hapsvm-work/drizzle-<detector>-<grid fingerprint>/``, so a
    process that resumes an interrupted drizzle stage finds the CR masks the filter products of
    an earlier process computed (`drizzle_total_product` loads them) and only drizzles what is
    missing. Partial drizzles and medians stay in a per-process scratch folder inside it that
    ``close()`` removes.

    Parameters
    ----------
    total : TotalProduct
        The detector's product tree (parameters assigned).
    output_dir : path-like
        Holds the SVM copies; receives the products.
    n_workers : int, optional
        Worker processes (1 when the exposures are small: `INLINE_MAX_INPUT_PIXELS`).
    grid : OutputGrid, optional
        Default: `build_detector_grid` from the SVM copies.

    Returns
    -------
    DrizzleWorkspace
    """
    output_dir = Path(output_dir)
    grid = grid or build_detector_grid(total, output_dir)
    detector = str(getattr(total, "detector", "") or "detector").lower()
    work_dir = output_dir / ".hapsvm-work" / f"drizzle-{detector}-{grid.fingerprint}"
    pixels = _input_pixels(total, output_dir)
    if n_workers > 1 and pixels is not None and pixels <= INLINE_MAX_INPUT_PIXELS:
        log.debug("%s: %.1f Mpix of input chips: drizzled in this process", detector,
                  pixels / 1e6)
        n_workers = 1
    ws = DrizzleWorkspace(grid, output_dir=output_dir, n_workers=n_workers, work_dir=work_dir,
                          input_pixels=pixels)
    if getattr(total, "parameters", None) is not None:
        pars = total.parameters.drizzle
        if pars.skysub:
            ws.sky_prefetch.append(pars)
    return ws


def _input_pixels(total, output_dir: Path) -> int | None:
    """Chip pixels of the detector's exposures (their SVM copies); None if one is unreadable."""
    from hapcore.drizzle.inputs import chip_wcs_of

    pixels = 0
    for edp in getattr(total, "edp_list", []) or []:
        try:
            chips = chip_wcs_of(output_dir / edp.full_filename)
        except (OSError, ValueError, KeyError):
            return None
        for chip in chips.values():
            if chip.pixel_shape is None:
                return None
            pixels += int(chip.pixel_shape[0]) * int(chip.pixel_shape[1])
    return pixels


def filter_cr_mask_files(fdp, *, workspace: DrizzleWorkspace) -> list[Path]:
    """The CR mask files of a filter product's exposures (for cache digests), sorted by
    exposure and chip; empty before `drizzle_filter_product` ran or for one-exposure filters."""
    files = []
    for edp in fdp.edp_list:
        files.extend(workspace.find_cr_masks(edp).values())
    return files




def remove_work_files(output_dir) -> None:
    """Delete what ``output_dir/.hapsvm-work`` holds to speed up a resumed run (the catalog
    detection, scratch of a drizzle that had no tmpfs) once a visit has finished or failed.
    The compressed cosmic-ray masks stay: they are outputs of the cached filter products that a
    re-made total product needs."""
    work = Path(output_dir) / ".hapsvm-work"
    if not work.is_dir():
        return
    for item in work.rglob("*"):
        if item.is_symlink() or (item.is_file() and not item.name.startswith("crmask-")):
            item.unlink(missing_ok=True)   # links: to the tmpfs scratch of a killed run
    for folder in sorted((p for p in work.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
