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
statistics; `hapcore.drizzle_trailer`).

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
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from hapcore.atomic import atomic_output
from hapcore.drizzle_cr import combine_images, detect_cosmic_rays, static_mask
from hapcore.drizzle_grid import OutputGrid, build_detector_grid, chip_plate_scale
from hapcore.drizzle_headers import hdrtab, product_headers
from hapcore.drizzle_inputs import exposure_keywords, good_pixel_mask, read_chip
from hapcore.drizzle_kernel import blot_chip, combine_partials, drizzle_chip, new_accumulator
from hapcore.drizzle_pixmap import PixmapCache
from hapcore.drizzle_sky import exposure_sky_levels, sky_statistic
from hapcore.drizzle_trailer import format_drizzle_trailer, write_drizzle_trailer
from hapcore.wcs_files import read_chip_wcs

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
    "total_inputs",
    "write_drizzle_product",
]

log = logging.getLogger("hapsvm")


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
    out_stem: Path


def _chip_stats(job: _ChipStatsJob) -> dict:
    """Sky statistic and (optionally) the low-pixel mask of every chip of one exposure."""
    result = {"sky": {}, "low": {}, "empty": []}
    for extver in read_chip_wcs(job.path):
        chip = read_chip(job.path, extver)
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
    """Drizzle every chip of one exposure onto the grid; save ``sci``/``wht`` in scratch.

    The accumulation covers only the bounding box of the exposure's footprint on the grid
    (``box`` in the result): a full-frame UVIS exposure fills about a third of a 4-exposure
    mosaic grid, and allocating, saving and combining the empty rest cost more than drizzling.
    """
    grid = job.grid
    used, skipped = [], []
    grid_scale = grid.pixel_scale_arcsec
    chips = []
    for extver, chip_wcs in read_chip_wcs(job.path).items():
        chip = read_chip(job.path, extver)
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
    acc = new_accumulator((max(y1 - y0, 1), max(x1 - x0, 1)), kernel=job.kernel)
    for extver, chip_wcs, chip, pixmap in chips:
        good = good_pixel_mask(chip.dq, job.good_bits) & chip.finite
        if extver in job.static_files:
            good &= ~np.load(job.static_files[extver])
        if extver in job.cr_files:
            good &= ~load_mask(job.cr_files[extver])
        weight = _weight_map(chip, job.wht_type, job.sky) * good
        ratio = grid_scale / chip_plate_scale(chip_wcs)
        # integer shifts are exact in float64: same result as on the full grid
        drizzle_chip(acc, chip.sci - np.float32(job.sky), _shifted(pixmap, x0, y0),
                     weight=weight, exptime=chip.exptime, pixfrac=job.pixfrac,
                     iscale=ratio**2, pixel_scale_ratio=ratio)
        used.append(extver)
    sci_file = Path(f"{job.out_stem}-sci.npy")
    wht_file = Path(f"{job.out_stem}-wht.npy")
    wht = acc.out_wht[: y1 - y0, : x1 - x0]
    sci = np.where(wht > 0, acc.out_img[: y1 - y0, : x1 - x0], 0.0).astype(np.float32)
    np.save(sci_file, sci)
    np.save(wht_file, wht.astype(np.float32))
    return {"sci": sci_file, "wht": wht_file, "box": box, "shape": grid.shape, "used": used,
            "skipped": skipped}


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
    if x0 == 0 and y0 == 0:
        return pixmap
    out = np.array(pixmap, dtype=np.float64)
    out[..., 0] -= x0
    out[..., 1] -= y0
    return out


class _CroppedImage:
    """A partial stored over its bounding box, read as full-width grid rows (zeros outside)."""

    def __init__(self, file: Path, box: tuple[int, int, int, int], shape: tuple[int, int]):
        self.data = np.load(file, mmap_mode="r")
        self.box = tuple(int(v) for v in box)
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(np.float32)

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


def _load_partial(partial: dict, kind: str) -> _CroppedImage:
    return _CroppedImage(partial[kind], partial["box"], partial["shape"])


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
        covered = blot_chip(np.array(coverage[y0:y1, x0:x1]), local, interp="nearest") > 0.5
        t = chip.exptime
        cr = detect_cosmic_rays((chip.sci - np.float32(job.sky)) * t, blot * t,
                                sky_electrons=job.sky * t, readnoise=chip.readnoise,
                                snr=job.snr, scale=job.scale, grow=job.grow, valid=covered)
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
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    def map(self, fn, jobs: list) -> list:
        """Run ``fn`` over ``jobs`` in the worker pool (or inline), re-emitting worker logs."""
        if self.n_workers <= 1 or len(jobs) <= 1:
            return [fn(job) for job in jobs]
        if self._pool is None:
            # spawn, not fork: the caller may be running Prefect threads
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.n_workers, mp_context=ctx)
        futures = [self._pool.submit(_run_captured, fn, job) for job in jobs]
        results = []
        for future in futures:
            value, records = future.result()
            for record in records:
                if log.isEnabledFor(record.levelno):
                    log.handle(record)
            results.append(value)
        return results

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
    sci, wht, ctx = combine_partials([(_load_partial(p, "sci"), _load_partial(p, "wht"))
                                      for p in partials], fillval=fill)
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

    Uses the exposure's ``final_*`` parameters (``resetbits`` 0: no CR masks applied).
    """
    ws = workspace
    pars = edp.parameters.drizzle
    skies, _ = _sky_levels(ws, [edp], pars, static=False)
    t0 = time.perf_counter()
    partials = ws.partials(_final_jobs(ws, [edp], pars, skies, use_cr=False))
    return _write(ws, edp, [edp], partials, pars, level="exposure", skies=skies,
                  cr_lines=["none (exposure products are drizzled without CR masks)"], t0=t0)


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
    again; the final mask is the union of both passes.
    """
    first = _cr_pass(ws, fdp, edps, pars, skies, static_files, cr_files={}, tag="p1")
    second = _cr_pass(ws, fdp, edps, pars, skies, static_files, cr_files=first, tag="p2")
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


def _cr_pass(ws, fdp, edps, pars, skies, static_files, *, cr_files: dict,
             tag: str) -> dict[str, dict[int, Path]]:
    """One separate-drizzle / median / blot / driz_cr pass; returns the per-chip mask files."""
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
    weight_medians = [w.covered_median() for w in weights]
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
            noise_electrons=(exptime, readnoise, sky_mean), weight_medians=weight_medians)
        # CRs are only detectable where at least two exposures overlap
        n_cover = sum((np.asarray(w[start:stop]) > 0).astype(np.int8) for w in weights)
        coverage[start:stop] = (n_cover >= 2).astype(np.float32)
    median.flush()
    coverage.flush()
    del median, coverage, images, weights
    cr_jobs = [_BlotCRJob(
        path=ws.svm_path(e), grid=ws.grid, cache=ws.pixmap_cache,
        median_file=median_file, coverage_file=coverage_file,
        sky=float(skies[e.full_filename]), interp=pars.blot_interp, sinscl=pars.blot_sinscl,
        snr=tuple(pars.driz_cr_snr), scale=tuple(pars.driz_cr_scale), grow=pars.driz_cr_grow,
        out_stem=ws.scratch / f"crmask-{e.product_basename}-{tag}") for e in edps]
    masks: dict[str, dict[int, Path]] = {}
    for edp, result in zip(edps, ws.map(_blot_cr, cr_jobs)):
        masks[edp.full_filename] = dict(result["files"])
    median_file.unlink(missing_ok=True)
    coverage_file.unlink(missing_ok=True)
    return masks


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


def drizzle_total_product(total, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle the total (detection) product; CR pixels found by the filter products are
    excluded.

    The CR masks come from this workspace's `drizzle_filter_product` calls or, for filters
    drizzled by an earlier workspace on the same ``work_dir`` (`open_detector_workspace`), from
    disk; which is logged. A filter that should have masks but has none is warned about (its
    cosmic rays reach the total).
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
    return _write(ws, total, edps, partials, pars, level="total", skies=skies,
                  cr_lines=_cr_lines(ws, edps, computed=False), t0=t0)


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
        With parameters assigned (`hapcore.product_parameters.assign_product_parameters`).
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
        # every chip's pixmap once, in parallel, before anything needs it
        _ = ws.map(_prepare_pixmaps, [(ws.svm_path(e), grid, ws.pixmap_cache)
                                      for e in total.edp_list])
        for fdp in total.fdp_list:
            written.append(drizzle_filter_product(fdp, workspace=ws))
            # all exposure drizzles of the filter in one parallel batch
            ws.partials([job for edp in fdp.edp_list
                         for job in _final_jobs(ws, [edp], edp.parameters.drizzle,
                                                {}, use_cr=False)])
            for edp in fdp.edp_list:
                written.append(drizzle_exposure_product(edp, workspace=ws))
        written.append(drizzle_total_product(total, workspace=ws))
    log.info("%s: %d drizzled products in %.1f s", total.product_basename, len(written),
             time.perf_counter() - t0)
    return written


def _prepare_pixmaps(args) -> int:
    path, grid, cache = args
    for extver, chip_wcs in read_chip_wcs(path).items():
        cache.get(path, extver, grid, chip_wcs=chip_wcs)
    return 0
