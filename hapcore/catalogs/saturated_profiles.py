"""Saturated stars' round light: ring profiles, and each star's without its neighbours'.

:func:`ring_profile` is a star's azimuthal median (and pixel scatter) per 1-pixel ring;
:func:`star_profiles` holds one per saturated star for the feature tests of
:mod:`hapcore.catalogs.saturated_features` and the core test of
:mod:`hapcore.catalogs.saturated_cores`, which model a saturated star's light at a detection by
that star alone: its ring median, its rotated and mirrored copies.

Two saturated stars a few arcseconds apart light each other's rings: on the ``saturated``
preset (seed 15) a 3e5 e/s star 33 px from another had the other's halo over a large arc of its
rings at 20-30 px (ring median 4.5 e/s per pixel where its own light is 3.0), and the rotated
copies of a detection landed on the neighbour's halo. Its light model was wrong on both counts.

In a sparse field :func:`separate_profiles` measures the rings of each star whose light reaches
another's again, on the image minus the neighbours' round light (out to where it drops below
half the rings' pixel scatter) and without the pixels where that light outshines the star's
own: brightest first (the brighter star's rings hold the fainter star's light over a short arc
only, so its first profile is the better one), then the brightest again, twice.
:func:`neighbour_light` is the other stars' round light in an aperture: the tests take it out
of a detection's light and of its rotated copies, so each star's light is compared with its own
model. On the ``saturated`` preset the catalog stage takes 2 % longer (78 -> 80 s). Not in a crowded
field: there every star's ring median is mostly the field's unresolved starlight, which the
neighbours' profiles hold as well; taken out once per neighbour it left the real ACS/HRC 47 Tuc
frame with 3892 of its 5640 point rows.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["EXTENT_FLOOR", "SEPARATION_ROUNDS", "aperture_ring_light", "neighbour_light",
           "overlapping_stars", "profile_end", "ring_profile", "separate_profiles",
           "star_light_key", "star_profiles"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Rings of :func:`ring_profile` use every pixel within this radius, sampled ones beyond.
_FULL_RADIUS: float = 48.0
_STRIDE: int = 3


def ring_profile(data, background, cx, cy, max_radius: int, *, scatter: bool = False):
    """Median of ``data - background`` in 1-pixel rings about (cx, cy), radius 0..max_radius
    (NaN where a ring has no finite pixel); with ``scatter``, also the rings' robust standard
    deviation (1.4826 MAD) per pixel."""
    ny, nx = data.shape
    xa, xb = max(int(cx) - max_radius, 0), min(int(cx) + max_radius + 2, nx)
    ya, yb = max(int(cy) - max_radius, 0), min(int(cy) + max_radius + 2, ny)
    stamp = np.asarray(data[ya:yb, xa:xb], float)
    # pixels no exposure covers are 0 (or NaN) in a drizzled product
    uncovered = stamp == 0
    if background is not None and np.ndim(background):
        stamp = stamp - np.asarray(background[ya:yb, xa:xb], float)
    elif background is not None:
        stamp = stamp - float(background)
    stamp[uncovered] = np.nan
    yy, xx = np.mgrid[ya:yb, xa:xb]
    distance = np.hypot(xx - cx, yy - cy)
    radius = np.rint(distance).astype(int).ravel()
    values = stamp.ravel()
    # beyond _FULL_RADIUS every _STRIDE-th pixel in x and y: a ring there still has 30+ of
    # them, and the profiles of a hundred saturated stars of a crowded field cost 1/9
    sampled = (distance <= _FULL_RADIUS) | (((yy - ya) % _STRIDE == 0) & ((xx - xa) % _STRIDE == 0))
    good = np.isfinite(values) & (radius <= max_radius) & sampled.ravel()
    radius, values = radius[good], values[good]
    profile = np.full(max_radius + 1, np.nan)
    spread = np.full(max_radius + 1, np.nan)
    if radius.size == 0:
        return (profile, spread) if scatter else profile
    counts = np.bincount(radius, minlength=max_radius + 1)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    lo = start[has] + (counts[has] - 1) // 2
    hi = start[has] + counts[has] // 2

    def ring_medians(v):
        # one sort on radius + the rank-preserving fraction of v within [0, 1)
        span = float(np.ptp(v)) if v.size else 0.0
        key = radius + ((v - v.min()) / span * 0.999 if span > 0 else 0.0)
        ordered = v[np.argsort(key, kind="stable")]
        out = np.full(max_radius + 1, np.nan)
        out[has] = 0.5 * (ordered[lo] + ordered[hi])
        return out

    profile = ring_medians(values)
    if not scatter:
        return profile
    spread = 1.482602 * ring_medians(np.abs(values - profile[radius]))
    return profile, spread


def _aperture_pixels(x, y, radius: float):
    """The pixels of apertures at (x, y) (1-D arrays): ``px, py`` of the square around each
    (one row per aperture) and ``inside``, those whose centres lie within ``radius``."""
    r = int(np.ceil(radius))
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    px = np.rint(x)[:, None] + ox.ravel()[None, :]
    py = np.rint(y)[:, None] + oy.ravel()[None, :]
    inside = np.hypot(px - x[:, None], py - y[:, None]) <= radius
    return px, py, inside


def aperture_ring_light(profile, cx, cy, x, y, radius) -> float:
    """A star's ring profile summed over the pixels of an aperture at (x, y)."""
    px, py, inside = _aperture_pixels(np.array([x], float), np.array([y], float), radius)
    distance = np.hypot(px[inside] - cx, py[inside] - cy)
    known = np.isfinite(profile)
    if not known.any():
        return np.nan
    grid = np.arange(profile.size)
    return float(np.sum(np.interp(distance, grid[known], profile[known], right=np.nan)))


def star_light_key(max_distance: float, grow: int = 3, min_pixels: int = 4,
                   separate: bool = False) -> tuple:
    """Cache key of the saturated stars' light (stars, profiles) of one image."""
    return ("saturated_star_light", float(max_distance), grow, min_pixels, bool(separate))


def star_profiles(data, background, sx, sy, npix, radius_max: int, *, separate: bool = True):
    """Ring medians and scatters of every star, one NaN-padded row each; with ``separate``
    those of stars with overlapping light are measured without their neighbours'
    (:func:`separate_profiles`)."""
    profiles = np.full((sx.size, radius_max + 2), np.nan)
    scatters = np.full((sx.size, radius_max + 2), np.nan)
    for s in range(sx.size):
        profiles[s, :-1], scatters[s, :-1] = ring_profile(data, background, sx[s], sy[s],
                                                          radius_max, scatter=True)
    if not separate:
        return profiles, scatters
    return separate_profiles(data, background, sx, sy, npix, profiles, scatters)


def overlapping_stars(sx, sy, extent) -> np.ndarray:
    """Stars whose round light (out to ``extent`` pixels each) reaches another star's."""
    sx = np.asarray(sx, float)
    sy = np.asarray(sy, float)
    extent = np.asarray(extent, float)
    if sx.size < 2:
        return np.zeros(sx.size, bool)
    d = np.hypot(sx[:, None] - sx[None, :], sy[:, None] - sy[None, :])
    np.fill_diagonal(d, np.inf)
    return np.any(d < extent[:, None] + extent[None, :], axis=1)


def _round_light(profile: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """A profile at the given distances (0 beyond it and where it is unknown)."""
    values = np.nan_to_num(np.asarray(profile, float))
    return np.interp(distance, np.arange(values.size), values, right=0.0)


#: Rounds of :func:`separate_profiles` (each measures every overlapping star once).
SEPARATION_ROUNDS: int = 2
#: A star's round light, as a neighbour's, reaches as far as its ring median stays above this
#: fraction of its rings' pixel scatter (the floor of the halo model,
#: :func:`~hapcore.catalogs.saturated_features.saturated_halo_model`). Farther out a ring's
#: median is the sky's residual and its noise: with 0.05 a UVIS star "reached" 50-300 px,
#: and the sums of dozens of such tails moved faint spike features of the ``saturated``
#: preset (seed 16) out of the tests' reach: 5 more spurious rows.
EXTENT_FLOOR: float = 0.5


def profile_end(profile, floor) -> int:
    """Radius (pixels) where a ring profile first drops to ``floor`` (a value, or one per
    ring) or below, outside its peak: the core may be empty (its input pixels all saturated);
    0 without a known value."""
    profile = np.asarray(profile, float)
    if not np.isfinite(profile).any():
        return 0
    peak = int(np.nanargmax(profile))
    floor = np.broadcast_to(np.asarray(floor, float), profile.shape)
    with np.errstate(invalid="ignore"):
        above = profile[peak:] > floor[peak:]
    below = np.flatnonzero(~above)
    return peak + (int(below[0]) if below.size else profile.size - peak)


def _light_extent(profile, scatter) -> int:
    """Radius (pixels) where a star's ring median first drops below :data:`EXTENT_FLOOR` times
    its rings' scatter, outside its peak (0 without a profile)."""
    return profile_end(profile, EXTENT_FLOOR * np.asarray(scatter, float))


#: :func:`separate_profiles` measures a star's rings this far (pixels) beyond its own light.
_RING_MARGIN: int = 10


def _neighbour_profiles(profiles, scatters) -> np.ndarray:
    """The profiles as neighbours' light: 0 beyond each star's :func:`_light_extent`."""
    out = np.nan_to_num(np.array(profiles, float))
    for s in range(out.shape[0]):
        out[s, _light_extent(profiles[s], scatters[s]):] = 0.0
    return out


def separate_profiles(data, background, sx, sy, npix, profiles, scatters):
    """Ring profiles of overlapping saturated stars, each without its neighbours' round light.

    Parameters
    ----------
    data : 2-D ndarray
        The image.
    background : 2-D ndarray, float or None
        As given to :func:`ring_profile`.
    sx, sy, npix : ndarray
        The stars' centres and saturated-pixel counts (brightness order).
    profiles, scatters : 2-D ndarray
        Their ring medians and scatters (:func:`ring_profile`) measured on the image itself,
        one NaN-padded row of ``reach + 2`` values per star.

    Returns
    -------
    profiles, scatters : 2-D ndarray
        New arrays; rows of stars without a neighbour are unchanged.
    """
    sx = np.asarray(sx, float)
    sy = np.asarray(sy, float)
    profiles = np.array(profiles, float)
    scatters = np.array(scatters, float)
    reach = profiles.shape[1] - 2
    extent = np.array([_light_extent(profiles[s], scatters[s]) for s in range(sx.size)])
    crowded = overlapping_stars(sx, sy, extent)
    if not crowded.any():
        return profiles, scatters
    ny, nx = data.shape
    order = [s for s in np.argsort(-np.asarray(npix), kind="stable") if crowded[s]]
    light = _neighbour_profiles(profiles, scatters)

    def measure(s):
        # out to a little beyond the star's own light; farther its rings are the sky's and
        # keep their first measurement
        r_s = int(min(reach, extent[s] + _RING_MARGIN))
        xa, xb = max(int(sx[s]) - r_s, 0), min(int(sx[s]) + r_s + 2, nx)
        ya, yb = max(int(sy[s]) - r_s, 0), min(int(sy[s]) + r_s + 2, ny)
        stamp = np.array(data[ya:yb, xa:xb], float)
        uncovered = ~(stamp != 0)
        others = np.zeros(stamp.shape)
        near = np.hypot(sx - sx[s], sy - sy[s]) < r_s + extent + 1
        for other in np.flatnonzero(near):
            if other == s or extent[other] == 0:
                continue
            # the other star's light, on the part of the stamp it reaches
            e = int(extent[other]) + 1
            oxa, oxb = max(int(sx[other]) - e - xa, 0), min(int(sx[other]) + e + 2 - xa, xb - xa)
            oya, oyb = max(int(sy[other]) - e - ya, 0), min(int(sy[other]) + e + 2 - ya, yb - ya)
            if oxa >= oxb or oya >= oyb:
                continue
            yy, xx = np.mgrid[oya + ya:oyb + ya, oxa + xa:oxb + xa]
            others[oya:oyb, oxa:oxb] += _round_light(light[other],
                                                     np.hypot(xx - sx[other], yy - sy[other]))
        yy, xx = np.mgrid[ya:yb, xa:xb]
        own = _round_light(profiles[s], np.hypot(xx - sx[s], yy - sy[s]))
        stamp -= others
        # the rings skip the drizzle's "no data" pixels and those where the neighbours' light
        # outshines the star's own: an error of their model there would outweigh its light
        stamp[uncovered | (others > own)] = 0.0
        local = (np.asarray(background[ya:yb, xa:xb], float)
                 if background is not None and np.ndim(background) else background)
        median, spread = ring_profile(stamp, local, sx[s] - xa, sy[s] - ya, r_s, scatter=True)
        profiles[s, :r_s + 1], scatters[s, :r_s + 1] = median, spread
        extent[s] = _light_extent(profiles[s], scatters[s])
        light[s] = _neighbour_profiles(profiles[s:s + 1], scatters[s:s + 1])[0]

    # the brightest star's rings hold a fainter one's light over a short arc: its own first
    # profile stands while the others are measured without it (brightest first), then it is
    # measured again without theirs; a second round starts from the better profiles
    for _ in range(SEPARATION_ROUNDS):
        for s in order[1:]:
            measure(s)
        measure(order[0])
    log.debug("saturated stars: %d of %d profiles measured without their neighbours' light",
              len(order), sx.size)
    return profiles, scatters


def neighbour_light(profiles, scatters, sx, sy, which, x, y, radius: float) -> np.ndarray:
    """Round light of every saturated star but ``which[k]`` in an aperture at each position.

    The light is each star's profile summed over the aperture's pixels (as the tests sum the
    image there), out to where it drops below :data:`EXTENT_FLOOR` times its rings' scatter.

    Parameters
    ----------
    profiles, scatters : 2-D ndarray
        Ring medians and scatters, one row per star (:func:`separate_profiles`).
    sx, sy : ndarray
        Star centres.
    which : array_like of int
        The star each position is tested against (its own light is left in).
    x, y : array_like
        Aperture centres (pixels).
    radius : float
        Aperture radius (pixels).

    Returns
    -------
    ndarray
        One value per position.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    which = np.asarray(which, int)
    out = np.zeros(x.size)
    sx = np.asarray(sx, float)
    if x.size == 0 or sx.size < 2:
        return out
    light = _neighbour_profiles(profiles, scatters)
    # each star's light ends where its last non-zero ring is
    reach = np.array([np.flatnonzero(row)[-1] + 1 if row.any() else 0 for row in light])
    finite = np.isfinite(x) & np.isfinite(y)
    for s in range(sx.size):
        d = np.hypot(x - sx[s], y - sy[s])
        use = finite & (which != s) & (d < reach[s] + radius + 1)
        if not use.any():
            continue
        px, py, inside = _aperture_pixels(x[use], y[use], radius)
        values = _round_light(light[s], np.hypot(px - sx[s], py - sy[s]))
        out[use] += np.sum(np.where(inside, values, 0.0), axis=1)
    return out
