"""Accuracy of a visit's products against hapsim's truth; works on hapsvm's and drizzlepac's files.

    python benchmarks/bench_accuracy.py VISIT_DIR PRODUCT_DIR     # prints one JSON object

Metrics (all computed identically for both pipelines, from the files alone):

* ``align``: every SVM copy ``hst_*_fl?.fits`` (the exposures with the pipeline's final WCS):
  RMS over a 64-px grid of every chip of the on-sky distance between the pipeline's WCS and the
  true WCS (``truth_wcs/``), in mas (as ``tests/test_align.py::_chip_errors``); we report the
  median and the maximum over chips.
* ``catalog_astrometry``: per filter product, median and RMS (mas) of RA/DEC of point-catalog
  entries minus the true position of bright isolated stars (expected S/N >= 50).
* ``photometry``: isolated truth stars (no other source within 0.55", no galaxy within 1.5")
  matched in RA/DEC to the filter point catalog; ``MagAp2 + apcorr - abmag_<f>`` where
  ``apcorr = 2.5 log10(f2)`` and ``f2`` is the fraction of a star's flux measured in aperture 2
  minus the annulus sky, computed on hapsim's PSF model (Gaussian mixture) resampled to the
  product's pixel scale and broadened by the drizzle square kernel (one native pixel) with the
  same photometry code as the catalogs (``iraf_style_photometry``). The same ``apcorr`` is used
  for both pipelines. ``bias`` = median over expected S/N >= 50; ``scatter`` = 1.4826 x MAD over
  expected S/N >= 20.
* ``completeness_sn10``: fraction of truth stars with expected aperture-2 S/N >= 10 inside the
  filter product's footprint (WHT > 0 in the 5x5 px around them, 20 px from the edge) that have
  a point-catalog entry within max(0.1", 1.5 px). ``spurious``: fraction of point-catalog entries
  with no truth source of any brightness within max(0.2", 3 px); ``spurious_flags_lt5`` the same
  among entries with ``Flags < 5`` (the HAP catalogs' "good" sources).
  Expected S/N (pipeline independent): S = countrate * f2 * total exptime (e-),
  N^2 = S + n_exp * A * sigma^2 with A the aperture area in native pixels and sigma the median
  per-pixel ERR of the input exposures (e-).
* ``cr_residual``: every truth cosmic-ray pixel (``truth_crmask/``) is mapped through the true
  WCS into the filter product; away from sources (0.4" from truth stars and galaxies brighter
  than AB 27, 1.5" from stars brighter than AB 19) and where WHT > 0, ``frac_gt5sigma`` is the
  fraction of those pixels whose (SCI - sky) is above 5 sigma (sigma: clipped sky noise scaled
  by sqrt(median WHT / WHT)); ``floor_gt5sigma`` is the same fraction over all other sky pixels
  (the false-alarm floor).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: aperture 2 radius and sky annulus (inner, width), arcsec, from configs/ (as drizzlepac)
APERTURES = {"wfc3/uvis": (0.15, 0.25, 0.25), "acs/wfc": (0.15, 0.25, 0.25),
             "acs/hrc": (0.125, 0.25, 0.25), "wfc3/ir": (0.45, 0.25, 0.25)}

FILTER_RE = re.compile(r"^hst_.*_(f\d+[a-z]+)_[a-z0-9]{6}_dr[zc]\.fits$")
COPY_RE = re.compile(r"^hst_.*_([a-z0-9]{8})_fl[tc]\.fits$")


def _truth_wcs(visit: Path, rootname: str, extver: int) -> WCS:
    from hapsim import truth_wcs

    # the complete truth: UVIS and WFC chips carry NPOL/D2IM lookup tables
    return truth_wcs(visit / "truth_wcs" / f"{rootname}_sci{extver}.hdr")


def _spec(detector):
    import hapsim.detectors as d

    for name in ("DETECTORS", "DETECTOR_SPECS", "SPECS"):
        table = getattr(d, name, None)
        if isinstance(table, dict) and detector in table:
            return table[detector]
    return d.get_detector(detector)


def _rootname_of(copy_name: str, visit: Path) -> str | None:
    m = COPY_RE.match(copy_name)
    if not m:
        return None
    hits = sorted((visit / "truth_wcs").glob(f"{m.group(1)}*_sci1.hdr"))
    return hits[0].name.split("_")[0] if hits else None


def align_metrics(visit: Path, products: Path) -> dict:
    from hapcore.wcs.files import read_chip_wcs

    rms = {}
    for path in sorted(products.glob("hst_*_fl[tc].fits")):
        root = _rootname_of(path.name, visit)
        if root is None:
            continue
        for extver, wcs in read_chip_wcs(path).items():
            nx, ny = wcs.pixel_shape
            gy, gx = np.mgrid[0:ny:64, 0:nx:64]
            gx, gy = gx.ravel().astype(float), gy.ravel().astype(float)
            ra, dec = wcs.all_pix2world(gx, gy, 0)
            tra, tdec = _truth_wcs(visit, root, extver).all_pix2world(gx, gy, 0)
            sep = np.hypot((ra - tra) * np.cos(np.radians(tdec)), dec - tdec) * 3.6e6
            rms[f"{root}[{extver}]"] = float(np.sqrt(np.mean(sep ** 2)))
    if not rms:
        return {"n_chips": 0}
    v = list(rms.values())
    return {"n_chips": len(v), "median_chip_rms_mas": round(float(np.median(v)), 2),
            "max_chip_rms_mas": round(float(np.max(v)), 2)}


def _ap2_fraction(detector: str, out_scale: float) -> float:
    from photutils.aperture import CircularAnnulus, CircularAperture

    from hapcore.catalogs.photometry import iraf_style_photometry
    from hapsim.psf import GaussianMixturePSF

    spec = _spec(detector)
    r2, sky_in, sky_w = APERTURES[detector]
    native = spec.idcscale
    # rendering integrates over a native pixel, drizzling (square kernel, pixfrac 1) adds another
    extra = 2 * (native / out_scale) ** 2 / 12.0
    sig = np.sqrt((np.asarray(spec.psf_sigmas_arcsec) / out_scale) ** 2 + extra)
    psf = GaussianMixturePSF(sig, np.asarray(spec.psf_weights))
    half = int(np.ceil((sky_in + sky_w) / out_scale)) + 10
    stamp = psf.stamps([0.0], [0.0], half)[0]
    pos = (half, half)
    phot = iraf_style_photometry([CircularAperture(pos, r2 / out_scale)],
                                 CircularAnnulus(pos, sky_in / out_scale,
                                                 (sky_in + sky_w) / out_scale), stamp)
    return float(phot["flux_1"][0])


def _exposure_noise(visit: Path, exposures: list[Path]) -> dict:
    """filter -> (n_exp, total exptime, median per-pixel ERR in e-)."""
    out: dict = {}
    for path in exposures:
        with fits.open(path, memmap=False) as h:
            filt = next(h[0].header[k] for k in ("FILTER", "FILTER1", "FILTER2")
                        if k in h[0].header and not str(h[0].header[k]).upper().startswith("CLEAR"))
            t = float(h[0].header["EXPTIME"])
            errs = [np.median(hdu.data[::4, ::4]) for hdu in h if hdu.name == "ERR"]
            bunit = str(h["SCI", 1].header.get("BUNIT", "ELECTRONS")).upper()
            sigma = float(np.median(errs)) * (t if "/S" in bunit else 1.0)
        n, tt, s = out.get(filt.lower(), (0, 0.0, []))
        out[filt.lower()] = (n + 1, tt + t, s + [sigma])
    return {f: (n, tt, float(np.median(s))) for f, (n, tt, s) in out.items()}


def _sky_xy(wcs: WCS, ra, dec):
    x, y = wcs.all_world2pix(ra, dec, 0)
    return np.asarray(x), np.asarray(y)


def filter_metrics(visit: Path, products: Path, detector: str, exposures: list[Path]) -> dict:
    truth = Table.read(visit / "truth_sources.ecsv")
    noise = _exposure_noise(visit, exposures)
    spec = _spec(detector)
    r2 = APERTURES[detector][0]
    results = {}
    t_ra, t_dec = np.asarray(truth["ra"], float), np.asarray(truth["dec"], float)
    is_star = np.asarray(truth["type"]) == "star"
    # isolation, on a local tangent plane in arcsec
    dec0 = np.median(t_dec)
    txy = np.column_stack([(t_ra - np.median(t_ra)) * np.cos(np.radians(dec0)) * 3600,
                           (t_dec - dec0) * 3600])
    tree_all = cKDTree(txy)
    n_near = tree_all.query_ball_point(txy, r=0.55, return_length=True)
    n_gal = cKDTree(txy[~is_star]).query_ball_point(txy, r=1.5, return_length=True)
    isolated = is_star & (n_near == 1) & (n_gal == 0)

    for drz in sorted(products.glob("hst_*_dr[zc].fits")):
        m = FILTER_RE.match(drz.name)
        if not m:
            continue
        filt = m.group(1)
        with fits.open(drz, memmap=False) as h:
            sci = np.asarray(h["SCI"].data, float)
            wht = np.asarray(h["WHT"].data, float)
            wcs = WCS(h["SCI"].header)
        out_scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600)
        f2 = _ap2_fraction(detector, out_scale)
        apcorr = 2.5 * np.log10(f2)
        n_exp, texp, sigma_e = noise[filt]
        area = np.pi * (r2 / spec.idcscale) ** 2
        rate = np.asarray(truth[f"countrate_{filt}"], float)
        s = rate * f2 * texp
        snr = s / np.sqrt(s + n_exp * area * sigma_e ** 2)
        abmag = np.asarray(truth[f"abmag_{filt}"], float)

        x, y = _sky_xy(wcs, t_ra, t_dec)
        ny, nx = sci.shape
        xi, yi = np.round(x).astype(int), np.round(y).astype(int)
        inside = (xi > 20) & (yi > 20) & (xi < nx - 21) & (yi < ny - 21)
        cover = np.zeros(len(truth), bool)
        for k in np.flatnonzero(inside):
            cover[k] = (wht[yi[k] - 2:yi[k] + 3, xi[k] - 2:xi[k] + 3] > 0).all()

        entry = {"product": drz.name, "pixel_scale_arcsec": round(out_scale, 4),
                 "apcorr_ap2_mag": round(apcorr, 4), "n_exp": n_exp, "exptime_s": texp}
        cat_path = drz.with_name(drz.name.rsplit("_", 1)[0] + "_point-cat.ecsv")
        if cat_path.exists():
            cat = Table.read(cat_path, format="ascii.ecsv")
            ok = np.isfinite(np.asarray(cat["RA"], float)) & np.isfinite(np.asarray(cat["DEC"], float))
            cat = cat[ok]
            cxy = np.column_stack([(np.asarray(cat["RA"], float) - np.median(t_ra))
                                   * np.cos(np.radians(dec0)) * 3600,
                                   (np.asarray(cat["DEC"], float) - dec0) * 3600])
            ctree = cKDTree(cxy)
            rmatch = max(0.1, 1.5 * out_scale)
            d, idx = ctree.query(txy, distance_upper_bound=rmatch)
            found = np.isfinite(d)
            wanted = is_star & cover & (snr >= 10)
            entry["completeness_sn10"] = round(float(found[wanted].mean()), 4) if wanted.any() else None
            entry["n_truth_sn10"] = int(wanted.sum())
            dt, _ = tree_all.query(cxy)
            entry["n_point"] = len(cat)
            far = dt > max(0.2, 3 * out_scale)
            entry["spurious"] = round(float(np.mean(far)), 4)
            if "Flags" in cat.colnames:   # the HAP convention: Flags < 5 are the "good" sources
                good_flag = np.asarray(cat["Flags"], int) < 5
                entry["n_point_flags_lt5"] = int(good_flag.sum())
                entry["spurious_flags_lt5"] = round(float(np.mean(far[good_flag])), 4) if good_flag.any() else None
            # photometry of isolated stars
            sel = isolated & cover & found
            rows = cat[idx[sel]]
            mag = np.asarray(rows["MagAp2"], float)
            diff = mag + apcorr - abmag[sel]
            good = np.isfinite(diff) & (np.abs(diff) < 1.5)
            b50 = good & (snr[sel] >= 50)
            s20 = good & (snr[sel] >= 20)
            if b50.sum() >= 3:
                entry["phot_bias_mag"] = round(float(np.median(diff[b50])), 4)
            entry["n_phot_sn50"] = int(b50.sum())
            if s20.sum() >= 5:
                med = np.median(diff[s20])
                entry["phot_scatter_mag"] = round(float(1.4826 * np.median(np.abs(diff[s20] - med))), 4)
            entry["n_phot_sn20"] = int(s20.sum())
            # catalog astrometry of bright isolated stars
            dxy = (cxy[idx[sel]] - txy[sel])[b50] * 1000.0
            if len(dxy) >= 3:
                entry["astrometry_median_mas"] = [round(float(v), 2) for v in np.median(dxy, axis=0)]
                entry["astrometry_rms_mas"] = round(float(np.sqrt(np.mean(np.sum(dxy ** 2, 1)))), 2)
        entry["cr_residual"] = _cr_metrics(visit, sci, wht, wcs, truth, out_scale, filt, exposures)
        results[filt] = entry
    return results


def _cr_metrics(visit, sci, wht, wcs, truth, out_scale, filt, exposures) -> dict:
    ny, nx = sci.shape
    hit = np.zeros(sci.shape, bool)
    for path in exposures:
        with fits.open(path, memmap=False) as h:
            hdr = h[0].header
            names = [str(hdr.get(k, "")).lower() for k in ("FILTER", "FILTER1", "FILTER2")]
            if filt not in names:
                continue
            root = str(hdr["ROOTNAME"]).lower()
        with fits.open(visit / "truth_crmask" / f"{root}_crmask.fits", memmap=False) as m:
            masks = [hdu.data for hdu in m if hdu.data is not None]
        for extver, mask in enumerate(masks, start=1):
            yy, xx = np.nonzero(mask)
            if not len(xx):
                continue
            ra, dec = _truth_wcs(visit, root, extver).all_pix2world(xx, yy, 0)
            ox, oy = wcs.all_world2pix(ra, dec, 0)
            oxi, oyi = np.round(ox).astype(int), np.round(oy).astype(int)
            ok = (oxi >= 0) & (oyi >= 0) & (oxi < nx) & (oyi < ny)
            hit[oyi[ok], oxi[ok]] = True
    # source mask from the truth
    src = np.zeros(sci.shape, bool)
    tx, ty = _sky_xy(wcs, np.asarray(truth["ra"], float), np.asarray(truth["dec"], float))
    mag = np.asarray(truth[f"abmag_{filt}"], float)
    star = np.asarray(truth["type"]) == "star"
    for rad_arcsec, sel in ((0.4, mag < 27), (1.5, star & (mag < 19))):
        r = int(np.ceil(rad_arcsec / out_scale))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = (xx ** 2 + yy ** 2) <= r * r
        for cx, cy in zip(np.round(tx[sel]).astype(int), np.round(ty[sel]).astype(int)):
            if -r <= cx < nx + r and -r <= cy < ny + r:
                x0, x1, y0, y1 = max(cx - r, 0), min(cx + r + 1, nx), max(cy - r, 0), min(cy + r + 1, ny)
                src[y0:y1, x0:x1] |= disk[y0 - cy + r:y1 - cy + r, x0 - cx + r:x1 - cx + r]
    sky_pix = (wht > 0) & ~src & np.isfinite(sci)
    med_wht = float(np.median(wht[sky_pix]))
    z = np.zeros(sci.shape)
    _, sky, sig = sigma_clipped_stats(sci[sky_pix & ~hit][::7], sigma=3.0, maxiters=5)
    z[sky_pix] = (sci[sky_pix] - sky) / sig * np.sqrt(wht[sky_pix] / med_wht)
    crp = sky_pix & hit
    rest = sky_pix & ~hit
    return {"n_cr_pixels": int(crp.sum()),
            "frac_gt5sigma": round(float(np.mean(z[crp] > 5)), 5) if crp.any() else None,
            "floor_gt5sigma": round(float(np.mean(z[rest] > 5)), 6)}


def evaluate(visit: Path, products: Path) -> dict:
    visit, products = Path(visit), Path(products)
    info = json.loads((visit / ".bench-complete.json").read_text())
    detector = info["kwargs"]["detector"]
    exposures = [Path(p) for p in info["exposures"]]
    out = {"align": {}, "filters": {}}
    try:
        out["align"] = align_metrics(visit, products)
    except Exception as exc:  # noqa: BLE001 - report, don't stop
        out["align"] = {"error": repr(exc)}
    out["filters"] = filter_metrics(visit, products, detector, exposures)
    return out


if __name__ == "__main__":
    print(json.dumps(evaluate(Path(sys.argv[1]), Path(sys.argv[2])), indent=1))
