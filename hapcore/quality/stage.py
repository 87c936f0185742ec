"""Quality stage entry points (spec §7, §8): every check group isolated, one summary.

The per-group functions (:func:`run_num_sources`, :func:`run_reference_checks`, ...) each take
the same :class:`~hapcore.quality.checks.QualityContext` and return a list of
:class:`~hap_models.quality.CheckOutcome`; the task layer (:mod:`tasks.quality`) runs one task
per group, then :func:`finish_quality_report`. The sequence is written once, in
:func:`flows.stages.quality_stage`. The HLA comparison gets the HLA catalog files as an
argument (:func:`hla_catalog_inputs`), never from the environment.

Isolation: every check of every product runs inside its own ``try``; an exception is logged
(ERROR, one line with the exception) and recorded as an ``error`` outcome; the run goes on.
Nothing here queries the network or writes into a FITS file.

Files (all in ``output_dir``; ``<stem>`` = drizzle file name minus ``_drc.fits``):

==================================================== =========================================
``<total stem>_svm_num_sources.json``                 per total product
``<stem>_svm_gaia_sources.json``                      total and filter products
``<exposure pb>_svm_gaia_sources.json``               exposures
``<filter stem>_svm_point_segment_crossmatch.json``   per filter product
``<filter stem>_svm_gaia_distribution_characterization.json``
``<ipppss>_<detector>_svm_<filter>_photometry.json``  per filter product (+ ``_svm_photometry.png``)
``<filter stem>_svm_interfilter_crossmatch.json``     per comparison filter (>= 2 filters)
``<exposure pb>_svm_wcs.json``                        per exposure
``<point|segment cat minus .ecsv>_svm_compare_sourcelists.json`` (+ ``.png``), HLA found
``<drizzle file minus .fits>_preview.png``            total and filter products
``<visit>_svm_alignment.png``                         alignment figures (when any)
``<visit>_svm_quality.json``                          summary
==================================================== =========================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from astropy.table import Table

from hap_models.quality import CheckOutcome, QualityReport
from hapcore.quality.hla import compare_with_hla, hla_catalog_files
from hapcore.quality.checks import QualityContext, check_num_sources, check_wcs_report
from hapcore.quality.checks_catalogs import (
    check_interfilter_crossmatch,
    check_photometry,
    check_point_segment_crossmatch,
)
from hapcore.quality.checks_reference import check_reference_distribution, check_reference_sources
from hapcore.quality.plots import (
    catalog_overlay,
    plot_alignment_figures,
    preview_filename,
    write_preview,
)
from hapcore.quality.report import QualityTimestamp
from hapcore.quality.summary import (
    alignment_figures,
    build_summary,
    check_alignment,
    thresholds_from_parameters,
    visit_name,
    write_summary,
)

__all__ = [
    "make_quality_context",
    "resolve_reference_catalog",
    "run_isolated",
    "run_num_sources",
    "run_reference_checks",
    "run_catalog_checks",
    "run_interfilter_checks",
    "run_wcs_reports",
    "hla_catalog_inputs",
    "run_hla_comparison",
    "run_previews",
    "finish_quality_report",
]

log = logging.getLogger(f"hapsvm.{__name__}")


def run_isolated(check: str, product: str, func: Callable, *args, **kwargs) -> list[CheckOutcome]:
    """Call ``func(*args, **kwargs)``; turn an exception into an ``error`` outcome.

    ``func`` returns a CheckOutcome or a list of them.
    """
    try:
        result = func(*args, **kwargs)
    except LookupError as exc:
        if str(exc) == "no reference catalog":
            log.info("%s %s skipped: no reference catalog given", check, product)
            return [CheckOutcome(check=check, product=product, status="skipped",
                                 message="no reference catalog given")]
        log.error("Quality check %s of %s failed: %s: %s", check, product,
                  type(exc).__name__, exc)
        return [CheckOutcome(check=check, product=product, status="error",
                             message=f"{type(exc).__name__}: {exc}")]
    except Exception as exc:  # noqa: BLE001 - isolation is the point
        log.error("Quality check %s of %s failed: %s: %s", check, product,
                  type(exc).__name__, exc)
        return [CheckOutcome(check=check, product=product, status="error",
                             message=f"{type(exc).__name__}: {exc}")]
    return list(result) if isinstance(result, (list, tuple)) else [result]


def resolve_reference_catalog(refcat, totals: Sequence, *, output_dir=None):
    """The reference catalog of the visit, without any network query.

    Parameters
    ----------
    refcat : ReferenceCatalog, provider with ``fetch``, path-like, or None
        A :class:`~hapcore.align.refcat.ReferenceCatalog` is used as is (the one alignment used).
        A provider (e.g. :class:`~hapcore.align.refcat_read.LocalCatalogProvider`) or a file
        path is fetched once over the total products' footprints at the visit epoch (EXPSTART).
    totals : sequence of TotalProduct
    output_dir : path-like
        Where the total drizzled products are (for the footprint and epoch).
    """
    if refcat is None or hasattr(refcat, "table"):
        return refcat
    from hapcore.catalogs.image import CatalogImage
    from hapcore.align.refcat import decimal_year_from_mjd, fetch_reference_catalog
    from hapcore.align.refcat_read import LocalCatalogProvider

    provider = refcat if hasattr(refcat, "fetch") else LocalCatalogProvider(refcat)
    footprints, epoch = [], None
    for total in totals:
        image = CatalogImage.from_fits(Path(output_dir) / total.drizzle_filename)
        ny, nx = image.shape
        corners = image.wcs.all_pix2world([[0, 0], [nx - 1, 0], [nx - 1, ny - 1], [0, ny - 1]], 0)
        footprints.append(corners)
        if epoch is None and image.keyword("EXPSTART") is not None:
            epoch = float(decimal_year_from_mjd(float(image.keyword("EXPSTART"))))
    return fetch_reference_catalog(provider, epoch=epoch if epoch is not None else 2016.0,
                                   wcs_footprints=footprints)


def make_quality_context(totals: Sequence, *, output_dir, refcat=None, thresholds=None,
                         make_plots: bool = True, timestamp: QualityTimestamp | None = None
                         ) -> QualityContext:
    """A :class:`QualityContext` for a visit (thresholds default from the total's parameters).

    A reference catalog that cannot be resolved is logged and left out (the checks that need
    it are then ``skipped``).
    """
    if thresholds is None:
        thresholds = thresholds_from_parameters(totals[0].parameters if totals else None)
    try:
        reference = resolve_reference_catalog(refcat, totals, output_dir=output_dir)
    except Exception as exc:  # noqa: BLE001 - a bad catalog must not stop the other checks
        log.error("Reference catalog for the quality checks unusable: %s: %s",
                  type(exc).__name__, exc)
        reference = None
    return QualityContext(Path(output_dir), timestamp or QualityTimestamp.now(),
                          thresholds, reference, make_plots)


# --------------------------------------------------------------------------------------------
# check groups
# --------------------------------------------------------------------------------------------

def run_num_sources(totals, ctx: QualityContext) -> list[CheckOutcome]:
    """§7.1 for every total product."""
    return [o for t in totals
            for o in run_isolated("num_sources", t.product_basename, check_num_sources, t, ctx)]


def run_reference_checks(totals, ctx: QualityContext) -> list[CheckOutcome]:
    """§7.2 (total, filters, exposures) and §7.5 (filters)."""
    out = []
    for total in totals:
        products = [total, *total.fdp_list, *total.edp_list]
        for product in products:
            out += run_isolated("gaia_sources", product.product_basename,
                                check_reference_sources, product, ctx)
        for fdp in total.fdp_list:
            out += run_isolated("gaia_distribution", fdp.product_basename,
                                check_reference_distribution, fdp, ctx)
    return out


def run_catalog_checks(totals, ctx: QualityContext) -> list[CheckOutcome]:
    """§7.4 point/segment cross-match and §7.6 photometry of every filter product."""
    out = []
    for total in totals:
        for fdp in total.fdp_list:
            out += run_isolated("point_segment_crossmatch", fdp.product_basename,
                                check_point_segment_crossmatch, fdp, ctx)
            out += run_isolated("photometry", fdp.product_basename, check_photometry, fdp, ctx)
    return out


def run_interfilter_checks(totals, ctx: QualityContext) -> list[CheckOutcome]:
    """§7.7 for every total product with >= 2 filters (skipped otherwise)."""
    out = []
    for total in totals:
        if len(total.fdp_list) < 2:
            out.append(CheckOutcome(check="interfilter_crossmatch",
                                    product=total.product_basename, status="skipped",
                                    message=f"{len(total.fdp_list)} filter product(s)"))
            continue
        out += run_isolated("interfilter_crossmatch", total.product_basename,
                            check_interfilter_crossmatch, total, ctx)
    return out


def run_wcs_reports(totals, ctx: QualityContext) -> list[CheckOutcome]:
    """§7.8 for every direct exposure (read-only)."""
    return [o for t in totals for e in t.edp_list
            for o in run_isolated("wcs_report", e.product_basename, check_wcs_report, e, ctx)]


def hla_catalog_inputs(totals, *, local_dir=None, basepath=None, build_ver: str | None = None
                       ) -> dict[str, dict[str, Path] | None]:
    """The HLA catalog files of every filter product, for :func:`run_hla_comparison`.

    Parameters
    ----------
    totals : sequence of TotalProduct
    local_dir : path-like, optional
        The local HLA-classic folder (``VisitOptions.hla_classic_dir``), the fallback.
    basepath : path-like, optional
        Root of the HLA-classic catalogs (``HLA_CLASSIC_BASEPATH``, read by the entry point).
    build_ver : str, optional
        HLA build version (``HLA_BUILD_VER``, read by the entry point).

    Returns
    -------
    dict
        ``{filter product basename: {"point": path, "segment": path} or None}``
        (:func:`~hapcore.quality.hla.hla_catalog_files`; None: no HLA catalog directory).
    """
    return {f.product_basename: hla_catalog_files(f, local_dir=local_dir, basepath=basepath,
                                                  build_ver=build_ver)
            for t in totals for f in t.fdp_list}


def run_hla_comparison(totals, ctx: QualityContext, *,
                       catalogs: Mapping[str, Mapping[str, Path] | None]) -> list[CheckOutcome]:
    """§8 for every filter product, against the HLA catalog files ``catalogs`` names.

    ``catalogs`` maps filter product basenames to their HLA catalog files, as
    :func:`hla_catalog_inputs` gives them; a product not in it has no HLA catalog directory.
    """
    return [o for t in totals for f in t.fdp_list
            for o in run_isolated("hla_comparison", f.product_basename, compare_with_hla, f, ctx,
                                  catalogs=catalogs.get(f.product_basename))]


def _preview_titles(product, image) -> tuple[str, str]:
    """Title (product file) and subtitle (instrument, filter(s), exposure time, pixel scale)."""
    if getattr(product, "fdp_list", None):
        filters = " + ".join(f.filters.upper() for f in product.fdp_list)
        band = f"total of {filters}"
    else:
        band = str(getattr(product, "filters", "") or image.keyword("FILTER", "")).upper()
    nexp = image.numexp
    exposure = f"{image.exptime:g} s in {nexp} exposure{'s' if nexp != 1 else ''}"
    instrument = "/".join(v for v in (image.instrument, image.detector) if v)
    parts = [instrument, band, exposure, f'{image.plate_scale:.3g}"/pixel']
    return product.drizzle_filename, "   |   ".join(p for p in parts if p)


def _preview(product, ctx: QualityContext) -> CheckOutcome:
    image = ctx.image(product)
    cat = ctx.output_dir / product.point_cat_filename
    x = y = flagged = None
    if cat.exists():
        x, y, flagged = catalog_overlay(Table.read(cat, format="ascii.ecsv"))
    else:
        # the preview is still useful without sources; say why none are drawn
        log.info("Preview of %s: no point catalog %s", product.product_basename, cat.name)
    title, subtitle = _preview_titles(product, image)
    path = write_preview(image.data, ctx.output_dir / preview_filename(product.drizzle_filename),
                         wcs=image.wcs, weight=image.weight, x=x, y=y, flagged=flagged,
                         title=title, subtitle=subtitle)
    return CheckOutcome(check="preview", product=product.product_basename, status="done",
                        files=[ctx.relative(path)])


def run_previews(totals, ctx: QualityContext) -> list[CheckOutcome]:
    """PNG preview of every total and filter product (:func:`~hapcore.quality.plots.write_preview`).

    Each shows the product with its point catalog (``point_cat_filename``, flagged rows in
    their own colour), a scale bar and compass from its WCS, and a title with the product
    name, filter(s) and exposure time.
    """
    return [o for t in totals for p in (t, *t.fdp_list)
            for o in run_isolated("preview", p.product_basename, _preview, p, ctx)]


def finish_quality_report(totals, ctx: QualityContext, outcomes: Sequence[CheckOutcome], *,
                          alignment_results=None, stage_timings=None,
                          visit: str | None = None) -> QualityReport:
    """Judge the alignment, write the alignment plot and ``<visit>_svm_quality.json``."""
    visit = visit or visit_name(totals)
    outcomes = list(outcomes)
    figures = []
    try:
        figures = alignment_figures(totals, output_dir=ctx.output_dir,
                                    alignment_results=alignment_results)
        alignment = check_alignment(figures, ctx.thresholds, visit=visit)
        if figures and ctx.make_plots:
            path = plot_alignment_figures(figures, ctx.output_dir / f"{visit}_svm_alignment.png",
                                          max_rms_mas=ctx.thresholds.max_alignment_rms_mas,
                                          min_matches=ctx.thresholds.min_alignment_matches)
            alignment.files.append(ctx.relative(path))
        outcomes.append(alignment)
    except Exception as exc:  # noqa: BLE001
        log.error("Quality check alignment of %s failed: %s: %s", visit, type(exc).__name__, exc)
        outcomes.append(CheckOutcome(check="alignment", product=visit, status="error",
                                     message=f"{type(exc).__name__}: {exc}"))
    files = [f for o in outcomes for f in o.files]
    previews = [f for o in outcomes if o.check == "preview" for f in o.files]
    plots = [f for o in outcomes if o.check != "preview" for f in o.files if f.endswith(".png")]
    results = alignment_results if isinstance(alignment_results, (list, tuple)) else (
        [alignment_results] if alignment_results is not None else [])
    status = {r.detector.upper(): r.status for r in results if hasattr(r, "status")}
    summary = build_summary(visit, outcomes, generated=ctx.timestamp.iso,
                            thresholds=ctx.thresholds, alignment=figures,
                            stage_timings=stage_timings, previews=previews, plots=plots,
                            alignment_status=status)
    report = QualityReport(visit=visit, output_dir=str(ctx.output_dir), checks=outcomes,
                           overall_status=summary.overall_status)
    try:
        path = write_summary(summary, ctx.output_dir)
        report.summary_file = ctx.relative(path)
        files.append(report.summary_file)
    except Exception as exc:  # noqa: BLE001 - the report still returns what was done
        log.error("Writing the quality summary of %s failed: %s: %s", visit,
                  type(exc).__name__, exc)
    report.files_written = files
    return report
