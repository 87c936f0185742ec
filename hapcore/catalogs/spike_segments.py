"""Segments that are pieces of a saturated star's diffraction spikes, by their geometry.

The segmentation of a product with saturated stars cuts each star's spikes into long, thin
segments 1-3" from the star. They are real light, seen in every filter, so neither the
cross-filter nor the cosmic-ray tests remove them, and the aperture tests of
:mod:`hapcore.catalogs.saturated_spikes` judge an aperture at the segment's centroid (a
fraction of a segment 10-30 pixels long), which often passes in one filter and not in the
other: the row keeps a low flag in one filter and stays in the total catalog.

A spike piece has a shape no source has: its second moments are a thin ridge (elongation,
major over minor axis, of 15-25 on the hapsim ``saturated`` preset, where real galaxies stay
below ~8) and its major axis points at its star from outside the star's core.
:func:`spike_segments` finds the rows with an elongation of at least ``min_elongation`` whose
major axis passes within ``max_offset`` pixels of the centre of a saturated star of the filter
(:func:`~hapcore.catalogs.saturated_features.saturated_stars`) ``min_distance`` to
``max_distance`` pixels away. A red star saturates in F814W and not in F606W, where its spikes
are still there: :func:`bright_peaks_on_axis` finds the same rows by a pixel along their axis,
in the same distance range, ``contrast`` times brighter than their own brightest pixel. The
star's own segment (centred on it, elongated by its bleed columns) is closer than
``min_distance``, and carries the saturation flag, which exempts it in
:func:`hapcore.catalogs.flags.flag_catalog`.

Measured on the hapsim ``saturated`` preset (UVIS F606W+F814W 3 x 500 s, 10 stars per
arcmin^2 0.5-6 mag brighter than saturation), bench_realism.py with the same code with and
without the segment tests of :mod:`hapcore.catalogs.flags` (this one and the width test):
total segment catalog 23 -> 15 spurious rows of 895 -> 886 (2.57% -> 1.69%); the ninth row
removed is a spike piece (elongation 18, on the spike's axis 38 pixels from a 15.8 mag star)
that the scorer matches to a faint truth source by chance. The saturated stars' own elongated
segments (19 rows, 0-3 pixels from their star) are kept; point catalog, completeness and
galaxy photometry are unchanged. Not caught by those two: pieces of the spikes of stars off the
product (no star to point at) and spike pieces too wide to be thin.

Both are caught by the direction of the spikes, the same for every star of a drizzled product
(two perpendicular spider vanes): :func:`spike_direction` measures it on the pieces found with
their star, :func:`aligned_with_spikes` takes the thin rows along it, and
:func:`spike_ridge_rows` the rows of any shape lying on a ridge along it (a line through the
row brighter than its two parallels 6 pixels away, the row not outshining it). On a
``saturated`` preset visit simulated with hapsim's round (tapered) PSF wings, seed 15: total
segment catalog 15 -> 1 spurious rows of 889 -> 876 (1.69% -> 0.11%) with the segment PSF-feature
test of :mod:`hapcore.catalogs.segment_features` and the saturated stars' recentred rows of
:mod:`hapcore.catalogs.saturated_centroids`; 10 of the 14 removed were spike pieces of stars
up to 12" away or off the product, none of the real sources matched by the truth went.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from hapcore.catalogs.segment_width import moment_eigenvalues

__all__ = ["aligned_with_spikes", "bright_peaks_on_axis", "moment_axes", "spike_direction",
           "spike_ridge_rows", "spike_segments"]

log = logging.getLogger(f"hapsvm.{__name__}")


def moment_axes(x2, y2, xy):
    """Elongation (major over minor axis) and major-axis angle (radians from +x) of second
    moments ``x2``, ``y2``, ``xy``; NaN where they are not finite or not positive."""
    x2, y2, xy = (np.asarray(v, dtype=float) for v in (x2, y2, xy))
    big, small, measured = moment_eigenvalues(x2, y2, xy)
    with np.errstate(invalid="ignore", divide="ignore"):
        elongation = np.where(measured & (small > 0), np.sqrt(big / np.where(small > 0, small,
                                                                             1.0)), np.nan)
        elongation = np.where(measured & (small <= 0) & (big > 0), np.inf, elongation)
        angle = np.where(measured, 0.5 * np.arctan2(2.0 * xy, x2 - y2), np.nan)
    return elongation, angle


def spike_segments(x, y, x2, y2, xy, star_x, star_y, *, min_elongation: float = 10.0,
                   max_offset: float = 2.0, min_distance: float = 10.0,
                   max_distance: float = 250.0) -> np.ndarray:
    """Rows whose thin elongated shape points at a saturated star from outside its core.

    Parameters
    ----------
    x, y : array_like
        Row centroids (product pixels).
    x2, y2, xy : array_like
        Second moments of each row (pixels**2).
    star_x, star_y : array_like
        Centres of the saturated stars (product pixels).
    min_elongation : float, optional
        Rows less elongated are not tested.
    max_offset : float, optional
        Largest distance (pixels) of a star's centre from the row's major axis.
    min_distance, max_distance : float, optional
        Range of distances (pixels) from the row to the star.

    Returns
    -------
    ndarray of bool
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    star_x = np.asarray(star_x, dtype=float).ravel()
    star_y = np.asarray(star_y, dtype=float).ravel()
    out = np.zeros(x.shape, bool)
    if star_x.size == 0 or x.size == 0:
        return out
    elongation, angle = moment_axes(x2, y2, xy)
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(np.isfinite(x) & np.isfinite(y) & np.isfinite(angle) &
                                    (elongation >= min_elongation))
    for i in candidates:
        dx, dy = star_x - x[i], star_y - y[i]
        distance = np.hypot(dx, dy)
        offset = np.abs(-dx * np.sin(angle[i]) + dy * np.cos(angle[i]))
        out[i] = bool(np.any((distance >= min_distance) & (distance <= max_distance) &
                             (offset <= max_offset)))
    return out


def bright_peaks_on_axis(data, x, y, x2, y2, xy, *, min_elongation: float = 10.0,
                         contrast: float = 100.0, min_distance: float = 10.0,
                         max_distance: float = 250.0, own_length: float = 5.0) -> np.ndarray:
    """Thin rows whose major axis meets, ``min_distance``-``max_distance`` pixels away, a
    pixel ``contrast`` times brighter than the row's own brightest pixel.

    The star of a spike is not always saturated in the filter at hand (a red star saturates
    in F814W, not in F606W), but it is always far brighter than its spikes: along the spike's
    line its core outshines the spike piece by orders of magnitude, which no galaxy lined up
    by chance with a faint neighbour does. The line is sampled every pixel, one pixel to
    either side; the row's own brightest pixel is taken within ``own_length`` pixels of its
    centroid along the axis.

    Parameters
    ----------
    data : 2-D ndarray
        The filter image (background need not be subtracted: the contrast is large).
    x, y, x2, y2, xy : array_like
        Row centroids and second moments (pixels).
    min_elongation, contrast, min_distance, max_distance, own_length : float, optional

    Returns
    -------
    ndarray of bool
    """
    data = np.asarray(data)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    out = np.zeros(x.shape, bool)
    elongation, angle = moment_axes(x2, y2, xy)
    ny, nx = data.shape
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(np.isfinite(x) & np.isfinite(y) & np.isfinite(angle) &
                                    (elongation >= min_elongation))
    across = np.array([-1.0, 0.0, 1.0])

    def line_max(i, steps):
        c, s = np.cos(angle[i]), np.sin(angle[i])
        px = (x[i] + steps[:, None] * c - across[None, :] * s).ravel()
        py = (y[i] + steps[:, None] * s + across[None, :] * c).ravel()
        ix, iy = np.rint(px).astype(int), np.rint(py).astype(int)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        values = data[iy[inside], ix[inside]]
        values = values[np.isfinite(values)]
        return float(values.max()) if values.size else np.nan

    far = np.arange(min_distance, max_distance + 1.0)
    own = np.arange(-own_length, own_length + 1.0)
    for i in candidates:
        peak = line_max(i, own)
        if not np.isfinite(peak) or peak <= 0:
            continue
        star = max(line_max(i, far), line_max(i, -far))
        out[i] = bool(np.isfinite(star) and star >= contrast * peak)
    return out


def aligned_with_spikes(x2, y2, xy, reference, *, min_elongation: float = 15.0,
                        tolerance_deg: float = 3.0, min_reference: int = 3) -> np.ndarray:
    """Thin rows whose major axis lies along the product's diffraction spikes.

    HST's spikes come from two spider vanes crossing at right angles: on a drizzled product
    every star's spikes point the same two perpendicular ways. The ``reference`` rows (spike
    pieces found with their star) give that direction (the median of their axes' angles
    modulo 90 degrees, averaged on the doubled-angle circle); any other row at least
    ``min_elongation`` long and within ``tolerance_deg`` of it is a spike piece too -- of a
    star off the product (nothing to point at) or one whose own core is not on its axis.

    Parameters
    ----------
    x2, y2, xy : array_like
        Second moments of each row (pixels**2).
    reference : array_like of bool
        The rows known to be spike pieces.
    min_elongation : float, optional
    tolerance_deg : float, optional
    min_reference : int, optional
        Fewer reference rows: nothing is flagged.

    Returns
    -------
    ndarray of bool
    """
    elongation, angle = moment_axes(x2, y2, xy)
    out = np.zeros(np.shape(elongation), bool)
    direction = spike_direction(x2, y2, xy, reference, min_reference=min_reference)
    if direction is None:
        return out
    phase = 4.0 * angle
    direction = 4.0 * direction
    with np.errstate(invalid="ignore"):
        offset = np.abs(np.angle(np.exp(1j * (phase - direction)))) / 4.0
        out = (elongation >= min_elongation) & (offset <= np.radians(tolerance_deg))
    return out & np.isfinite(angle)


def spike_direction(x2, y2, xy, reference, *, min_reference: int = 3) -> float | None:
    """The spikes' direction (radians, modulo 90 degrees) from the major axes of the
    ``reference`` rows (spike pieces), averaged on the four-fold circle; None with fewer than
    ``min_reference`` of them."""
    _, angle = moment_axes(x2, y2, xy)
    reference = np.asarray(reference, bool) & np.isfinite(angle)
    if reference.sum() < min_reference:
        return None
    phase = 4.0 * angle[reference]
    return float(np.arctan2(np.mean(np.sin(phase)), np.mean(np.cos(phase)))) / 4.0


def spike_ridge_rows(data, x, y, direction: float, *, rms: float, min_distance: float = 8.0,
                     max_distance: float = 40.0, offset: float = 6.0, nsigma: float = 1.0,
                     max_contrast: float = 3.0) -> np.ndarray:
    """Rows lying on a diffraction spike's ridge, whatever their shape, that do not outshine it.

    A spike crossing the field from a star off the product (or far away) is a straight ridge
    along one of the two spike directions; the segmentation cuts it into pieces that are
    neither thin (the spike is several pixels wide there) nor near any star. For each row and
    each direction the image is sampled along the line through the row's centroid,
    ``min_distance`` to ``max_distance`` pixels from it on both sides (three pixels wide), and
    along the two parallel lines ``offset`` pixels to either side: the ridge's excess is the
    median of the line minus the mean of the parallel lines' medians (a smooth gradient, a
    halo's, cancels). A row is a piece of the ridge when that excess is at least ``nsigma``
    times ``rms`` and the row's own light (mean of its central 3 x 3 pixels above the parallel
    level) is at most ``max_contrast`` times the excess: a source on a spike stands out of it.

    Parameters
    ----------
    data : 2-D ndarray
        The image (background need not be subtracted).
    x, y : array_like
        Row centroids (pixels).
    direction : float
        One spike direction (radians); the other is perpendicular.
    rms : float
        Background noise per pixel.
    min_distance, max_distance, offset, nsigma, max_contrast : float, optional

    Returns
    -------
    ndarray of bool
    """
    data = np.asarray(data)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    out = np.zeros(x.shape, bool)
    good = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if good.size == 0 or not np.isfinite(direction):
        return out
    ny, nx = data.shape
    steps = np.arange(min_distance, max_distance + 1.0)
    steps = np.concatenate([-steps[::-1], steps])
    across = np.array([-1.0, 0.0, 1.0])

    def line_median(cx, cy, c, s, shift):
        along = steps[None, :, None]
        side = across[None, None, :] + shift
        px = cx[:, None, None] + along * c - side * s
        py = cy[:, None, None] + along * s + side * c
        ix, iy = np.rint(px).astype(int), np.rint(py).astype(int)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        values = np.where(inside, data[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)], np.nan)
        values = np.where(values != 0, values, np.nan)      # no data
        values = values.reshape(values.shape[0], -1)
        enough = np.sum(np.isfinite(values), axis=1) >= 0.5 * values.shape[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.where(enough, np.nanmedian(values, axis=1), np.nan)

    cx, cy = x[good], y[good]
    ix, iy = np.rint(cx).astype(int), np.rint(cy).astype(int)
    dy, dx = np.mgrid[-1:2, -1:2]
    own = data[np.clip(iy[:, None] + dy.ravel(), 0, ny - 1),
               np.clip(ix[:, None] + dx.ravel(), 0, nx - 1)].mean(axis=1)
    for theta in (direction, direction + np.pi / 2):
        c, s = np.cos(theta), np.sin(theta)
        ridge = line_median(cx, cy, c, s, 0.0)
        level = 0.5 * (line_median(cx, cy, c, s, offset) + line_median(cx, cy, c, s, -offset))
        excess = ridge - level
        with np.errstate(invalid="ignore"):
            out[good] |= (excess >= nsigma * rms) & (own - level <= max_contrast * excess)
    return out
