"""Worker jobs of the drizzle stage: top-level functions with picklable arguments.

Each job runs in a worker process of a :class:`~hapcore.drizzle.workspace.DrizzleWorkspace`
(or inline with one worker) and leaves its arrays in memory-mapped scratch files:

* `run_chip_stats` -- sky statistics and static (low-pixel) masks of one exposure's chips;
* `drizzle_partial` -- one exposure drizzled onto the grid, cropped to its footprint;
* `blot_and_flag` -- the median blotted back onto one exposure's chips, and driz_cr's masks.

`run_captured` runs a job with its log records captured, so that the parent re-emits them
(`emit_records`) into the visit log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hapcore.drizzle.cr import detect_cosmic_rays, grow_mask, static_mask
from hapcore.drizzle.grid import OutputGrid, chip_plate_scale
from hapcore.drizzle.inputs import good_pixel_mask, read_chip
from hapcore.drizzle.kernel import blot_chip, drizzle_chip, new_accumulator
from hapcore.drizzle.pixmap import PixmapCache
from hapcore.drizzle.sky import sky_statistic
from hapcore.wcs.files import read_chip_wcs

__all__ = ["ChipStatsJob", "PartialJob", "BlotCRJob", "run_chip_stats", "drizzle_partial",
           "blot_and_flag", "CroppedImage", "load_partial", "load_mask", "run_captured",
           "emit_records", "reserve_rows"]

log = logging.getLogger(f"hapsvm.{__name__}")

# DQ flag of full-well saturation (WFC3, ACS, WFC3/IR): "good" for drizzling, but clipped
_SATURATED_BIT = 256
# boxes (pixels) around a saturated pixel and around a dropped (DQ-bad) pixel, chip side.
# Measured on four 2-exposure UVIS hapsim visits (seeds 11-14): 7 px around saturated pixels
# and around every pixel above half the saturation level, plus no test where a separate image
# had a hole or a partial pixel, left 98.6-99.1% of >5-sigma CR pixels masked; 5 px around
# saturated pixels only, 99.04-99.28%, star flux lost 0.02-0.05% (3 px: 0.15-0.19%)
_SUSPECT_GROW = 5
_DROPPED_GROW = 3


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


@dataclass(frozen=True)
class PartialJob:
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
class BlotCRJob:
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


def run_chip_stats(job: ChipStatsJob) -> dict:
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


def drizzle_partial(job: PartialJob) -> dict:
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
        if not (good_pixel_mask(chip.dq, job.good_bits) & chip.finite).any():
            # it would add nothing but zero weights: said, and left out like an empty chip
            log.warning("%s[SCI,%d]: every pixel flagged in DQ (none among the good bits %d); "
                        "chip skipped", job.path.name, extver, job.good_bits)
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
    for array in out.values():
        reserve_rows(array, y0, y1)
    acc = new_accumulator(grid.shape, kernel=job.kernel, out_img=out["sci"],
                          out_wht=out["wht"])
    masks = {}  # what each chip's weights excluded besides DQ, for the product's D###MASK
    for extver, chip_wcs, chip, pixmap in chips:
        good = good_pixel_mask(chip.dq, job.good_bits) & chip.finite
        masks[str(extver)] = []
        if extver in job.static_files:
            good &= ~np.load(job.static_files[extver])
            masks[str(extver)].append("static")
        if extver in job.cr_files:
            good &= ~load_mask(job.cr_files[extver])
            masks[str(extver)].append("cr")
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
            "skipped": skipped, "masks": masks, "layout": "grid"}


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


class CroppedImage:
    """A partial over its bounding box, read as full-width grid rows (zeros outside the box).

    The file holds the whole grid (``full=True``, what `drizzle_partial` writes) or only the
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
            raise TypeError("CroppedImage supports row slices only")
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

    def __init__(self, image: CroppedImage):
        self.image = image

    def __getitem__(self, rows) -> np.ndarray:
        return np.array(self.image.data[rows])


def load_partial(partial: dict, kind: str) -> CroppedImage:
    return CroppedImage(partial[kind], partial["box"], partial["shape"],
                         full=partial.get("layout") == "grid")


def blot_and_flag(job: BlotCRJob) -> dict:
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


def emit_records(value, records):
    """Re-emit a worker's log records here; returns ``value``."""
    for record in records:
        # each record goes to the logger that made it (its module's), as it would in-process
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    return value


def reserve_rows(array: np.memmap, start: int, stop: int) -> None:
    """Allocate the disk blocks of rows ``start:stop`` of a memory-mapped ``.npy`` file now.

    The files are sparse, and a page first written through the map on a full file system kills
    the process (SIGBUS) instead of raising: allocated here, a full disk is an ``OSError``
    (ENOSPC) that the entry point reports in one line. Only the rows the writer touches are
    allocated (a partial's box rows), so the files stay as sparse as before.
    """
    row_bytes = int(array.strides[0])
    if stop <= start or row_bytes <= 0:
        return
    with open(array.filename, "r+b") as fh:
        os.posix_fallocate(fh.fileno(), int(array.offset) + start * row_bytes,
                           (stop - start) * row_bytes)


def run_captured(fn, job):
    """Run a job in a worker, collecting the log records of the ``hapsvm`` loggers (every
    module's logger is below it) for the parent to re-emit."""
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


def load_mask(path) -> np.ndarray:
    """A boolean mask saved by this module: plain ``.npy`` (scratch) or compressed (persisted)."""
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return data["mask"]
    return data
