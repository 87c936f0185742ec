"""Segmentation catalog: detection, crowding logic and deblending on the total image, and
measurements in each filter image with the total segmentation map (spec §6.4).

* :func:`detect_segments` -- threshold image, Gaussian / RickerWavelet rounds with the
  big-island and crowding checks, bounded deblending, total source catalog;
* :func:`measure_segments` -- filter measurements in the columns of the filter segment catalog.

Deblending is bounded (drizzlepac can run for hours on crowded fields): at most
``max_deblend_segments`` candidates, none larger than ``max_deblend_area`` pixels, and no new
deblending batch after ``deblend_time_budget`` seconds; whatever is skipped is logged.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.convolution import RickerWavelet2DKernel
from astropy.stats import gaussian_fwhm_to_sigma
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources
from photutils.utils import NoDetectionsWarning

from hap_models.catalogs import SEGMENT_FILTER_COLUMNS, SEGMENT_TOTAL_BASE_COLUMNS
from hapcore.catalogs.convolution import oaconvolve_same
from hapcore.catalogs.image import (
    BackgroundModel,
    CatalogImage,
    compute_background,
    gaussian_kernel,
    make_wht_masks,
    subtract_background,
)
from hapcore.catalogs.photometry import compute_abmag
from hapcore.catalogs.point import measure_point_photometry
from hapcore.catalogs.segment_flux import plain_values as _plain
from hapcore.catalogs.segment_flux import segment_total_fluxes

__all__ = [
    "SegmentationResult",
    "SegmentMapQuality",
    "evaluate_segment_map",
    "ricker_wavelet_kernel",
    "threshold_image",
    "detect_segments",
    "measure_segments",
    "empty_segment_sources",
    "deblend_segment",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Default bounds of the deblending step.
MAX_DEBLEND_SEGMENTS = 3000
MAX_DEBLEND_AREA = 40000
DEBLEND_TIME_BUDGET = 30.0
_DEBLEND_BATCH = 250


@dataclass(eq=False)
class SegmentMapQuality:
    """Result of :func:`evaluate_segment_map`."""

    is_big: bool
    biggest_source: float
    source_fraction: float
    biggest_area: int
    deblend_labels: np.ndarray


@dataclass(eq=False)
class SegmentationResult:
    """Total-image segmentation: the map, the detection catalog and how they were made.

    Attributes
    ----------
    segm : photutils SegmentationImage or None
        Labels 1..N matching ``sources["ID"]``; None when there are no (usable) segments.
    sources : astropy.table.Table
        ``ID``, ``X-Centroid``, ``Y-Centroid``, ``RA``, ``DEC``.
    catalog : photutils SourceCatalog or None
        Detection catalog (used as ``detection_cat`` for the filters).
    convolved : 2-D ndarray or None
    kernel : 2-D ndarray or None
    nsigma : float
        Threshold (in rms units) of the accepted round.
    background : BackgroundModel
    is_big_island : bool
        True when the crowding checks failed and the catalog was given up (poor quality).
    notes : list of str
    """

    segm: object
    sources: Table
    catalog: object
    convolved: np.ndarray | None
    kernel: np.ndarray | None
    nsigma: float
    background: BackgroundModel
    is_big_island: bool = False
    notes: list = field(default_factory=list)


def empty_segment_sources() -> Table:
    """Empty total segmentation table with the §6.4 columns."""
    table = Table()
    for spec in SEGMENT_TOTAL_BASE_COLUMNS:
        table[spec.name] = np.empty(0, dtype=np.int64 if spec.kind == "int" else float)
    return table


def ricker_wavelet_kernel(fwhm_pixels, *, size=15, gaussian=None) -> np.ndarray:
    """RickerWavelet kernel, sigma = 1.5 x the Gaussian sigma, peak matched to the Gaussian."""
    sigma = 1.5 * fwhm_pixels * gaussian_fwhm_to_sigma
    kernel = np.asarray(RickerWavelet2DKernel(sigma, x_size=size, y_size=size).array)
    gaussian = gaussian_kernel(fwhm_pixels) if gaussian is None else gaussian
    return kernel * (gaussian.max() / kernel.max())


def threshold_image(regions, rms, nsigma, shape) -> np.ndarray:
    """Sum over weight regions of ``nsigma * region rms * mask`` (or ``nsigma * rms``)."""
    if not regions:
        return np.broadcast_to(nsigma * np.asarray(rms, dtype=np.float32), shape).astype(np.float32)
    thresh = np.zeros(shape, dtype=np.float32)
    for region in regions:
        thresh[region.mask] = nsigma * region.rms
    # pixels outside every region get the highest threshold (they are masked anyway)
    thresh[thresh == 0] = max((nsigma * r.rms for r in regions), default=0.0)
    return thresh


def evaluate_segment_map(segm, n_valid_pixels, *, kernel_area, biggest_source_limit,
                         source_fraction_limit, biggest_pixels_limit, ratio_deblend_limit=10.0,
                         big_island_only=False) -> SegmentMapQuality:
    """Crowding checks of a segmentation map and its deblending candidates (spec §6.4)."""
    areas = np.asarray(segm.areas)
    labels = np.asarray(segm.labels)
    n_valid = max(int(n_valid_pixels), 1)
    biggest_area = int(areas.max())
    biggest = biggest_area / n_valid
    fraction = float(areas.sum()) / n_valid
    is_big = (biggest > biggest_source_limit or biggest_area > biggest_pixels_limit
              or (not big_island_only and fraction > source_fraction_limit))
    order = np.argsort(areas)[::-1]
    excluded = {int(labels[order[0]])}
    for k in range(1, len(order) - 1):
        if areas[order[k]] >= ratio_deblend_limit * areas[order[k + 1]]:
            excluded.add(int(labels[order[k]]))
        else:
            break
    candidates = np.array([lab for lab, area in zip(labels, areas)
                           if area >= kernel_area and int(lab) not in excluded], dtype=int)
    return SegmentMapQuality(is_big, biggest, fraction, biggest_area, candidates)


def _convolve(data, kernel):
    # oaconvolve's values by strips of rows: its whole-image temporaries were ~830 MB
    return oaconvolve_same(data, kernel.astype(np.float32)).astype(np.float32, copy=False)


def _has_skimage():
    try:
        import skimage  # noqa: F401
    except ImportError:
        return False
    return True


def deblend_segment(convolved, mask, *, npixels, nlevels=64, contrast=0.001):
    """Multi-threshold + watershed deblending of one segment (scipy only).

    Same idea as photutils' ``deblend_sources`` (which needs scikit-image): exponentially
    spaced levels between the segment's minimum and maximum; going up, a branch that splits
    into two or more children, each with at least ``npixels`` pixels and ``contrast`` of the
    segment flux, is replaced by its children; the final branches seed a watershed of the
    inverted image restricted to the segment.

    Parameters
    ----------
    convolved : 2-D ndarray
        Cutout of the detection image.
    mask : 2-D bool ndarray
        The segment in the cutout.

    Returns
    -------
    2-D int ndarray
        Labels 1..k inside ``mask`` (all 1 when the segment does not split), 0 outside.
    """
    from scipy import ndimage

    values = np.where(mask, convolved, np.nan)
    vmin, vmax = np.nanmin(values), np.nanmax(values)
    out = mask.astype(np.int32)
    if not np.isfinite(vmin) or vmax <= vmin:
        return out
    total = float(np.nansum(np.clip(values, 0, None)))
    floor = max(vmin, 1e-12 * max(abs(vmax), 1e-30))
    if floor <= 0 or vmax <= floor:
        levels = np.linspace(vmin, vmax, nlevels + 2)[1:-1]
    else:
        levels = np.geomspace(floor, vmax, nlevels + 2)[1:-1]
    structure = np.ones((3, 3), dtype=bool)
    branches = [mask]
    for level in levels:
        above = mask & (convolved > level)
        labelled, n = ndimage.label(above, structure=structure)
        if n < 2:
            continue
        new_branches = []
        for branch in branches:
            ids = np.unique(labelled[branch & above])
            ids = ids[ids > 0]
            children = []
            for lab in ids:
                child = labelled == lab
                if child.sum() >= npixels and convolved[child].sum() >= contrast * total:
                    children.append(child)
            new_branches.extend(children if len(children) >= 2 else [branch])
        branches = new_branches
    if len(branches) < 2:
        return out
    markers = np.zeros(mask.shape, dtype=np.int32)
    for k, branch in enumerate(branches, start=1):
        markers[branch & (markers == 0)] = k
    scaled = np.where(mask, (vmax - convolved) / (vmax - vmin), 1.0)
    image = np.clip(scaled * 65000, 0, 65535).astype(np.uint16)
    markers[~mask] = -1
    ws = ndimage.watershed_ift(image, markers, structure=structure)
    return np.where(mask & (ws > 0), ws, 0).astype(np.int32)


def _deblend_scipy(convolved, segm, labels, *, npixels, nlevels, contrast, deadline):
    data = segm.data.copy()
    next_label = int(data.max()) + 1
    for label in labels:
        if time.perf_counter() > deadline:
            break
        sl = segm.slices[segm.get_index(int(label))]
        cut = data[sl]
        mask = cut == label
        pieces = deblend_segment(convolved[sl], mask, npixels=npixels, nlevels=nlevels,
                                 contrast=contrast)
        n = int(pieces.max())
        if n < 2:
            continue
        for k in range(2, n + 1):
            cut[pieces == k] = next_label
            next_label += 1
    from photutils.segmentation import SegmentationImage

    return SegmentationImage(data)


def _deblend(convolved, segm, labels, *, npixels, nlevels, contrast, max_segments, max_area,
             time_budget):
    """Deblend ``labels`` of ``segm`` in batches, within the bounds; returns the new map."""
    if labels.size == 0:
        return segm
    areas = dict(zip(np.asarray(segm.labels).tolist(), np.asarray(segm.areas).tolist()))
    too_big = [lab for lab in labels if areas[int(lab)] > max_area]
    labels = np.array([lab for lab in labels if areas[int(lab)] <= max_area], dtype=int)
    if too_big:
        log.warning("deblending: %d segments larger than %d px not deblended", len(too_big), max_area)
    if labels.size > max_segments:
        log.warning("deblending: %d candidates, only the %d largest are deblended",
                    labels.size, max_segments)
        labels = labels[np.argsort([areas[int(lab)] for lab in labels])[::-1][:max_segments]]
    start = time.perf_counter()
    done = 0
    use_photutils = _has_skimage()
    if not use_photutils:
        log.info("deblending: scikit-image is not installed; using the scipy multi-threshold + "
                 "watershed deblender")
    for first in range(0, labels.size, _DEBLEND_BATCH):
        if time.perf_counter() - start > time_budget:
            log.warning("deblending: time budget of %.0f s used up; %d of %d candidate segments "
                        "left undeblended", time_budget, labels.size - done, labels.size)
            break
        batch = labels[first:first + _DEBLEND_BATCH]
        try:
            if not use_photutils:
                segm = _deblend_scipy(convolved, segm, batch, npixels=npixels, nlevels=nlevels,
                                      contrast=contrast, deadline=start + time_budget)
                done += batch.size
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyUserWarning)
                segm = deblend_sources(convolved, segm, npixels, labels=batch, nlevels=nlevels,
                                       contrast=contrast, relabel=False, progress_bar=False)
        except Exception as exc:  # keep the map as it is: deblending is an improvement only
            log.warning("deblending failed for a batch of %d segments (%s); kept undeblended",
                        batch.size, exc)
        done += batch.size
    log.debug("deblending: %d candidate segments processed in %.1f s", done,
             time.perf_counter() - start)
    return segm


def detect_segments(image: CatalogImage, background: BackgroundModel, regions, *, params,
                    fwhm_pixels, max_deblend_segments=MAX_DEBLEND_SEGMENTS,
                    max_deblend_area=MAX_DEBLEND_AREA,
                    deblend_time_budget=DEBLEND_TIME_BUDGET,
                    merge_zones=None) -> SegmentationResult:
    """Segment the total image with the §6.4 decision sequence and deblend (bounded).

    Parameters
    ----------
    image : CatalogImage
        Total product.
    background : BackgroundModel
    regions : list of WeightRegion
    params : hap_models.parameters.CatalogParameters
    fwhm_pixels : float
    max_deblend_segments, max_deblend_area, deblend_time_budget : optional
        Bounds of the deblending step.

    Returns
    -------
    SegmentationResult
    """
    sx = params.sourcex
    gauss = gaussian_kernel(fwhm_pixels)
    rw = ricker_wavelet_kernel(fwhm_pixels, size=sx.rw2d_size, gaussian=gauss)
    empty = SegmentationResult(None, empty_segment_sources(), None, None, None, sx.segm_nsigma,
                               background)
    if image.is_blank:
        empty.notes.append("blank image")
        return empty
    excluded = image.excluded
    n_valid = int(np.count_nonzero(np.isfinite(image.data) & (image.data != 0)))

    def attempt(kernel, nsigma, bkg, regs, *, biggest_limit, fraction_limit, big_island_only):
        residual = subtract_background(image.data, bkg.background)
        convolved = _convolve(residual, kernel)
        del residual    # not held through the segmentation (a full-frame array)
        thresh = threshold_image(regs, bkg.rms, nsigma, image.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)
            segm = detect_sources(convolved, thresh, sx.source_box, connectivity=8, mask=excluded)
        if segm is None or segm.nlabels == 0:
            return None, convolved, None
        quality = evaluate_segment_map(
            segm, n_valid, kernel_area=kernel.size, biggest_source_limit=biggest_limit,
            source_fraction_limit=fraction_limit, biggest_pixels_limit=sx.rw2d_biggest_pixels,
            ratio_deblend_limit=sx.ratio_bigsource_deblend_limit, big_island_only=big_island_only)
        log.debug("segmentation (%s kernel, nsigma %.2f): %d segments, biggest %.4f, fraction %.4f%s",
                 "Gaussian" if kernel is gauss else "RickerWavelet", nsigma, segm.nlabels,
                 quality.biggest_source, quality.source_fraction, " -> crowded" if quality.is_big else "")
        return segm, convolved, quality

    limits = dict(biggest_limit=sx.rw2d_biggest_source, fraction_limit=sx.rw2d_source_fraction)
    g_nsigma, rw_nsigma = sx.segm_nsigma, sx.rw2d_nsigma
    bkg, regs = background, regions
    chosen = None
    segm, conv, quality = attempt(gauss, g_nsigma, bkg, regs, big_island_only=False, **limits)
    if segm is None:
        empty.notes.append("no segments")
        return empty
    if not quality.is_big:
        chosen = (segm, conv, quality, gauss, g_nsigma)
    else:
        segm, conv, quality = attempt(rw, rw_nsigma, bkg, regs, big_island_only=True, **limits)
        if segm is not None and not quality.is_big:
            chosen = (segm, conv, quality, rw, rw_nsigma)
    if chosen is None:
        if bkg.method == "sigma_clipped_background":
            log.info("segmentation: crowded with a constant background; forcing Background2D")
            bkg = compute_background(image, nsigma_clip=params.nsigma_clip, maxiters=params.maxiters,
                                     box_size=params.bkg_box_size, filter_size=params.bkg_filter_size,
                                     skew_threshold=0.0, negative_percent=100.0, force_2d=True)
            regs = make_wht_masks(image.weight, image.illuminated, scale=params.scale,
                                  sensitivity=params.sensitivity, ndrizim=image.ndrizim, rms=bkg.rms)
        else:
            g_nsigma, rw_nsigma = 2 * g_nsigma, 2 * rw_nsigma
        g_segm, g_conv, g_quality = attempt(gauss, g_nsigma, bkg, regs, big_island_only=False, **limits)
        if g_segm is None:
            empty.notes.append("no segments")
            return empty
        if not g_quality.is_big:
            chosen = (g_segm, g_conv, g_quality, gauss, g_nsigma)
        else:
            r_segm, r_conv, r_quality = attempt(
                rw, rw_nsigma, bkg, regs, big_island_only=False,
                biggest_limit=sx.biggest_source_deblend_limit,
                fraction_limit=sx.source_fraction_deblend_limit)
            if r_segm is not None and (
                    not r_quality.is_big
                    or g_quality.biggest_source / max(r_quality.biggest_source, 1e-30)
                    > sx.ratio_bigsource_limit):
                chosen = (r_segm, r_conv, r_quality, rw, rw_nsigma)
    if chosen is None:
        log.warning("segmentation: the image is dominated by big islands / crowding; the "
                    "segmentation catalogs are left empty (poor quality)")
        result = SegmentationResult(None, empty_segment_sources(), None, None, None, g_nsigma,
                                    bkg, is_big_island=True)
        result.notes.append("big island")
        return result

    segm, conv, quality, kernel, nsigma = chosen
    # only the chosen map and convolution stay: the deblended map replaces the map (two maps
    # of the full frame at once were ~110 MB of the detection's peak on a WFC3/UVIS total)
    chosen = g_segm = g_conv = r_segm = r_conv = None
    segm = _deblend(conv, segm, quality.deblend_labels, npixels=sx.source_box,
                    nlevels=sx.nlevels, contrast=sx.contrast, max_segments=max_deblend_segments,
                    max_area=max_deblend_area, time_budget=deblend_time_budget)
    residual = subtract_background(image.data, bkg.background)
    catalog = SourceCatalog(residual, segm, convolved_data=conv,
                            background=np.asarray(bkg.background, dtype=np.float32),
                            wcs=image.wcs, kron_params=(sx.kron_scaling_radius,
                                                        sx.kron_minimum_radius))
    finite = np.isfinite(catalog.xcentroid) & np.isfinite(catalog.ycentroid)
    if not finite.all():
        segm.remove_labels(catalog.labels[~finite])
    if merge_zones is not None:
        _merge_in_zones(segm, catalog, finite, merge_zones)
    segm.relabel_consecutive()
    if segm.nlabels == 0:
        empty.notes.append("no segments")
        return empty
    catalog = SourceCatalog(residual, segm, convolved_data=conv,
                            background=np.asarray(bkg.background, dtype=np.float32),
                            wcs=image.wcs, kron_params=(sx.kron_scaling_radius,
                                                        sx.kron_minimum_radius))
    sources = Table()
    sources["ID"] = np.asarray(catalog.labels, dtype=np.int64)
    sources["X-Centroid"] = np.asarray(catalog.xcentroid, dtype=float)
    sources["Y-Centroid"] = np.asarray(catalog.ycentroid, dtype=float)
    ra, dec = _sky(image, sources["X-Centroid"], sources["Y-Centroid"])
    sources["RA"] = ra
    sources["DEC"] = dec
    log.info("segmentation catalog: %d sources (nsigma %.2f)", len(sources), nsigma)
    return SegmentationResult(segm, sources, catalog, conv, kernel, nsigma, bkg)


def _merge_in_zones(segm, catalog, finite, merge_zones) -> None:
    """Merge the segments whose centroids fall in one zone of ``merge_zones`` into the
    brightest of them (in place).

    A saturated star's inner halo, minus its round model, leaves lumps (the clipped core, the
    asymmetric first rings) that the deblender cut into 3-4 "sources" within 0.6" of the star
    (issue #15); none is measurable apart from the star, so the star keeps one row.
    """
    from scipy import ndimage

    merge_zones = np.asarray(merge_zones, bool)
    rows, cols = np.flatnonzero(merge_zones.any(axis=1)), np.flatnonzero(merge_zones.any(axis=0))
    if rows.size == 0:
        return
    # labelled in the zones' bounding box (the same labels as over the whole frame, where an
    # int32 label image was a full-frame array at the detection's memory peak)
    y0, x0 = rows[0], cols[0]
    zones, n_zones = ndimage.label(merge_zones[y0:rows[-1] + 1, x0:cols[-1] + 1])
    if n_zones == 0:
        return
    labels = np.asarray(catalog.labels)[finite]
    x = np.rint(np.asarray(catalog.xcentroid)[finite]).astype(int) - x0
    y = np.rint(np.asarray(catalog.ycentroid)[finite]).astype(int) - y0
    ny, nx = zones.shape
    inside = (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
    zone = np.zeros(labels.size, int)
    zone[inside] = zones[y[inside], x[inside]]
    flux = np.nan_to_num(np.asarray(catalog.segment_flux, float)[finite], nan=-np.inf)
    merged = 0
    for z in np.unique(zone[zone > 0]):
        members = np.flatnonzero(zone == z)
        if members.size < 2:
            continue
        keep = members[np.argmax(flux[members])]
        segm.reassign_labels(labels[members[members != keep]], labels[keep])
        merged += members.size - 1
    if merged:
        log.info("segmentation: %d segment(s) on saturated stars' inner halos merged into "
                 "their stars", merged)


def _sky(image, x, y):
    from hapcore.catalogs.point import pixel_to_sky

    return pixel_to_sky(image.wcs, np.asarray(x, dtype=float), np.asarray(y, dtype=float))


def _error_image(residual, rms, epadu, *, rows=256) -> np.ndarray:
    """float32 ``sqrt(rms**2 + max(residual, 0) / epadu)``, computed in float64 by blocks of
    rows (whole-image float64 temporaries were 3 full frames of 8 bytes per pixel)."""
    rms = np.broadcast_to(np.asarray(rms, dtype=np.float32), residual.shape)
    error = np.empty(residual.shape, dtype=np.float32)
    for start in range(0, residual.shape[0], rows):
        part = slice(start, start + rows)
        error[part] = np.sqrt(rms[part].astype(np.float64) ** 2
                              + np.clip(residual[part], 0.0, None) / epadu)
    return error


def measure_segments(image: CatalogImage, background: BackgroundModel,
                     result: SegmentationResult, *, params) -> Table:
    """Measure the total segments in one filter image (spec §6.4 "Filter measurements").

    The error image combines the background rms with the Poisson noise of the
    background-subtracted image using the effective gain ``image.epadu`` (= EXPTIME for
    e-/s data); drizzlepac uses a gain of 1.0, which overstates the Poisson term by EXPTIME.

    Returns
    -------
    astropy.table.Table
        Filter segment catalog columns (``Flags`` 0; see :mod:`hapcore.catalogs.flags`).
    """
    n = len(result.sources)
    columns = {}
    if n and result.segm is not None:
        residual = subtract_background(image.data, background.background)
        error = _error_image(residual, background.rms, image.epadu)
        catalog = SourceCatalog(residual, result.segm, convolved_data=result.convolved,
                                error=error,
                                background=np.asarray(background.background, dtype=np.float32),
                                wcs=image.wcs, detection_cat=result.catalog,
                                kron_params=(params.sourcex.kron_scaling_radius,
                                             params.sourcex.kron_minimum_radius))
        x = _plain(catalog.xcentroid)
        y = _plain(catalog.ycentroid)
        bad = ~(np.isfinite(x) & np.isfinite(y))
        x = np.where(bad, np.asarray(result.sources["X-Centroid"]), x)
        y = np.where(bad, np.asarray(result.sources["Y-Centroid"]), y)
        # Kron flux, not drizzlepac's isophotal segment sum, plus the wings beyond a large
        # elliptical aperture from a Sersic fit (hapcore.catalogs.galaxy_flux): a compact
        # segment's Kron ellipse misses 30-50 % of a galaxy, any Kron misses steep wings
        flux, fluxerr = segment_total_fluxes(catalog, result, residual, error, image, params)
        columns.update({
            "X-Centroid": x, "Y-Centroid": y, "RA": np.asarray(result.sources["RA"], dtype=float),
            "DEC": np.asarray(result.sources["DEC"], dtype=float),
            "ID": np.asarray(result.sources["ID"], dtype=np.int64),
            "Flags": np.zeros(n, dtype=np.int64),
            "Bck": _plain(catalog.background_centroid),
            "Area": _plain(catalog.area), "FWHM": _plain(catalog.fwhm),
            "MagSegment": compute_abmag(flux, image.photflam, image.photplam),
            "FluxSegment": flux, "FluxSegmentErr": fluxerr,
            "KronRadius": _plain(catalog.kron_radius),
            "Xmin": _plain(catalog.bbox_xmin), "Ymin": _plain(catalog.bbox_ymin),
            "Xmax": _plain(catalog.bbox_xmax), "Ymax": _plain(catalog.bbox_ymax),
            "X2": _plain(catalog.covar_sigx2), "Y2": _plain(catalog.covar_sigy2),
            "XY": _plain(catalog.covar_sigxy), "CXX": _plain(catalog.cxx),
            "CYY": _plain(catalog.cyy), "CXY": _plain(catalog.cxy),
            "Elongation": _plain(catalog.elongation), "Ellipticity": _plain(catalog.ellipticity),
            "Theta": np.deg2rad(_plain(catalog.orientation)),
        })
        # the catalog's arrays go before the aperture photometry's temporaries
        del catalog, residual, error
        phot = measure_point_photometry(
            image, x, y, ids=np.asarray(result.sources["ID"]), ra=np.asarray(result.sources["RA"]),
            dec=np.asarray(result.sources["DEC"]), aperture_1=params.aperture_1,
            aperture_2=params.aperture_2, skyannulus=params.skyannulus_arcsec,
            dskyannulus=params.dskyannulus_arcsec, salgorithm=params.salgorithm)
        for name in ("MagAp1", "MagErrAp1", "FluxAp1", "FluxErrAp1", "MagAp2", "MagErrAp2",
                     "FluxAp2", "FluxErrAp2", "MSkyAp2", "CI"):
            values = np.asarray(phot[name], dtype=float)
            columns[name] = np.where(bad, np.nan, values)
    table = Table()
    for spec in SEGMENT_FILTER_COLUMNS:
        if n and result.segm is not None:
            table[spec.name] = columns[spec.name]
        else:
            table[spec.name] = np.empty(0, dtype=np.int64 if spec.kind == "int" else float)
        table[spec.name].format = spec.format
        if spec.unit:
            table[spec.name].unit = spec.unit
    return table
