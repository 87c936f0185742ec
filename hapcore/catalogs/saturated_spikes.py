"""Detections that are fragments of a saturated star's diffraction spikes.

The four spikes of a saturated WFC3/UVIS or ACS star reach 5-10" and are lumpy: both the star
finder and the segmentation cut them into "sources" 1-5" from the star (issue #15: 33 of 37
spurious point rows and 68 of 79 spurious segment rows of the ``saturated`` preset lay within
6 degrees of a spike). The rotated-copy test of
:func:`~hapcore.catalogs.saturated_features.saturated_star_features` assumes the spikes are
exactly four-fold, that the three rotated positions are clean, and applies only where the
ring of the star's light is smooth or the sky clean; around a 12 mag star the ring at 2-6"
holds the spikes, neighbours' halos and bleed trails, and one of the three copies often lands
on a bleed trail, so those fragments kept their rows.

:func:`spike_directions` measures the spikes on the image: the azimuthal profile of the star's
light at ``inner``-``outer`` pixels (each pixel relative to its ring's median, the saturated
pixels and their surroundings left out), folded modulo 90 degrees, peaks at the spikes' common
direction; each spike's own direction and amplitude (relative to the ring median) are then
refined within a few degrees of it. The spikes are fixed in the detector frame and rotate with
the telescope's roll on a north-up product: nothing is assumed about their angle.

:func:`saturated_spike_features` tests the detections that lie within ``max_angle`` of a
measured spike (and whose aperture touches no saturated pixel) against three estimates of the
star's light at the detection, all from the same image at the same radius; a detection that
one of them explains is a spike fragment:

* the mirror: the same spike pair on the other side of the star (point symmetry holds on any
  pixel grid), the median of three apertures along its ridge (at the detection's radius and
  one aperture diameter in and out: robust to a source there); the two must agree both ways
  within :data:`MIRROR_ERROR` x ``model_error``, and the mirror's light must be a narrow ridge
  (the apertures beside it hold less than half of it: not a galaxy);
* the sides: the perpendicular pair at the same offset from their ridges, scaled by the
  measured amplitude ratio (the two pairs differ by about 1.5 on WFC3/UVIS) above the light
  between the spikes; the two must agree (one is enough where the mirror is unusable), the
  detection must not exceed them;
* the light between the spikes at that radius (the halo, or the overlapping halos of two
  saturated stars), where the detection does not stand out of it.

Apertures that touch saturated pixels (a bleed trail) or pixels no exposure covers (off the
footprint, a chip gap) are left out. In every test the star's light must be significant
(``nsigma`` times the noise), and the detection may exceed it by less than ``nsigma`` times its
noise combined with ``model_error`` of it: a real star or galaxy on the spike sticks out.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from hapcore.catalogs.swarm import aperture_sums

__all__ = ["MIRROR_ERROR", "saturated_spike_features", "spike_directions"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: The mirror spike (the same pair, by point symmetry) is compared within this fraction of the
#: model error.
MIRROR_ERROR: float = 0.5
#: Bin width (degrees) of the folded azimuthal profile.
_BIN_DEG: float = 0.5


def _binned_median(index: np.ndarray, values: np.ndarray, nbins: int) -> np.ndarray:
    """Median of ``values`` in each bin ``index`` (0..nbins-1); NaN where a bin is empty."""
    out = np.full(nbins, np.nan)
    if index.size == 0:
        return out
    order = np.lexsort((values, index))
    index, values = index[order], values[order]
    counts = np.bincount(index, minlength=nbins)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    lo = start[has] + (counts[has] - 1) // 2
    hi = start[has] + counts[has] // 2
    out[has] = 0.5 * (values[lo] + values[hi])
    return out


def spike_directions(data: np.ndarray, cx: float, cy: float, *, inner: float, outer: float,
                     background=None, background_rms=0.0, saturated_mask=None,
                     window: float = 5.0, min_contrast: float = 0.5):
    """Directions and relative amplitudes of a saturated star's four diffraction spikes.

    Parameters
    ----------
    data : 2-D ndarray
    cx, cy : float
        0-based centre of the star.
    inner, outer : float
        Radii (pixels) of the annulus the spikes are measured in.
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
        A pixel is compared with its ring's median in units of the larger of that median and
        this rms (read at the star's centre).
    saturated_mask : 2-D ndarray of bool, optional
        Saturated product pixels; they and the pixels within 3 of them are left out.
    window : float, optional
        Each spike's own direction is searched within this many degrees of the common one.
    min_contrast : float, optional
        Smallest peak of the folded profile (pixels relative to their ring median, above the
        profile's median) that counts as spikes.

    Returns
    -------
    angles : (4,) ndarray or None
        Degrees counter-clockwise from +x, increasing; None when no spikes stand out.
    amplitudes : (4,) ndarray
        Median relative excess of each spike's ridge pixels over their ring medians.
    """
    ny, nx = data.shape
    r_out = int(np.ceil(outer))
    xa, xb = max(int(cx) - r_out, 0), min(int(cx) + r_out + 2, nx)
    ya, yb = max(int(cy) - r_out, 0), min(int(cy) + r_out + 2, ny)
    stamp = np.asarray(data[ya:yb, xa:xb], float)
    bad = ~np.isfinite(stamp) | (stamp == 0)
    if background is not None:
        stamp = stamp - (np.asarray(background[ya:yb, xa:xb], float) if np.ndim(background)
                         else float(background))
    if saturated_mask is not None:
        bad |= ndimage.binary_dilation(saturated_mask[ya:yb, xa:xb], iterations=3)
    yy, xx = np.mgrid[ya:yb, xa:xb]
    r = np.hypot(xx - cx, yy - cy)
    use = ~bad & (r >= inner) & (r <= outer)
    if np.count_nonzero(use) < 100:
        return None, np.full(4, np.nan)
    radius = np.rint(r[use]).astype(int)
    values = stamp[use]
    theta = np.degrees(np.arctan2(yy[use] - cy, xx[use] - cx)) % 360.0
    ring = _binned_median(radius, values, r_out + 1)[radius]
    rms = (float(background_rms[min(max(round(cy), 0), ny - 1), min(max(round(cx), 0), nx - 1)])
           if np.ndim(background_rms) else float(background_rms))
    relative = (values - ring) / np.fmax(np.abs(ring), rms if rms > 0 else 1e-30)
    relative = np.clip(relative, -5.0, 50.0)
    nbins = round(90.0 / _BIN_DEG)
    folded = _binned_median((theta % 90.0 / _BIN_DEG).astype(int) % nbins, relative, nbins)
    if not np.isfinite(folded).any():
        return None, np.full(4, np.nan)
    smooth = np.nan_to_num(folded, nan=0.0)
    smooth = (np.roll(smooth, 1) + smooth + np.roll(smooth, -1)) / 3.0
    peak = int(np.argmax(smooth))
    if smooth[peak] - np.median(smooth) < min_contrast:
        return None, np.full(4, np.nan)
    common = (peak + 0.5) * _BIN_DEG
    angles = np.empty(4)
    amplitudes = np.empty(4)
    for k in range(4):
        centre = common + 90.0 * k
        offset = (theta - centre + 180.0) % 360.0 - 180.0
        near = np.abs(offset) <= window
        nb = round(2 * window / _BIN_DEG)
        prof = _binned_median(np.clip(((offset[near] + window) / _BIN_DEG).astype(int), 0, nb - 1),
                              relative[near], nb)
        prof = np.nan_to_num(prof, nan=0.0)
        best = int(np.argmax(prof))
        angles[k] = (centre - window + (best + 0.5) * _BIN_DEG) % 360.0
        # the ridge: pixels within 1 pixel of the spike's line
        across = r[use] * np.sin(np.radians(theta - angles[k]))
        along = np.cos(np.radians(theta - angles[k])) > 0
        ridge = along & (np.abs(across) <= 1.0)
        amplitudes[k] = float(np.median(relative[ridge])) if ridge.any() else np.nan
    order = np.argsort(angles)
    return angles[order], amplitudes[order]


def _rotated(cx, cy, dx, dy, turn):
    """Offsets (dx, dy) from (cx, cy) rotated by ``turn`` degrees (one column per turn)."""
    c, sn = np.cos(np.radians(turn)), np.sin(np.radians(turn))
    return cx + c * dx[:, None] - sn * dy[:, None], cy + sn * dx[:, None] + c * dy[:, None]


def _noise(rate, reference, factor):
    """Noise of the difference of two apertures: sky (``rate`` per aperture, squared) and the
    Poisson noise of ``reference`` (``factor`` = 1 / exposure time)."""
    return np.sqrt(2.0 * (rate + np.clip(np.nan_to_num(reference), 0.0, None) * factor))


def _sums(data, uncovered, x, y, radius, background):
    """:func:`~hapcore.catalogs.swarm.aperture_sums`, NaN where the aperture holds a pixel no
    exposure covers (0 in a drizzled product: off the footprint, a chip gap)."""
    sums = aperture_sums(data, x, y, radius, background=background)
    holes = aperture_sums(uncovered, x, y, radius)
    return np.where(holes > 0, np.nan, sums)


def _shifted_copy(data, uncovered, cx, cy, x, y, step, radius, background, tree):
    """Aperture sums at (x, y) moved ``step`` pixels away from (cx, cy); NaN where the
    aperture touches a saturated pixel."""
    r = np.hypot(x - cx, y - cy)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(r > 0, (r + step) / r, np.nan)
    px, py = cx + (x - cx) * f, cy + (y - cy) * f
    ok = np.isfinite(px) & np.isfinite(py)
    sums = np.full(x.shape, np.nan)
    if ok.any():
        sums[ok] = _sums(data, uncovered, px[ok], py[ok], radius, background)
        if tree is not None:
            hit, _ = tree.query(np.column_stack([px[ok], py[ok]]), distance_upper_bound=radius + 1.0)
            sums[np.flatnonzero(ok)[np.isfinite(hit)]] = np.nan
    return sums


def saturated_spike_features(data: np.ndarray, x, y, stars, saturated_pixels, *,
                             aperture_radius: float, max_distance: float, background=None,
                             background_rms=0.0, exptime: float = 0.0, nsigma: float = 3.0,
                             model_error: float = 0.3, max_angle: float = 8.0,
                             inner: float | None = None, outer: float | None = None,
                             cache: dict | None = None) -> np.ndarray:
    """Detections explained by the diffraction spikes of saturated stars.

    Parameters
    ----------
    data : 2-D ndarray
        The image (e-/s).
    x, y : array_like
        0-based positions of the detections.
    stars : tuple of ndarray
        ``(x, y)`` 0-based centres of the saturated stars
        (:func:`~hapcore.catalogs.saturated_features.saturated_stars`).
    saturated_pixels : (k, 2) array_like of int
        The saturated product pixels (x, y).
    aperture_radius : float
        Radius (pixels) of the compared apertures.
    max_distance : float
        Detections farther than this (pixels) from a star are not tested against it.
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
    exptime : float, optional
        Turns rates into counts for the Poisson noise of the spike's light.
    nsigma : float, optional
    model_error : float, optional
        Fractional error of the spike's light estimated from the other spikes.
    max_angle : float, optional
        Detections farther than this (degrees) from a measured spike are not tested.
    inner, outer : float, optional
        Annulus (pixels) where the spikes are measured; default 25 and 100 pixels scaled to
        ``max_distance`` / 300 (1-4" on a 0.04" grid with a 12" test radius).
    cache : dict, optional
        Holds the measured spikes between calls on the same image (point and segment rows).

    Returns
    -------
    ndarray of bool
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    features = np.zeros(x.size, bool)
    sx, sy = (np.asarray(v, float) for v in stars)
    if x.size == 0 or sx.size == 0:
        return features
    pixels = np.asarray(saturated_pixels, int).reshape(-1, 2)
    scale = max_distance / 300.0
    inner = 25.0 * scale if inner is None else inner
    outer = 100.0 * scale if outer is None else outer
    key = ("saturated_spikes", float(inner), float(outer), sx.size)
    if cache is not None and key in cache:
        spikes = cache[key]
    else:
        mask = np.zeros(data.shape, bool)
        if len(pixels):
            inside = ((pixels[:, 0] >= 0) & (pixels[:, 0] < data.shape[1])
                      & (pixels[:, 1] >= 0) & (pixels[:, 1] < data.shape[0]))
            mask[pixels[inside, 1], pixels[inside, 0]] = True
        spikes = [spike_directions(data, sx[s], sy[s], inner=inner, outer=outer,
                                   background=background, background_rms=background_rms,
                                   saturated_mask=mask) for s in range(sx.size)]
        if cache is not None:
            cache[key] = spikes
    good = np.isfinite(x) & np.isfinite(y)
    uncovered = data == 0
    own = aperture_sums(data, x, y, aperture_radius, background=background)
    if np.ndim(background_rms):
        rms = np.asarray(background_rms[np.clip(np.rint(np.where(good, y, 0.0)).astype(int), 0,
                                                data.shape[0] - 1),
                                        np.clip(np.rint(np.where(good, x, 0.0)).astype(int), 0,
                                                data.shape[1] - 1)], float)
    else:
        rms = np.full(x.size, float(background_rms))
    area = np.pi * aperture_radius ** 2
    tree = cKDTree(pixels) if len(pixels) else None
    if tree is not None and good.any():
        # detections whose aperture touches saturated pixels are a star or its fragments
        touch, _ = tree.query(np.column_stack([x[good], y[good]]),
                              distance_upper_bound=aperture_radius)
        good[np.flatnonzero(good)[np.isfinite(touch)]] = False
    n_tested = 0
    for s, (angles, amplitudes) in enumerate(spikes):
        if angles is None:
            continue
        dx, dy = x - sx[s], y - sy[s]
        r = np.hypot(dx, dy)
        theta = np.degrees(np.arctan2(dy, dx)) % 360.0
        offset = (theta[:, None] - angles[None, :] + 180.0) % 360.0 - 180.0
        k = np.argmin(np.abs(offset), axis=1)
        rows = np.flatnonzero(good & ~features & (r <= max_distance) & (r > aperture_radius)
                              & (np.abs(offset[np.arange(x.size), k]) <= max_angle))
        if rows.size == 0:
            continue
        n_tested += rows.size
        k = k[rows]
        # the same position relative to each other spike (rotated by the measured angles), and
        # the light between the spikes at that radius (rotated by 45 degrees from each spike)
        turns = angles[None, :] - angles[k][:, None]                        # (n, 4)
        between = np.concatenate([turns + 45.0, turns[:, :1] - 45.0], axis=1)  # (n, 5)

        cxs, cys = _rotated(sx[s], sy[s], dx[rows], dy[rows], turns)
        copies = _sums(data, uncovered, cxs.ravel(), cys.ravel(), aperture_radius,
                        background).reshape(cxs.shape)
        if tree is not None:
            hit, _ = tree.query(np.column_stack([cxs.ravel(), cys.ravel()]),
                                distance_upper_bound=aperture_radius + 1.0)
            copies[np.isfinite(hit).reshape(cxs.shape)] = np.nan
        bxs, bys = _rotated(sx[s], sy[s], dx[rows], dy[rows], between)
        gaps = _sums(data, uncovered, bxs.ravel(), bys.ravel(), aperture_radius, background).reshape(bxs.shape)
        if tree is not None:
            hit, _ = tree.query(np.column_stack([bxs.ravel(), bys.ravel()]),
                                distance_upper_bound=aperture_radius + 1.0)
            gaps[np.isfinite(hit).reshape(bxs.shape)] = np.nan
        n = np.arange(rows.size)
        # the mirror spike's light: the median of three apertures along its ridge (at the
        # detection's radius and one aperture diameter in and out), robust to a source there
        mirror = copies[n, (k + 2) % 4]
        along = np.stack([mirror] + [_shifted_copy(data, uncovered, sx[s], sy[s], cxs[n, (k + 2) % 4],
                                                   cys[n, (k + 2) % 4], step, aperture_radius,
                                                   background, tree)
                                     for step in (-2.0 * aperture_radius, 2.0 * aperture_radius)],
                         axis=1)
        sides = np.column_stack([copies[n, (k + 1) % 4], copies[n, (k + 3) % 4]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # the halo and rings at this radius (common to all spikes); never above the
            # perpendicular spikes themselves (a neighbour between the spikes)
            halo = np.fmin(np.nan_to_num(np.nanmedian(gaps, axis=1)),
                           np.nan_to_num(np.nanmin(sides, axis=1), nan=np.inf))
            ratio = amplitudes[k][:, None] / amplitudes[None, :]
            ratio = np.where(np.isfinite(ratio) & (ratio > 0), np.clip(ratio, 0.33, 3.0), 1.0)
            ratio = np.column_stack([ratio[n, (k + 1) % 4], ratio[n, (k + 3) % 4]])
            scaled = halo[:, None] + (sides - halo[:, None]) * ratio
        mine = own[rows]
        rate = rms[rows] ** 2 * area
        factor = 1.0 / exptime if exptime > 0 else 0.0

        # beside the mirror's ridge (tangentially, 2.5 aperture radii either way): a spike is
        # narrow, a galaxy or a neighbour's halo there is not
        mx, my = cxs[n, (k + 2) % 4] - sx[s], cys[n, (k + 2) % 4] - sy[s]
        rm = np.fmax(np.hypot(mx, my), 1e-9)
        tx, ty = -my / rm * 2.5 * aperture_radius, mx / rm * 2.5 * aperture_radius
        bx = np.concatenate([sx[s] + mx + tx, sx[s] + mx - tx])
        by = np.concatenate([sy[s] + my + ty, sy[s] + my - ty])
        beside = _sums(data, uncovered, bx, by, aperture_radius, background)
        if tree is not None:
            hit, _ = tree.query(np.column_stack([bx, by]), distance_upper_bound=aperture_radius + 1.0)
            beside[np.isfinite(hit)] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            beside = np.nanmin(beside.reshape(2, -1), axis=0)
            mirror = np.where(np.sum(np.isfinite(along), axis=1) >= 2, np.nanmedian(along, axis=1),
                              np.nan)
        with np.errstate(invalid="ignore"):
            # the same spike pair on the other side of the star (point symmetry holds on any
            # grid): the two must agree both ways, within half the model error
            noise = _noise(rate, mirror, factor)
            tolerance = nsigma * np.hypot(noise, MIRROR_ERROR * model_error * (mirror - halo))
            by_mirror = (np.isfinite(mirror) & (mirror - halo > nsigma * noise)
                         & (np.abs(mine - mirror) < tolerance)
                         & ~(beside - halo > 0.5 * (mirror - halo)))
            # the perpendicular pair, scaled by the measured amplitude ratio: both clean and
            # agreeing with each other, the detection not above them
            n_sides = np.sum(np.isfinite(scaled), axis=1)
            side = np.where(n_sides > 0, np.nansum(scaled, axis=1) / np.fmax(n_sides, 1), np.nan)
            noise = _noise(rate, side, factor)
            tolerance = nsigma * np.hypot(noise, model_error * (side - halo))
            agree = np.abs(scaled[:, 0] - scaled[:, 1]) < tolerance
            by_sides = (((n_sides == 2) & agree) | ((n_sides == 1) & ~np.isfinite(mirror)))
            by_sides &= (side - halo > nsigma * noise) & (mine - side < tolerance)
            # the light of the star(s) between the spikes at this radius: a detection that does
            # not stand out of it (where two saturated stars' halos overlap)
            noise = _noise(rate, halo, factor)
            by_halo = ((halo > nsigma * noise) & np.all(np.isfinite(sides), axis=1)
                       & (np.sum(np.isfinite(gaps), axis=1) >= 3))
            by_halo &= mine - halo < nsigma * np.hypot(noise, model_error * halo)
        hit_rows = np.isfinite(mine) & (by_mirror | by_sides | by_halo)
        features[rows[hit_rows]] = True
    log.debug("saturated stars: %d of %d detections on measured spikes are spike fragments",
              int(features.sum()), n_tested)
    return features
