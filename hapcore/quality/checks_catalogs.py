"""Quality checks of the source catalogs (spec §7.4, §7.6, §7.7), one JSON file each.

Point vs segment cross-match and photometry per filter product, and the inter-filter
cross-match of a total product's filters. Matching uses
:func:`hapcore.align.match.match_sources` (offset histogram with a rotation search, then
tolerance matching); no temporary catalog files are written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy import ndimage

from hap_models.quality import CheckOutcome
from hapcore.align.match import match_sources
from hapcore.catalogs.image import CatalogImage
from hapcore.quality.checks import (
    QualityContext,
    _document,
    _plot,
    json_stem,
    read_catalog,
    separation_statistics,
)
from hapcore.wcs.tangent import tangent_plane_arcsec

__all__ = [
    "PointSegmentMatch",
    "match_point_segment",
    "check_point_segment_crossmatch",
    "check_photometry",
    "check_interfilter_crossmatch",
]

log = logging.getLogger(f"hapsvm.{__name__}")


# --------------------------------------------------------------------------------------------
# 4. point vs segment cross-match, 6. photometry
# --------------------------------------------------------------------------------------------

@dataclass
class PointSegmentMatch:
    """Point and segment catalogs of a filter product and their matched rows."""

    point: Table
    segment: Table
    point_index: np.ndarray
    segment_index: np.ndarray
    separation_arcsec: np.ndarray


def match_point_segment(fdp, ctx: QualityContext) -> PointSegmentMatch:
    """Match the point and segment catalogs of a filter product on the sky.

    Raises
    ------
    ValueError
        If a catalog is empty or nothing matches.
    """
    point = read_catalog(ctx.output_dir / fdp.point_cat_filename)
    segment = read_catalog(ctx.output_dir / fdp.segment_cat_filename)
    image = ctx.image(fdp)
    ra0, dec0 = image.wcs.wcs.crval
    scale = image.plate_scale
    p_xy = tangent_plane_arcsec(point["RA"], point["DEC"], ra0, dec0)
    s_xy = tangent_plane_arcsec(segment["RA"], segment["DEC"], ra0, dec0)
    ok_p, ok_s = np.all(np.isfinite(p_xy), axis=1), np.all(np.isfinite(s_xy), axis=1)
    ip, is_ = np.flatnonzero(ok_p), np.flatnonzero(ok_s)
    match = match_sources(s_xy[is_], p_xy[ip], searchrad=10 * scale, tolerance=1.0 * scale,
                          max_rotation_deg=0.0)
    if len(match) == 0:
        raise ValueError(f"{fdp.product_basename}: no point/segment cross-matches")
    pi, si = ip[match.ref_index], is_[match.src_index]
    sep = np.hypot(*(p_xy[pi] - s_xy[si]).T)
    return PointSegmentMatch(point, segment, pi, si, sep)


def _magnitude_table(table: Table, index, extra=None) -> Table:
    out = Table({"RA": np.asarray(table["RA"], float)[index],
                 "DEC": np.asarray(table["DEC"], float)[index]})
    if extra is not None:
        out["Separation"] = extra
    for name in ("MagAp1", "MagAp2"):
        out[name] = np.asarray(table[name], float)[index]
    return out


def _delta_photometry(match: PointSegmentMatch) -> dict[str, dict[str, float]]:
    out = {}
    for name in ("MagAp1", "MagAp2"):
        diff = (np.asarray(match.point[name], float)[match.point_index]
                - np.asarray(match.segment[name], float)[match.segment_index])
        diff = diff[np.isfinite(diff)]
        if diff.size == 0:
            out[name] = {"Mean": None, "StdDev": None, "Median": None}
        else:
            out[name] = {"Mean": float(diff.mean()), "StdDev": float(diff.std()),
                         "Median": float(np.median(diff))}
    return out


def check_point_segment_crossmatch(fdp, ctx: QualityContext) -> CheckOutcome:
    """Point vs segment catalog cross-match (``_svm_point_segment_crossmatch.json``).

    Passes when matches / shorter catalog >= ``min_point_segment_match_fraction`` and the
    |clipped mean separation| <= ``max_point_segment_separation_arcsec``.
    """
    match = match_point_segment(fdp, ctx)
    n_match = len(match.point_index)
    stats = separation_statistics(match.separation_arcsec)
    doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                    description="Point vs segment catalog cross-match")
    details = {"point catalog filename": fdp.point_cat_filename,
               "segment catalog filename": fdp.segment_cat_filename,
               "point catalog length": len(match.point),
               "segment catalog length": len(match.segment),
               "number of cross-matches": n_match,
               "point frame": "RA/DEC (tangent plane about CRVAL)",
               "segment frame": "RA/DEC (tangent plane about CRVAL)"}
    doc.add_item("Cross-match details", details, description="Cross-match details",
                 descriptions={k: k for k in details}, units={k: "unitless" for k in details})
    doc.add_item("Cross-matched point catalog", _magnitude_table(match.point, match.point_index),
                 description="Cross-matched point catalog",
                 units={"RA": "degrees", "DEC": "degrees", "MagAp1": "ABMag", "MagAp2": "ABMag"})
    doc.add_item("Cross-matched segment catalog",
                 _magnitude_table(match.segment, match.segment_index, match.separation_arcsec),
                 description="Cross-matched segment catalog",
                 units={"RA": "degrees", "DEC": "degrees", "Separation": "arcseconds",
                        "MagAp1": "ABMag", "MagAp2": "ABMag"})
    doc.add_item("Segment - point on-sky separation statistics", stats,
                 description="Segment - point on-sky separation statistics",
                 descriptions={k: k for k in stats}, units={k: "arcseconds" for k in stats})
    delta = _delta_photometry(match)
    doc.add_item("Delta_Photometry", delta, description="Point - segment magnitude differences",
                 units={"MagAp1": "ABMag", "MagAp2": "ABMag"})
    path = doc.write(ctx.output_dir
                     / f"{json_stem(fdp.drizzle_filename)}_svm_point_segment_crossmatch.json")
    fraction = n_match / max(1, min(len(match.point), len(match.segment)))
    clipped = stats["3x3 sigma-clipped mean"]
    th = ctx.thresholds
    problems = []
    if fraction < th.min_point_segment_match_fraction:
        problems.append(f"match fraction {fraction:.3f} < {th.min_point_segment_match_fraction}")
    if abs(clipped) > th.max_point_segment_separation_arcsec:
        problems.append(f"clipped mean separation {clipped:.4f}\" > "
                        f"{th.max_point_segment_separation_arcsec}\"")
    return CheckOutcome(check="point_segment_crossmatch", product=fdp.product_basename,
                        status="failed" if problems else "passed", message="; ".join(problems),
                        files=[ctx.relative(path)],
                        metrics={"n_matches": n_match, "match_fraction": round(fraction, 4),
                                 "clipped_mean_separation_arcsec": clipped})


def check_photometry(fdp, ctx: QualityContext) -> CheckOutcome:
    """Point - segment photometry of matched sources (``<ipppss>_<det>_svm_<filter>_photometry``).

    Passes when |median difference| of MagAp1 and MagAp2 <= ``max_point_segment_delta_mag``.
    """
    match = match_point_segment(fdp, ctx)
    delta = _delta_photometry(match)
    doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                    description="Point - segment photometry of matched sources")
    for name, values in delta.items():
        doc.add_item(f"{name} delta", values, description=f"Point - segment {name}",
                     descriptions={"Mean": "mean", "StdDev": "standard deviation",
                                   "Median": "median"},
                     units={k: "ABMag" for k in values})
    path = doc.write(ctx.output_dir / f"{fdp.exposure_name}_{fdp.detector}_svm_{fdp.filters}"
                                      f"_photometry.json")
    outcome = CheckOutcome(check="photometry", product=fdp.product_basename, status="passed",
                           files=[ctx.relative(path)],
                           metrics={f"median_delta_{k}": v["Median"] for k, v in delta.items()})
    limit = ctx.thresholds.max_point_segment_delta_mag
    bad = [k for k, v in delta.items() if v["Median"] is None or abs(v["Median"]) > limit]
    if bad:
        outcome.status = "failed"
        outcome.message = f"|median point - segment| of {', '.join(bad)} > {limit} mag"
    from hapcore.quality.plots import plot_photometry_differences

    _plot(ctx, outcome, plot_photometry_differences, match.point, match.segment,
          match.point_index, match.segment_index,
          ctx.output_dir / f"{json_stem(fdp.drizzle_filename)}_svm_photometry.png",
          title=fdp.product_basename)
    return outcome


# --------------------------------------------------------------------------------------------
# 7. inter-filter cross-match
# --------------------------------------------------------------------------------------------

def _find_stars(image: CatalogImage, *, nsigma: float, fwhm_px: float) -> np.ndarray:
    """DAOStarFinder positions (0-based x, y) on a filter image; zero pixels dilated by 10 px
    are excluded."""
    from photutils.detection import DAOStarFinder

    data = np.nan_to_num(np.asarray(image.data, float), nan=0.0)
    zero = ndimage.binary_dilation(data == 0, iterations=10)
    good = data[~zero]
    if good.size == 0:
        return np.zeros((0, 2))
    _, median, rms = sigma_clipped_stats(good, sigma=3, maxiters=5)
    finder = DAOStarFinder(threshold=nsigma * max(rms, 1e-12), fwhm=fwhm_px)
    sources = finder(data - median, mask=zero)
    if sources is None or len(sources) == 0:
        return np.zeros((0, 2))
    return np.column_stack([np.asarray(sources["xcentroid"], float),
                            np.asarray(sources["ycentroid"], float)])


def _interfilter_settings(fdp, image, thresholds):
    params = getattr(fdp, "parameters", None)
    nsigma = thresholds.interfilter_nsigma
    fwhm_arcsec = 0.076
    try:
        nsigma = float(params.alignment.generate_source_catalogs.nsigma)
    except AttributeError:
        pass
    try:
        fwhm_arcsec = float(params.catalog.tweak_fwhmpsf)
    except AttributeError:
        pass
    return nsigma, max(fwhm_arcsec / image.plate_scale, 1.0)


def check_interfilter_crossmatch(total, ctx: QualityContext) -> list[CheckOutcome]:
    """Cross-match of the filter images (``<comparison>_svm_interfilter_crossmatch.json``).

    Stars are found on every filter image (DAOStarFinder), the filter with most sources is the
    reference, every other filter's positions are transformed into the reference frame through
    the sky and matched. Each comparison filter passes with at least
    ``min_interfilter_matches`` matches and |clipped mean offset| <= ``max_interfilter_offset_px``
    per axis.

    Raises
    ------
    ValueError
        Fewer than 2 filter products.
    """
    if len(total.fdp_list) < 2:
        raise ValueError(f"{total.product_basename}: inter-filter cross-match needs >= 2 "
                         f"filters, have {len(total.fdp_list)}")
    found = {}
    for fdp in total.fdp_list:
        image = ctx.image(fdp)
        nsigma, fwhm = _interfilter_settings(fdp, image, ctx.thresholds)
        found[fdp.filters] = (fdp, image, _find_stars(image, nsigma=nsigma, fwhm_px=fwhm))
    ref_name = max(found, key=lambda k: len(found[k][2]))
    ref_fdp, ref_image, ref_xy = found[ref_name]
    outcomes = []
    th = ctx.thresholds
    for name, (fdp, image, xy) in found.items():
        if name == ref_name:
            continue
        outcome = CheckOutcome(check="interfilter_crossmatch", product=fdp.product_basename,
                               status="passed")
        try:
            ra, dec = image.wcs.all_pix2world(xy[:, 0], xy[:, 1], 0) if len(xy) else ([], [])
            comp_xy = (np.column_stack(ref_image.wcs.all_world2pix(ra, dec, 0)) if len(xy)
                       else np.zeros((0, 2)))
            match = match_sources(comp_xy, ref_xy, searchrad=10.0, tolerance=1.0,
                                  max_rotation_deg=0.0)
            if len(match) == 0:
                raise ValueError(f"no matches between {ref_name} and {name}")
            r_xy, c_xy = ref_xy[match.ref_index], comp_xy[match.src_index]
            dx, dy = c_xy[:, 0] - r_xy[:, 0], c_xy[:, 1] - r_xy[:, 1]
            sx, sy = separation_statistics(dx), separation_statistics(dy)
            n = len(match)
            details = {"reference image": ref_fdp.drizzle_filename,
                       "comparison image": fdp.drizzle_filename,
                       "reference catalog length": len(ref_xy),
                       "comparison catalog length": len(xy),
                       "number of cross-matches": n,
                       "percent of all identified reference sources crossmatched":
                           100.0 * n / max(1, len(ref_xy)),
                       "percent of all identified comparison sources crossmatched":
                           100.0 * n / max(1, len(xy)),
                       "reference image platescale": ref_image.plate_scale}
            doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                            description="Inter-filter cross-match in the reference frame")
            doc.add_item("Interfilter cross-match details", details,
                         description="Inter-filter cross-match details",
                         descriptions={k: k for k in details},
                         units={k: ("arcseconds/pixel" if "platescale" in k else "unitless")
                                for k in details})
            doc.add_item("Interfilter cross-matched reference catalog",
                         Table({"xcentroid_ref": r_xy[:, 0], "ycentroid_ref": r_xy[:, 1]}),
                         description="Matched reference positions", units={"": "pixels"})
            doc.add_item("Interfilter cross-matched comparison catalog",
                         Table({"xcentroid_comp": c_xy[:, 0], "ycentroid_comp": c_xy[:, 1]}),
                         description="Matched comparison positions (reference frame)",
                         units={"": "pixels"})
            doc.add_item("Interfilter cross-matched X axis statistics", sx,
                         description="Comparison - reference X", units={k: "pixels" for k in sx})
            doc.add_item("Interfilter cross-matched Y axis statistics", sy,
                         description="Comparison - reference Y", units={k: "pixels" for k in sy})
            doc.add_item("Interfilter cross-matched separations",
                         Table({"X separation": dx, "Y separation": dy,
                                "separation": np.hypot(dx, dy)}),
                         description="Comparison - reference separations",
                         units={"": "pixels"})
            path = doc.write(ctx.output_dir / f"{json_stem(fdp.drizzle_filename)}"
                                              f"_svm_interfilter_crossmatch.json")
            outcome.files.append(ctx.relative(path))
            mx, my = sx["3x3 sigma-clipped mean"], sy["3x3 sigma-clipped mean"]
            outcome.metrics = {"reference_filter": ref_name, "n_matches": n,
                               "clipped_mean_dx_px": mx, "clipped_mean_dy_px": my}
            problems = []
            if n < th.min_interfilter_matches:
                problems.append(f"{n} matches < {th.min_interfilter_matches}")
            if max(abs(mx), abs(my)) > th.max_interfilter_offset_px:
                problems.append(f"clipped mean offset ({mx:.3f}, {my:.3f}) px > "
                                f"{th.max_interfilter_offset_px}")
            if problems:
                outcome.status, outcome.message = "failed", "; ".join(problems)
        except Exception as exc:  # noqa: BLE001 - one comparison filter must not stop the others
            log.error("interfilter_crossmatch %s: %s: %s", fdp.product_basename,
                      type(exc).__name__, exc)
            outcome.status, outcome.message = "error", f"{type(exc).__name__}: {exc}"
        outcomes.append(outcome)
    return outcomes
