"""Detections that are features of a saturated star's light: halo, rings, diffraction spikes.

A star several magnitudes brighter than saturation lights up the image far beyond its clipped
core: its halo and Airy rings stay above the detection threshold out to 1-2", its four
diffraction spikes out to 5-10" on WFC3/UVIS. Both the star finder and the segmentation cut them
into "sources" (issue #15: 65% of the total segment catalog's rows, nearly all point-catalog
spurious rows at 0.4-0.75" from 11.6-15.8 mag stars). The PSF-stack tests
(:mod:`hapcore.catalogs.psf_features`) do not see them: a saturated star has no usable flux
to scale a PSF with, and its features reach farther than their radius.

:func:`saturated_star_features` takes the stars from the saturated pixels themselves (the DQ
saturation bit mapped onto the product, :mod:`hapcore.catalogs.saturation`): each connected
group (after growing by ``grow`` pixels) is one star, centred on its plateau (the last erosion
of its saturated pixels: the bleed columns, a few pixels wide, go first). A detection within
``max_distance`` of such a star is one of its features when its aperture light is explained by
the star's light at its position, measured on the image itself:

* a ring or halo: the star's azimuthal median profile at the detection's distance (the median
  of the pixels of a 1-pixel ring, robust against the spikes and the sources on the ring)
  times the aperture area;
* a spike: the median of the aperture light at the detection's position rotated by 90, 180 and
  270 degrees about the star (the spikes are four-fold symmetric; the copies must agree);
* a mirror image: the aperture light at the position rotated by 180 degrees alone (the far ends
  of a spike pair, the two ends of a bleed trail).

Explained means: that light holds more than ``nsigma`` times the noise, and the detection
exceeds it by less than ``nsigma`` times the noise combined with ``model_error`` of it. A real
source on the halo or a spike keeps its row as long as its own light stands out by that much.
The three tests apply where the star's light is smooth (ring median >= :data:`RING_CONTRAST` x
the ring's pixel scatter) or the sky clean (scatter <= :data:`CLEAN_SCATTER` x rms); in a
crowded field (47 Tuc on ACS/HRC) the ring median is unresolved starlight and rotated positions
land on stars, so there only spikes count whose copies stand out of the ring and agree within
half the model error. In a sparse field (``sparse``) the ring median is the star's own light
wherever it is, and the ring test applies where that light is not smooth too (an optical PSF's
inner halo). Each star's rings are measured without its neighbours' light
(:mod:`hapcore.catalogs.saturated_profiles`).

Detections whose aperture touches the saturated pixels are not tested here: they are the star
itself (the one nearest its plateau's centre; :func:`saturated_star_rows` adds one where
DAOStarFinder found none) or its fragments
(:func:`~hapcore.catalogs.saturated_fragments.saturated_fragments`).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from hap_models.catalogs import (
    FLAG_EXTENDED,
    FLAG_FAINT,
    FLAG_HOT_PIXEL,
    FLAG_SATURATION,
    FLAG_SWARM,
)
from hapcore.catalogs.saturated_cores import stars_on_light
from hapcore.catalogs.saturated_fragments import saturated_fragments
from hapcore.catalogs.saturated_profiles import (
    aperture_ring_light,
    neighbour_light,
    profile_end,
    ring_profile,
    star_light_key,
    star_profiles,
)
from hapcore.catalogs.saturated_spikes import saturated_spike_features
from hapcore.catalogs.swarm import aperture_sums, value_at

#: The ring / halo test applies where the ring's median is at least this many times the
#: robust scatter of its pixels (the star's smooth light, not a crowded field's).
RING_CONTRAST: float = 3.0
#: The spike and mirror tests also apply where the ring's pixel scatter is at most this many
#: times the background rms (a clean sky, where rotated positions do not land on stars).
CLEAN_SCATTER: float = 1.75

__all__ = ["flag_saturated_light", "RING_CONTRAST", "CLEAN_SCATTER", "saturated_stars",
           "saturated_star_rows", "saturated_halo_model", "saturated_star_features"]

log = logging.getLogger(f"hapsvm.{__name__}")


def saturated_stars(saturated_xy, *, shape, grow: int = 3, min_pixels: int = 1):
    """Saturated stars: connected groups of saturated product pixels.

    Parameters
    ----------
    saturated_xy : (m, 2) array_like or None
        0-based (x, y) product positions of saturated input pixels.
    shape : tuple of int
        Product shape.
    grow : int, optional
        Pixels are grown by this much before labelling (input pixels map to scattered
        product pixels).
    min_pixels : int, optional
        Smallest number of saturated pixels of a star.

    Returns
    -------
    x, y : ndarray
        Centre of each star's plateau (:func:`_core_centre`).
    npix : ndarray of int
        Saturated pixels of each star.
    pixels : (k, 2) ndarray
        The distinct saturated product pixels (x, y), integer.
    """
    empty = (np.empty(0), np.empty(0), np.empty(0, int), np.empty((0, 2), int))
    if saturated_xy is None:
        return empty
    sat = np.atleast_2d(np.asarray(saturated_xy, float))
    if sat.size == 0:
        return empty
    sat = sat[np.all(np.isfinite(sat), axis=1)]
    ny, nx = shape
    ix = np.rint(sat[:, 0]).astype(int)
    iy = np.rint(sat[:, 1]).astype(int)
    keep = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ix, iy = ix[keep], iy[keep]
    if ix.size == 0:
        return empty
    x0, x1 = max(ix.min() - grow - 1, 0), min(ix.max() + grow + 2, nx)
    y0, y1 = max(iy.min() - grow - 1, 0), min(iy.max() + grow + 2, ny)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[iy - y0, ix - x0] = True
    pixels = np.argwhere(mask)[:, ::-1] + [x0, y0]
    labels, n = ndimage.label(ndimage.binary_dilation(mask, iterations=grow))
    if n == 0:
        return empty
    which = labels[pixels[:, 1] - y0, pixels[:, 0] - x0]
    npix = np.bincount(which, minlength=n + 1)[1:]
    cx, cy = np.empty(n), np.empty(n)
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        cx[k - 1], cy[k - 1] = _core_centre(mask[box] & (labels[box] == k))
        cx[k - 1] += box[1].start + x0
        cy[k - 1] += box[0].start + y0
    good = npix >= max(min_pixels, 1)
    return cx[good], cy[good], npix[good], pixels


def _core_centre(region: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of a saturated star's plateau: the centroid of the last non-empty erosion
    of its pixels (gaps closed first). The bleed columns are a few pixels wide and go first;
    the mean of all saturated pixels followed the longer bleed (16 px off on WFC3/UVIS F606W
    for a 12 mag star)."""
    current = ndimage.binary_closing(region, iterations=2) | region
    while True:
        eroded = ndimage.binary_erosion(current)
        if not eroded.any():
            break
        current = eroded
    yy, xx = np.nonzero(current)
    return float(xx.mean()), float(yy.mean())


def saturated_star_rows(x, y, saturated_xy, *, shape, radius: float, grow: int = 3,
                        min_pixels: int = 4):
    """Plateau centres of the saturated stars that no detection lies near.

    DAOStarFinder rejects a saturated star's flat, bled core (its sharpness and roundness are
    not a star's), so the brightest stars of a field were missing from the point catalog and
    the detections around them (the halo, the bleed ends) stood in for them (issue #15).

    Parameters
    ----------
    x, y : array_like
        0-based positions of the detections.
    saturated_xy : (m, 2) array_like or None
        0-based (x, y) product positions of saturated input pixels.
    shape : tuple of int
        Product shape.
    radius : float
        A star with a detection within this distance (pixels) of its centre is not added.
    grow, min_pixels : int, optional
        See :func:`saturated_stars` and :func:`saturated_star_features`.

    Returns
    -------
    x, y : ndarray
        Centres of the stars to add as detections.
    """
    sx, sy, _, _ = saturated_stars(saturated_xy, shape=shape, grow=grow, min_pixels=min_pixels)
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    good = np.isfinite(x) & np.isfinite(y)
    if sx.size == 0 or not good.any():
        return sx, sy
    distance, _ = cKDTree(np.column_stack([x[good], y[good]])).query(np.column_stack([sx, sy]))
    missing = distance > radius
    return sx[missing], sy[missing]


def saturated_halo_model(data: np.ndarray, saturated_xy, *, background=None, background_rms=0.0,
                         max_radius: float, floor: float = 0.5, grow: int = 3,
                         min_pixels: int = 4) -> np.ndarray | None:
    """The round part of the saturated stars' light: each star's azimuthal median profile.

    Detected as they are, a 12 mag star's halo on WFC3/UVIS was one segment holding 9% of the
    image: the segmentation judged the image crowded and fell back to the compact
    RickerWavelet kernel, which cut every galaxy of the visit to its core (segment fluxes
    0.5-0.7 of the truth, issue #15). With this model added to the background the halo goes,
    the spikes and bleed trails are left (they become segments flagged by
    :func:`saturated_star_features`), and faint sources on the halo are still found.

    Parameters
    ----------
    data : 2-D ndarray
    saturated_xy : (m, 2) array_like or None
        0-based (x, y) product positions of saturated input pixels.
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
    max_radius : float
        Largest radius (pixels) of a profile.
    floor : float, optional
        A profile ends where it first drops below ``floor`` times the background rms.
    grow, min_pixels : int, optional
        See :func:`saturated_stars` and :func:`saturated_star_features`.

    Returns
    -------
    2-D float32 ndarray or None
        None when there is no saturated star.
    """
    sx, sy, npix, _ = saturated_stars(saturated_xy, shape=data.shape, grow=grow,
                                      min_pixels=min_pixels)
    if sx.size == 0:
        return None
    rms = float(np.nanmedian(background_rms)) if np.ndim(background_rms) else float(background_rms)
    model = np.zeros(data.shape, np.float32)
    radius_max = int(np.ceil(max_radius))
    ny, nx = data.shape
    # brightest first, each profile measured on the image minus the profiles before it
    for s in np.argsort(npix)[::-1]:
        cx, cy = sx[s], sy[s]
        xa, xb = max(int(cx) - radius_max, 0), min(int(cx) + radius_max + 2, nx)
        ya, yb = max(int(cy) - radius_max, 0), min(int(cy) + radius_max + 2, ny)
        if background is not None and np.ndim(background):
            local = np.asarray(background[ya:yb, xa:xb], float)
        else:
            local = 0.0 if background is None else float(background)
        profile = ring_profile(np.asarray(data[ya:yb, xa:xb], float) - model[ya:yb, xa:xb],
                               local, cx - xa, cy - ya, radius_max)
        # the core may be empty (its input pixels all saturated): the profile ends where it
        # first drops below the floor outside its peak
        end = profile_end(profile, floor * rms)
        if end == 0:
            continue
        profile = np.where(np.arange(profile.size) < end, np.nan_to_num(profile), 0.0)
        yy, xx = np.mgrid[ya:yb, xa:xb]
        r = np.hypot(xx - cx, yy - cy)
        model[ya:yb, xa:xb] += np.interp(r, np.arange(profile.size), profile,
                                         right=0.0).astype(np.float32)
    log.debug("saturated stars: halo model of %d star(s), %d pixels above %.2g rms", sx.size,
              int(np.count_nonzero(model > floor * rms)), floor)
    return model


def saturated_star_features(data: np.ndarray, x, y, saturated_xy, *, aperture_radius: float,
                            max_distance: float, background=None, background_rms=0.0,
                            exptime: float = 0.0, nsigma: float = 3.0, model_error: float = 0.3,
                            grow: int = 3, min_pixels: int = 4,
                            cache: dict | None = None, point_like=None,
                            sparse: bool = False) -> np.ndarray:
    """Detections explained by a saturated star's halo, rings or diffraction spikes.

    Parameters
    ----------
    data : 2-D ndarray
        The image (e-/s).
    x, y : array_like
        0-based positions of the detections.
    saturated_xy : (m, 2) array_like or None
        0-based (x, y) product positions of saturated input pixels.
    aperture_radius : float
        Radius (pixels) of the compared apertures.
    max_distance : float
        Detections farther than this (pixels) from every saturated star are not tested.
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
        Per-pixel background noise.
    exptime : float, optional
        Turns rates into counts for the Poisson noise of the star's light.
    nsigma : float, optional
    model_error : float, optional
        Fractional error of the star's light at the detection (rings and spikes are not
        perfectly round or four-fold, the aperture falls a little off a spike's ridge).
    grow : int, optional
        See :func:`saturated_stars`.
    min_pixels : int, optional
        Saturated stars with fewer saturated pixels are ignored (a cosmic ray or hot pixel).
    cache : dict, optional
        Holds the stars and their ring profiles between calls on the same image, background
        and saturated pixels (e.g. its point and its segment catalog).
    point_like : array_like of bool, optional
        Detections whose concentration is a star's (flags 1, 8 and 16 unset: CI within the
        stellar limits, not faint): the halo / ring test does not take those that stand out
        of the ring's light by more than ``nsigma`` times the noise (a faint star on a bright
        halo), and the spike and mirror tests take them only when the rotated light stands
        out of the ring's too.
    sparse : bool, optional
        A sparse field: the ring median is the star's own light wherever its rings are, so the
        ring / halo test applies where that light is not smooth too (an optical PSF's inner
        halo: rings broken by the spider's diffraction, spikes, a bleed column; the ring
        pixels of a 3e5 e/s star scatter by 0.4-0.5 of their median at 0.5-1"). A real star
        there keeps its row by its core (:mod:`hapcore.catalogs.saturated_cores`). And each
        star's light is measured and taken without its neighbours'
        (:mod:`hapcore.catalogs.saturated_profiles`).

    Returns
    -------
    ndarray of bool
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    features = np.zeros(x.size, bool)
    if x.size == 0:
        return features
    key = star_light_key(max_distance, grow, min_pixels, separate=sparse)
    if cache is not None and key in cache:
        sx, sy, npix, pixels, profiles, scatters = cache[key]
    else:
        sx, sy, npix, pixels = saturated_stars(saturated_xy, shape=data.shape, grow=grow,
                                               min_pixels=min_pixels)
        profiles, scatters = star_profiles(data, background, sx, sy, npix,
                                           int(np.ceil(max_distance)), separate=sparse)
        if cache is not None:
            cache[key] = (sx, sy, npix, pixels, profiles, scatters)
    if sx.size == 0:
        return features
    good = np.isfinite(x) & np.isfinite(y)
    # detections whose aperture touches the saturated pixels: fragments, not tested here
    on_core = np.zeros(x.size, bool)
    dist, _ = cKDTree(pixels).query(np.column_stack([x[good], y[good]]),
                                    distance_upper_bound=aperture_radius)
    on_core[good] = np.isfinite(dist)
    own = aperture_sums(data, x, y, aperture_radius, background=background)
    rms = value_at(background_rms, np.where(good, x, 0.0), np.where(good, y, 0.0), data.shape)
    area = np.pi * aperture_radius ** 2
    radius_max = int(np.ceil(max_distance))
    # each detection is tested against the star whose ring light is highest where it lies
    candidates = np.flatnonzero(good & ~on_core)
    if candidates.size == 0:
        return features
    r = np.hypot(x[candidates, None] - sx[None, :], y[candidates, None] - sy[None, :])
    inside = r <= max_distance
    lo = np.clip(np.floor(r).astype(int), 0, radius_max)
    frac = np.clip(r - lo, 0.0, 1.0)
    star_index = np.arange(sx.size)[None, :]
    light = profiles[star_index, lo] * (1 - frac) + profiles[star_index, lo + 1] * frac
    light = np.where(inside & np.isfinite(light), light, -np.inf)
    best = np.argmax(light, axis=1)
    tested = np.isfinite(light[np.arange(candidates.size), best])
    rows, which = candidates[tested], best[tested]
    if rows.size == 0:
        return features
    r_row = r[tested, which]
    ring = light[tested, which] * area
    # the scatter of the ring's pixels: the noise, or the crowding (on a crowded field the ring
    # median is the unresolved light and the detections on the ring are stars)
    scatter = scatters[which, np.clip(np.rint(r_row).astype(int), 0, radius_max)]
    pixel_noise = np.fmax(rms[rows], np.nan_to_num(scatter))
    dx, dy = x[rows] - sx[which], y[rows] - sy[which]
    rx = np.stack([sx[which] - dy, sx[which] - dx, sx[which] + dy], axis=1)
    ry = np.stack([sy[which] + dx, sy[which] - dy, sy[which] - dx], axis=1)
    copies = aperture_sums(data, rx.ravel(), ry.ravel(), aperture_radius,
                           background=background).reshape(rx.shape)
    mine = own[rows]
    if sparse:
        # each star against its own light: its neighbours' round light taken out
        copies = copies - neighbour_light(profiles, scatters, sx, sy, np.repeat(which, 3),
                                          rx.ravel(), ry.ravel(),
                                          aperture_radius).reshape(rx.shape)
        mine = mine - neighbour_light(profiles, scatters, sx, sy, which, x[rows], y[rows],
                                      aperture_radius)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spike = np.nanmedian(copies, axis=1)
        spread = np.nanmax(copies, axis=1) - np.nanmin(copies, axis=1)
    enough = np.sum(np.isfinite(copies), axis=1) >= 2

    def explained(reference, *, above=0.0, error=model_error):
        """The reference light is significant (above ``above`` by nsigma) and the detection
        exceeds it by less than the tolerance."""
        reference = np.asarray(reference, float)
        poisson = np.clip(np.nan_to_num(reference), 0.0, None) / exptime if exptime > 0 else 0.0
        noise = np.sqrt(2.0 * (pixel_noise ** 2 * area + poisson))
        tolerance = nsigma * np.hypot(noise, error * np.abs(reference))
        with np.errstate(invalid="ignore"):
            return (np.isfinite(reference) & np.isfinite(mine)
                    & (reference - above > nsigma * noise) & (mine - reference < tolerance),
                    tolerance)

    # Where the star's light is smooth (the ring's median at least RING_CONTRAST times its
    # pixel scatter) or the sky clean (scatter at most CLEAN_SCATTER times the rms) the ring,
    # spike and mirror tests apply as they are. Elsewhere -- a crowded field, where the ring
    # median is unresolved starlight and rotated positions land on other stars (47 Tuc on
    # ACS/HRC: median 0.4-0.9 x the scatter, scatter 2-6 x the rms; a WFC3/UVIS halo: 5-10 x,
    # and 1.1-1.6 x the rms out on the spikes) -- only spikes count, whose copies stand out of
    # the ring and agree closely; in a sparse field the ring test applies there too.
    with np.errstate(invalid="ignore"):
        smooth = ring / area >= RING_CONTRAST * scatter
        clean = scatter <= CLEAN_SCATTER * rms[rows]
    plain = smooth | clean
    # a point-like detection (a star's CI, not faint) is a star on the halo when it stands
    # out of the ring's light by more than the noise: the model error allowed 0.9 x the
    # halo's light on top of it, and the rotated copies, on the same halo, "explained" it as
    # well (saturated preset: 45 of the 72 missed stars of S/N >= 10, 1-12" from saturated
    # ones, were flagged 32 here); such a row is a spike or mirror feature only when that
    # light stands out of the ring too
    star_like = (np.zeros(rows.size, bool) if point_like is None
                 else np.asarray(point_like, bool)[rows])
    by_ring, _ = explained(ring)
    by_ring &= smooth | sparse
    # for those the ring's light in the aperture is summed over its pixels' radii (the
    # profile at the centre times the area missed a fifth of a steep inner halo's light)
    halo = np.array(ring, float)
    for k in np.flatnonzero(star_like):
        halo[k] = aperture_ring_light(profiles[which[k]], sx[which[k]], sy[which[k]],
                                       x[rows[k]], y[rows[k]], aperture_radius)
    poisson = np.clip(np.nan_to_num(halo), 0.0, None) / exptime if exptime > 0 else 0.0
    with np.errstate(invalid="ignore"):
        above_ring = mine - halo > nsigma * np.sqrt(2.0 * (pixel_noise ** 2 * area + poisson))
    by_ring &= ~(star_like & above_ring)
    # a spike's copies agree, as a star's four spikes do
    by_spike, tolerance = explained(spike)
    by_spike &= enough & (spread <= tolerance) & plain
    spike_above, above_tolerance = explained(spike, above=np.nan_to_num(halo))
    by_spike = np.where(star_like, spike_above & enough & (spread <= above_tolerance) & plain,
                        by_spike)
    strict, strict_tolerance = explained(spike, above=np.nan_to_num(ring),
                                         error=0.5 * model_error)
    by_spike |= strict & enough & (spread <= strict_tolerance) & ~plain
    # point symmetry alone: the far ends of a spike pair (the two pairs are not always equally
    # long) and the two ends of a bleed trail; the two must agree both ways
    by_mirror, tolerance = explained(copies[:, 1])
    mirror_above, above_tolerance = explained(copies[:, 1], above=np.nan_to_num(halo))
    by_mirror = np.where(star_like, mirror_above, by_mirror)
    tolerance = np.where(star_like, above_tolerance, tolerance)
    by_mirror &= (np.abs(mine - copies[:, 1]) < tolerance) & plain
    hit = by_ring | by_spike | by_mirror
    features[rows[hit]] = True
    log.debug("saturated stars: %d with >= %d saturated pixels; %d of %d detections within "
              "%.0f px are their halo/ring (%d), spike (%d) or mirror-image (%d) features",
              sx.size, min_pixels, int(features.sum()), rows.size, max_distance,
              int(by_ring.sum()), int((by_spike & ~by_ring).sum()),
              int((by_mirror & ~by_spike & ~by_ring).sum()))
    return features


#: Above this many catalog rows per square arcsecond of the product's footprint the measured
#: spike test (`hapcore.catalogs.saturated_spikes`) is not run (see `flag_saturated_light`).
SPIKE_TEST_MAX_DENSITY: float = 0.5


def _rows_per_arcsec2(n_rows: int, image) -> float:
    footprint = getattr(image, "footprint", None)
    pixels = float(np.count_nonzero(footprint)) if footprint is not None else \
        float(np.prod(image.shape))
    return n_rows / max(pixels * float(image.plate_scale) ** 2, 1e-9)


def flag_saturated_light(table, x_column, y_column, brightness_column, image, saturated_xy,
                          fcat, background, cache=None) -> int:
    """Flag 32 on the rows of ``table`` that are a saturated star's fragments (its plateau and
    bleed columns, :mod:`hapcore.catalogs.saturated_fragments`) or features of its light (halo,
    rings, spikes, :mod:`hapcore.catalogs.saturated_features`, and the spikes measured on the
    image, :mod:`hapcore.catalogs.saturated_spikes`), except the point rows whose excess over
    that light has a star's core (:mod:`hapcore.catalogs.saturated_cores`: not flagged, and
    not extended); returns how many."""
    if table is None or not len(table) or saturated_xy is None or not len(saturated_xy):
        return 0
    x, y = np.asarray(table[x_column], float), np.asarray(table[y_column], float)
    radius = fcat.aperture_2 / image.plate_scale
    # the star is the row nearest its plateau's centre (the detection adds one there), not the
    # brightest: a bleed column's end holds more light in its aperture than the clipped core
    sx, sy, _, pixels = saturated_stars(saturated_xy, shape=image.shape)
    brightness = np.asarray(table[brightness_column], float)
    flagged = np.zeros(len(table), bool)
    if sx.size:
        with np.errstate(invalid="ignore"):
            brightness = -np.min(np.hypot(x[:, None] - sx[None, :], y[:, None] - sy[None, :]),
                                 axis=1)
        # a row whose aperture touches saturated pixels away from every plateau centre lies on
        # a plateau's edge or a bleed trail (a gap in the trail splits it from its star)
        from scipy.spatial import cKDTree

        good = np.isfinite(x) & np.isfinite(y)
        touch, _ = cKDTree(pixels).query(np.column_stack([x[good], y[good]]),
                                         distance_upper_bound=radius)
        flagged[good] = np.isfinite(touch) & (-brightness[good] > radius)
    flagged |= saturated_fragments(x, y, brightness, saturated_xy, shape=image.shape,
                                   radius=radius)
    cores = np.zeros(len(table), bool)
    if fcat.saturated_feature_nsigma is not None:
        cache = {} if cache is None else cache
        max_distance = fcat.saturated_feature_radius_arcsec / image.plate_scale
        crowded = _rows_per_arcsec2(len(table), image) > SPIKE_TEST_MAX_DENSITY
        point_like = (np.asarray(table["Flags"], np.int64)
                      & (FLAG_EXTENDED | FLAG_FAINT | FLAG_HOT_PIXEL)) == 0
        features = saturated_star_features(
            image.data, x, y, saturated_xy, aperture_radius=radius, max_distance=max_distance,
            background=background.background, background_rms=background.rms,
            exptime=image.exptime, nsigma=fcat.saturated_feature_nsigma,
            model_error=fcat.saturated_feature_model_error, cache=cache, point_like=point_like,
            sparse=not crowded)
        # the spikes measured on the image (direction, pair ratio, mirror along the ridge);
        # not in a crowded field, where every reference aperture holds other stars and
        # "explains" real ones (real ACS/HRC 47 Tuc, 8.8 rows per arcsec^2: 5493 -> 1776 rows
        # kept; the saturated preset has 0.03)
        stars = saturated_stars(saturated_xy, shape=image.shape, min_pixels=4)
        if crowded:
            log.debug("saturated stars: crowded field (%.2f rows per arcsec^2): no spike test",
                      _rows_per_arcsec2(len(table), image))
        else:
            features |= saturated_spike_features(
                image.data, x, y, stars[:2], stars[3], aperture_radius=radius,
                max_distance=max_distance, background=background.background,
                background_rms=background.rms, exptime=image.exptime,
                nsigma=fcat.saturated_feature_nsigma,
                model_error=fcat.saturated_feature_model_error, cache=cache)
        # stars on the light: their excess has a star's core (saturated_cores); point rows
        # only (segment rows carry second moments, X2)
        if "X2" not in table.colnames:
            cores = stars_on_light(table, image, x, y, features & ~flagged, point_like, fcat,
                                   background, cache.get(star_light_key(max_distance,
                                                                        separate=not crowded)),
                                   neighbours=not crowded)
        flagged |= features & ~cores
    flags = np.asarray(table["Flags"], dtype=np.int64)
    # their CI was the halo's gradient's, not theirs: not extended
    flags = np.where(cores, flags & ~FLAG_EXTENDED, flags)
    new_flags = np.where(flagged, flags | FLAG_SWARM, flags)
    if sx.size:
        # the star itself: its CI and aperture S/N come from clipped pixels and a sky annulus
        # on its halo, so the faint (8) and cosmic-ray (16) flags would be false and trim it;
        # it is flagged saturated (4)
        star = ~flagged & (-brightness <= radius)
        new_flags = np.where(star, (new_flags & ~(FLAG_FAINT | FLAG_HOT_PIXEL)) | FLAG_SATURATION,
                             new_flags)
    table["Flags"] = new_flags
    return int((flagged & ((flags & FLAG_SWARM) == 0)).sum())
