"""Stars on a saturated star's light: detections whose excess over that light has a star's core.

The tests of :mod:`hapcore.catalogs.saturated_features` and
:mod:`hapcore.catalogs.saturated_spikes` compare a detection's aperture-2 light with the
saturated star's light at its position (ring median, rotated and mirrored copies, measured
spikes), within ``nsigma`` times the noise and ``model_error`` of that light. On a bright halo
or spike the tolerance is large, and a faint star there was "explained": on the ``saturated``
preset 34 of the 52 true stars of S/N >= 10 in F606W without a point row (F814W: 20 of 30) lay
1-12" from saturated stars, flagged 32 by these tests in both filters. Their concentration
index was no help: on the halo's gradient the annulus sky is too low and the CI says extended
(flag 1), so the point-like guard of
:func:`~hapcore.catalogs.saturated_features.saturated_star_features` did not apply either.

A star concentrates its light: aperture 1 (0.05" on WFC3/UVIS) holds ~0.4 of aperture 2's,
on 1/9 of its area, while a halo, ring or spike is smooth on that scale. :func:`stellar_cores`
takes the saturated star's light in BOTH apertures (the reference of the three estimates --
ring profile summed over the aperture's pixels, median of the three rotated copies, mirror
copy -- that holds most light in aperture 2) and calls a detection a star when

* its excess over the reference in aperture 1 exceeds ``nsigma`` times the noise combined with
  the reference's model error: the spread of the three estimates in aperture 1 where they
  agree, at least :data:`MODEL_ERROR_FLOOR` and at most ``model_error`` of the reference (a
  fixed ``model_error``, 30 %, the feature tests' tolerance, hid stars as bright in aperture 1
  as a smooth halo is there: 3 of the preset's 19 real stars flagged 32 in both filters), and
* that excess is concentrated like a star's: at least :data:`CORE_RATIO_FRACTION` times the
  image's stellar ratio aperture 1 / aperture 2 (:func:`stellar_core_ratio`) of the excess in
  aperture 2 (or aperture 2 holds no excess: the reference's own light overshoots).

Measured on the ``saturated`` preset's truth (both filters, rows flagged 32 by the feature
tests): the features with a significant aperture-1 excess hold 0.11-0.27 of their aperture-2
excess (lumps of rings and spikes are wider than the PSF core), the true stars 0.25-1.0 (median
0.45); the stellar ratio of the image is 0.39-0.40. With it (and
:mod:`hapcore.catalogs.saturated_consistency`, :mod:`hapcore.catalogs.swarm_flags`) the
preset's completeness at S/N 10 went 0.918 -> 0.947 (F606W), 0.936 -> 0.960 (F814W), its
spurious point rows 2.7% -> 1.8%.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from hapcore.catalogs.saturated_profiles import aperture_ring_light, neighbour_light
from hapcore.catalogs.swarm import aperture_sums, value_at

__all__ = ["CORE_RATIO_FRACTION", "MIN_RATIO_STARS", "MODEL_ERROR_FLOOR", "stars_on_light",
           "stellar_core_ratio", "stellar_cores"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: A detection's excess is a star's core when its aperture-1 share is at least this fraction
#: of the image's stellar ratio (features: <= 0.7 of it on the ``saturated`` preset).
CORE_RATIO_FRACTION: float = 0.75
#: Smallest relative error of the saturated star's light model in the core test (the spread of
#: its estimates where they agree closer).
MODEL_ERROR_FLOOR: float = 0.1
#: Fewest well-measured point sources for :func:`stellar_core_ratio`.
MIN_RATIO_STARS: int = 5


def stellar_core_ratio(data, x, y, *, inner_radius: float, outer_radius: float,
                       background=None) -> float | None:
    """Median ratio of the light in aperture 1 (``inner_radius``) to aperture 2
    (``outer_radius``) over the given point sources (``x``, ``y``: bright, point-like,
    away from saturated stars); None with fewer than :data:`MIN_RATIO_STARS` usable ones."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.size < MIN_RATIO_STARS:
        return None
    inner = aperture_sums(data, x, y, inner_radius, background=background)
    outer = aperture_sums(data, x, y, outer_radius, background=background)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = inner / outer
    ratio = ratio[np.isfinite(ratio) & (outer > 0)]
    if ratio.size < MIN_RATIO_STARS:
        return None
    return float(np.median(ratio))


def stellar_cores(data, x, y, stars, profiles, scatters, *, inner_radius: float,
                  outer_radius: float, max_distance: float, min_ratio: float, background=None,
                  background_rms=0.0, exptime: float = 0.0, nsigma: float = 3.0,
                  model_error: float = 0.3, neighbours: bool = False) -> np.ndarray:
    """Detections on a saturated star's light whose excess over it has a star's core.

    Parameters
    ----------
    data : 2-D ndarray
        The image (e-/s).
    x, y : array_like
        0-based positions of the detections to test.
    stars : tuple of ndarray
        ``(x, y)`` centres of the saturated stars.
    profiles, scatters : 2-D ndarray
        Each star's ring median and ring pixel scatter per 1-pixel radius (one NaN-padded
        row per star, as :func:`~hapcore.catalogs.saturated_features.saturated_star_features`
        caches them).
    inner_radius, outer_radius : float
        Apertures 1 and 2 (pixels).
    max_distance : float
        Detections farther than this (pixels) from every star are not tested (False).
    min_ratio : float
        Smallest share of the excess in aperture 1 (e.g. :data:`CORE_RATIO_FRACTION` times
        :func:`stellar_core_ratio`).
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
    exptime : float, optional
        Turns rates into counts for the Poisson noise of the star's light.
    nsigma, model_error : float, optional
        As in the feature tests.
    neighbours : bool, optional
        The profiles were measured without the neighbours' light (a sparse field,
        :func:`~hapcore.catalogs.saturated_profiles.separate_profiles`): that light is taken
        out of the detection's and of its copies' apertures.

    Returns
    -------
    ndarray of bool
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    cores = np.zeros(x.size, bool)
    sx, sy = (np.asarray(v, float) for v in stars)
    good = np.isfinite(x) & np.isfinite(y)
    if not good.any() or sx.size == 0:
        return cores
    rows = np.flatnonzero(good)
    radius_max = profiles.shape[1] - 2
    # the star whose ring light is highest where the detection lies (as the feature tests)
    r = np.hypot(x[rows, None] - sx[None, :], y[rows, None] - sy[None, :])
    lo = np.clip(np.floor(r).astype(int), 0, radius_max)
    frac = np.clip(r - lo, 0.0, 1.0)
    index = np.arange(sx.size)[None, :]
    light = profiles[index, lo] * (1 - frac) + profiles[index, lo + 1] * frac
    light = np.where((r <= max_distance) & np.isfinite(light), light, -np.inf)
    which = np.argmax(light, axis=1)
    tested = np.isfinite(light[np.arange(rows.size), which])
    rows, which = rows[tested], which[tested]
    if rows.size == 0:
        return cores
    r_row = np.hypot(x[rows] - sx[which], y[rows] - sy[which])
    scatter = scatters[which, np.clip(np.rint(r_row).astype(int), 0, radius_max)]
    rms = value_at(background_rms, x[rows], y[rows], data.shape)
    pixel_noise = np.fmax(rms, np.nan_to_num(scatter))
    dx, dy = x[rows] - sx[which], y[rows] - sy[which]
    rx = np.stack([sx[which] - dy, sx[which] - dx, sx[which] + dy], axis=1).ravel()
    ry = np.stack([sy[which] + dx, sy[which] - dy, sy[which] - dx], axis=1).ravel()
    refs, mine = [], []
    for radius in (inner_radius, outer_radius):
        copies = aperture_sums(data, rx, ry, radius, background=background)
        own = aperture_sums(data, x[rows], y[rows], radius, background=background)
        if neighbours:
            # each star against its own light: its neighbours' round light taken out
            copies = copies - neighbour_light(profiles, scatters, sx, sy, np.repeat(which, 3),
                                              rx, ry, radius)
            own = own - neighbour_light(profiles, scatters, sx, sy, which, x[rows], y[rows],
                                        radius)
        copies = copies.reshape(-1, 3)
        ring = np.array([aperture_ring_light(profiles[s], sx[s], sy[s], x[k], y[k], radius)
                         for k, s in zip(rows, which)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spike = np.nanmedian(copies, axis=1)
        refs.append(np.nan_to_num(np.column_stack([ring, spike, copies[:, 1]])))
        mine.append(own)
    # the estimate holding most light in aperture 2, in both apertures
    pick = np.argmax(refs[1], axis=1)
    n = np.arange(rows.size)
    ref1, ref2 = refs[0][n, pick], refs[1][n, pick]
    excess1, excess2 = mine[0] - ref1, mine[1] - ref2
    area = np.pi * inner_radius ** 2
    poisson = np.clip(ref1, 0.0, None) / exptime if exptime > 0 else 0.0
    noise = np.sqrt(2.0 * (pixel_noise ** 2 * area + poisson))
    # the light model's error: the spread of its independent estimates (ring median, spike
    # copies, mirror copy) where they agree, at least MODEL_ERROR_FLOOR of it, at most
    # model_error of it
    spread = np.ptp(refs[0], axis=1)
    model = np.clip(spread, MODEL_ERROR_FLOOR * np.abs(ref1), model_error * np.abs(ref1))
    with np.errstate(invalid="ignore"):
        core = ((excess1 > nsigma * np.hypot(noise, model))
                & (excess1 >= min_ratio * excess2))
    cores[rows[core]] = True
    return cores


def stars_on_light(table, image, x, y, tested, point_like, fcat, background, light, *,
                   neighbours: bool = False) -> np.ndarray:
    """:func:`stellar_cores` of the ``tested`` rows of a filter catalog, against the image's
    stellar ratio (:func:`stellar_core_ratio` of its other point-like rows of S/N >= 20).

    ``light`` is the saturated stars' cached light
    (:func:`~hapcore.catalogs.saturated_features.saturated_star_features`: x, y, npix,
    pixels, profiles, scatters); no row is a star without it, without enough stars for the
    ratio, or without the catalog's aperture-2 errors (``FluxErrAp2``) or aperture 1.
    ``neighbours``: the profiles are each star's own (a sparse field), see
    :func:`stellar_cores`.
    """
    cores = np.zeros(np.size(x), bool)
    if (light is None or not np.any(tested) or getattr(fcat, "aperture_1", None) is None
            or not {"FluxAp2", "FluxErrAp2"} <= set(table.colnames)):
        return cores
    inner = fcat.aperture_1 / image.plate_scale
    outer = fcat.aperture_2 / image.plate_scale
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.asarray(table["FluxAp2"], float) / np.asarray(table["FluxErrAp2"], float)
    usable = np.asarray(point_like, bool) & ~tested & (snr >= 20.0)
    ratio = stellar_core_ratio(image.data, x[usable], y[usable], inner_radius=inner,
                               outer_radius=outer, background=background.background)
    if ratio is None:
        return cores
    rows = np.flatnonzero(tested)
    cores[rows] = stellar_cores(
        image.data, x[rows], y[rows], light[:2], light[4], light[5], inner_radius=inner,
        outer_radius=outer, max_distance=fcat.saturated_feature_radius_arcsec / image.plate_scale,
        min_ratio=CORE_RATIO_FRACTION * ratio, background=background.background,
        background_rms=background.rms, exptime=image.exptime,
        nsigma=fcat.saturated_feature_nsigma, model_error=fcat.saturated_feature_model_error,
        neighbours=neighbours)
    log.debug("saturated stars: %d of %d rows on their light have a star's core (stellar "
              "ratio %.3f)", int(cores.sum()), rows.size, ratio)
    return cores
