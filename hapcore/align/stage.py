"""The alignment stage of one detector, from input files to SVM copies and headerlets.

This is the I/O edge around :mod:`hapcore.align.visit`: sources are detected in the original exposures
(opened read-only, in worker threads), the reference catalog is read from a local file (any
problem is logged and the visit falls back to a relative-only solution), and every exposure gets
its SVM copy ``<product_basename>_<flt|flc>.fits`` in the output directory carrying the new WCS
as primary and the old one as an alternate, plus a headerlet ``<product_basename>_hlet.fits``
when a fit was applied. The originals are never written.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from astropy.io import fits

from hap_models.alignment import AlignmentResult, ExposureAlignment, WCSFitRecord
from hap_models.products import ExposureProduct, TotalProduct
from hapcore.align.visit import (
    ExposureCatalog,
    VisitAlignment,
    align_visit,
    corrected_chip_wcs,
    detect_exposure_sources,
    read_chip_wcs_readonly,
)
from hapcore.align.refcat import (
    ReferenceCatalogError,
    decimal_year_from_mjd,
    fetch_reference_catalog,
)
from hapcore.align.refcat_read import LocalCatalogProvider
from hapcore.wcs.records import write_svm_copy

__all__ = ["detect_all_sources", "load_reference_catalog", "run_alignment", "exposure_record"]

logger = logging.getLogger(f"hapsvm.{__name__}")


def _map_in_threads(function, items: list, n_workers: int) -> list:
    """``[function(item) for item in items]``, in ``n_workers`` threads when > 1 (same order).

    Threads, not processes: the work (numpy, scipy.ndimage, file reads and writes) releases
    the GIL, so two threads keep two cores busy without the start-up of worker interpreters
    (about 1 s of CPU each to import astropy and scipy) nor second copies of the arrays.
    """
    if n_workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(n_workers, len(items)),
                              thread_name_prefix="hapsvm-align")
    try:
        results = list(pool.map(function, items))
    except BaseException:
        # a failure or an interrupted run: the other items are of no use; the queued ones are
        # cancelled, a running one ends with its item (reads, or an atomic write)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def detect_all_sources(paths: list[Path], *, settings, max_sources_per_chip: int,
                       n_workers: int = 2) -> list[ExposureCatalog]:
    """Detect alignment sources of every exposure, in ``n_workers`` threads when > 1."""
    work = partial(detect_exposure_sources, fwhmpsf_arcsec=settings.fwhmpsf,
                   nsigma=settings.nsigma, threshold_scale=abs(settings.threshold)
                   if settings.threshold < 0 else 1.0, box_size=settings.box_size,
                   filter_size=settings.win_size, max_sources_per_chip=max_sources_per_chip)
    return _map_in_threads(work, list(paths), n_workers)


def load_reference_catalog(refcat_path: Path | None, catalogs: list[ExposureCatalog], *,
                           provider=None):
    """The reference catalog over the visit at its epoch, or ``(None, reason)`` when unusable.

    ``provider`` (e.g. :class:`hapcore.align.refcat.GaiaOnlineProvider`) is used when no local file
    is given; any provider failure is a reason, never an exception.
    """
    if refcat_path is None and provider is None:
        return None, "no astrometric reference catalog given (--refcat, HAPSVM_REFCAT)"
    footprints = [fp for c in catalogs for fp in c.footprints]
    mjds = [c.epoch_mjd for c in catalogs if c.epoch_mjd]
    if not footprints or not mjds:
        return None, "no chip footprint or EXPSTART to query the reference catalog with"
    epoch = decimal_year_from_mjd(min(mjds))
    try:
        source = LocalCatalogProvider(refcat_path) if refcat_path is not None else provider
        catalog = fetch_reference_catalog(source, epoch=epoch,
                                          wcs_footprints=[np.asarray(f) for f in footprints])
    except ReferenceCatalogError as exc:
        return None, str(exc)
    if len(catalog) == 0:
        return None, f"reference catalog {catalog.name} ({catalog.source}) does not overlap the visit"
    finite = np.isfinite(np.asarray(catalog.table["RA"], float)) & np.isfinite(
        np.asarray(catalog.table["DEC"], float))
    catalog.table = catalog.table[finite]
    return catalog, ""


def exposure_record(visit: VisitAlignment, rootname: str) -> WCSFitRecord:
    """The header record of one exposure from the visit's alignment outcome."""
    figures = visit.fits.get(rootname)
    if visit.fit_label is None or figures is None:
        return WCSFitRecord(reason=visit.reason)
    common = dict(relgeom=figures.relgeom, relmatch=figures.relmatch,
                  relrms_ra_mas=figures.relrms_ra_mas, relrms_dec_mas=figures.relrms_dec_mas,
                  relrefim=visit.relrefim if figures.relgeom != "N/A" else "N/A",
                  reason=visit.reason)
    if visit.fit_label == "REL":
        return WCSFitRecord(fit_label="REL", fitgeom=figures.relgeom if figures.relgeom != "N/A"
                            else None, nmatches=figures.relmatch,
                            rms_ra_mas=figures.relrms_ra_mas, rms_dec_mas=figures.relrms_dec_mas,
                            fit_quality=5, **common)
    return WCSFitRecord(
        fit_label="SVM", catalog=visit.catalog, fitgeom=figures.fitgeom, nmatches=figures.nmatches,
        rms_ra_mas=figures.rms_ra_mas, rms_dec_mas=figures.rms_dec_mas,
        fit_rms_mas=figures.fit_rms_mas, x_shift_px=visit.fit_shift_arcsec[0],
        y_shift_px=visit.fit_shift_arcsec[1], rotation_deg=visit.fit_rotation_deg,
        scale=visit.fit_scale, skew_deg=visit.fit_skew_deg, fit_quality=visit.fit_quality,
        **common)


def _exposure_alignment(edp: ExposureProduct, visit: VisitAlignment | None) -> ExposureAlignment:
    chips = []
    record = WCSFitRecord(reason=visit.reason if visit else "not aligned")
    rootname = edp.filename.split("_")[0]
    if visit is not None and visit.fit_label is not None and rootname in visit.transforms:
        transform = visit.transforms[rootname]
        with fits.open(edp.input_path, mode="readonly", memmap=True) as hdul:
            for extver, wcs in read_chip_wcs_readonly(hdul).items():
                chips.append(corrected_chip_wcs(wcs, extver, transform, visit.ra0, visit.dec0))
        record = exposure_record(visit, rootname)
    return ExposureAlignment(input_path=edp.input_path, svm_copy_filename=edp.full_filename,
                             headerlet_filename=edp.headerlet_filename, chips=chips, record=record)


def _write_exposure(edp: ExposureProduct, visit: VisitAlignment | None,
                    output_dir: Path) -> ExposureAlignment:
    """The SVM copy of one exposure; with a solution also its headerlet, attached to the copy
    in the same write."""
    alignment = _exposure_alignment(edp, visit)
    write_svm_copy(edp.input_path, output_dir / edp.full_filename, alignment,
                   headerlet_path=(output_dir / edp.headerlet_filename) if alignment.chips
                   else None)
    return alignment


def run_alignment(total: TotalProduct, *, output_dir: Path, params, refcat_path: Path | None = None,
                  n_workers: int = 2, online_cache_dir: Path | None = None) -> AlignmentResult:
    """Align the direct exposures of one detector and write every exposure's SVM copy.

    Parameters
    ----------
    total : TotalProduct
        The detector's product tree (``edp_list`` in processing order, ``grism_edp_list``).
    output_dir : Path
        Where the SVM copies and headerlets go.
    params : AlignmentParameters
    refcat_path : Path, optional
        Local astrometric reference catalog; without one only a relative solution is possible.
    n_workers : int
        Threads for source detection and for writing the SVM copies.
    online_cache_dir : Path, optional
        Without ``refcat_path``: query Gaia DR3 online (extra ``online``), caching answers here.
    """
    output_dir = Path(output_dir)
    edps = list(total.edp_list)
    settings = params.generate_source_catalogs
    max_per_chip = int(params.flattened()["max_sources_per_chip"])
    catalogs = detect_all_sources([e.input_path for e in edps], settings=settings,
                                  max_sources_per_chip=max_per_chip, n_workers=n_workers)
    for catalog in catalogs:
        for extver, why in catalog.skipped.items():
            logger.warning("%s SCI,%d: %s; chip skipped for alignment", catalog.path.name,
                           extver, why)
    provider = None
    if refcat_path is None and online_cache_dir is not None:
        from hapcore.align.refcat_gaia import GaiaOnlineProvider

        provider = GaiaOnlineProvider(cache_dir=online_cache_dir)
    refcat, why = load_reference_catalog(refcat_path, catalogs, provider=provider)
    if refcat is None:
        logger.warning("%s: %s; alignment falls back to a relative solution",
                       total.product_basename, why)
        visit = align_visit(catalogs, None, params, catalog_name=None)
        if why and why not in visit.reason:
            visit.reason = f"{why}; {visit.reason}"
    else:
        logger.info("%s: reference catalog %s: %d sources at epoch %.3f (%s)",
                    total.product_basename, refcat.name, len(refcat), refcat.epoch, refcat.source)
        visit = align_visit(catalogs, refcat.table, params, catalog_name=refcat.name)

    result = AlignmentResult(detector=total.detector,
                             catalogs_tried=[refcat.name] if refcat is not None else [],
                             summary=visit.reason)
    output_dir.mkdir(parents=True, exist_ok=True)
    # direct exposures with the visit's solution, grism/prism exposures as they came
    jobs = [(edp, visit) for edp in edps] + [(gdp, None) for gdp in total.grism_edp_list]
    result.exposures.extend(_map_in_threads(
        lambda job: _write_exposure(*job, output_dir), jobs, n_workers))
    logger.info("%s: alignment %s (%s); %d SVM copies and their headerlets written",
                total.product_basename,
                {"SVM": f"a posteriori to {visit.catalog}", "REL": "relative only",
                 None: "not applied, input WCS kept"}[visit.fit_label], visit.reason,
                len(result.exposures))
    return result
