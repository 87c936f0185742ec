"""Products of two drizzle-stage runs on the same hapsim visit, compared (``bench_drizzle.py
--compare``): pixel differences, cosmic-ray masks, and both against the simulator's truth.

For every ``*_drc.fits`` product present in both folders: coverage (WHT > 0) and context
agreement, SCI differences where both are covered (largest and RMS, absolute and in units of
the product's sky noise), relative WHT differences and the summed flux. Cosmic-ray masks (the
compressed ``crmask-*`` files the filter products leave in ``.hapsvm-work``) are matched by
exposure and chip. Against the truth, for each run's filter products: the fraction of
>5-sigma truth CR pixels masked and the fraction of star flux masked where no CR hit
(``tests/drizzle/test_drizzle.py``'s measures, on every chip), the fluxes of isolated bright
stars (22 px aperture) over their true count rates, and ``bench_accuracy``'s ``cr_residual``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from astropy.wcs import WCS

__all__ = ["compare_products"]

_MASK_RE = re.compile(r"^crmask-(.+-sci\d+)-[0-9a-f]+\.npy$")


def _arrays(path: Path):
    with fits.open(path, memmap=False) as hdul:
        return (np.asarray(hdul["SCI"].data, np.float32), np.asarray(hdul["WHT"].data, np.float32),
                np.asarray(hdul["CTX"].data), WCS(hdul["SCI"].header), hdul[0].header)


def _pixel_differences(a: Path, b: Path) -> dict:
    sa, wa, ca, _, _ = _arrays(a)
    sb, wb, cb, _, _ = _arrays(b)
    cov_a, cov_b = wa > 0, wb > 0
    both = cov_a & cov_b
    _, _, sigma = sigma_clipped_stats(sa[both][::97], sigma=3.0, maxiters=5)
    d = (sb.astype(np.float64) - sa)[both]
    rel_w = np.abs(wb[both].astype(np.float64) - wa[both]) / wa[both]
    flux_a, flux_b = float(np.sum(sa[both], dtype=np.float64)), float(np.sum(sb[both],
                                                                          dtype=np.float64))
    return {"covered_a": int(cov_a.sum()), "coverage_differs": int((cov_a ^ cov_b).sum()),
            "ctx_differs": int((ca != cb).sum()), "sci_identical": bool(np.array_equal(sa, sb)),
            "sky_sigma": float(sigma), "sci_max_abs_diff": float(np.abs(d).max()),
            "sci_rms_diff": float(np.sqrt(np.mean(d * d))),
            "sci_max_abs_diff_sigma": float(np.abs(d).max() / sigma),
            "sci_pixels_diff_gt_0.01sigma": int((np.abs(d) > 0.01 * sigma).sum()),
            "wht_max_rel_diff": float(rel_w.max()),
            "wht_pixels_rel_diff_gt_1e-5": int((rel_w > 1e-5).sum()),
            "flux_rel_diff": (flux_b - flux_a) / abs(flux_a) if flux_a else None}


def _masks(out: Path) -> dict[str, Path]:
    found = {}
    for file in out.glob(".hapsvm-work/*/crmask-*.npy"):
        m = _MASK_RE.match(file.name)
        if m:
            found[m.group(1)] = file
    return found


def _load_mask(file: Path) -> np.ndarray:
    with np.load(file) as data:
        return data["mask"]


def _mask_agreement(out: Path, ref: Path) -> dict:
    mine, theirs = _masks(out), _masks(ref)
    both = union = only_a = only_b = 0
    for key in sorted(set(mine) & set(theirs)):
        a, b = _load_mask(theirs[key]), _load_mask(mine[key])
        both += int((a & b).sum())
        union += int((a | b).sum())
        only_a += int((a & ~b).sum())
        only_b += int((b & ~a).sum())
    return {"chips": len(set(mine) & set(theirs)), "flagged_ref": both + only_a,
            "flagged_new": both + only_b, "only_ref": only_a, "only_new": only_b,
            "agreement_pct": round(100.0 * both / union, 3) if union else 100.0}


def _aperture_flux(data, x, y, r=22.0, r_in=26.0, r_out=34.0):
    from photutils.aperture import (
        ApertureStats,
        CircularAnnulus,
        CircularAperture,
        aperture_photometry,
    )

    pos = np.column_stack([x, y])
    ap = CircularAperture(pos, r)
    sky = ApertureStats(data, CircularAnnulus(pos, r_in, r_out)).median
    return np.asarray(aperture_photometry(data, ap)["aperture_sum"]) - sky * ap.area


def _star_fluxes(product: Path, visit: Path, band: str) -> np.ndarray:
    """Aperture flux / true count rate of bright isolated truth stars fully covered."""
    sci, wht, _, wcs, _ = _arrays(product)
    truth = Table.read(visit / "truth_sources.ecsv")
    x, y = wcs.all_world2pix(np.asarray(truth["ra"], float), np.asarray(truth["dec"], float), 0)
    rate = np.asarray(truth[f"countrate_{band}"], float)
    ratios = []
    for i in np.nonzero((np.asarray(truth["type"]) == "star") & (rate > 200.0))[0]:
        xi, yi = round(x[i]), round(y[i])
        if not (40 < xi < sci.shape[1] - 40 and 40 < yi < sci.shape[0] - 40):
            continue
        d = np.hypot(x - x[i], y - y[i])
        d[i] = np.inf
        if ((d < 40) & (rate > 0.002 * rate[i])).any():
            continue
        if wht[yi - 35:yi + 36, xi - 35:xi + 36].min() <= 0:
            continue
        ratios.append(_aperture_flux(sci, [x[i]], [y[i]])[0] / rate[i])
    return np.asarray(ratios)


def _truth_cr_measures(out: Path, product: Path, visit: Path, fdp) -> dict:
    """test_drizzle's CR measures over every chip: strong CR pixels masked, star flux masked."""
    from hapcore.drizzle.pixmap import interpolated_pixmap
    from hapcore.wcs.files import read_chip_wcs

    prod, _, ctx, wcs, _ = _arrays(product)
    masks = _masks(out)
    truth = Table.read(visit / "truth_sources.ecsv")
    band = fdp.filters.lower()
    strong = found = 0
    star_lost = star_total = 0.0
    full = (1 << len(fdp.edp_list)) - 1
    for edp in fdp.edp_list:
        root = edp.filename.split("_")[0]
        path = out / edp.full_filename
        with fits.open(visit / "truth_crmask" / f"{root}_crmask.fits", memmap=False) as crs:
            truth_masks = [h.data.astype(bool) for h in crs if h.data is not None]
        for extver, chip_wcs in read_chip_wcs(path).items():
            with fits.open(path, memmap=False) as hdul:
                sci = hdul["SCI", extver].data.astype(float)
                t, rn = hdul[0].header["EXPTIME"], hdul[0].header["READNSEA"]
            truth_cr = truth_masks[extver - 1]
            mask = _load_mask(masks[f"{edp.product_basename}-sci{extver}"])
            pm = interpolated_pixmap(chip_wcs, wcs, shape=sci.shape)
            gx = np.clip(np.rint(pm[..., 0]).astype(int), 0, prod.shape[1] - 1)
            gy = np.clip(np.rint(pm[..., 1]).astype(int), 0, prod.shape[0] - 1)
            expected = prod[gy, gx] * t
            sky = np.median(sci[::7, ::7])
            sigma = np.sqrt(np.abs(expected + sky) + rn ** 2)
            inside = (pm[..., 0] > 3) & (pm[..., 0] < prod.shape[1] - 3) & \
                (pm[..., 1] > 3) & (pm[..., 1] < prod.shape[0] - 3)
            # detectable only where every exposure overlaps (the test's 'both')
            target = truth_cr & (sci - sky - expected > 5 * sigma) & inside & \
                (ctx[gy, gx] == full)
            strong += int(target.sum())
            found += int((target & mask).sum())
            sx, sy = chip_wcs.all_world2pix(np.asarray(truth["ra"], float),
                                            np.asarray(truth["dec"], float), 0)
            stars = np.nonzero((np.asarray(truth["type"]) == "star") &
                               (np.asarray(truth[f"countrate_{band}"]) > 50))[0]
            for i in stars:
                if not (10 < sx[i] < sci.shape[1] - 10 and 10 < sy[i] < sci.shape[0] - 10):
                    continue
                j0, i0 = round(sy[i]), round(sx[i])
                box = (slice(j0 - 8, j0 + 9), slice(i0 - 8, i0 + 9))
                signal = np.clip(sci[box] - sky, 0, None)
                star_total += signal.sum()
                star_lost += signal[mask[box] & ~truth_cr[box]].sum()
    return {"strong_cr_pixels": strong,
            "strong_cr_masked_pct": round(100.0 * found / max(strong, 1), 3),
            "star_flux_masked_pct": round(100.0 * star_lost / max(star_total, 1e-30), 4)}


def compare_products(total, out: Path, ref: Path, visit: Path) -> dict:
    """The comparison of ``out`` (this run) with ``ref`` (see the module notes)."""
    import bench_accuracy

    result = {"products": {}, "cr_masks": _mask_agreement(out, ref), "truth": {}}
    for product in sorted(ref.glob("hst_*_dr[cz].fits")):
        if (out / product.name).exists():
            result["products"][product.name] = _pixel_differences(product, out / product.name)
    truth = Table.read(visit / "truth_sources.ecsv")
    for fdp in total.fdp_list:
        if len(fdp.edp_list) < 2:
            continue
        band = fdp.filters.lower()
        entry = {}
        exposures = [out / e.full_filename for e in fdp.edp_list]
        for label, folder in (("ref", ref), ("new", out)):
            product = folder / fdp.drizzle_filename
            sci, wht, _, wcs, _ = _arrays(product)
            scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)
            ratios = _star_fluxes(product, visit, band)
            entry[label] = {
                "stars": int(ratios.size),
                "flux_ratio_median": float(np.median(ratios)) if ratios.size else None,
                "flux_ratio_scatter": float(1.4826 * np.median(np.abs(
                    ratios - np.median(ratios)))) if ratios.size else None,
                "cr_residual": bench_accuracy._cr_metrics(visit, sci, wht, wcs, truth, scale,
                                                          band, exposures),
                **_truth_cr_measures(folder, product, visit, fdp)}
            entry[label]["_ratios"] = ratios
        a, b = entry["ref"].pop("_ratios"), entry["new"].pop("_ratios")
        if a.size == b.size and a.size:
            entry["star_flux_max_rel_diff"] = float(np.max(np.abs(b / a - 1)))
        result["truth"][fdp.filters] = entry
    return result
