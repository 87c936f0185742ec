"""Validation: point and segmentation catalogs of a real ACS/HRC exposure (47 Tuc, crowded).

Reads ``../shared/data/real/acs_hrc_j8bt06nyq_flt.fits`` (never copied into the project),
divides SCI by EXPTIME (e-/s), uses its WCS, runs the catalog stage with the ACS/HRC parameters
(the image is both the "total" and the "filter" product), and prints one JSON report: source
counts, CI distribution, flag counts, timings, and the agreement of the point catalog with a
plain ``DAOStarFinder`` run (fraction of each catalog matched within 1 px, median offsets).

Exits 0 with a "skipped" report when the shared data is absent.

Usage: ``python validation/catalogs_real_hrc.py [path]``
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "acs_hrc_j8bt06nyq_flt.fits"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else DEFAULT
    if not path.exists():
        print(json.dumps({"validation": "catalogs_real_hrc", "skipped": f"{path} not found"}))
        return 0
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning
    from photutils.detection import DAOStarFinder
    from scipy.spatial import cKDTree

    from hapcore.catalogs.image import CatalogImage
    from hapcore.catalogs.stage import build_catalogs
    from hapcore.obset.parameters import build_product_parameters

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    with fits.open(path) as hdul:
        primary = hdul[0].header.copy()
        sci = hdul["SCI", 1].header.copy()
        exptime = float(primary["EXPTIME"])
        data = hdul["SCI", 1].data.astype(np.float32) / exptime
        dq = hdul["DQ", 1].data if ("DQ", 1) in hdul else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(sci, fobj=None).celestial
    primary.setdefault("TEXPTIME", exptime)
    primary.setdefault("NUMEXP", 1)
    weight = np.full(data.shape, exptime, dtype=np.float32)
    filt = next((str(primary.get(k, "")).lower() for k in ("FILTER1", "FILTER2")
                 if str(primary.get(k, "")).upper().startswith("F")), "f555w")
    image = CatalogImage.from_arrays(data, wcs=wcs, primary_header=primary, sci_header=sci,
                                     weight=weight, filename=path.name)
    # saturated pixels (DQ 256) are already in image coordinates for an FLT
    saturated = None
    if dq is not None:
        yy, xx = np.nonzero(dq & 256)
        saturated = {filt: np.column_stack([xx, yy]).astype(float)}
    kw = dict(n_exposures=1)
    total_p = build_product_parameters("acs", "hrc", "total", product_basename="hst_x_01_acs_hrc_total_j8bt06", **kw)
    filt_p = build_product_parameters("acs", "hrc", "filter", filter_name=filt,
                                      product_basename=f"hst_x_01_acs_hrc_{filt}_j8bt06", **kw)
    start = time.perf_counter()
    cats = build_catalogs(image, {filt: image}, total_parameters=total_p,
                          filter_parameters={filt: filt_p}, saturated_pixels=saturated,
                          diagnostic_mode=True)
    elapsed = time.perf_counter() - start
    point = cats.filters[0].point
    seg = cats.filters[0].segment

    # plain DAOStarFinder on the background-subtracted image
    from astropy.stats import sigma_clipped_stats

    finite = np.isfinite(data)
    _, median, std = sigma_clipped_stats(data[finite], sigma=3.0, maxiters=5)
    fwhm = total_p.catalog.tweak_fwhmpsf / image.plate_scale
    dao = DAOStarFinder(5.0 * std, fwhm)(np.nan_to_num(data - median))
    n_dao = 0 if dao is None else len(dao)
    agreement = {}
    if n_dao and len(point):
        ours = np.column_stack([point["X-Center"], point["Y-Center"]])
        theirs = np.column_stack([dao["xcentroid"], dao["ycentroid"]])
        d1, i1 = cKDTree(theirs).query(ours)
        d2, _ = cKDTree(ours).query(theirs)
        m = d1 < 1.0
        agreement = {
            "fraction_of_ours_matched_1px": round(float(np.mean(m)), 3),
            "fraction_of_dao_matched_1px": round(float(np.mean(d2 < 1.0)), 3),
            "median_dx": round(float(np.median(ours[m, 0] - theirs[i1[m], 0])), 4),
            "median_dy": round(float(np.median(ours[m, 1] - theirs[i1[m], 1])), 4),
        }
    ci = np.asarray(point["CI"], dtype=float)
    ci = ci[np.isfinite(ci)]
    flags = np.asarray(point["Flags"])
    report = {
        "validation": "catalogs_real_hrc",
        "file": path.name,
        "shape": list(data.shape),
        "filter": filt,
        "seconds": round(elapsed, 2),
        "timings_s": {k: round(v, 2) for k, v in cats.timings.items()},
        "n_point": len(point),
        "n_segment": len(seg),
        "n_total_point_after_trim": len(cats.point),
        "n_total_segment_after_trim": len(cats.segment),
        "segment_big_island": cats.is_big_island,
        "ci_percentiles_5_25_50_75_95": [round(float(v), 3) for v in np.percentile(ci, [5, 25, 50, 75, 95])] if ci.size else [],
        "ci_limits": [filt_p.quality.ci_filter.aperture.ci_lower_limit,
                      filt_p.quality.ci_filter.aperture.ci_upper_limit],
        "flag_counts": {str(b): int(np.count_nonzero(flags & b)) for b in (1, 4, 8, 16, 64)},
        "n_flag0": int(np.count_nonzero(flags == 0)),
        "n_daostarfinder_plain": n_dao,
        "agreement_with_daostarfinder": agreement,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
