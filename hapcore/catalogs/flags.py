"""Flagging of filter catalogs (spec §6.7), vectorised.

* :func:`ci_flags` -- faint (8), hot pixel / cosmic ray (16), extended (1);
* :func:`saturation_flags` -- multi-pixel saturation (4) from saturated-pixel positions given in
  PRODUCT pixel coordinates (0-based, like the catalog positions);
* :func:`nexp_flags` -- low exposure coverage / edge (64) from an exposure-count image;
* :func:`narrow_segment_flags` -- segment rows narrower than the PSF where one or two exposures
  cover them: cosmic-ray tracks (16), :mod:`hapcore.catalogs.segment_width`;
* :func:`spike_segment_flags` -- thin segments pointing at a saturated star, or along the
  spikes' direction, and segments on a spike's ridge: pieces of diffraction spikes (32, the
  bit of a saturated star's light), :mod:`hapcore.catalogs.spike_segments`;
* :func:`flag_catalog` -- all of them for one catalog table.

Fixes relative to drizzlepac (§12.6): a CI of exactly 0 is a value, not "missing"; saturated
pixel positions and catalog positions use the same 0-based convention (drizzlepac compared
1-based converted DQ positions with 0-based catalog positions). Bits 2, 32 and 128 are
documented in :data:`hap_models.catalogs.FLAG_BITS`: 2 and 128 are deprecated by STScI and are
not set; the swarm filter (32) is not implemented (disabled in drizzlepac too). On IR, where
DQ saturation is not flagged, a source on a small hole the drizzle left in the product (a core
saturated in every exposure, :func:`saturated_holes`) gets flag 4.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from hap_models.catalogs import (
    FLAG_EXTENDED,
    FLAG_FAINT,
    FLAG_HOT_PIXEL,
    FLAG_LOW_COVERAGE,
    FLAG_SATURATION,
    FLAG_SWARM,
)
from hapcore.catalogs.saturated_features import saturated_stars
from hapcore.catalogs.segment_width import local_exposures, narrow_rows, semi_minor_axis
from hapcore.catalogs.spike_segments import (
    aligned_with_spikes,
    bright_peaks_on_axis,
    spike_direction,
    spike_ridge_rows,
    spike_segments,
)

__all__ = [
    "ci_flags",
    "flag_catalog",
    "narrow_segment_flags",
    "nexp_flags",
    "nexp_footprint",
    "nexp_threshold",
    "saturated_holes",
    "saturation_flags",
    "saturation_radius",
    "spike_segment_flags",
]

log = logging.getLogger(f"hapsvm.{__name__}")


def ci_flags(ci, mag_err_1, mag_err_2, flux_2, flux_err_2, *, ci_lower, ci_upper, bthresh=5.0):
    """Concentration-index flags of every row.

    ``8`` if ``FluxAp2 < bthresh * FluxErrAp2``; ``16`` if the CI is missing, its error is not
    finite, or ``CI < ci_lower - ci_err``; ``1`` if the CI is missing or ``CI > ci_upper``, with
    ``ci_err = sqrt(MagErrAp1**2 + MagErrAp2**2)``.
    """
    ci = np.asarray(ci, dtype=float)
    with np.errstate(invalid="ignore"):
        ci_err = np.hypot(np.asarray(mag_err_1, dtype=float), np.asarray(mag_err_2, dtype=float))
        missing = ~np.isfinite(ci)
        flags = np.zeros(ci.shape, dtype=np.int64)
        faint = ~(np.asarray(flux_2, dtype=float) >= bthresh * np.asarray(flux_err_2, dtype=float))
        flags[faint] |= FLAG_FAINT
        low = missing | ~np.isfinite(ci_err) | (ci < ci_lower - ci_err)
        flags[low] |= FLAG_HOT_PIXEL
        extended = missing | (ci > ci_upper)
        flags[extended] |= FLAG_EXTENDED
    return flags


def saturation_radius(aperture_2_arcsec, plate_scale):
    """Search radius (pixels) around a source for saturated pixels: round(ap2/scale + 0.5) * 2."""
    return float(np.round(aperture_2_arcsec / plate_scale + 0.5) * 2)


def saturation_flags(x, y, saturated_xy, *, radius):
    """Flag 4 for sources with at least one saturated pixel within ``radius`` pixels.

    Parameters
    ----------
    x, y : array_like
        0-based source positions in product pixels.
    saturated_xy : array_like, shape (m, 2) or None
        0-based (x, y) product-pixel positions of saturated input pixels.
    radius : float
    """
    x = np.asarray(x, dtype=float)
    flags = np.zeros(x.shape, dtype=np.int64)
    if saturated_xy is None or x.size == 0:
        return flags
    sat = np.atleast_2d(np.asarray(saturated_xy, dtype=float))
    if sat.size == 0:
        return flags
    sat = sat[np.all(np.isfinite(sat), axis=1)]
    if sat.size == 0:
        return flags
    tree = cKDTree(sat)
    points = np.column_stack([x, np.asarray(y, dtype=float)])
    good = np.all(np.isfinite(points), axis=1)
    hits = np.zeros(x.shape, dtype=bool)
    if good.any():
        dist, _ = tree.query(points[good], k=1, distance_upper_bound=radius)
        hits[good] = np.isfinite(dist)
    flags[hits] = FLAG_SATURATION
    return flags


def saturated_holes(data, *, radius):
    """Product pixels without data enclosed by data, in groups of at most ``pi * radius**2``
    pixels: (m, 2) 0-based (x, y), or None.

    The IR detector's DQ saturation is not flagged (spec §6.7.2: its up-the-ramp fit recovers
    most saturated pixels), but a pixel saturated in every exposure is left empty by the
    drizzle (DQ 256 is outside the IR ``final_bits``): a small hole in the product, at the core
    of a bright star, whose aperture photometry then misses the core. Sources within the
    saturation radius of such a hole get flag 4 (issue #15).
    """
    from hapcore.catalogs.coverage_holes import coverage_holes

    data = np.asarray(data)
    holes = coverage_holes(np.isfinite(data) & (data != 0), max_area=int(np.pi * radius ** 2))
    if not holes.any():
        return None
    yy, xx = np.nonzero(holes)
    return np.column_stack([xx, yy]).astype(float)


def nexp_threshold(max_nexp, detector):
    """Minimum exposure count below which a source is flagged (spec §6.7)."""
    if max_nexp <= 1 or str(detector).upper() in ("IR", "SBC"):
        return 0.5
    if max_nexp > 5:
        return 2.5
    return 1.5


def nexp_footprint(data):
    """Finite non-zero pixels, dilated 25x25 then eroded 31x31 (zero padding): trims edges ~3 px."""
    valid = (np.isfinite(data) & (data != 0)).astype(np.uint8)
    dilated = ndimage.maximum_filter(valid, size=25, mode="constant", cval=0)
    return ndimage.minimum_filter(dilated, size=31, mode="constant", cval=0).astype(bool)


def _max_count(counts, footprint) -> float:
    """Largest exposure count (0 outside ``footprint``), as a float; 0 for an empty image."""
    if counts.size == 0:
        return 0.0
    if footprint is None:
        return float(np.max(counts))
    top = float(np.max(counts[footprint])) if footprint.any() else 0.0
    return top if footprint.all() else max(top, 0.0)


def nexp_flags(x, y, nexp, *, radius, detector="", footprint=None):
    """Flag 64 where the minimum exposure count within ``radius`` px is below the threshold.

    Parameters
    ----------
    x, y : array_like
        0-based positions.
    nexp : 2-D ndarray
        Exposure count per pixel.
    radius : float
        Disk radius in pixels around the rounded position.
    detector : str
    footprint : 2-D bool ndarray, optional
        Pixels outside count as 0 exposures.
    """
    x = np.asarray(x, dtype=float)
    flags = np.zeros(x.shape, dtype=np.int64)
    if x.size == 0 or nexp is None:
        return flags
    # the counts are read at the disk pixels only (a float64 copy of the image, masked by the
    # footprint, was two full-frame temporaries)
    counts = np.asarray(nexp)
    if footprint is not None:
        footprint = np.asarray(footprint, dtype=bool)
    threshold = nexp_threshold(_max_count(counts, footprint), detector)
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = dx**2 + dy**2 <= radius**2
    dx, dy = dx[disk], dy[disk]
    good = np.isfinite(x) & np.isfinite(np.asarray(y, dtype=float))
    ix = np.rint(np.where(good, x, -1e6)).astype(int)
    iy = np.rint(np.where(good, np.asarray(y, dtype=float), -1e6)).astype(int)
    ny, nx = counts.shape
    cols = ix[:, None] + dx[None, :]
    rows = iy[:, None] + dy[None, :]
    inside = (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
    values = np.zeros(cols.shape)
    rows, cols = rows[inside], cols[inside]
    values[inside] = counts[rows, cols]
    if footprint is not None:
        values[inside] = np.where(footprint[rows, cols], values[inside], 0.0)
    low = values.min(axis=1) < threshold
    flags[low] = FLAG_LOW_COVERAGE
    return flags


#: Options of the width test of segment rows (:func:`hapcore.catalogs.segment_width.narrow_rows`)
NARROW_SEGMENT_TEST: dict = {"nsigma": 3.0, "min_snr": 10.0, "max_snr": 50.0, "max_exposures": 2}


def narrow_segment_flags(table, *, x_column, y_column, nexp, ci_limits=None,
                         **options) -> np.ndarray:
    """Flag 16 for segment rows narrower than the locus of their S/N where at most two
    exposures cover them (cosmic-ray tracks the median could not reject).

    ``table`` needs ``X2``, ``Y2``, ``XY``, ``FluxAp2``, ``FluxErrAp2`` and the position
    columns; ``nexp`` is the filter's exposure-count image; ``ci_limits``: the filter's
    point-like CI range, whose rows make the stellar width locus (with ``CI``); ``options``
    go to :func:`~hapcore.catalogs.segment_width.narrow_rows` (default
    :data:`NARROW_SEGMENT_TEST`).
    """
    options = {**NARROW_SEGMENT_TEST, **options}
    width = semi_minor_axis(table["X2"], table["Y2"], table["XY"])
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.asarray(table["FluxAp2"], dtype=float) / np.asarray(table["FluxErrAp2"],
                                                                     dtype=float)
    exposures = local_exposures(table[x_column], table[y_column], nexp)
    point_like = None
    if ci_limits is not None:
        ci = np.asarray(table["CI"], dtype=float)
        with np.errstate(invalid="ignore"):
            point_like = (ci >= ci_limits[0]) & (ci <= ci_limits[1])
    narrow = narrow_rows(width, snr, exposures=exposures, point_like=point_like, **options)
    return np.where(narrow, FLAG_HOT_PIXEL, 0).astype(np.int64)


#: Distances (arcsec) from a saturated star of the spike pieces of
#: :func:`spike_segment_flags`: beyond the star's own segment, within the spikes' reach
SPIKE_DISTANCE_ARCSEC: tuple[float, float] = (0.4, 10.0)


#: Options of :func:`~hapcore.catalogs.spike_segments.aligned_with_spikes`: thin rows along the
#: direction of the spike pieces found with their star
ALIGNED_SPIKE_TEST: dict = {"min_elongation": 15.0, "tolerance_deg": 3.0, "min_reference": 3}
#: Options of :func:`~hapcore.catalogs.spike_segments.spike_ridge_rows`: rows on a spike's
#: ridge (line along a spike direction brighter than its parallels by ``nsigma`` x rms) that
#: do not outshine it by more than ``max_contrast``
SPIKE_RIDGE_TEST: dict = {"min_distance": 8.0, "max_distance": 40.0, "offset": 6.0,
                          "nsigma": 1.0, "max_contrast": 3.0}


def spike_segment_flags(table, *, x_column, y_column, plate_scale, saturated_xy=None,
                        data=None) -> np.ndarray:
    """Flag 32 (a saturated star's light) for segment rows that are pieces of a bright star's
    diffraction spikes: thin rows whose major axis points at a saturated star of the filter
    (:func:`~hapcore.catalogs.spike_segments.spike_segments`) or at a pixel of ``data`` far
    brighter than the row (:func:`~hapcore.catalogs.spike_segments.bright_peaks_on_axis`: the
    star need not saturate in every filter).

    ``table`` needs ``X2``, ``Y2``, ``XY`` and the position columns; ``saturated_xy``: the
    filter's saturated pixels (product pixels, 0-based); ``data``: the filter image.
    """
    near, far = (limit / plate_scale for limit in SPIKE_DISTANCE_ARCSEC)
    columns = (table[x_column], table[y_column], table["X2"], table["Y2"], table["XY"])
    spikes = np.zeros(len(table), bool)
    if data is not None:
        spikes |= bright_peaks_on_axis(data, *columns, min_distance=near, max_distance=far)
    if saturated_xy is not None and len(saturated_xy) and (data is not None):
        star_x, star_y, _, _ = saturated_stars(saturated_xy, shape=np.shape(data))
        spikes |= spike_segments(*columns, star_x, star_y, min_distance=near, max_distance=far)
    # pieces of stars off the product (nothing to point at): thin rows along the spikes'
    # direction (that of the pieces found with their star), and rows on a spike's ridge
    direction = spike_direction(*columns[2:], spikes,
                                min_reference=ALIGNED_SPIKE_TEST["min_reference"])
    if direction is not None:
        spikes |= aligned_with_spikes(*columns[2:], spikes, **ALIGNED_SPIKE_TEST)
        if data is not None:
            spikes |= spike_ridge_rows(data, columns[0], columns[1], direction,
                                       rms=_robust_rms(data), **SPIKE_RIDGE_TEST)
    return np.where(spikes, FLAG_SWARM, 0).astype(np.int64)


def _robust_rms(data, stride: int = 7) -> float:
    """Robust standard deviation (1.4826 MAD) of every ``stride``-th pixel with data."""
    values = np.asarray(data)[::stride, ::stride]
    values = values[np.isfinite(values) & (values != 0)]
    if values.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def flag_catalog(table, *, x_column, y_column, ci_lower, ci_upper, bthresh, plate_scale,
                 aperture_2, detector="", saturated_xy=None, nexp=None, data=None,
                 footprint=None):
    """Return the §6.7 flags of a filter catalog table (does not modify the table).

    Segment tables (with ``X2``, ``Y2``, ``XY``; not on IR) also get the width test
    (:func:`narrow_segment_flags`, with ``nexp``) and the spike test
    (:func:`spike_segment_flags`, with ``data``).

    Parameters
    ----------
    table : astropy.table.Table
        With ``CI``, ``MagErrAp1``, ``MagErrAp2``, ``FluxAp2``, ``FluxErrAp2`` and the position
        columns.
    x_column, y_column : str
        ``X-Center``/``Y-Center`` or ``X-Centroid``/``Y-Centroid``.
    ci_lower, ci_upper, bthresh : float
        CI-filter limits (quality parameters).
    plate_scale, aperture_2 : float
        arcsec/pixel and the aperture-2 radius in arcsec (flag radii).
    detector : str
        For IR the DQ saturation is not flagged, only the empty product pixels of
        :func:`saturated_holes` (with ``data``).
    saturated_xy : array_like, optional
        Saturated pixels (product coordinates, 0-based).
    nexp : 2-D ndarray, optional
        Exposure-count image; no coverage flags without it.
    data : 2-D ndarray, optional
        The filter image, for the coverage footprint.
    footprint : 2-D bool ndarray, optional
        ``nexp_footprint(data)`` when already computed (it is the same for every catalog of
        a filter).
    """
    x = np.asarray(table[x_column], dtype=float)
    y = np.asarray(table[y_column], dtype=float)
    flags = ci_flags(table["CI"], table["MagErrAp1"], table["MagErrAp2"], table["FluxAp2"],
                     table["FluxErrAp2"], ci_lower=ci_lower, ci_upper=ci_upper, bthresh=bthresh)
    radius = saturation_radius(aperture_2, plate_scale)
    # segment rows (they carry second moments) get the width and spike tests; not on IR
    segment_tests = (len(table) > 0 and str(detector).upper() != "IR" and
                     all(name in table.colnames for name in ("X2", "Y2", "XY")))
    if str(detector).upper() != "IR":
        flags |= saturation_flags(x, y, saturated_xy, radius=radius)
    elif data is not None:
        flags |= saturation_flags(x, y, saturated_holes(data, radius=radius), radius=radius)
    if nexp is not None:
        if footprint is None and data is not None:
            footprint = nexp_footprint(data)
        flags |= nexp_flags(x, y, nexp, radius=aperture_2 / plate_scale, detector=detector,
                            footprint=footprint)
        # segment rows carry their second moments: cosmic-ray tracks in few-exposure areas
        # (not on IR, whose up-the-ramp fit leaves no tracks, and where it was not measured)
        if segment_tests:
            narrow = narrow_segment_flags(table, x_column=x_column, y_column=y_column, nexp=nexp,
                                          ci_limits=(ci_lower, ci_upper))
            log.debug("%d segment row(s) narrower than their S/N's locus in 1-2 exposure "
                      "areas: flag 16", int(np.count_nonzero(narrow)))
            flags |= narrow
    if segment_tests and data is not None:
        spikes = spike_segment_flags(table, x_column=x_column, y_column=y_column,
                                     plate_scale=plate_scale, saturated_xy=saturated_xy,
                                     data=data)
        # a saturated star's own segment (elongated by its bleed columns) is not a spike piece
        spikes[(flags & FLAG_SATURATION) != 0] = 0
        log.debug("%d segment row(s) on bright stars' diffraction spikes: flag 32",
                  int(np.count_nonzero(spikes)))
        flags |= spikes
    counts = {bit: int(np.count_nonzero(flags & bit)) for bit in (1, 4, 8, 16, 64)}
    log.debug("flags set: extended %d, saturated %d, faint %d, low-CI %d, low coverage %d "
             "(of %d sources)", counts[1], counts[4], counts[8], counts[16], counts[64], len(x))
    return flags
