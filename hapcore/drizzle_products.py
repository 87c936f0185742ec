"""The drizzle stage: exposure, filter and total products of one detector (spec §5).

Public API (no Prefect here; the task layer wraps these)::

    grid = build_detector_grid(total, output_dir)
    with DrizzleWorkspace(grid, output_dir=output_dir, n_workers=2) as ws:
        drizzle_filter_product(fdp, workspace=ws)      # finds and keeps the CR masks
        drizzle_exposure_product(edp, workspace=ws)
        drizzle_total_product(total, workspace=ws)     # excludes the filters' CR pixels
    # or all of it, in spec order:
    paths = drizzle_detector(total, output_dir=output_dir, n_workers=2)

Inputs are the SVM copies ``output_dir/<ExposureProduct.full_filename>`` written by the
alignment stage; they are only ever opened read-only. Everything intermediate (pixel maps,
separately drizzled images, medians, cosmic-ray masks, per-exposure partial drizzles) lives in a
private scratch folder inside ``output_dir`` that is deleted when the workspace closes: nothing is
written into an input or an SVM copy (drizzlepac writes CR flags into its copies' DQ, §12.1).

Work is spread over ``n_workers`` processes per exposure (the drizzle C kernel holds the GIL and
astropy.wcs is not thread-safe). Pixel maps are computed once per chip and memory-mapped by all
workers; partial drizzles with identical settings are shared between filter and total products.
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
from hapcore.wcs_files import read_chip_wcs

__all__ = [
    "DrizzleWorkspace",
    "build_detector_grid",
    "drizzle_exposure_product",
    "drizzle_filter_product",
    "drizzle_total_product",
    "drizzle_detector",
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
    """Drizzle every chip of one exposure onto the grid; save ``sci``/``wht`` in scratch."""
    grid = job.grid
    acc = new_accumulator(grid.shape, kernel=job.kernel)
    used, skipped = [], []
    grid_scale = grid.pixel_scale_arcsec
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
        good = good_pixel_mask(chip.dq, job.good_bits) & chip.finite
        if extver in job.static_files:
            good &= ~np.load(job.static_files[extver])
        if extver in job.cr_files:
            good &= ~np.load(job.cr_files[extver])
        weight = _weight_map(chip, job.wht_type, job.sky) * good
        ratio = grid_scale / chip_plate_scale(chip_wcs)
        drizzle_chip(acc, chip.sci - np.float32(job.sky), pixmap, weight=weight,
                     exptime=chip.exptime, pixfrac=job.pixfrac, iscale=ratio**2,
                     pixel_scale_ratio=ratio)
        used.append(extver)
    sci_file = Path(f"{job.out_stem}-sci.npy")
    wht_file = Path(f"{job.out_stem}-wht.npy")
    wht = acc.out_wht
    sci = np.where(wht > 0, acc.out_img, 0.0).astype(np.float32)
    np.save(sci_file, sci)
    np.save(wht_file, wht.astype(np.float32))
    return {"sci": sci_file, "wht": wht_file, "used": used, "skipped": skipped}


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
        blot = blot_chip(median, pixmap, interp=job.interp, sinscl=job.sinscl,
                         iscale=1.0 / ratio**2)
        covered = blot_chip(coverage, pixmap, interp="nearest") > 0.5
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


class DrizzleWorkspace:
    """Grid, pixel-map cache, scratch folder, CR masks and worker pool of one detector's run.

    Parameters
    ----------
    grid : OutputGrid
        The detector's meta WCS (`build_detector_grid`).
    output_dir : path-like
        Where the SVM copies are and the products go; the scratch folder is created inside.
    n_workers : int, optional
        Worker processes (1 = everything in this process).
    pixmap_step : int, optional
        Node spacing of the interpolated pixel maps.

    Notes
    -----
    Use as a context manager; closing deletes the scratch folder (CR masks included).
    """

    def __init__(self, grid: OutputGrid, *, output_dir: str | os.PathLike, n_workers: int = 2,
                 pixmap_step: int = 64):
        self.grid = grid
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=".drizzle-scratch-", dir=self.output_dir))
        self.pixmap_cache = PixmapCache(self.scratch, step=pixmap_step)
        self.n_workers = max(1, int(n_workers))
        self.cr_masks: dict[tuple[str, int], Path] = {}
        self._partials: dict[str, dict] = {}
        self._stats: dict[tuple, dict] = {}
        self._pool: ProcessPoolExecutor | None = None

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


def _write(ws: DrizzleWorkspace, product, edps, partials, pars) -> Path:
    """Combine partials and write the product file with its headers."""
    fill = 0.0 if pars.final_fillval is None else float(pars.final_fillval)
    sci, wht, ctx = combine_partials([(np.load(p["sci"], mmap_mode="r"),
                                       np.load(p["wht"], mmap_mode="r")) for p in partials],
                                     fillval=fill)
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
    log.info("%s: written (%d inputs, %.1f%% of the grid covered)", path.name, len(edps),
             100.0 * float(np.mean(wht > 0)))
    return path


def _final_jobs(ws, edps, pars, skies, *, static_files=None, use_cr: bool) -> list[_PartialJob]:
    jobs = []
    for edp in edps:
        cr_files = {}
        if use_cr:
            cr_files = {ext: f for (name, ext), f in ws.cr_masks.items()
                        if name == edp.full_filename}
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
    partials = ws.partials(_final_jobs(ws, [edp], pars, skies, use_cr=False))
    return _write(ws, edp, [edp], partials, pars)


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
    if not do_cr:
        why = "single exposure" if len(edps) < 2 else "CR steps disabled by its parameters"
        log.info("%s: no cosmic-ray rejection (%s)", fdp.drizzle_filename, why)
    else:
        _find_cosmic_rays(ws, fdp, edps, pars, skies, static_files)
    partials = ws.partials(_final_jobs(ws, edps, pars, skies, use_cr=do_cr))
    path = _write(ws, fdp, edps, partials, pars)
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
    """Separate drizzle, median, blot and driz_cr; CR masks go into ``ws.cr_masks``."""
    sep_jobs = [_PartialJob(
        path=ws.svm_path(e), grid=ws.grid, cache=ws.pixmap_cache, kernel=pars.driz_sep_kernel,
        pixfrac=pars.driz_sep_pixfrac, good_bits=pars.driz_sep_bits, wht_type="EXP",
        sky=float(skies[e.full_filename]), static_files=static_files.get(e.full_filename, {}))
        for e in edps]
    seps = ws.partials(sep_jobs)
    images = [np.load(p["sci"], mmap_mode="r") for p in seps]
    weights = [np.load(p["wht"], mmap_mode="r") for p in seps]
    weight_medians = [float(np.median(np.asarray(w[:: 4, :: 4])[np.asarray(w[::4, ::4]) > 0]))
                      if np.any(np.asarray(w[::4, ::4]) > 0) else 0.0 for w in weights]
    ny, nx = ws.grid.shape
    median = np.lib.format.open_memmap(ws.scratch / f"median-{fdp.product_basename}.npy",
                                       mode="w+", dtype=np.float32, shape=(ny, nx))
    coverage = np.lib.format.open_memmap(ws.scratch / f"cover-{fdp.product_basename}.npy",
                                         mode="w+", dtype=np.float32, shape=(ny, nx))
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
    del median, coverage
    cr_jobs = [_BlotCRJob(
        path=ws.svm_path(e), grid=ws.grid, cache=ws.pixmap_cache,
        median_file=ws.scratch / f"median-{fdp.product_basename}.npy",
        coverage_file=ws.scratch / f"cover-{fdp.product_basename}.npy",
        sky=float(skies[e.full_filename]), interp=pars.blot_interp, sinscl=pars.blot_sinscl,
        snr=tuple(pars.driz_cr_snr), scale=tuple(pars.driz_cr_scale), grow=pars.driz_cr_grow,
        out_stem=ws.scratch / f"crmask-{e.product_basename}") for e in edps]
    for edp, result in zip(edps, ws.map(_blot_cr, cr_jobs)):
        for extver, file in result["files"].items():
            ws.cr_masks[(edp.full_filename, extver)] = file
        log.info("%s: %s cosmic-ray pixels flagged", edp.full_filename,
                 ", ".join(f"SCI,{k}: {v}" for k, v in sorted(result["counts"].items())))


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
    excluded (run `drizzle_filter_product` first)."""
    ws = workspace
    edps = total_inputs(total)
    pars = total.parameters.drizzle
    skies, _ = _sky_levels(ws, edps, pars, static=False)
    n_masks = sum(1 for (name, _) in ws.cr_masks if name in {e.full_filename for e in edps})
    log.info("%s: %d inputs, %d chip CR masks applied", total.drizzle_filename, len(edps),
             n_masks)
    partials = ws.partials(_final_jobs(ws, edps, pars, skies, use_cr=True))
    return _write(ws, total, edps, partials, pars)


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
    with DrizzleWorkspace(grid, output_dir=output_dir, n_workers=n_workers) as ws:
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
