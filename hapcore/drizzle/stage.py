"""The drizzle stage: exposure, filter and total products of one detector (spec §5).

Public API (no Prefect here; the task layer wraps these)::

    with open_detector_workspace(total, output_dir=output_dir, n_workers=2) as ws:
        drizzle_filter_product(fdp, workspace=ws)      # finds the CR masks, persists them
        filter_cr_mask_files(fdp, workspace=ws)        # -> the mask files (cache digests)
        drizzle_exposure_product(edp, workspace=ws)
        drizzle_total_product(total, workspace=ws)     # excludes the filters' CR pixels
    # or all of it, in spec order:
    paths = drizzle_detector(total, output_dir=output_dir, n_workers=2)

Resuming: `open_detector_workspace` keeps pixel maps and CR masks in
``output_dir/.hapsvm-work/drizzle-<detector>-<grid fingerprint>/``; a workspace opened later
(another process) on the same folder finds the masks, so after a kill only unfinished products
need drizzling. Every product also gets its ``_trl.txt`` trailer (inputs, parameters, CR
statistics; `hapcore.drizzle.trailer`).

Inputs are the SVM copies ``output_dir/<ExposureProduct.full_filename>`` written by the
alignment stage; they are only ever opened read-only. Intermediate arrays (separately drizzled
images, medians, per-exposure partial drizzles, cropped to the exposure's footprint) live in a
per-process scratch folder deleted when the workspace closes: nothing is written into an input
or an SVM copy (drizzlepac writes CR flags into its copies' DQ, §12.1).

Work is spread over ``n_workers`` processes per exposure (the drizzle C kernel holds the GIL and
astropy.wcs is not thread-safe). Pixel maps are computed once per chip and memory-mapped by all
workers; partial drizzles with identical settings are shared between filter and total products.

Cosmic rays: driz_cr runs twice (see `_find_cosmic_rays`): the second pass re-builds the median
without the first pass's CR pixels, which catches CRs that coincide with a CR of another
exposure.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from hapcore.atomic import atomic_output
from hapcore.drizzle.cr import combine_images, detect_cosmic_rays, grow_mask, static_mask
from hapcore.drizzle.grid import OutputGrid, build_detector_grid, chip_plate_scale
from hapcore.drizzle.headers import hdrtab, product_headers
from hapcore.drizzle.inputs import exposure_keywords, good_pixel_mask, read_chip
from hapcore.drizzle.kernel import blot_chip, combine_partials, drizzle_chip, new_accumulator
from hapcore.drizzle.pixmap import PixmapCache
from hapcore.drizzle.sky import exposure_sky_levels, sky_statistic
from hapcore.drizzle.trailer import format_drizzle_trailer, write_drizzle_trailer
from hapcore.wcs.files import read_chip_wcs

__all__ = [
    "load_mask",
    "DrizzleWorkspace",
    "build_detector_grid",
    "drizzle_exposure_product",
    "drizzle_filter_product",
    "drizzle_total_product",
    "drizzle_detector",
    "filter_cr_mask_files",
    "open_detector_workspace",
    "prepare_pixel_maps",
    "start_exposure_products",
    "total_inputs",
    "write_drizzle_product",
]

log = logging.getLogger("hapsvm")

# driz_cr excess test of the first CR pass (`hapcore.drizzle.cr.detect_cosmic_rays`), its
# fractions measured on each chip (`hapcore.drizzle.cr.calibrate_excess_fraction`). The test is
# kept away from pixels whose blot is not good to a fraction of the signal (`_blot_cr`):
_CR_EXCESS_FRACTION = "auto"
# DQ flag of full-well saturation (WFC3, ACS, WFC3/IR): "good" for drizzling, but clipped
_SATURATED_BIT = 256
# boxes (pixels) around a saturated pixel and around a dropped (DQ-bad) pixel, chip side.
# Measured on four 2-exposure UVIS hapsim visits (seeds 11-14): 7 px around saturated pixels
# and around every pixel above half the saturation level, plus no test where a separate image
# had a hole or a partial pixel, left 98.6-99.1% of >5-sigma CR pixels masked; 5 px around
# saturated pixels only, 99.04-99.28%, star flux lost 0.02-0.05% (3 px: 0.15-0.19%)
_SUSPECT_GROW = 5
_DROPPED_GROW = 3
# filters with more exposures than this get one CR pass, not two (`_find_cosmic_rays`)
_CR_SECOND_PASS_MAX_EXPOSURES = 3


# --------------------------------------------------------------------------------------------
# Worker jobs (top-level functions with picklable arguments; results are scratch files)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChipStatsJob:
    path: Path
    skystat: str
    sky_bits: int
    skylower: float | None
    skyupper: float | None
    skyclip: int
    skylsigma: float
    skyusigma: float
    static_sig: float | None
    scratch: Path
    tag: str


@dataclass(frozen=True)
class _PartialJob:
    path: Path
    grid: OutputGrid
    cache: PixmapCache
    kernel: str
    pixfrac: float
    good_bits: int
    wht_type: str
    sky: float
    static_files: dict = field(default_factory=dict)
    cr_files: dict = field(default_factory=dict)
    out_stem: Path = Path()


@dataclass(frozen=True)
class _BlotCRJob:
    path: Path
    grid: OutputGrid
    cache: PixmapCache
    median_file: Path
    coverage_file: Path
    sky: float
    interp: str
    sinscl: float
    snr: tuple
    scale: tuple
    grow: int
    good_bits: int
    out_stem: Path
    excess_fraction: tuple | str | None = None


def _chip_stats(job: _ChipStatsJob) -> dict:
    """Sky statistic and (optionally) the low-pixel mask of every chip of one exposure."""
    result = {"sky": {}, "low": {}, "empty": []}
    for extver in read_chip_wcs(job.path):
        chip = read_chip(job.path, extver, err=False)
        if chip.is_empty:
            result["empty"].append(extver)
            result["sky"][extver] = float("nan")
            continue
        good = good_pixel_mask(chip.dq, job.sky_bits) & chip.finite
        result["sky"][extver] = sky_statistic(
            chip.sci, good, skystat=job.skystat, lower=job.skylower, upper=job.skyupper,
            nclip=job.skyclip, lsigma=job.skylsigma, usigma=job.skyusigma)
        if job.static_sig is not None:
            low = static_mask([chip.sci], static_sig=job.static_sig)
            file = job.scratch / f"low-{job.tag}-{extver}.npy"
            np.save(file, low)
            result["low"][extver] = (file, chip.shape)
    return result


def _drizzle_partial(job: _PartialJob) -> dict:
    """Drizzle every chip of one exposure onto the grid, into ``sci``/``wht`` files in scratch.

    The files are full-grid ``.npy`` memory maps that the kernel drizzles into directly: only
    the pages drizzled onto are ever written (the files are sparse), nothing is copied or
    saved afterwards, and the chips' maps are used as they are (shifting each into a cropped
    accumulator cost a 134 MB float64 copy per UVIS chip). Readers take the bounding box of
    the exposure's footprint (``box`` in the result; a full-frame UVIS exposure covers about a
    third of a 4-exposure mosaic grid) and nothing outside it.
    """
    grid = job.grid
    used, skipped = [], []
    grid_scale = grid.pixel_scale_arcsec
    chips = []
    for extver, chip_wcs in read_chip_wcs(job.path).items():
        chip = read_chip(job.path, extver, err=job.wht_type == "ERR")
        if chip.is_empty:
            log.warning("%s[SCI,%d]: no valid pixels (all zero or NaN); chip skipped",
                        job.path.name, extver)
            skipped.append(extver)
            continue
        pixmap = job.cache.get(job.path, extver, grid, chip_wcs=chip_wcs, shape=chip.shape)
        if not _overlaps(pixmap, grid.shape):
            log.warning("%s[SCI,%d]: does not overlap the output grid; chip skipped",
                        job.path.name, extver)
            skipped.append(extver)
            continue
        chips.append((extver, chip_wcs, chip, pixmap))
    box = _footprint_box([c[3] for c in chips], grid.shape, margin=2)
    y0, y1, x0, x1 = box
    sci_file = Path(f"{job.out_stem}-sci.npy")
    wht_file = Path(f"{job.out_stem}-wht.npy")
    out = {name: np.lib.format.open_memmap(file, mode="w+", dtype=np.float32, shape=grid.shape)
           for name, file in (("sci", sci_file), ("wht", wht_file))}
    acc = new_accumulator(grid.shape, kernel=job.kernel, out_img=out["sci"],
                          out_wht=out["wht"])
    for extver, chip_wcs, chip, pixmap in chips:
        good = good_pixel_mask(chip.dq, job.good_bits) & chip.finite
        if extver in job.static_files:
            good &= ~np.load(job.static_files[extver])
        if extver in job.cr_files:
            good &= ~load_mask(job.cr_files[extver])
        weight = _weight_map(chip, job.wht_type, job.sky) * good
        ratio = grid_scale / chip_plate_scale(chip_wcs)
        drizzle_chip(acc, chip.sci - np.float32(job.sky), pixmap,
                     weight=weight, exptime=chip.exptime, pixfrac=job.pixfrac,
                     iscale=ratio**2, pixel_scale_ratio=ratio)
        used.append(extver)
    # readers see the box only (what fell outside it, nothing with the kernel's reach inside
    # the margin, is dropped); zero where nothing landed. No flush: the pages are shared with
    # the page cache, so other processes read them at once, and msync would wait for the disk.
    sci = out["sci"][y0:y1, x0:x1]
    sci[~(out["wht"][y0:y1, x0:x1] > 0)] = 0.0
    del acc, out, sci
    return {"sci": sci_file, "wht": wht_file, "box": box, "shape": grid.shape, "used": used,
            "skipped": skipped, "layout": "grid"}


def _footprint_box(pixmaps, shape: tuple[int, int], *, margin: int) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the grid covered by the pixmaps (+ margin), clipped to the grid.

    Distortion is smooth and monotonic over a chip, so the map's extremes lie on the chip edges.
    An empty box (``y0 == y1``) when nothing maps onto the grid.
    """
    xs, ys = [], []
    for pm in pixmaps:
        for edge in (pm[0], pm[-1], pm[:, 0], pm[:, -1]):
            xs.append(np.asarray(edge[..., 0]))
            ys.append(np.asarray(edge[..., 1]))
    ny, nx = shape
    if not xs:
        return (0, 0, 0, 0)
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        # no finite edge: fall back to the whole grid (the kernel skips unmapped pixels)
        return (0, ny, 0, nx)
    x0 = int(np.clip(np.floor(x[ok].min()) - margin, 0, nx))
    x1 = int(np.clip(np.ceil(x[ok].max()) + margin + 1, 0, nx))
    y0 = int(np.clip(np.floor(y[ok].min()) - margin, 0, ny))
    y1 = int(np.clip(np.ceil(y[ok].max()) + margin + 1, 0, ny))
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    return (y0, y1, x0, x1)


def _shifted(pixmap: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The map relative to grid pixel ``(x0, y0)`` (a new float64 array; exact)."""
    if x0 == 0 and y0 == 0:
        return pixmap
    # One pass over the map, as rows of interleaved (x, y) pairs minus a tiled offset row:
    # copy-then-subtract per axis walks it three times, and broadcasting over the length-2
    # axis runs numpy's inner loop two elements at a time (both ~2x slower).
    ny, nx = pixmap.shape[:2]
    offsets = np.tile(np.array([x0, y0], np.float64), nx)
    rows = np.ascontiguousarray(pixmap).reshape(ny, nx * 2)
    return np.subtract(rows, offsets, dtype=np.float64).reshape(ny, nx, 2)


class _CroppedImage:
    """A partial over its bounding box, read as full-width grid rows (zeros outside the box).

    The file holds the whole grid (``full=True``, what `_drizzle_partial` writes) or only the
    box. It is memory-mapped anew for every read and unmapped after it: pages of a mapping stay
    in the process's resident set while it lives, and a product reads ~1 GB of partials.
    """

    def __init__(self, file: Path, box: tuple[int, int, int, int], shape: tuple[int, int], *,
                 full: bool = False):
        self.file = Path(file)
        self.box = tuple(int(v) for v in box)
        self.shape = tuple(int(v) for v in shape)
        self.full = bool(full)
        self.dtype = np.dtype(np.float32)

    @property
    def data(self) -> np.ndarray:
        """The box (a read-only memory map)."""
        mapped = np.load(self.file, mmap_mode="r")
        if not self.full:
            return mapped
        y0, y1, x0, x1 = self.box
        return mapped[y0:y1, x0:x1]

    @property
    def cropped(self) -> _BoxRows:
        """Row access to the box only (box coordinates), as `combine_partials` reads."""
        return _BoxRows(self)

    def __getitem__(self, rows):
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("_CroppedImage supports row slices only")
        start, stop, _ = rows.indices(self.shape[0])
        out = np.zeros((max(stop - start, 0), self.shape[1]), np.float32)
        y0, y1, x0, x1 = self.box
        a, b = max(start, y0), min(stop, y1)
        if b > a:
            out[a - start:b - start, x0:x1] = self.data[a - y0:b - y0]
        return out

    def covered_median(self) -> float:
        """Median of the positive values (a regular sample of them)."""
        sample = np.asarray(self.data[::4, ::4])
        sample = sample[sample > 0]
        return float(np.median(sample)) if sample.size else 0.0


class _BoxRows:
    """``[a:b]`` gives rows ``a:b`` of a partial's box as a new array (mapped only meanwhile)."""

    def __init__(self, image: _CroppedImage):
        self.image = image

    def __getitem__(self, rows) -> np.ndarray:
        return np.array(self.image.data[rows])


def _load_partial(partial: dict, kind: str) -> _CroppedImage:
    return _CroppedImage(partial[kind], partial["box"], partial["shape"],
                         full=partial.get("layout") == "grid")


def _blot_cr(job: _BlotCRJob) -> dict:
    """Blot the median to every chip of one exposure and find its cosmic rays (driz_cr)."""
    median = np.load(job.median_file, mmap_mode="r")
    coverage = np.load(job.coverage_file, mmap_mode="r")
    grid_scale = job.grid.pixel_scale_arcsec
    files, counts = {}, {}
    for extver, chip_wcs in read_chip_wcs(job.path).items():
        chip = read_chip(job.path, extver)
        if chip.is_empty:
            continue
        pixmap = job.cache.get(job.path, extver, job.grid, chip_wcs=chip_wcs, shape=chip.shape)
        if not _overlaps(pixmap, job.grid.shape):
            continue
        ratio = grid_scale / chip_plate_scale(chip_wcs)
        # Blot from the chip's part of the median only (poly5 reaches 3 px; the margin keeps
        # the crop edge away from every interpolation): the full grid is ~120 MB per copy.
        y0, y1, x0, x1 = _footprint_box([pixmap], job.grid.shape, margin=8)
        local = _shifted(pixmap, x0, y0)
        blot = blot_chip(np.array(median[y0:y1, x0:x1]), local, interp=job.interp,
                         sinscl=job.sinscl, iscale=1.0 / ratio**2)
        cover = blot_chip(np.array(coverage[y0:y1, x0:x1]), local, interp="nearest")
        covered = cover > 0.5
        t = chip.exptime
        regular = None
        if job.excess_fraction is not None:
            # the excess test needs values and blot good to a fraction of the signal: not near
            # a pixel the separate drizzles dropped (holes bend the blot) or a saturated one
            dropped = ~good_pixel_mask(chip.dq, job.good_bits) | ~chip.finite
            saturated = (chip.dq & _SATURATED_BIT) != 0
            if saturated.any():
                full_well = float(np.percentile(chip.sci[saturated], 5.0))
                saturated |= chip.sci >= full_well
            regular = ~grow_mask(saturated, _SUSPECT_GROW) & ~grow_mask(dropped, _DROPPED_GROW)
        cr = detect_cosmic_rays((chip.sci - np.float32(job.sky)) * t, blot * t,
                                sky_electrons=job.sky * t, readnoise=chip.readnoise,
                                snr=job.snr, scale=job.scale, grow=job.grow, valid=covered,
                                regular=regular, excess_fraction=job.excess_fraction)
        file = Path(f"{job.out_stem}-cr{extver}.npy")
        np.save(file, cr)
        files[extver] = file
        counts[extver] = int(cr.sum())
    return {"files": files, "counts": counts}


def _overlaps(pixmap: np.ndarray, shape: tuple[int, int]) -> bool:
    step = max(1, min(pixmap.shape[:2]) // 64)
    sample = np.asarray(pixmap[::step, ::step])
    x, y = sample[..., 0], sample[..., 1]
    with np.errstate(invalid="ignore"):
        inside = (x > -1) & (x < shape[1]) & (y > -1) & (y < shape[0])
    return bool(inside.any())


def _weight_map(chip, wht_type: str, sky: float) -> np.ndarray:
    """Per-pixel weight before masking: EXP = exposure time, ERR = 1/err^2, IVM = 1/var(sky+rn)."""
    if wht_type == "EXP":
        return np.full(chip.shape, chip.exptime, np.float32)
    if wht_type == "ERR" and chip.err is not None:
        with np.errstate(divide="ignore"):
            w = np.where(chip.err > 0, 1.0 / chip.err.astype(np.float64) ** 2, 0.0)
        return w.astype(np.float32)
    # IVM (or ERR without an ERR array): background-limited inverse variance in (e-/s)^-2
    t = max(chip.exptime, 1e-9)
    variance = (abs(sky) * t + chip.readnoise**2) / t**2
    return np.full(chip.shape, 1.0 / max(variance, 1e-30), np.float32)


def _emit_records(value, records):
    """Re-emit a worker's log records here; returns ``value``."""
    for record in records:
        if log.isEnabledFor(record.levelno):
            log.handle(record)
    return value


def _run_captured(fn, job):
    """Run a job in a worker, collecting its 'hapsvm' log records for the parent to re-emit."""
    records = []

    class _Collect(logging.Handler):
        def emit(self, record):
            record.msg = record.getMessage()
            record.args = None
            record.exc_info = None
            records.append(record)

    handler = _Collect(level=logging.DEBUG)
    logger = logging.getLogger("hapsvm")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        return fn(job), records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# --------------------------------------------------------------------------------------------
# Workspace
# --------------------------------------------------------------------------------------------


def load_mask(path) -> np.ndarray:
    """A boolean mask saved by this module: plain ``.npy`` (scratch) or compressed (persisted)."""
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return data["mask"]
    return data


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
        Persistent folder for pixel maps and CR masks (see `open_detector_workspace`): a later
        workspace on the same folder finds the CR masks this one computed. None: both live in
        the scratch folder and disappear with it.

    Notes
    -----
    Use as a context manager; closing deletes the per-process scratch folder (partial drizzles,
    medians), never ``work_dir``.
    """

    def __init__(self, grid: OutputGrid, *, output_dir: str | os.PathLike, n_workers: int = 2,
                 pixmap_step: int = 64, work_dir: str | os.PathLike | None = None):
        self.grid = grid
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        parent = self.output_dir
        if work_dir is not None:
            parent = Path(work_dir)
            parent.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=".drizzle-scratch-", dir=parent))
        self.work_dir = Path(work_dir) if work_dir is not None else self.scratch
        self.pixmap_cache = PixmapCache(self.work_dir, step=pixmap_step)
        self.n_workers = max(1, int(n_workers))
        self.cr_masks: dict[tuple[str, int], Path] = {}
        #: per (exposure file, extver): (first-pass count, final count, chip pixels)
        self.cr_stats: dict[tuple[str, int], tuple[int, int, int]] = {}
        self._partials: dict[str, dict] = {}
        self._stats: dict[tuple, dict] = {}
        self._pool: ProcessPoolExecutor | None = None
        # background jobs (`submit_background`): queued here, handed to the pool only while it
        # has an idle worker; _inflight counts every job the pool holds
        self._lock = threading.RLock()
        self._background: deque = deque()
        self._inflight = 0
        #: exposure products started by `start_exposure_products`, by exposure file name
        self.exposure_jobs: dict[str, Future] = {}

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
        for extver in read_chip_wcs(self.svm_path(edp)):
            if extver in found:
                continue
            file = self.cr_mask_file(edp, extver)
            if file.exists():
                found[extver] = file
        return dict(sorted(found.items()))

    def __enter__(self) -> DrizzleWorkspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for future, _, _ in self._background:
                future.cancel()
            self._background.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the caller may be running Prefect threads
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.n_workers, mp_context=ctx)
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
            future = pool.submit(_run_captured, fn, job)
            future.add_done_callback(self._job_done)
            futures.append(future)
        return [_emit_records(*future.result()) for future in futures]

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
        return _emit_records(*future.result())

    def _feed(self) -> None:
        """Hand queued background jobs to idle workers (called after every job completes)."""
        with self._lock:
            while self._background and self._inflight < self.n_workers:
                future, fn, job = self._background.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                self._inflight += 1
                inner = self._get_pool().submit(_run_captured, fn, job)
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
        """Sky statistics (and low-pixel masks) per exposure, memoised by settings."""
        todo, keys = [], {}
        for edp in edps:
            key = (edp.full_filename, pars.skystat, pars.sky_bits, pars.skylower, pars.skyupper,
                   pars.skyclip, pars.skylsigma, pars.skyusigma,
                   pars.static_sig if static else None)
            keys[edp.full_filename] = key
            if key not in self._stats and key not in [k for k, _ in todo]:
                tag = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
                todo.append((key, _ChipStatsJob(
                    self.svm_path(edp), pars.skystat, pars.sky_bits, pars.skylower,
                    pars.skyupper, pars.skyclip, pars.skylsigma, pars.skyusigma,
                    pars.static_sig if static else None, self.scratch, tag)))
        for (key, _), result in zip(todo, self.map(_chip_stats, [j for _, j in todo])):
            self._stats[key] = result
        return {name: self._stats[key] for name, key in keys.items()}

    def partials(self, jobs: list[_PartialJob]) -> list[dict]:
        """Drizzle exposures onto the grid, reusing partials with identical settings."""
        keyed = []
        for job in jobs:
            key = hashlib.sha1(repr((str(job.path), job.kernel, job.pixfrac, job.good_bits,
                                     job.wht_type, round(job.sky, 4),
                                     sorted(map(str, job.static_files.values())),
                                     sorted(map(str, job.cr_files.values())))).encode())
            keyed.append((key.hexdigest()[:16], job))
        todo = []
        for key, job in keyed:
            if key not in self._partials and key not in [k for k, _ in todo]:
                stem = self.scratch / f"part-{key}"
                todo.append((key, _replace(job, out_stem=stem)))
        for (key, _), result in zip(todo, self.map(_drizzle_partial, [j for _, j in todo])):
            self._partials[key] = result
        log.debug("partial drizzles: %d computed, %d reused", len(todo), len(jobs) - len(todo))
        return [self._partials[key] for key, _ in keyed]


def _replace(job, **changes):
    from dataclasses import replace
    return replace(job, **changes)


# --------------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------------


def write_drizzle_product(path: str | os.PathLike, sci: np.ndarray, wht: np.ndarray,
                          ctx: np.ndarray, *, primary_header: fits.Header,
                          sci_header: fits.Header, hdrtab_hdu: fits.BinTableHDU | None = None
                          ) -> Path:
    """Write primary + SCI + WHT + CTX (+ HDRTAB) atomically."""
    wcs_cards = {k: sci_header[k] for k in sci_header if k.startswith(("CRPIX", "CRVAL", "CD",
                                                                       "PC", "CDELT", "CTYPE",
                                                                       "CUNIT", "RADESYS",
                                                                       "EQUINOX", "WCSAXES",
                                                                       "LONPOLE", "LATPOLE",
                                                                       "MJDREF"))}
    hdus = [fits.PrimaryHDU(header=primary_header)]
    hdus.append(fits.ImageHDU(np.asarray(sci, np.float32), header=sci_header, name="SCI"))
    for name, data in (("WHT", np.asarray(wht, np.float32)), ("CTX", np.asarray(ctx, np.int32))):
        header = fits.Header()
        header.update(wcs_cards)
        hdus.append(fits.ImageHDU(data, header=header, name=name))
    for hdu in hdus[1:]:
        hdu.header["EXTVER"] = 1
    if hdrtab_hdu is not None:
        hdus.append(hdrtab_hdu)
    path = Path(path)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # long copied values (D###DATA, WCSNAME lists) only lose their comments
        warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path


def _sky_levels(ws: DrizzleWorkspace, edps, pars, *, static: bool) -> tuple[dict, dict]:
    if not pars.skysub and not static:
        return {e.full_filename: 0.0 for e in edps}, {}
    stats = ws.chip_stats(edps, pars, static=static)
    if not pars.skysub:
        return {e.full_filename: 0.0 for e in edps}, stats
    chip_skies = {name: list(s["sky"].values()) for name, s in stats.items()}
    return exposure_sky_levels(chip_skies, skymethod=pars.skymethod), stats


def _write(ws: DrizzleWorkspace, product, edps, partials, pars, *, level: str,
           skies: dict | None = None, cr_lines: list[str] | None = None,
           t0: float | None = None) -> Path:
    """Combine partials, write the product file with its headers, then its trailer."""
    fill = 0.0 if pars.final_fillval is None else float(pars.final_fillval)
    # only the partials' boxes are read and combined (the rest of the grid has no weight)
    sci, wht, ctx = combine_partials(
        [(_load_partial(p, "sci").cropped, _load_partial(p, "wht").cropped) for p in partials],
        fillval=fill, boxes=[p["box"] for p in partials], shape=ws.grid.shape)
    inputs = []
    for edp in edps:
        keywords = exposure_keywords(ws.svm_path(edp))
        keywords["filename"] = edp.full_filename
        inputs.append(keywords)
    footprint = product.haplevel == 2
    primary, sci_header = product_headers(
        input_headers=inputs, product=product, grid_wcs=ws.grid.wcs, sci=sci, wht=wht, ctx=ctx,
        filename=product.drizzle_filename, drizpars=product.trl_filename, footprint=footprint)
    table = hdrtab(inputs, [e.product_basename for e in edps])
    path = write_drizzle_product(ws.output_dir / product.drizzle_filename, sci, wht, ctx,
                                 primary_header=primary, sci_header=sci_header, hdrtab_hdu=table)
    covered = 100.0 * float(np.mean(wht > 0))
    log.info("%s: written (%d inputs, %.1f%% of the grid covered)", path.name, len(edps),
             covered)
    skies = skies or {}
    grid = ws.grid
    crval = grid.wcs.wcs.crval
    trailer = format_drizzle_trailer(
        product_filename=path.name, level=level,
        grid_description=(f"{grid.shape[1]} x {grid.shape[0]} px at "
                          f"{grid.pixel_scale_arcsec:.5f} arcsec/px, CRVAL {crval[0]:.6f} "
                          f"{crval[1]:.6f}, {covered:.1f}% covered (fingerprint "
                          f"{grid.fingerprint})"),
        inputs=[{"filename": e.full_filename, "exptime": e.exptime,
                 "sky": skies.get(e.full_filename, 0.0), "used": p.get("used", []),
                 "skipped": p.get("skipped", [])} for e, p in zip(edps, partials)],
        parameters=_parameter_dict(pars), cr_lines=cr_lines or [],
        elapsed_s=None if t0 is None else time.perf_counter() - t0)
    write_drizzle_trailer(ws.output_dir / product.trl_filename, trailer)
    return path


def _parameter_dict(pars) -> dict:
    if hasattr(pars, "model_dump"):
        return pars.model_dump(mode="json")
    return {k: v for k, v in vars(pars).items() if not k.startswith("_")}


def _cr_lines(ws: DrizzleWorkspace, edps, *, computed: bool) -> list[str]:
    """One line per chip mask: flagged pixels (first pass / both passes) or applied count."""
    lines = []
    for edp in edps:
        for extver, file in ws.find_cr_masks(edp).items():
            stats = ws.cr_stats.get((edp.full_filename, extver))
            if stats is None:
                mask = load_mask(file)
                stats = (None, int(np.count_nonzero(mask)), int(mask.size))
            first, final, npix = stats
            head = f"{edp.full_filename}[SCI,{extver}]: {final} pixels"
            frac = f" ({100.0 * final / max(npix, 1):.3f}% of the chip)"
            if computed and first is not None:
                lines.append(f"{head} flagged{frac}; first pass {first}, second pass added "
                             f"{final - first}")
            else:
                lines.append(f"{head} excluded{frac} (mask {file.name})")
    return lines


def _final_jobs(ws, edps, pars, skies, *, static_files=None, use_cr: bool) -> list[_PartialJob]:
    jobs = []
    for edp in edps:
        cr_files = ws.find_cr_masks(edp) if use_cr else {}
        jobs.append(_PartialJob(
            path=ws.svm_path(edp), grid=ws.grid, cache=ws.pixmap_cache,
            kernel=pars.final_kernel, pixfrac=pars.final_pixfrac, good_bits=pars.final_bits,
            wht_type=pars.final_wht_type, sky=float(skies.get(edp.full_filename, 0.0)),
            static_files=dict(static_files or {}), cr_files=cr_files))
    return jobs


def drizzle_exposure_product(edp, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle one exposure (HAPLEVEL 1) onto the detector grid with its own parameters.

    Uses the exposure's ``final_*`` parameters (``resetbits`` 0: no CR masks applied). If
    `start_exposure_products` started it in the background, waits for that.
    """
    ws = workspace
    future = ws.exposure_jobs.pop(edp.full_filename, None)
    if future is not None:
        return ws.background_result(future)
    pars = edp.parameters.drizzle
    skies, _ = _sky_levels(ws, [edp], pars, static=False)
    t0 = time.perf_counter()
    partials = ws.partials(_final_jobs(ws, [edp], pars, skies, use_cr=False))
    return _write(ws, edp, [edp], partials, pars, level="exposure", skies=skies,
                  cr_lines=[_EXPOSURE_CR_LINE], t0=t0)


_EXPOSURE_CR_LINE = "none (exposure products are drizzled without CR masks)"


@dataclass(frozen=True)
class _WriteContext:
    """What `_write` uses of a workspace, picklable for a worker."""

    grid: OutputGrid
    output_dir: Path

    def svm_path(self, edp) -> Path:
        return self.output_dir / edp.full_filename


@dataclass(frozen=True)
class _ExposureProductJob:
    edp: object
    partial: _PartialJob
    context: _WriteContext
    skies: dict


def _exposure_product(job: _ExposureProductJob) -> Path:
    """A whole exposure product in a worker: its partial drizzle, then `_write` (as
    `drizzle_exposure_product` does in-process); the partial is deleted after (no other
    product uses the exposure products' settings without CR masks)."""
    t0 = time.perf_counter()
    partial = _drizzle_partial(job.partial)
    try:
        return _write(job.context, job.edp, [job.edp], [partial], job.edp.parameters.drizzle,
                      level="exposure", skies=job.skies, cr_lines=[_EXPOSURE_CR_LINE], t0=t0)
    finally:
        for kind in ("sci", "wht"):
            Path(partial[kind]).unlink(missing_ok=True)


def start_exposure_products(edps, *, workspace: DrizzleWorkspace) -> None:
    """Start exposure products as background jobs (`DrizzleWorkspace.submit_background`).

    They need nothing from the other products, so workers make them while this process works
    alone (medians, writing filter and total products); `drizzle_exposure_product` then only
    collects them. Products already started are not started again.
    """
    ws = workspace
    context = _WriteContext(ws.grid, ws.output_dir)
    for edp in edps:
        if edp.full_filename in ws.exposure_jobs:
            continue
        pars = edp.parameters.drizzle
        skies, _ = _sky_levels(ws, [edp], pars, static=False)
        (job,) = _final_jobs(ws, [edp], pars, skies, use_cr=False)
        job = _replace(job, out_stem=ws.scratch / f"exposure-{edp.product_basename}")
        ws.exposure_jobs[edp.full_filename] = ws.submit_background(
            _exposure_product, _ExposureProductJob(edp, job, context, skies))


def drizzle_filter_product(fdp, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle a filter product with the full AstroDrizzle sequence of its parameters.

    Static mask, sky, separate drizzle, median/minmed, blot, driz_cr and the final drizzle
    with the CR masks (kept in the workspace for the total product). A filter with a single
    exposure (or parameters with the CR steps off) gets no CR rejection, which is logged.
    """
    ws = workspace
    edps = list(fdp.edp_list)
    pars = fdp.parameters.drizzle
    t0 = time.perf_counter()
    do_cr = pars.cr_rejection_enabled and len(edps) >= 2
    skies, stats = _sky_levels(ws, edps, pars, static=pars.static and do_cr)
    static_files = {}
    if pars.static and do_cr:
        static_files = _combine_static(ws, fdp, stats)
    why = ""
    if not do_cr:
        why = "single exposure" if len(edps) < 2 else "CR steps disabled by its parameters"
        log.info("%s: no cosmic-ray rejection (%s)", fdp.drizzle_filename, why)
    else:
        _find_cosmic_rays(ws, fdp, edps, pars, skies, static_files)
    partials = ws.partials(_final_jobs(ws, edps, pars, skies, use_cr=do_cr))
    cr_lines = _cr_lines(ws, edps, computed=True) if do_cr else [f"none ({why})"]
    path = _write(ws, fdp, edps, partials, pars, level="filter", skies=skies,
                  cr_lines=cr_lines, t0=t0)
    log.debug("%s: %.1f s", path.name, time.perf_counter() - t0)
    return path


def _combine_static(ws, fdp, stats) -> dict[str, dict[int, Path]]:
    """AND the low-pixel masks of the same chip over the filter's exposures."""
    by_chip: dict[tuple, list] = {}
    for name, s in stats.items():
        for extver, (file, shape) in s["low"].items():
            by_chip.setdefault((extver, tuple(shape)), []).append((name, file))
    per_exposure: dict[str, dict[int, Path]] = {}
    for (extver, shape), members in by_chip.items():
        mask = None
        for _, file in members:
            low = np.load(file)
            mask = low if mask is None else (mask & low)
        out = ws.scratch / f"static-{fdp.product_basename}-{extver}-{shape[0]}x{shape[1]}.npy"
        np.save(out, mask)
        log.debug("%s: static mask SCI,%d: %d pixels", fdp.product_basename, extver,
                  int(mask.sum()))
        for name, _ in members:
            per_exposure.setdefault(name, {})[extver] = out
    return per_exposure


def _find_cosmic_rays(ws, fdp, edps, pars, skies, static_files) -> None:
    """Separate drizzle, median, blot and driz_cr; CR masks go into ``ws.cr_masks``.

    Two passes. With few exposures a cosmic ray of one exposure often lands within a grid
    pixel of a cosmic ray of another (about 7% of CR pixels for two 600 s UVIS exposures):
    the median/minmed there holds CR charge from both, the blot carries it back and the pixel
    survives driz_cr. The second pass re-drizzles the separate images without the first pass's
    CR pixels, so the median at those places comes from the clean neighbours, and runs driz_cr
    again; the final mask is the union of both passes. The second median applies ``maskpt``
    to the first pass's weights: a grid pixel that lost part of its weight to a masked CR
    keeps its clean partial value instead of leaving the other exposure alone in the median.

    The second pass runs for filters of at most ``_CR_SECOND_PASS_MAX_EXPOSURES`` (3)
    exposures. Measured on hapsim UVIS visits (two seeds, >5-sigma CR pixels masked): with 2
    exposures it adds 0.4-0.8%, with 3 0.1-0.2%, with 4 0.06% (99.23 -> 99.29%, 99.27 ->
    99.33%): a median of 4 rarely holds CR charge, and the pass costs ~13 s of a 4-exposure
    full-frame UVIS visit's ~67 s drizzle stage.

    The first pass adds an excess test to driz_cr (a positive difference larger than a
    fraction of the blot, measured per chip: `hapcore.drizzle.cr.detect_cosmic_rays`), which
    catches CRs on stars that the derivative term protects. The second pass keeps
    AstroDrizzle's test only: its median next to a first-pass flag on a star is built from
    partially covered pixels, off by a fraction of the signal (measured on hapsim visits: the
    excess test there too found 0.05% more CR pixels and cost up to 0.025% more star flux).
    """
    first, seps = _cr_pass(ws, fdp, edps, pars, skies, static_files, cr_files={}, tag="p1",
                           excess_fraction=_CR_EXCESS_FRACTION)
    second = {}
    if len(edps) <= _CR_SECOND_PASS_MAX_EXPOSURES:
        second, _ = _cr_pass(ws, fdp, edps, pars, skies, static_files, cr_files=first,
                             tag="p2", validity=seps)
    else:
        log.debug("%s: %d exposures, one cosmic-ray pass", fdp.product_basename, len(edps))
    for edp in edps:
        counts = {}
        for extver in sorted(set(first.get(edp.full_filename, {})) |
                             set(second.get(edp.full_filename, {}))):
            masks = [load_mask(f[edp.full_filename][extver]) for f in (first, second)
                     if extver in f.get(edp.full_filename, {})]
            mask = masks[0] if len(masks) == 1 else (masks[0] | masks[1])
            file = ws.cr_mask_file(edp, extver)
            with atomic_output(file) as tmp, open(tmp, "wb") as fh:
                # compressed: the masks outlive the run (resume, re-drizzling a total), and a
                # sparse boolean image shrinks ~20x
                np.savez_compressed(fh, mask=mask)
            ws.cr_masks[(edp.full_filename, extver)] = file
            counts[extver] = (int(masks[0].sum()), int(mask.sum()))
            ws.cr_stats[(edp.full_filename, extver)] = counts[extver] + (int(mask.size),)
        log.info("%s: %s cosmic-ray pixels flagged (first pass, both passes)",
                 edp.full_filename,
                 ", ".join(f"SCI,{k}: {a}, {b}" for k, (a, b) in sorted(counts.items())))


def _cr_pass(ws, fdp, edps, pars, skies, static_files, *, cr_files: dict, tag: str,
             validity: list[dict] | None = None,
             excess_fraction=None) -> tuple[dict[str, dict[int, Path]], list]:
    """One separate-drizzle / median / blot / driz_cr pass.

    Returns the per-chip mask files and the separate drizzles (``validity`` of a later pass:
    the partials whose weights decide ``maskpt``, see `combine_images`). ``excess_fraction``
    enables driz_cr's excess test (`detect_cosmic_rays`).
    """
    sep_jobs = [_PartialJob(
        path=ws.svm_path(e), grid=ws.grid, cache=ws.pixmap_cache, kernel=pars.driz_sep_kernel,
        pixfrac=pars.driz_sep_pixfrac, good_bits=pars.driz_sep_bits, wht_type="EXP",
        sky=float(skies[e.full_filename]), static_files=static_files.get(e.full_filename, {}),
        cr_files=cr_files.get(e.full_filename, {}))
        for e in edps]
    seps = ws.partials(sep_jobs)
    ny, nx = ws.grid.shape
    median_file = ws.scratch / f"median-{fdp.product_basename}-{tag}.npy"
    coverage_file = ws.scratch / f"cover-{fdp.product_basename}-{tag}.npy"
    median = np.lib.format.open_memmap(median_file, mode="w+", dtype=np.float32, shape=(ny, nx))
    coverage = np.lib.format.open_memmap(coverage_file, mode="w+", dtype=np.float32,
                                         shape=(ny, nx))
    images = [_load_partial(p, "sci") for p in seps]
    weights = [_load_partial(p, "wht") for p in seps]
    valid_weights = [_load_partial(p, "wht") for p in validity] if validity else None
    weight_medians = [w.covered_median() for w in (valid_weights or weights)]
    exptime = float(np.mean([e.exptime or 1.0 for e in edps]))
    readnoise = _mean_readnoise(ws, edps)
    sky_mean = float(np.mean(list(skies.values())))
    for start in range(0, ny, 512):
        stop = min(ny, start + 512)
        median[start:stop] = combine_images(
            [im[start:stop] for im in images], [w[start:stop] for w in weights],
            combine_type=pars.combine_type, nlow=pars.combine_nlow, nhigh=pars.combine_nhigh,
            maskpt=pars.combine_maskpt, nsigma=pars.combine_nsigma, grow=pars.combine_grow,
            lthresh=pars.combine_lthresh, hthresh=pars.combine_hthresh,
            noise_electrons=(exptime, readnoise, sky_mean), weight_medians=weight_medians,
            valid_weights=[w[start:stop] for w in valid_weights] if valid_weights else None)
        # CRs are only detectable where at least two exposures overlap
        n_cover = sum((np.asarray(w[start:stop]) > 0).astype(np.int8)
                      for w in (valid_weights or weights))
        coverage[start:stop] = (n_cover >= 2).astype(np.float32)
    median.flush()
    coverage.flush()
    del median, coverage, images, weights, valid_weights
    cr_jobs = [_BlotCRJob(
        path=ws.svm_path(e), grid=ws.grid, cache=ws.pixmap_cache,
        median_file=median_file, coverage_file=coverage_file,
        sky=float(skies[e.full_filename]), interp=pars.blot_interp, sinscl=pars.blot_sinscl,
        snr=tuple(pars.driz_cr_snr), scale=tuple(pars.driz_cr_scale), grow=pars.driz_cr_grow,
        good_bits=pars.driz_sep_bits,
        excess_fraction=excess_fraction,
        out_stem=ws.scratch / f"crmask-{e.product_basename}-{tag}") for e in edps]
    masks: dict[str, dict[int, Path]] = {}
    for edp, result in zip(edps, ws.map(_blot_cr, cr_jobs)):
        masks[edp.full_filename] = dict(result["files"])
    median_file.unlink(missing_ok=True)
    coverage_file.unlink(missing_ok=True)
    return masks, seps


def _mean_readnoise(ws, edps) -> float:
    values = []
    for edp in edps:
        with fits.open(ws.svm_path(edp), mode="readonly") as hdul:
            h = hdul[0].header
            rn = [float(h[k]) for k in ("READNSEA", "READNSEB", "READNSEC", "READNSED")
                  if isinstance(h.get(k), (int, float)) and h.get(k) > 0]
            if rn:
                values.append(float(np.mean(rn)))
    return float(np.mean(values)) if values else 0.0


def total_inputs(total) -> list:
    """Members of filters with >= 2 exposures, or all exposures if every filter has one (§5.2)."""
    multi = [e for f in total.fdp_list if len(f.edp_list) >= 2 for e in f.edp_list]
    return multi if multi else [e for f in total.fdp_list for e in f.edp_list] or \
        list(total.edp_list)


def drizzle_total_product(total, *, workspace: DrizzleWorkspace, background: bool = False):
    """Drizzle the total (detection) product; CR pixels found by the filter products are
    excluded.

    The CR masks come from this workspace's `drizzle_filter_product` calls or, for filters
    drizzled by an earlier workspace on the same ``work_dir`` (`open_detector_workspace`), from
    disk; which is logged. A filter that should have masks but has none is warned about (its
    cosmic rays reach the total).

    Returns the product's path or, with ``background=True``, a future of its writing in a
    worker (`DrizzleWorkspace.background_result` gives the path; the partial drizzles are done
    when this returns).
    """
    ws = workspace
    t0 = time.perf_counter()
    edps = total_inputs(total)
    pars = total.parameters.drizzle
    skies, _ = _sky_levels(ws, edps, pars, static=False)
    in_memory, from_disk = 0, 0
    for fdp in total.fdp_list:
        members = [e for e in fdp.edp_list if e in edps]
        if not members:
            continue
        expect = len(fdp.edp_list) >= 2 and fdp.parameters.drizzle.cr_rejection_enabled
        for edp in members:
            masks = ws.find_cr_masks(edp)
            for extver, file in masks.items():
                if (edp.full_filename, extver) in ws.cr_masks:
                    in_memory += 1
                else:
                    from_disk += 1
                    ws.cr_masks[(edp.full_filename, extver)] = file
                    log.info("%s: CR mask of %s[SCI,%d] loaded from %s", total.drizzle_filename,
                             edp.full_filename, extver, file)
            if expect and not masks:
                log.warning("%s: no CR mask for %s (filter product %s not drizzled?); its "
                            "cosmic rays are not excluded", total.drizzle_filename,
                            edp.full_filename, fdp.drizzle_filename)
    log.info("%s: %d inputs, %d chip CR masks applied (%d from this workspace, %d from disk)",
             total.drizzle_filename, len(edps), in_memory + from_disk, in_memory, from_disk)
    partials = ws.partials(_final_jobs(ws, edps, pars, skies, use_cr=True))
    write = _TotalWriteJob(_WriteContext(ws.grid, ws.output_dir), total, edps, partials, pars,
                           skies, _cr_lines(ws, edps, computed=False), t0)
    if background:
        return ws.submit_background(_write_total, write)
    return _write_total(write)


@dataclass(frozen=True)
class _TotalWriteJob:
    context: _WriteContext
    total: object
    edps: list
    partials: list
    pars: object
    skies: dict
    cr_lines: list
    t0: float


def _write_total(job: _TotalWriteJob) -> Path:
    return _write(job.context, job.total, job.edps, job.partials, job.pars, level="total",
                  skies=job.skies, cr_lines=job.cr_lines, t0=job.t0)


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
        Worker processes.
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
    return DrizzleWorkspace(grid, output_dir=output_dir, n_workers=n_workers, work_dir=work_dir)


def filter_cr_mask_files(fdp, *, workspace: DrizzleWorkspace) -> list[Path]:
    """The CR mask files of a filter product's exposures (for cache digests), sorted by
    exposure and chip; empty before `drizzle_filter_product` ran or for one-exposure filters."""
    files = []
    for edp in fdp.edp_list:
        files.extend(workspace.find_cr_masks(edp).values())
    return files


def drizzle_detector(total, *, output_dir: str | os.PathLike, n_workers: int = 2,
                     grid: OutputGrid | None = None) -> list[Path]:
    """All drizzled products of one detector, in spec order: each filter product, then its
    exposures, then the total.

    Parameters
    ----------
    total : TotalProduct
        With parameters assigned (`hapcore.obset.product_parameters.assign_product_parameters`).
    output_dir : path-like
        Holds the SVM copies; receives the products.
    n_workers : int
        Worker processes.
    grid : OutputGrid, optional
        Default: `build_detector_grid` from the SVM copies.

    Returns
    -------
    list of Path
        The product files written.
    """
    t0 = time.perf_counter()
    grid = grid or build_detector_grid(total, output_dir)
    written = []
    with open_detector_workspace(total, output_dir=output_dir, n_workers=n_workers,
                                 grid=grid) as ws:
        prepare_pixel_maps(total.edp_list, workspace=ws)
        # Exposure products depend on nothing else: workers make them whenever this process
        # works alone (medians, writing), and the total is written in a worker while the last
        # ones finish. Products are listed in spec order whatever order they finish in.
        start_exposure_products([e for f in total.fdp_list for e in f.edp_list], workspace=ws)
        for fdp in total.fdp_list:
            written.append(drizzle_filter_product(fdp, workspace=ws))
            written.extend([None] * len(fdp.edp_list))
        total_future = drizzle_total_product(total, workspace=ws, background=True)
        at = 0
        for fdp in total.fdp_list:
            at += 1
            for edp in fdp.edp_list:
                written[at] = drizzle_exposure_product(edp, workspace=ws)
                at += 1
        written.append(ws.background_result(total_future))
    log.info("%s: %d drizzled products in %.1f s", total.product_basename, len(written),
             time.perf_counter() - t0)
    return written


def prepare_pixel_maps(edps, *, workspace: DrizzleWorkspace) -> None:
    """Every chip's pixel map once, in parallel, before anything needs it.

    Done before background jobs are queued: otherwise two exposure products take both workers
    first and the filter product's cosmic-ray passes (the critical path) wait for them.
    Maps already in the workspace's cache are only looked up.
    """
    ws = workspace
    ws.map(_prepare_pixmaps, [(ws.svm_path(e), ws.grid, ws.pixmap_cache) for e in edps])


def _prepare_pixmaps(args) -> int:
    path, grid, cache = args
    for extver, chip_wcs in read_chip_wcs(path).items():
        cache.get(path, extver, grid, chip_wcs=chip_wcs)
    return 0
