"""Worker jobs of the drizzle stage: top-level functions with picklable arguments.

Each job runs in a worker process of a :class:`~hapcore.drizzle.workspace.DrizzleWorkspace`
(or inline with one worker) and leaves its arrays in the workspace's scratch (a tmpfs where
there is one):

* `run_chip_stats` -- sky statistics and static (low-pixel) masks of one exposure's chips;
* `drizzle_partial` -- one exposure's chips drizzled onto the grid (a `ChipPartial` each);
* `hapcore.drizzle.product_jobs.blot_and_flag` -- the median blotted back onto one exposure's
  chips, driz_cr's masks, and the partials that follow from them.

Each job can be restricted to some of its exposure's chips (``extvers``): `split_by_chip`
makes one job per chip, so that the workers share the chips, not the exposures (3 two-chip
exposures on 2 workers: 3 chips each, where whole exposures leave one worker idle through
the third).

`run_captured` runs a job with its log records captured, so that the parent re-emits them
(`emit_records`) into the visit log.
"""

from __future__ import annotations

import ctypes
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hapcore.drizzle.chip_partials import Settings, drizzle_chip_partial, load_chip
from hapcore.drizzle.cr import static_mask
from hapcore.drizzle.grid import OutputGrid
from hapcore.drizzle.inputs import chip_wcs_of, good_pixel_mask, read_chip, sci_extvers
from hapcore.drizzle.ragged import ExposurePartial
from hapcore.drizzle.sky import sky_statistic

__all__ = [
    "ChipStatsJob",
    "PartialJob",
    "chip_reason",
    "drizzle_partial",
    "drizzle_partials",
    "emit_records",
    "load_mask",
    "run_captured",
    "run_chip_stats",
    "save_mask",
    "split_by_chip",
]

log = logging.getLogger(f"hapsvm.{__name__}")


@dataclass(frozen=True)
class ChipStatsJob:
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
    #: other sky settings ``(skystat, sky_bits, lower, upper, clip, lsigma, usigma)`` computed
    #: in the same pass
    extra: tuple = ()
    #: the chips to do (None: every chip of ``path``)
    extvers: tuple | None = None


@dataclass(frozen=True)
class PartialJob:
    """Drizzle every chip of ``path`` with ``settings`` into scratch files ``<stem>-*``."""

    path: Path
    grid: OutputGrid
    settings: Settings
    stem: Path
    #: the chips to drizzle (None: every chip of ``path``)
    extvers: tuple | None = None


def split_by_chip(jobs: list, chips_of: Callable, *, split: bool = True
                  ) -> tuple[list, list[int]]:
    """One job per chip (``extvers=(k,)``) of every job whose exposure has several
    (``chips_of(job)``), and for each the index of the job it came from.

    With ``split`` False (or a one-chip exposure) the job stays whole.
    """
    out, owner = [], []
    for i, job in enumerate(jobs):
        chips = list(chips_of(job)) if split else []
        if len(chips) > 1:
            out += [replace(job, extvers=(k,)) for k in chips]
            owner += [i] * len(chips)
        else:
            out.append(job)
            owner.append(i)
    return out, owner


def _wanted(extvers, job) -> list[int]:
    return [k for k in extvers if job.extvers is None or k in job.extvers]


def run_chip_stats(job: ChipStatsJob) -> dict:
    """Sky statistic and (optionally) the low-pixel mask of every chip of one exposure; the
    statistics of ``job.extra``'s settings in ``extra`` (one ``{extver: sky}`` each)."""
    result = {"sky": {}, "low": {}, "empty": [], "extra": [{} for _ in job.extra]}
    own = (job.skystat, job.sky_bits, job.skylower, job.skyupper, job.skyclip, job.skylsigma,
           job.skyusigma)
    for extver in _wanted(sci_extvers(job.path), job):
        chip = read_chip(job.path, extver, err=False)
        if chip.is_empty:
            result["empty"].append(extver)
            for skies in [result["sky"], *result["extra"]]:
                skies[extver] = float("nan")
            continue
        for skies, (skystat, bits, lower, upper, clip, lsigma, usigma) in zip(
                [result["sky"], *result["extra"]], [own, *job.extra]):
            good = good_pixel_mask(chip.dq, bits) & chip.finite
            skies[extver] = sky_statistic(chip.sci, good, skystat=skystat, lower=lower,
                                          upper=upper, nclip=clip, lsigma=lsigma,
                                          usigma=usigma)
        if job.static_sig is not None:
            low = static_mask([chip.sci], static_sig=job.static_sig)
            file = job.scratch / f"low-{job.tag}-{extver}.npz"
            save_mask(file, low)
            result["low"][extver] = (file, chip.shape)
    return result


def chip_reason(inputs, settings: Settings) -> str | None:
    """Why a loaded chip is left out of a drizzle (None: it is drizzled)."""
    if isinstance(inputs, str):
        return inputs
    chip = inputs.chip
    if not (good_pixel_mask(chip.dq, settings.good_bits) & chip.finite).any():
        # it would add nothing but zero weights: said, and left out like an empty chip
        return f"every pixel flagged in DQ (none among the good bits {settings.good_bits})"
    return None


def drizzle_partial(job: PartialJob) -> ExposurePartial:
    """Drizzle every chip of one exposure onto the grid (`drizzle_chip_partial`).

    Chips without valid pixels, with every pixel flagged, or off the grid are skipped with a
    warning (the product's trailer lists them).
    """
    partial = ExposurePartial(job.path.name, [], [])
    wcs = chip_wcs_of(job.path)
    for extver in _wanted(wcs, job):
        chip_wcs = wcs[extver]
        inputs = load_chip(job.path, extver, chip_wcs, job.grid,
                           err=job.settings.wht_type == "ERR")
        reason = chip_reason(inputs, job.settings)
        chip = None
        if reason is None:
            chip = drizzle_chip_partial(inputs, job.settings, exposure=job.path.name,
                                        grid=job.grid, stem=job.stem)
            reason = None if chip is not None else "every pixel masked"
        if reason is not None:
            log.warning("%s[SCI,%d]: %s; chip skipped", job.path.name, extver, reason)
            partial.skipped.append(extver)
            continue
        partial.chips.append(chip)
        del inputs
    return partial


def drizzle_partials(workspace, jobs: list[PartialJob]) -> list[ExposurePartial]:
    """`drizzle_partial` of every job in the workspace's workers, one job per chip
    (`split_by_chip`, unless ``workspace.split_chips`` is False), merged back into one
    `ExposurePartial` per job (chips in EXTVER order)."""
    chip_jobs, owner = split_by_chip(jobs, lambda job: sci_extvers(job.path),
                                     split=workspace.split_chips)
    parts: list[list] = [[] for _ in jobs]
    for i, part in zip(owner, workspace.map(drizzle_partial, chip_jobs)):
        parts[i].append(part)
    return [ExposurePartial.from_parts(job.path.name, [c for p in mine for c in p.chips],
                                       [k for p in mine for k in p.skipped])
            for job, mine in zip(jobs, parts)]


def emit_records(value, records):
    """Re-emit a worker's log records here; returns ``value``."""
    for record in records:
        # each record goes to the logger that made it (its module's), as it would in-process
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    return value


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_allocator: object = None


def _heap_allocator():
    """glibc of this worker with large blocks served from the heap, or None (another libc).

    A job allocates dozens of chip-sized (34 MB) arrays one after the other. glibc maps any
    block above 32 MB afresh and unmaps it when freed, so each costs its pages' zeroing and
    faults in the kernel: a third of the workers' CPU time went to system time. From the
    heap, freed blocks serve the next arrays; `run_captured` returns the free memory to the
    system after every job (``malloc_trim``), so an idle worker stays small.
    """
    global _allocator
    if _allocator is None:
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
            _allocator = libc
        except (OSError, AttributeError):
            _allocator = False
    return _allocator or None


def run_captured(fn, job):
    """Run a job in a worker, collecting the log records of the ``hapsvm`` loggers (every
    module's logger is below it) for the parent to re-emit."""
    libc = _heap_allocator()
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
        if libc is not None:
            libc.malloc_trim(0)


def save_mask(file, mask: np.ndarray) -> None:
    """Write a boolean mask as an ``.npz`` whose ``mask`` entry is deflated at level 1.

    Compressed because a sparse boolean image shrinks ~20x (the scratch is memory, the CR
    masks outlive the run); level 1 because numpy's default (6) costs 4x the time for a file a
    third smaller. `load_mask` and ``np.load`` read it as any ``np.savez_compressed`` file.
    """
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive, \
            archive.open("mask.npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array(entry, np.ascontiguousarray(mask, bool), allow_pickle=False)


def load_mask(path) -> np.ndarray:
    """A boolean mask saved by this module: plain ``.npy`` (scratch) or compressed (persisted)."""
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return data["mask"]
    return data
