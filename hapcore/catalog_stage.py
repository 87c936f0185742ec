"""The catalog stage: point and segmentation catalogs of a total product and its filters.

:func:`build_catalogs` is the pure core (images and parameters in, tables out);
:func:`create_catalog_products` is the task-layer entry point that reads the drizzled products
of a :class:`~hap_models.products.TotalProduct` from ``output_dir`` and writes the ECSV files of
spec §2.1 (``<product_basename>_point-cat.ecsv`` / ``_segment-cat.ecsv``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from hap_models.catalogs import (
    POINT_FILTER_COLUMNS,
    SEGMENT_FILTER_COLUMNS,
    total_point_columns,
    total_segment_columns,
)
from hapcore.catalog_flags import flag_catalog
from hapcore.catalog_image import CatalogImage, compute_background, make_wht_masks
from hapcore.catalog_point import detect_point_sources, measure_point_photometry
from hapcore.catalog_segment import detect_segments, measure_segments
from hapcore.catalog_total import (
    cr_dominance_threshold,
    join_filter_columns,
    reject_cr_dominated,
    trim_total_catalog,
)
from hapcore.catalog_writer import catalog_metadata, write_catalog

__all__ = ["PHOT_MODES", "CatalogSet", "FilterCatalogs", "build_catalogs",
           "write_catalog_set", "create_catalog_products"]

log = logging.getLogger("hapsvm")

PHOT_MODES: tuple[str, ...] = ("aperture", "segment", "both")


@dataclass(eq=False)
class FilterCatalogs:
    """Catalogs of one filter product."""

    name: str
    image: CatalogImage
    parameters: object
    point: Table | None = None
    segment: Table | None = None


@dataclass(eq=False)
class CatalogSet:
    """Everything :func:`build_catalogs` produces for one detector.

    Attributes
    ----------
    total_image : CatalogImage
    total_parameters : ProductParameters
    point, segment : astropy.table.Table or None
        Total catalogs (None when the type was not requested).
    filters : list of FilterCatalogs
    rejected : dict
        ``{"aperture"|"segment": reason or None}``.
    segment_nsigma : float
    is_big_island : bool
    timings : dict
        Seconds per step.
    """

    total_image: CatalogImage
    total_parameters: object
    point: Table | None = None
    segment: Table | None = None
    filters: list = field(default_factory=list)
    rejected: dict = field(default_factory=dict)
    segment_nsigma: float = 0.0
    is_big_island: bool = False
    timings: dict = field(default_factory=dict)


def _background(image, cat):
    return compute_background(image, nsigma_clip=cat.nsigma_clip, maxiters=cat.maxiters,
                              box_size=cat.bkg_box_size, filter_size=cat.bkg_filter_size,
                              skew_threshold=cat.bkg_skew_threshold,
                              negative_percent=cat.negative_percent, zero_percent=cat.zero_percent,
                              simple_bkg=cat.simple_bkg)


def _base_table(sources: Table, names) -> Table:
    out = Table()
    for new, old in names:
        out[new] = np.asarray(sources[old]) if len(sources) else np.empty(0)
    out["ID"] = np.asarray(out["ID"], dtype=np.int64)
    return out


def build_catalogs(total_image: CatalogImage, filter_images, *, total_parameters,
                   filter_parameters, phot_mode="both", saturated_pixels=None,
                   filter_exposures=None, diagnostic_mode=False, deblend_limits=None) -> CatalogSet:
    """Detect on the total image, measure and flag in every filter, assemble total catalogs.

    Parameters
    ----------
    total_image : CatalogImage
    filter_images : mapping
        ``{filter name: CatalogImage}`` on the same pixel grid, in output order.
    total_parameters : ProductParameters
        Of the total product (``.catalog``, ``.quality``, ``.detector``).
    filter_parameters : mapping
        ``{filter name: ProductParameters}`` (CI limits looked up per filter).
    phot_mode : {"aperture", "segment", "both"}, optional
    saturated_pixels : mapping, optional
        ``{filter name: (m, 2) array}`` of saturated input pixels mapped to product pixels
        (0-based x, y), provided by the drizzle/alignment layer.
    filter_exposures : mapping, optional
        ``{filter name: list of exposure times}`` for the CR-dominance test; default from each
        filter image's EXPTIME and NUMEXP.
    diagnostic_mode : bool, optional
        Disables the CR-dominance rejection (as in drizzlepac).
    deblend_limits : mapping, optional
        Keyword overrides for :func:`~hapcore.catalog_segment.detect_segments`
        (``max_deblend_segments``, ``max_deblend_area``, ``deblend_time_budget``).

    Returns
    -------
    CatalogSet
    """
    if phot_mode not in PHOT_MODES:
        raise ValueError(f"phot_mode must be one of {PHOT_MODES}, not {phot_mode!r}")
    do_point = phot_mode in ("aperture", "both")
    do_segment = phot_mode in ("segment", "both")
    cat = total_parameters.catalog
    result = CatalogSet(total_image, total_parameters)
    timings = result.timings
    saturated_pixels = saturated_pixels or {}

    clock = time.perf_counter()
    if total_image.is_blank:
        log.warning("total image %s is blank (all zero/NaN): empty catalogs",
                    total_image.filename or "(in memory)")
    background = _background(total_image, cat)
    fwhm = cat.tweak_fwhmpsf / total_image.plate_scale
    regions = make_wht_masks(total_image.weight, total_image.illuminated, scale=cat.scale,
                             sensitivity=cat.sensitivity, ndrizim=total_image.ndrizim,
                             rms=background.rms)
    timings["total_background"] = time.perf_counter() - clock
    log.info("total image: background %s (median %.4g, rms %.4g), %d weight region(s), kernel "
             "FWHM %.2f px", background.method, background.median, background.rms_value,
             len(regions), fwhm)

    point_sources = seg = None
    if do_point:
        clock = time.perf_counter()
        point_sources = detect_point_sources(total_image, background, regions, fwhm_pixels=fwhm,
                                             nsigma=cat.nsigma)
        timings["point_detection"] = time.perf_counter() - clock
        log.info("point catalog: %d sources detected on the total image", len(point_sources))
        result.point = _base_table(point_sources, (("ID", "id"), ("X-Center", "xcentroid"),
                                                   ("Y-Center", "ycentroid"), ("RA", "RA"),
                                                   ("DEC", "DEC")))
    if do_segment:
        clock = time.perf_counter()
        seg = detect_segments(total_image, background, regions, params=cat, fwhm_pixels=fwhm,
                              **(deblend_limits or {}))
        timings["segment_detection"] = time.perf_counter() - clock
        result.segment = _base_table(seg.sources, (("ID", "ID"), ("X-Centroid", "X-Centroid"),
                                                   ("Y-Centroid", "Y-Centroid"), ("RA", "RA"),
                                                   ("DEC", "DEC")))
        result.segment_nsigma = seg.nsigma
        result.is_big_island = seg.is_big_island

    for name, image in filter_images.items():
        params = filter_parameters[name]
        fcat, quality = params.catalog, params.quality
        entry = FilterCatalogs(name, image, params)
        if image.photflam is None or abs(image.photflam) < 1e-22:
            log.warning("filter %s: PHOTFLAM missing or zero; magnitudes set to -9999", name)
        if image.is_blank:
            log.warning("filter image %s is blank; its measurements are missing", name)
        clock = time.perf_counter()
        common = dict(plate_scale=image.plate_scale, aperture_2=fcat.aperture_2,
                      detector=image.detector or total_parameters.detector,
                      saturated_xy=saturated_pixels.get(name), nexp=image.nexp, data=image.data)
        if do_point:
            entry.point = measure_point_photometry(
                image, point_sources["xcentroid"], point_sources["ycentroid"],
                ids=point_sources["id"], ra=point_sources["RA"], dec=point_sources["DEC"],
                aperture_1=fcat.aperture_1, aperture_2=fcat.aperture_2,
                skyannulus=fcat.skyannulus_arcsec, dskyannulus=fcat.dskyannulus_arcsec,
                salgorithm=fcat.salgorithm)
            ci = quality.ci_filter.aperture
            entry.point["Flags"] = flag_catalog(entry.point, x_column="X-Center",
                                                y_column="Y-Center", ci_lower=ci.ci_lower_limit,
                                                ci_upper=ci.ci_upper_limit, bthresh=ci.bthresh,
                                                **common)
            result.point = join_filter_columns(result.point, entry.point, name)
        timings[f"point_{name}"] = time.perf_counter() - clock
        if do_segment:
            clock = time.perf_counter()
            fbackground = _background(image, fcat) if len(seg.sources) else background
            entry.segment = measure_segments(image, fbackground, seg, params=fcat)
            ci = quality.ci_filter.segment
            entry.segment["Flags"] = flag_catalog(entry.segment, x_column="X-Centroid",
                                                  y_column="Y-Centroid", ci_lower=ci.ci_lower_limit,
                                                  ci_upper=ci.ci_upper_limit, bthresh=ci.bthresh,
                                                  **common)
            result.segment = join_filter_columns(result.segment, entry.segment, name)
            timings[f"segment_{name}"] = time.perf_counter() - clock
        result.filters.append(entry)

    totals = {}
    if result.point is not None:
        result.point = trim_total_catalog(result.point, flag_trim_value=cat.flag_trim_value)
        totals["aperture"] = result.point
    if result.segment is not None:
        result.segment = trim_total_catalog(result.segment, flag_trim_value=cat.flag_trim_value)
        totals["segment"] = result.segment

    result.rejected = {kind: None for kind in totals}
    if total_image.is_blank:
        result.rejected = {kind: "blank total image (all values zero or NaN)" for kind in totals}
    elif cat.crfactor is not None and not diagnostic_mode and filter_images:
        if filter_exposures is None:
            filter_exposures = {
                name: [img.exptime / max(img.numexp, 1)] * max(img.numexp, 1)
                for name, img in filter_images.items()}
        n_pixels = int(np.count_nonzero(total_image.weight > 0))
        thresholds = {kind: cr_dominance_threshold(
            filter_exposures, crfactor=getattr(cat.crfactor, kind),
            detector=total_image.detector or total_parameters.detector, n_pixels=n_pixels)
            for kind in totals}
        log.info("cosmic-ray dominance thresholds: %s", {k: round(v, 2) for k, v in thresholds.items()})
        result.rejected = reject_cr_dominated(totals, thresholds)
    return result


def _aperture_correction_record(image) -> dict:
    """The CI-table aperture correction of a filter product, recorded so users can apply it:
    total magnitude = MagAp2 + ``Aperture correction (mag)`` (MagAp2 itself stays uncorrected,
    as in drizzlepac's catalogs)."""
    from hapcore.parameters import lookup_ci_limits_from_table

    filters = [f for f in image.filter_names if f and f.lower() not in ("", "clear", "n/a")]
    row = None
    for name in filters:
        row = lookup_ci_limits_from_table(image.instrument, image.detector, name.lower())
        if row is not None:
            break
    if row is None:
        return {"Aperture correction (mag)": "not available in the CI/aperture-correction table"}
    return {"Aperture correction (mag)": float(row.ap_cor)}


def write_catalog_set(catalogs: CatalogSet, *, total_paths, filter_paths,
                      diagnostic_mode=False) -> list[Path]:
    """Write the catalogs of a :class:`CatalogSet`.

    Parameters
    ----------
    total_paths : mapping
        ``{"aperture"|"segment": path}`` of the total catalogs.
    filter_paths : mapping
        ``{filter name: {"aperture"|"segment": path}}``.
    diagnostic_mode : bool, optional
        Also write ds9 region files of the total catalogs.

    Returns
    -------
    list of pathlib.Path
    """
    written = []
    total = catalogs.total_image
    tcat, tquality = catalogs.total_parameters.catalog, catalogs.total_parameters.quality
    filter_names = [f.name for f in catalogs.filters]
    layouts = {"aperture": ("point", total_point_columns(filter_names), tquality.ci_filter.aperture,
                            tcat.nsigma),
               "segment": ("segment", total_segment_columns(filter_names),
                           tquality.ci_filter.segment, catalogs.segment_nsigma)}
    for kind, (attr, columns, ci, nsigma) in layouts.items():
        table = getattr(catalogs, attr)
        if table is None:
            continue
        reason = catalogs.rejected.get(kind)
        meta = catalog_metadata(total, kind=kind, aperture_1=tcat.aperture_1,
                                aperture_2=tcat.aperture_2, threshold_sigma=nsigma,
                                ci_lower=ci.ci_lower_limit, ci_upper=ci.ci_upper_limit,
                                n_sources=0 if reason else len(table),
                                is_big_island=catalogs.is_big_island)
        written.append(write_catalog(table, total_paths[kind], columns=columns, metadata=meta,
                                     rejected_reason=reason))
        if diagnostic_mode and not reason:
            written.append(_write_regions(table, Path(total_paths[kind]).with_suffix(".reg"),
                                          attr))
    for entry in catalogs.filters:
        fcat, fquality = entry.parameters.catalog, entry.parameters.quality
        for kind, table, columns, ci, nsigma in (
                ("aperture", entry.point, POINT_FILTER_COLUMNS, fquality.ci_filter.aperture,
                 fcat.nsigma),
                ("segment", entry.segment, SEGMENT_FILTER_COLUMNS, fquality.ci_filter.segment,
                 catalogs.segment_nsigma)):
            if table is None:
                continue
            reason = catalogs.rejected.get(kind)
            meta = catalog_metadata(entry.image, kind=kind, aperture_1=fcat.aperture_1,
                                    aperture_2=fcat.aperture_2, threshold_sigma=nsigma,
                                    ci_lower=ci.ci_lower_limit, ci_upper=ci.ci_upper_limit,
                                    n_sources=0 if reason else len(table),
                                    is_big_island=catalogs.is_big_island,
                                    extra=_aperture_correction_record(entry.image))
            written.append(write_catalog(table, filter_paths[entry.name][kind], columns=columns,
                                         metadata=meta, rejected_reason=reason))
    return written


def _write_regions(table, path, attr):
    from hapcore.atomic import write_text_atomic

    xcol, ycol = ("X-Center", "Y-Center") if attr == "point" else ("X-Centroid", "Y-Centroid")
    lines = ["# Region file format: DS9", "image"]
    lines += [f"circle({x + 1:.3f},{y + 1:.3f},3)" for x, y in zip(table[xcol], table[ycol])]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def create_catalog_products(total, *, output_dir, phot_mode="both", diagnostic_mode=False,
                            saturated_pixels=None, deblend_limits=None) -> list[Path]:
    """Create the point and segmentation catalogs of a total product and its filter products.

    Reads ``output_dir / <product>.drizzle_filename`` of the total and of every filter product
    and writes ``point_cat_filename`` / ``segment_cat_filename`` of each into ``output_dir``.

    Parameters
    ----------
    total : hap_models.products.TotalProduct
        With ``parameters`` set on it and on each filter product.
    output_dir : path-like
    phot_mode : {"aperture", "segment", "both"}, optional
    diagnostic_mode : bool, optional
        No CR-dominance rejection; ds9 region files of the total catalogs.
    saturated_pixels : mapping, optional
        ``{filter name: (m, 2) array of 0-based product (x, y)}`` of saturated input pixels.
    deblend_limits : mapping, optional
        Deblending bounds (see :func:`build_catalogs`).

    Returns
    -------
    list of pathlib.Path
        Files written.
    """
    output_dir = Path(output_dir)
    if total.parameters is None:
        raise ValueError(f"{total.product_basename}: parameters are not set")
    total_image = CatalogImage.from_fits(output_dir / total.drizzle_filename)
    filter_images, filter_params, exposures, paths = {}, {}, {}, {}
    for fdp in total.fdp_list:
        if fdp.parameters is None:
            raise ValueError(f"{fdp.product_basename}: parameters are not set")
        filter_images[fdp.filters] = CatalogImage.from_fits(output_dir / fdp.drizzle_filename)
        filter_params[fdp.filters] = fdp.parameters
        times = [float(e.exptime) for e in fdp.edp_list if e.exptime > 0]
        if times:
            exposures[fdp.filters] = times
        paths[fdp.filters] = {"aperture": output_dir / fdp.point_cat_filename,
                              "segment": output_dir / fdp.segment_cat_filename}
    if len(exposures) != len(filter_images):
        exposures = None  # fall back to the product headers for every filter
    if saturated_pixels is None and total.detector != "ir":
        # the IR detector's saturation is not flagged (spec §6.7.2)
        from hapcore.catalog_saturation import saturated_product_pixels

        saturated_pixels = {}
        for fdp in total.fdp_list:
            copies = [output_dir / e.full_filename for e in fdp.edp_list
                      if (output_dir / e.full_filename).exists()]
            saturated_pixels[fdp.filters] = saturated_product_pixels(
                copies, filter_images[fdp.filters].wcs)
    catalogs = build_catalogs(total_image, filter_images, total_parameters=total.parameters,
                              filter_parameters=filter_params, phot_mode=phot_mode,
                              saturated_pixels=saturated_pixels, filter_exposures=exposures,
                              diagnostic_mode=diagnostic_mode, deblend_limits=deblend_limits)
    return write_catalog_set(
        catalogs, total_paths={"aperture": output_dir / total.point_cat_filename,
                               "segment": output_dir / total.segment_cat_filename},
        filter_paths=paths, diagnostic_mode=diagnostic_mode)
