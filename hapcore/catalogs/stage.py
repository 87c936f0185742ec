"""The catalog stage: point and segmentation catalogs of a total product and its filters.

The detection on the total image is :mod:`hapcore.catalogs.detection`. Here:

* :func:`measure_filter_catalogs` / :func:`assemble_catalogs` / :func:`write_catalog_set` -- the
  pure core (images and parameters in, tables out), and :func:`build_catalogs`, the three
  steps in one call on in-memory images;
* the stage entry points the tasks call, reading the drizzled products of a
  :class:`~hap_models.products.TotalProduct` from ``output_dir``:
  :func:`~hapcore.catalogs.detection.load_total_detection` (the detection),
  :func:`~hapcore.catalogs.filter_product.measure_filter_product` (one per filter product)
  and :func:`write_detector_catalogs`
  (the ECSV files of spec §2.1, ``<product_basename>_point-cat.ecsv`` / ``_segment-cat.ecsv``).
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
from hap_models.catalogs import FLAG_SWARM
from hapcore.catalogs.aperture_correction import (
    ci_table_aperture_correction,
    measured_aperture_correction,
)
from hapcore.catalogs.exposure_check import flag_missing_in_exposures, measure_in_exposures
from hapcore.catalogs.filter_consistency import flag_single_filter_detections
from hapcore.catalogs.annulus_light import annulus_ci_shift, correct_annulus_light
from hapcore.catalogs.flags import flag_catalog, nexp_footprint
from hapcore.catalogs.saturated_features import flag_saturated_light
from hapcore.catalogs.saturated_centroids import recentre_saturated_segments
from hapcore.catalogs.detection import SourceDetection, catalog_background, detect_sources
from hapcore.catalogs.image import CatalogImage
from hapcore.catalogs.point import measure_point_photometry
from hapcore.catalogs.segment import measure_segments
from hapcore.catalogs.segment_features import flag_segment_psf_features
from hapcore.catalogs.sharpness import flag_sharp_detections
from hapcore.catalogs.side_by_side import run_side_by_side
from hapcore.catalogs.stellar_locus import catalog_ci_limits
from hapcore.catalogs.total import (
    cr_dominance_threshold,
    join_filter_columns,
    reject_cr_dominated,
    trim_total_catalog,
)
from hapcore.catalogs.writer import catalog_metadata, write_catalog

__all__ = ["CatalogSet", "FilterCatalogs", "measure_filter_catalogs", "needs_filter_background",
           "assemble_catalogs",
           "build_catalogs", "write_catalog_set",
           "write_detector_catalogs"]

log = logging.getLogger(f"hapsvm.{__name__}")


@dataclass(eq=False)
class FilterCatalogs:
    """Catalogs of one filter product (``image``: the product, or only its
    :class:`~hapcore.catalogs.image.ProductHeaders` once measured; ``aperture_correction``:
    the metadata of the aperture correction measured on the product, None to use the
    CI table's value)."""

    name: str
    image: CatalogImage
    parameters: object
    point: Table | None = None
    segment: Table | None = None
    timings: dict = field(default_factory=dict)
    aperture_correction: dict | None = None
    #: the CI limits applied to each catalog type ("aperture", "segment"), when moved from the
    #: parameters' (sky annulus, stellar locus): recorded in the catalog files' metadata
    ci_limits: dict = field(default_factory=dict)


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


def _base_table(sources: Table, names) -> Table:
    out = Table()
    for new, old in names:
        out[new] = np.asarray(sources[old]) if len(sources) else np.empty(0)
    out["ID"] = np.asarray(out["ID"], dtype=np.int64)
    return out


def measure_filter_catalogs(detection: SourceDetection, name: str, image: CatalogImage, *,
                            parameters, saturated_xy=None, exposure_images=(),
                            nexp=None, background=None, footprint=None,
                            threads=2) -> FilterCatalogs:
    """Forced photometry and flags of one filter product at the total's sources (§6.3, §6.4, §6.7).

    Parameters
    ----------
    detection : SourceDetection
    name : str
        Filter name (the suffix of the total catalog's ``MagAp2_<f>`` columns).
    image : CatalogImage
        The filter product, on the total's pixel grid.
    parameters : ProductParameters
        Of the filter product.
    saturated_xy : (m, 2) array, optional
        Saturated input pixels mapped to product pixels (0-based x, y).
    exposure_images : sequence of CatalogImage or paths, optional
        The filter's exposure products (same grid, no cosmic-ray masks): rows absent from one
        that covers them are cosmic-ray residuals and get flag 16
        (:mod:`hapcore.catalogs.exposure_check`; ``exposure_check_nsigma`` None disables it).
    nexp : 2-D ndarray, optional
        Exposure count per pixel for the low-coverage flag (64); default ``image.nexp``.
    background : BackgroundModel, optional
        The filter product's background (:func:`~hapcore.catalogs.detection.catalog_background`
        with the filter's catalog parameters), when already computed.
    footprint : 2-D bool ndarray, optional
        ``nexp_footprint(image.data)``, when already computed.
    threads : int, optional
        With 2 or more the point and segment measurements run side by side in two threads
        (the same results as one after the other).

    Returns
    -------
    FilterCatalogs
        With ``point`` / ``segment`` set for the requested types, untrimmed.
    """
    fcat, quality = parameters.catalog, parameters.quality
    entry = FilterCatalogs(name, image, parameters)
    if image.photflam is None or abs(image.photflam) < 1e-22:
        log.warning("filter %s: PHOTFLAM missing or zero; magnitudes set to -9999", name)
    if image.is_blank:
        log.warning("filter image %s is blank; its measurements are missing", name)
    total_detector = detection.total_parameters.detector
    nexp = image.nexp if nexp is None else nexp
    # the coverage footprint of the low-coverage flag: the same for both catalogs
    common = dict(plate_scale=image.plate_scale, aperture_2=fcat.aperture_2,
                  detector=image.detector or total_detector, saturated_xy=saturated_xy,
                  nexp=nexp, data=image.data,
                  footprint=None if nexp is None else
                  footprint if footprint is not None else nexp_footprint(image.data))
    saturated_cache = {}      # the saturated stars' ring profiles, for points and segments
    points, seg = detection.point_sources, detection.segments
    has_saturated = saturated_xy is not None and len(saturated_xy) > 0
    # the filter's background model: the segments' photometry and the saturated-light tests
    if needs_filter_background(detection, saturated=has_saturated):
        fbackground = catalog_background(image, fcat) if background is None else background
    else:   # empty segments keep the detection's (and no point row needs one)
        fbackground = detection.background if seg is not None else None

    def measure_points():
        clock = time.perf_counter()
        entry.point = measure_point_photometry(
            image, points["xcentroid"], points["ycentroid"], ids=points["id"], ra=points["RA"],
            dec=points["DEC"], aperture_1=fcat.aperture_1, aperture_2=fcat.aperture_2,
            skyannulus=fcat.skyannulus_arcsec, dskyannulus=fcat.dskyannulus_arcsec,
            salgorithm=fcat.salgorithm, correlated_noise=fcat.correlated_noise,
            relative_error_floor=fcat.flux_error_floor)
        ci = quality.ci_filter.aperture
        # CI limits are calibrated on drizzlepac's photometry: they move with what ours changes
        ci_shift = annulus_ci_shift(entry.point, image, points, fcat)
        if fcat.annulus_light_correction:
            ci_shift += correct_annulus_light(entry.point, image, points, fcat,
                                              (ci.ci_lower_limit + ci_shift,
                                               ci.ci_upper_limit + ci_shift))
        ci_limits = (ci.ci_lower_limit + ci_shift, ci.ci_upper_limit + ci_shift)
        if fcat.ci_limits_from_locus:
            ci_limits = catalog_ci_limits(entry.point, image, ci, ci_shift, name, "point")
        entry.ci_limits["aperture"] = ci_limits
        entry.point["Flags"] = flag_catalog(entry.point, x_column="X-Center", y_column="Y-Center",
                                            ci_lower=ci_limits[0], ci_upper=ci_limits[1],
                                            bthresh=ci.bthresh, **common)
        # the fragments of a saturated star (plateau, bleed, first rings) and the features of
        # its light (halo, rings, spikes) are not sources
        if has_saturated:
            n_saturated = flag_saturated_light(entry.point, "X-Center", "Y-Center", "FluxAp2",
                                                image, saturated_xy, fcat, fbackground,
                                                saturated_cache)
            log.debug("filter %s: %d point source(s) on saturated stars' light flagged 32",
                      name, n_saturated)
        if detection.point_swarm is not None:
            entry.point["Flags"] = np.where(detection.point_swarm,
                                            np.asarray(entry.point["Flags"]) | FLAG_SWARM,
                                            entry.point["Flags"])
        entry.timings["point"] = time.perf_counter() - clock

    def measure_segment_catalog():
        clock = time.perf_counter()
        entry.segment = measure_segments(image, fbackground, seg, params=fcat)
        ci = quality.ci_filter.segment
        seg_limits = (ci.ci_lower_limit, ci.ci_upper_limit)
        if fcat.ci_limits_from_locus:
            seg_limits = catalog_ci_limits(entry.segment, image, ci, 0.0, name, "segment")
        entry.ci_limits["segment"] = seg_limits
        entry.segment["Flags"] = flag_catalog(entry.segment, x_column="X-Centroid",
                                              y_column="Y-Centroid", ci_lower=seg_limits[0],
                                              ci_upper=seg_limits[1], bthresh=ci.bthresh,
                                              **common)
        n_saturated = flag_saturated_light(entry.segment, "X-Centroid", "Y-Centroid",
                                            "FluxAp2", image, saturated_xy, fcat, fbackground,
                                            saturated_cache)
        if n_saturated:
            log.debug("filter %s: %d segment(s) on saturated stars' light flagged 32", name,
                      n_saturated)
        entry.timings["segment"] = time.perf_counter() - clock

    in_exposures = {}

    def measure_exposures():    # at the detection's positions, which the rows keep
        clock = time.perf_counter()
        positions = [] if points is None else [(points["xcentroid"], points["ycentroid"])]
        if seg is not None:
            positions.append((seg.sources["X-Centroid"], seg.sources["Y-Centroid"]))
        in_exposures["measured"] = measure_in_exposures(positions, exposure_images, fcat=fcat)
        entry.timings["exposure_photometry"] = time.perf_counter() - clock

    # independent but for read-only inputs and the ring-profile cache (a profile both threads
    # miss is computed twice, the same): the points, then the exposures (the check compares
    # two or more) in the extra thread; the segments, longest, in this one
    branches = [measure_points] if points is not None else []
    branches += [measure_exposures] if len(exposure_images) > 1 else []
    branches += [measure_segment_catalog] if seg is not None else []
    run_side_by_side(branches, threads=threads)
    del common
    clock = time.perf_counter()
    counts = flag_missing_in_exposures([(entry.point, "X-Center", "Y-Center"),
                                         (entry.segment, "X-Centroid", "Y-Centroid")],
                                        exposure_images, fcat=fcat,
                                        measured=in_exposures.get("measured"))
    if any(counts):
        log.debug("filter %s: %d point and %d segment source(s) missing from a covering exposure "
                 "(cosmic-ray residuals) flagged 16", name, *counts)
    entry.timings["exposure_check"] = time.perf_counter() - clock
    if entry.point is not None and fcat.aperture_correction == "measured" and not image.is_blank:
        clock = time.perf_counter()
        entry.aperture_correction = measured_aperture_correction(entry.point, image, fcat,
                                                                  entry.ci_limits["aperture"])
        entry.timings["aperture_correction"] = time.perf_counter() - clock
    return entry


def needs_filter_background(detection: SourceDetection, *, saturated: bool) -> bool:
    """Whether a filter's measurements need the filter's own background model: its segments'
    photometry (non-empty segments), or without segments the saturated-light tests of its
    point rows (``saturated``: the filter has saturated pixels, or may have)."""
    seg, points = detection.segments, detection.point_sources
    if seg is not None:
        return bool(len(seg.sources))
    return points is not None and saturated


def _keep_total_rows(table: Table | None, total: Table | None) -> Table | None:
    """Rows of a filter catalog whose ID survived the total catalog's trimming."""
    if table is None or total is None:
        return table
    return table[np.isin(np.asarray(table["ID"]), np.asarray(total["ID"]))]


def assemble_catalogs(detection: SourceDetection, filters, *, filter_exposures=None,
                      cr_cleaned_filters=(), diagnostic_mode=False) -> CatalogSet:
    """Total catalogs from the detection and the filter measurements (§6.8).

    Joins ``MagAp2_<f>``, ``CI_<f>``, ``Flags_<f>`` of every filter, trims the total catalogs
    (rows flagged above ``flag_trim_value`` in every filter; before that, point sources seen
    in one filter only get flag 16 there, :mod:`hapcore.catalogs.filter_consistency`, and so do
    point sources sharper than the image's stars, :mod:`hapcore.catalogs.sharpness`), restricts the filter catalogs to
    the same rows when ``trim_filter_catalogs`` is set (drizzlepac's documented behaviour; its
    code never trims them, so its filter catalogs keep every cosmic-ray residual and
    single-coverage edge detection, spec §12.6) and applies the cosmic-ray-dominance test.

    Parameters
    ----------
    detection : SourceDetection
    filters : sequence of FilterCatalogs
        In output order.
    filter_exposures : mapping, optional
        ``{filter name: list of exposure times}`` for the CR-dominance test; default from each
        filter image's EXPTIME and NUMEXP.
    cr_cleaned_filters : collection of str, optional
        Single-exposure filters whose cosmic rays the drizzle stage removed
        (:mod:`hapcore.drizzle.single_exposure_cr`): not singletons for the CR-dominance test.
    diagnostic_mode : bool, optional
        Disables the CR-dominance rejection (as in drizzlepac).

    Returns
    -------
    CatalogSet
    """
    total_image = detection.total_image
    cat = detection.total_parameters.catalog
    result = CatalogSet(total_image, detection.total_parameters)
    result.timings.update(detection.timings)
    if detection.point_sources is not None:
        result.point = _base_table(detection.point_sources, (
            ("ID", "id"), ("X-Center", "xcentroid"), ("Y-Center", "ycentroid"), ("RA", "RA"),
            ("DEC", "DEC")))
    seg = detection.segments
    if seg is not None:
        result.segment = _base_table(seg.sources, (
            ("ID", "ID"), ("X-Centroid", "X-Centroid"), ("Y-Centroid", "Y-Centroid"),
            ("RA", "RA"), ("DEC", "DEC")))
        result.segment_nsigma = seg.nsigma
        result.is_big_island = seg.is_big_island
    filters = list(filters)
    if cat.filter_consistency_snr is not None and result.point is not None:
        flag_single_filter_detections(
            {entry.name: entry.point for entry in filters},
            {entry.name: max(int(entry.image.numexp or 1), 1) for entry in filters},
            snr=cat.filter_consistency_snr, max_snr=cat.filter_consistency_max_snr,
            max_exposures=cat.filter_consistency_max_exposures,
            support_snr=cat.filter_consistency_support_snr)
    if cat.sharpness_nsigma is not None and detection.point_sources is not None and \
            "sharpness" in detection.point_sources.colnames:
        flag_sharp_detections(
            {entry.name: entry.point for entry in filters},
            dict(zip((int(i) for i in detection.point_sources["id"]),
                     np.asarray(detection.point_sources["sharpness"], dtype=float))),
            nsigma=cat.sharpness_nsigma, flag_trim_value=cat.flag_trim_value)
    if result.segment is not None:    # PSF features among the segments: flag 32 in every filter
        flag_segment_psf_features(detection, [entry.segment for entry in filters])
        recentre_saturated_segments(result.segment, detection.point_sources,
                                    [entry.segment for entry in filters],
                                    [entry.point for entry in filters],
                                    plate_scale=total_image.plate_scale,
                                    detector=detection.total_parameters.detector)
    for entry in filters:
        if result.point is not None and entry.point is not None:
            result.point = join_filter_columns(result.point, entry.point, entry.name)
        if result.segment is not None and entry.segment is not None:
            result.segment = join_filter_columns(result.segment, entry.segment, entry.name)
        for kind, seconds in entry.timings.items():
            result.timings[f"{kind}_{entry.name}"] = seconds
        result.filters.append(entry)

    totals = {}
    if result.point is not None:
        result.point = trim_total_catalog(result.point, flag_trim_value=cat.flag_trim_value)
        totals["aperture"] = result.point
    if result.segment is not None:
        result.segment = trim_total_catalog(result.segment, flag_trim_value=cat.flag_trim_value)
        totals["segment"] = result.segment
    for entry in result.filters:
        if entry.parameters.catalog.trim_filter_catalogs:
            before = (len(entry.point) if entry.point is not None else 0,
                      len(entry.segment) if entry.segment is not None else 0)
            entry.point = _keep_total_rows(entry.point, result.point)
            entry.segment = _keep_total_rows(entry.segment, result.segment)
            log.debug("filter %s catalogs trimmed to the total catalogs' rows: point %d -> %d, "
                     "segment %d -> %d", entry.name, before[0],
                     len(entry.point) if entry.point is not None else 0, before[1],
                     len(entry.segment) if entry.segment is not None else 0)

    filter_images = {entry.name: entry.image for entry in result.filters}
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
            filter_exposures, crfactor=getattr(cat.crfactor, kind), cleaned=cr_cleaned_filters,
            detector=total_image.detector or detection.total_parameters.detector,
            n_pixels=n_pixels)
            for kind in totals}
        log.debug("cosmic-ray dominance thresholds: %s", {k: round(v, 2) for k, v in thresholds.items()})
        result.rejected = reject_cr_dominated(totals, thresholds)
    return result


def build_catalogs(total_image: CatalogImage, filter_images, *, total_parameters,
                   filter_parameters, phot_mode="both", saturated_pixels=None,
                   filter_exposures=None, diagnostic_mode=False, deblend_limits=None) -> CatalogSet:
    """Detect on the total image, measure and flag in every filter, assemble total catalogs.

    The three steps (:func:`~hapcore.catalogs.detection.detect_sources`,
    :func:`measure_filter_catalogs`, :func:`assemble_catalogs`) in one call, on in-memory
    images; the task layer runs them as separate tasks on the product files.

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
        See :func:`assemble_catalogs`.
    diagnostic_mode : bool, optional
        Disables the CR-dominance rejection (as in drizzlepac).
    deblend_limits : mapping, optional
        See :func:`~hapcore.catalogs.detection.detect_sources`.

    Returns
    -------
    CatalogSet
    """
    saturated_pixels = saturated_pixels or {}
    saturated = [np.atleast_2d(v) for v in saturated_pixels.values() if v is not None and len(v)]
    detection = detect_sources(total_image, total_parameters=total_parameters,
                               phot_mode=phot_mode, deblend_limits=deblend_limits,
                               saturated_xy=np.vstack(saturated) if saturated else None)
    filters = [measure_filter_catalogs(detection, name, image, parameters=filter_parameters[name],
                                       saturated_xy=saturated_pixels.get(name))
               for name, image in filter_images.items()]
    return assemble_catalogs(detection, filters, filter_exposures=filter_exposures,
                             diagnostic_mode=diagnostic_mode)


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
            ci_lower, ci_upper = entry.ci_limits.get(kind, (ci.ci_lower_limit,
                                                            ci.ci_upper_limit))
            meta = catalog_metadata(entry.image, kind=kind, aperture_1=fcat.aperture_1,
                                    aperture_2=fcat.aperture_2, threshold_sigma=nsigma,
                                    ci_lower=ci_lower, ci_upper=ci_upper,
                                    n_sources=0 if reason else len(table),
                                    is_big_island=catalogs.is_big_island,
                                    extra=entry.aperture_correction or
                                    ci_table_aperture_correction(entry.image))
            written.append(write_catalog(table, filter_paths[entry.name][kind], columns=columns,
                                         metadata=meta, rejected_reason=reason))
    rows = {kind: (0 if catalogs.rejected.get(kind) else len(getattr(catalogs, attr)))
            for kind, (attr, *_) in layouts.items() if getattr(catalogs, attr) is not None}
    log.info("%d catalog files written (%s rows in each)", len(written),
             ", ".join(f"{kind} {n}" for kind, n in rows.items()))
    return written


def _write_regions(table, path, attr):
    from hapcore.atomic import write_text_atomic

    xcol, ycol = ("X-Center", "Y-Center") if attr == "point" else ("X-Centroid", "Y-Centroid")
    lines = ["# Region file format: DS9", "image"]
    lines += [f"circle({x + 1:.3f},{y + 1:.3f},3)" for x, y in zip(table[xcol], table[ycol])]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def _filter_exposure_times(total) -> dict | None:
    """``{filter: [EXPTIME, ...]}`` from the product tree, or None if any filter lacks them
    (then the product headers are used for every filter)."""
    exposures = {}
    for fdp in total.fdp_list:
        times = [float(e.exptime) for e in fdp.edp_list if e.exptime > 0]
        if times:
            exposures[fdp.filters] = times
    return exposures if len(exposures) == len(total.fdp_list) else None


def _cr_cleaned_singletons(total) -> set:
    """Filters of one exposure whose cosmic rays the drizzle stage found on that exposure alone
    (``crclean`` and the filter's ``single_exposure_cr``)."""
    return {fdp.filters for fdp in total.fdp_list
            if len(fdp.edp_list) == 1 and fdp.edp_list[0].crclean and fdp.parameters is not None
            and fdp.parameters.drizzle.single_exposure_cr}


def write_detector_catalogs(total, detection: SourceDetection, filters, *, output_dir,
                            diagnostic_mode=False) -> list[Path]:
    """Assemble (:func:`assemble_catalogs`) and write every catalog of a detector (§2.1 names).

    Parameters
    ----------
    total : hap_models.products.TotalProduct
    detection : SourceDetection
    filters : sequence of FilterCatalogs
        One per filter product of ``total``, in its order.
    output_dir : path-like
    diagnostic_mode : bool, optional

    Returns
    -------
    list of pathlib.Path
    """
    output_dir = Path(output_dir)
    catalogs = assemble_catalogs(detection, filters, filter_exposures=_filter_exposure_times(total),
                                 cr_cleaned_filters=_cr_cleaned_singletons(total),
                                 diagnostic_mode=diagnostic_mode)
    paths = {fdp.filters: {"aperture": output_dir / fdp.point_cat_filename,
                           "segment": output_dir / fdp.segment_cat_filename}
             for fdp in total.fdp_list}
    return write_catalog_set(
        catalogs, total_paths={"aperture": output_dir / total.point_cat_filename,
                               "segment": output_dir / total.segment_cat_filename},
        filter_paths=paths, diagnostic_mode=diagnostic_mode)
