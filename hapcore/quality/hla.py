"""Comparison of the HAP filter catalogs with HLA-classic catalogs (spec §8).

Where the HLA catalogs are (:func:`hla_catalog_directory`)
----------------------------------------------------------
1. A base path and a build version given (the entry points read them from
   ``HLA_CLASSIC_BASEPATH`` and ``HLA_BUILD_VER``, :mod:`flows.options`) and the base path
   exists: ``<BASE>/<instrument>/<build>/<prop_id 5-digit>/<prop_id 5-digit>_<obset_id>/``,
   catalogs in its ``logs/`` subfolder.
2. Otherwise the local folder ``<output dir>/hla_classic/`` when it exists (the entry points
   resolve it into ``VisitOptions.hla_classic_dir``), catalogs directly in it.
3. Otherwise the comparison is skipped (one INFO log line, status ``skipped``).

The flow looks the catalog files up (:func:`hla_catalog_files`) and hands them to the comparison
task, so their content is part of its cache key; :func:`compare_with_hla` reads exactly those.

HLA catalog layouts (as read by drizzlepac's ``comparesourcelists``)
---------------------------------------------------------------------
``<basename><filter>_daophot.txt`` (compared with the point catalog), whitespace-separated
ASCII with a header row, ``#`` comment lines allowed::

    X-Center Y-Center RA DEC ID MagAp(r1) MagErr(r1) MagAp(r2) MagErr(r2) MSky(r2) Stdev(r2)
    Flux(r2) CI Flags

with (r1, r2) = (0.05, 0.15) for ACS/WFC and WFC3/UVIS, (0.15, 0.45) for WFC3/IR and
(0.03, 0.125) for ACS/HRC, arcsec. ``<basename><filter>_sexphot.txt`` (compared with the
segment catalog)::

    NUMBER X_IMAGE Y_IMAGE RA DEC FLUX_APER1 FLUX_APER2 MAG_APER1 MAGERR_APER1 MAG_APER2
    MAGERR_APER2 CI FLAGS

(``MAGERR_APER*`` and ``CI`` are used when present). HLA X/Y are 1-based (IRAF/SExtractor
convention); HAP X/Y are 0-based. The comparison recomputes the HLA X/Y from the HLA RA/Dec
with the HAP image WCS (0-based), so both lists are in the HAP pixel frame; drizzlepac's
additional "omega" re-derivation of HLA RA/Dec through the HLA image headerlets is not done.

Statistics
----------
For X, Y (px), on-sky separation (arcsec), FLUX1/FLUX2 (e-/s), MAGNITUDE1/2, MERR1/2, MSKY,
STDEV and CI: the HAP - HLA differences of matched sources, non-clipped min/max/mean/median/std,
3x3 sigma-clipped mean/median/std, fractions within 1/2/3 clipped sigma of the clipped mean.
A quantity passes if >= 95% lie within 3 sigma AND |clipped mean| <= its max difference
(:data:`hap_models.quality.HLA_MAX_DIFFERENCES`). Flags (``& 255``) pass if < 5% of the
matches differ. The comparison passes if every quantity present in both lists passes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table

from hap_models.quality import CheckOutcome, QualityThresholds
from hapcore.align.match import match_sources
from hapcore.align.refcat import angular_separation_deg

__all__ = [
    "HLA_APERTURES",
    "UNIFIED_COLUMNS",
    "hla_catalog_directory",
    "hla_catalog_names",
    "hla_catalog_files",
    "read_hla_catalog",
    "unify_hap_catalog",
    "SourceListComparison",
    "compare_source_lists",
    "compare_with_hla",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: HLA DAOPHOT aperture radii (arcsec) per detector.
HLA_APERTURES: dict[str, tuple[str, str]] = {
    "uvis": ("0.05", "0.15"), "wfc": ("0.05", "0.15"), "ir": ("0.15", "0.45"),
    "hrc": ("0.03", "0.125"), "sbc": ("0.03", "0.125"), "pc": ("0.05", "0.15"),
}

#: Unified column names used for comparison (drizzlepac's titleSwapDict keys).
UNIFIED_COLUMNS: tuple[str, ...] = ("X", "Y", "RA", "DEC", "ID", "FLUX1", "FLUX2", "MAGNITUDE1",
                                    "MAGNITUDE2", "MERR1", "MERR2", "MSKY", "STDEV", "FLAGS",
                                    "CI")

_COMPARED = ("X", "Y", "Separation", "FLUX1", "FLUX2", "MAGNITUDE1", "MAGNITUDE2", "MERR1",
             "MERR2", "MSKY", "STDEV", "CI")
_UNITS = {"X": "pixels", "Y": "pixels", "Separation": "arcseconds", "FLUX1": "electrons/s",
          "FLUX2": "electrons/s", "MAGNITUDE1": "ABMag", "MAGNITUDE2": "ABMag",
          "MERR1": "ABMag", "MERR2": "ABMag", "MSKY": "electrons/s", "STDEV": "electrons/s",
          "CI": "ABMag"}


def _dao_map(r1: str, r2: str) -> dict[str, str]:
    return {"X": "X-Center", "Y": "Y-Center", "RA": "RA", "DEC": "DEC", "ID": "ID",
            "FLUX2": f"Flux({r2})", "MAGNITUDE1": f"MagAp({r1})", "MAGNITUDE2": f"MagAp({r2})",
            "MERR1": f"MagErr({r1})", "MERR2": f"MagErr({r2})", "MSKY": f"MSky({r2})",
            "STDEV": f"Stdev({r2})", "FLAGS": "Flags", "CI": "CI"}


_SEXTRACTOR_MAP = {"X": "X_IMAGE", "Y": "Y_IMAGE", "RA": "RA", "DEC": "DEC", "ID": "NUMBER",
                   "FLUX1": "FLUX_APER1", "FLUX2": "FLUX_APER2", "MAGNITUDE1": "MAG_APER1",
                   "MAGNITUDE2": "MAG_APER2", "MERR1": "MAGERR_APER1", "MERR2": "MAGERR_APER2",
                   "FLAGS": "FLAGS", "CI": "CI"}
_POINT_MAP = {"X": "X-Center", "Y": "Y-Center", "RA": "RA", "DEC": "DEC", "ID": "ID",
              "FLUX1": "FluxAp1", "FLUX2": "FluxAp2", "MAGNITUDE1": "MagAp1",
              "MAGNITUDE2": "MagAp2", "MERR1": "MagErrAp1", "MERR2": "MagErrAp2",
              "MSKY": "MSkyAp2", "STDEV": "StdevAp2", "FLAGS": "Flags", "CI": "CI"}
_SEGMENT_MAP = {"X": "X-Centroid", "Y": "Y-Centroid", "RA": "RA", "DEC": "DEC", "ID": "ID",
                "FLUX1": "FluxAp1", "FLUX2": "FluxAp2", "MAGNITUDE1": "MagAp1",
                "MAGNITUDE2": "MagAp2", "MERR1": "MagErrAp1", "MERR2": "MagErrAp2",
                "FLAGS": "Flags", "CI": "CI"}


# --------------------------------------------------------------------------------------------
# locating and reading
# --------------------------------------------------------------------------------------------

def hla_catalog_directory(product, *, local_dir=None, basepath=None,
                          build_ver: str | None = None) -> Path | None:
    """Directory holding the HLA catalogs of ``product`` (see module docstring), or None.

    Parameters
    ----------
    product : hap_models.products.FilterProduct
    local_dir : path-like, optional
        The local HLA-classic folder (``<output dir>/hla_classic/``), the fallback.
    basepath : path-like, optional
        Root of the HLA-classic catalogs (``HLA_CLASSIC_BASEPATH``).
    build_ver : str, optional
        HLA build version (``HLA_BUILD_VER``); used only together with ``basepath``.
    """
    base, build = basepath, build_ver
    if base and build and Path(base).is_dir():
        prop = product.prop_id_padded
        return (Path(base) / product.instrument / build / prop
                / f"{prop}_{product.obset_id}" / "logs")
    if local_dir is not None and Path(local_dir).is_dir():
        return Path(local_dir)
    return None


def hla_catalog_names(product) -> dict[str, str]:
    """``{"point": <basename><filter>_daophot.txt, "segment": ..._sexphot.txt}``."""
    stem = f"{product.basename}{product.filters}"
    return {"point": f"{stem}_daophot.txt", "segment": f"{stem}_sexphot.txt"}


def hla_catalog_files(product, *, local_dir=None, basepath=None, build_ver: str | None = None
                      ) -> dict[str, Path] | None:
    """The HLA catalog files ``product`` is compared with, whether they exist or not.

    Parameters
    ----------
    product : hap_models.products.FilterProduct
    local_dir, basepath, build_ver
        As :func:`hla_catalog_directory`.

    Returns
    -------
    dict or None
        ``{"point": <dir>/<name>_daophot.txt, "segment": <dir>/<name>_sexphot.txt}``, or None
        when no HLA catalog directory exists.
    """
    directory = hla_catalog_directory(product, local_dir=local_dir, basepath=basepath,
                                      build_ver=build_ver)
    if directory is None:
        return None
    return {kind: directory / name for kind, name in hla_catalog_names(product).items()}


def _finite(values) -> np.ndarray:
    """Float values with the fill value -9999 as NaN."""
    out = np.array(values, dtype=float)
    out[out == -9999.0] = np.nan
    return out


def _unify(raw: Table, mapping: Mapping[str, str]) -> Table:
    out = Table()
    for unified, name in mapping.items():
        if name in raw.colnames:
            column = raw[name]
            if unified in ("ID", "FLAGS"):
                out[unified] = np.asarray(column.filled(0) if hasattr(column, "filled")
                                          else column, dtype=np.int64)
            else:
                values = column.filled(np.nan) if hasattr(column, "filled") else column
                out[unified] = _finite(values)
    return out


def read_hla_catalog(path, *, wcs=None) -> Table:
    """Read an HLA DAOPHOT or SExtractor text catalog into the unified columns.

    Parameters
    ----------
    path : path-like
    wcs : astropy.wcs.WCS, optional
        HAP image WCS; when given X/Y are recomputed from RA/Dec (0-based HAP frame), else the
        1-based HLA X/Y are shifted by -1.

    Raises
    ------
    ValueError
        Unrecognised layout.
    """
    raw = Table.read(path, format="ascii.basic", comment="#")
    names = set(raw.colnames)
    if "X-Center" in names:
        mags = sorted((c[6:-1] for c in names if c.startswith("MagAp(")), key=float)
        if len(mags) < 2:
            raise ValueError(f"{Path(path).name}: DAOPHOT layout without two MagAp columns")
        table = _unify(raw, _dao_map(mags[0], mags[-1]))
    elif "X_IMAGE" in names:
        table = _unify(raw, _SEXTRACTOR_MAP)
    else:
        raise ValueError(f"{Path(path).name}: unrecognised HLA catalog layout "
                         f"(columns {sorted(names)[:6]}...)")
    if wcs is not None and "RA" in table.colnames:
        x, y = wcs.all_world2pix(table["RA"], table["DEC"], 0)
        table["X"], table["Y"] = np.asarray(x, float), np.asarray(y, float)
    else:
        table["X"] = table["X"] - 1.0
        table["Y"] = table["Y"] - 1.0
    return table


def unify_hap_catalog(table: Table, *, kind: str) -> Table:
    """A HAP point (``kind="point"``) or segment catalog in the unified columns."""
    return _unify(table, _POINT_MAP if kind == "point" else _SEGMENT_MAP)


# --------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------

@dataclass
class SourceListComparison:
    """Result of :func:`compare_source_lists` (differences are comparison - reference)."""

    n_reference: int
    n_comparison: int
    reference_index: np.ndarray
    comparison_index: np.ndarray
    differences: dict[str, np.ndarray] = field(default_factory=dict)
    statistics: dict[str, dict] = field(default_factory=dict)
    flag_statistics: dict | None = None
    passed: bool = False
    failures: list[str] = field(default_factory=list)


def _difference_statistics(diff: np.ndarray, *, max_diff: float, min_fraction: float) -> dict:
    diff = diff[np.isfinite(diff)]
    mean, median, std = sigma_clipped_stats(diff, sigma=3, maxiters=3)
    dev = np.abs(diff - mean)
    within = {f"Fraction within {k} sigma": float(np.mean(dev <= k * std)) for k in (1, 2, 3)}
    passed = within["Fraction within 3 sigma"] >= min_fraction and abs(mean) <= max_diff
    return {"Non-clipped minimum": float(diff.min()), "Non-clipped maximum": float(diff.max()),
            "Non-clipped mean": float(diff.mean()), "Non-clipped median": float(np.median(diff)),
            "Non-clipped standard deviation": float(diff.std()),
            "3x3 sigma-clipped mean": float(mean), "3x3 sigma-clipped median": float(median),
            "3x3 sigma-clipped standard deviation": float(std), **within,
            "Maximum allowed |clipped mean|": max_diff, "Number of values": int(diff.size),
            "Status": "passed" if passed else "failed"}


def compare_source_lists(reference: Table, comparison: Table, *, crpix, plate_scale: float,
                         thresholds: QualityThresholds | None = None, searchrad_px: float = 50.0,
                         tolerance_px: float = 1.0, good_flag_sum: int = 255
                         ) -> SourceListComparison:
    """Match two unified source lists and compute the statistics of spec §8.

    Parameters
    ----------
    reference, comparison : astropy.table.Table
        Unified columns (:data:`UNIFIED_COLUMNS`), X/Y 0-based in the same pixel frame.
    crpix : (2,) array-like
        1-based reference pixel: the rotation search turns about it.
    plate_scale : float
        arcsec/px (separation fallback when RA/Dec are missing).
    thresholds : QualityThresholds, optional
    searchrad_px, tolerance_px : float, optional
        Offset-histogram search radius (50 px, 1 px bins as starmatch) and matching tolerance.
    good_flag_sum : int, optional
        Flag bits compared.
    """
    th = thresholds or QualityThresholds()
    origin = np.asarray(crpix, float) - 1.0
    r_xy = np.column_stack([reference["X"], reference["Y"]]) - origin
    c_xy = np.column_stack([comparison["X"], comparison["Y"]]) - origin
    r_ok = np.flatnonzero(np.all(np.isfinite(r_xy), axis=1))
    c_ok = np.flatnonzero(np.all(np.isfinite(c_xy), axis=1))
    # the longer list is the matching reference (starmatch_hist)
    swap = len(c_ok) > len(r_ok)
    a, b = (c_xy[c_ok], r_xy[r_ok]) if swap else (r_xy[r_ok], c_xy[c_ok])
    match = match_sources(b, a, searchrad=searchrad_px, tolerance=tolerance_px,
                          max_rotation_deg=0.6, rotation_step_deg=0.1,
                          min_tolerance=tolerance_px / 4)
    if swap:
        ci, ri = c_ok[match.ref_index], r_ok[match.src_index]
    else:
        ri, ci = r_ok[match.ref_index], c_ok[match.src_index]
    result = SourceListComparison(len(reference), len(comparison), ri, ci)
    if len(ri) < th.hla_min_matches:
        result.failures.append(f"{len(ri)} matches < {th.hla_min_matches}")
        return result
    for name in _COMPARED:
        if name == "Separation":
            if "RA" in reference.colnames and "RA" in comparison.colnames:
                diff = angular_separation_deg(reference["RA"][ri], reference["DEC"][ri],
                                              comparison["RA"][ci], comparison["DEC"][ci]) * 3600
            else:
                diff = np.hypot(c_xy[ci, 0] - r_xy[ri, 0], c_xy[ci, 1] - r_xy[ri, 1]) \
                    * plate_scale
        elif name in reference.colnames and name in comparison.colnames:
            diff = np.asarray(comparison[name], float)[ci] - np.asarray(reference[name], float)[ri]
        else:
            continue
        diff = np.asarray(diff, float)
        if not np.isfinite(diff).any():
            continue
        result.differences[name] = diff
        stats = _difference_statistics(diff, max_diff=th.hla_max_differences.get(name, np.inf),
                                       min_fraction=th.hla_min_fraction_within_3sigma)
        judged = th.hla_judged_quantities is None or name in th.hla_judged_quantities
        if not judged:
            stats["Status"] = f"{stats['Status']} (not judged)"
        result.statistics[name] = stats
        if judged and stats["Status"] != "passed":
            result.failures.append(
                f"{name}: clipped mean {stats['3x3 sigma-clipped mean']:.4g}, "
                f"{100 * stats['Fraction within 3 sigma']:.1f}% within 3 sigma")
    if "FLAGS" in reference.colnames and "FLAGS" in comparison.colnames:
        rf = np.asarray(reference["FLAGS"], np.int64)[ri] & good_flag_sum
        cf = np.asarray(comparison["FLAGS"], np.int64)[ci] & good_flag_sum
        fraction = float(np.mean(rf != cf))
        bits = {str(1 << b): int(np.sum(((rf >> b) & 1) != ((cf >> b) & 1))) for b in range(8)}
        ok = fraction < th.hla_max_flag_mismatch_fraction
        if th.hla_judged_quantities is not None and "FLAGS" not in th.hla_judged_quantities:
            ok = True
        result.flag_statistics = {"Fraction of matches with different flags": fraction,
                                  "Mismatches per bit": bits,
                                  "Status": "passed" if ok else "failed"}
        if not ok:
            result.failures.append(f"Flags differ for {100 * fraction:.1f}% of matches")
    result.passed = not result.failures
    return result


def compare_with_hla(fdp, ctx, *, catalogs: Mapping[str, Path] | None) -> list[CheckOutcome]:
    """Compare a filter product's point and segment catalogs with the HLA-classic ones.

    Writes ``<hap catalog minus .ecsv>_svm_compare_sourcelists.json`` (cross-match details,
    matched values, statistics) and a PNG of the difference histograms for each catalog type
    found. Missing directory or catalogs -> ``skipped`` outcomes with a log line.

    Parameters
    ----------
    fdp : hap_models.products.FilterProduct
    ctx : hapcore.quality.checks.QualityContext
    catalogs : mapping or None
        The HLA catalog files, ``{"point": path, "segment": path}`` as :func:`hla_catalog_files`
        gives them (a missing file skips that comparison); None: no HLA catalog directory.
    """
    from hapcore.quality.checks import _document, _plot, read_catalog
    from hapcore.quality.plots import plot_hla_differences

    if catalogs is None:
        log.info("HLA comparison of %s skipped: no HLA-classic base path and build version "
                 "(HLA_CLASSIC_BASEPATH/HLA_BUILD_VER) and no %s", fdp.product_basename,
                 ctx.output_dir / "hla_classic")
        return [CheckOutcome(check="hla_comparison", product=fdp.product_basename,
                             status="skipped", message="no HLA-classic catalog directory")]
    outcomes = []
    image = ctx.image(fdp)
    hap_names = {"point": fdp.point_cat_filename, "segment": fdp.segment_cat_filename}
    for kind, hla_path in catalogs.items():
        hla_path = Path(hla_path)
        hla_name, directory = hla_path.name, hla_path.parent
        outcome = CheckOutcome(check="hla_comparison", product=fdp.product_basename,
                               status="skipped", metrics={"catalog": kind})
        outcomes.append(outcome)
        if not hla_path.exists():
            log.info("HLA comparison of %s (%s) skipped: %s not found", fdp.product_basename,
                     kind, hla_path)
            outcome.message = f"{hla_name} not found in {directory}"
            continue
        try:
            hla = read_hla_catalog(hla_path, wcs=image.wcs)
            hap = unify_hap_catalog(read_catalog(ctx.output_dir / hap_names[kind]), kind=kind)
            result = compare_source_lists(hla, hap, crpix=image.wcs.wcs.crpix,
                                          plate_scale=image.plate_scale,
                                          thresholds=ctx.thresholds)
            doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                            description=f"HAP {kind} catalog vs HLA-classic {hla_name}")
            details = {"reference catalog": hla_name, "comparison catalog": hap_names[kind],
                       "reference catalog length": result.n_reference,
                       "comparison catalog length": result.n_comparison,
                       "number of cross-matches": len(result.reference_index),
                       "difference": "comparison (HAP) - reference (HLA)"}
            doc.add_item("Cross-match details", details, description="Cross-match details",
                         descriptions={k: k for k in details})
            matched = Table()
            for name in ("X", "Y", "RA", "DEC", "MAGNITUDE1", "MAGNITUDE2", "FLAGS"):
                if name in hla.colnames and name in hap.colnames:
                    matched[f"{name}_reference"] = hla[name][result.reference_index]
                    matched[f"{name}_comparison"] = hap[name][result.comparison_index]
            doc.add_item("Matched values", matched, description="Matched HLA and HAP values")
            doc.add_item("Difference statistics", result.statistics,
                         description="HAP - HLA difference statistics per quantity",
                         units={k: _UNITS.get(k, "") for k in result.statistics})
            if result.flag_statistics is not None:
                doc.add_item("Flag comparison", result.flag_statistics,
                             description="Bitwise flag comparison (flags & 255)")
            doc.add_item("Overall result", {"Status": "passed" if result.passed else "failed",
                                            "Failures": result.failures},
                         description="Comparison verdict")
            stem = hap_names[kind].removesuffix(".ecsv")
            path = doc.write(ctx.output_dir / f"{stem}_svm_compare_sourcelists.json")
            outcome.files.append(ctx.relative(path))
            outcome.status = "passed" if result.passed else "failed"
            outcome.message = "; ".join(result.failures)
            outcome.metrics.update({
                "n_matches": len(result.reference_index),
                **{f"clipped_mean_{k}": v["3x3 sigma-clipped mean"]
                   for k, v in result.statistics.items()
                   if k in ("X", "Y", "MAGNITUDE1", "MAGNITUDE2")}})
            if result.differences:
                _plot(ctx, outcome, plot_hla_differences, result.differences, result.statistics,
                      ctx.output_dir / f"{stem}_svm_compare_sourcelists.png",
                      title=f"{hap_names[kind]} - {hla_name}")
        except Exception as exc:  # noqa: BLE001 - one catalog type must not stop the other
            log.error("HLA comparison of %s (%s) failed: %s: %s", fdp.product_basename, kind,
                      type(exc).__name__, exc)
            outcome.status, outcome.message = "error", f"{type(exc).__name__}: {exc}"
    return outcomes
