"""Cosmic-ray rejection of a filter product: static mask, separate drizzles, median, blot,
driz_cr, in one or two passes (`find_cosmic_rays`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits

from hapcore.atomic import atomic_output
from hapcore.drizzle.cr import combine_images
from hapcore.drizzle.jobs import (
    BlotCRJob,
    PartialJob,
    blot_and_flag,
    load_mask,
    load_partial,
    reserve_rows,
)

__all__ = ["combine_static", "find_cosmic_rays"]

log = logging.getLogger(f"hapsvm.{__name__}")

# driz_cr excess test of the first CR pass (`hapcore.drizzle.cr.detect_cosmic_rays`), its
# fractions measured on each chip (`hapcore.drizzle.cr.calibrate_excess_fraction`). The test is
# kept away from pixels whose blot is not good to a fraction of the signal (`_blot_cr`):
_CR_EXCESS_FRACTION = "auto"
# filters with more exposures than this get one CR pass, not two (`_find_cosmic_rays`)
_CR_SECOND_PASS_MAX_EXPOSURES = 3


def combine_static(ws, fdp, stats) -> dict[str, dict[int, Path]]:
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


def find_cosmic_rays(ws, fdp, edps, pars, skies, static_files) -> None:
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
        log.debug("%s: %s cosmic-ray pixels flagged (first pass, both passes)",
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
    sep_jobs = [PartialJob(
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
    for array in (median, coverage):
        reserve_rows(array, 0, ny)          # a full disk: OSError here, not SIGBUS below
    images = [load_partial(p, "sci") for p in seps]
    weights = [load_partial(p, "wht") for p in seps]
    valid_weights = [load_partial(p, "wht") for p in validity] if validity else None
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
    cr_jobs = [BlotCRJob(
        path=ws.svm_path(e), grid=ws.grid, cache=ws.pixmap_cache,
        median_file=median_file, coverage_file=coverage_file,
        sky=float(skies[e.full_filename]), interp=pars.blot_interp, sinscl=pars.blot_sinscl,
        snr=tuple(pars.driz_cr_snr), scale=tuple(pars.driz_cr_scale), grow=pars.driz_cr_grow,
        good_bits=pars.driz_sep_bits,
        excess_fraction=excess_fraction,
        out_stem=ws.scratch / f"crmask-{e.product_basename}-{tag}") for e in edps]
    masks: dict[str, dict[int, Path]] = {}
    for edp, result in zip(edps, ws.map(blot_and_flag, cr_jobs)):
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
