"""Swarm filter: detections that are features of a much brighter neighbour's profile.

DAOStarFinder convolves the image with a lowered (zero-sum) Gaussian. Around a bright star
whose profile has a broad halo that response has a positive ring a few pixels out, and noise
on the ring makes peaks that pass the detection threshold at random azimuths: "sources" at a
fixed distance (~0.35" on ACS/WFC) from bright stars, with no light of their own. HLA-classic
called such clusters of false detections around bright stars *swarms* (flag 32); drizzlepac
keeps the flag but never evaluates it (spec §6.7).

The test here is the star's own azimuthal symmetry: a real companion adds light at its
position, a ring feature does not. For a detection within ``max_distance`` of a neighbour at
least ``min_ratio`` times brighter, the aperture sum at the detection is compared with the
sums at the same distance from the neighbour at ``n_samples`` other azimuths (those that do
not overlap the detection's aperture): if it exceeds their median by less than ``nsigma``
times their scatter (or the background noise of the aperture, whichever is larger), the
detection looks like the profile there. It must also show no excess over the sum at the
mirror position through the neighbour's centre (``nsigma`` times the background and Poisson
noise of the two apertures; any point-symmetric profile holds the same light there), and that
position must be free of other detections. Both, because in a crowded field the ring holds
other stars: its scatter alone would hide a real faint star next to a bright one (measured on
the real ACS/HRC image of 47 Tuc, `validation/catalogs_real_hrc.py`: either test alone
flagged 1242 of 4632 detections, 830 of them at S/N > 30; both: 251). Where no other
detection lies on the ring or at the mirror point (a sparse field) one test suffices: the
mirror one for elongated galaxies, whose ring is no reference.

Measured on the ACS/WFC benchmark visit (hapsim truth): see BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["aperture_sums", "brightest_neighbours", "value_at", "swarm_members"]

log = logging.getLogger(f"hapsvm.{__name__}")


def aperture_sums(data: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float,
                   background=None) -> np.ndarray:
    """Sum of ``data - background`` over pixels whose centres lie within ``radius`` of each
    (x, y); NaN where the aperture leaves the image or holds a non-finite pixel. The
    background (an image like ``data``, or None) is read at those pixels only."""
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    xi = np.rint(x).astype(int)
    yi = np.rint(y).astype(int)
    px = xi[:, None] + dx.ravel()[None, :]
    py = yi[:, None] + dy.ravel()[None, :]
    inside_disk = (px - x[:, None]) ** 2 + (py - y[:, None]) ** 2 <= radius ** 2
    ny, nx = data.shape
    on_image = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    index = (np.clip(py, 0, ny - 1), np.clip(px, 0, nx - 1))
    values = np.asarray(data[index], float)
    if background is not None:
        values = values - np.asarray(background[index], float)
    ok = on_image.all(axis=1) & np.isfinite(np.where(inside_disk, values, 0.0)).all(axis=1)
    sums = np.where(inside_disk, values, 0.0).sum(axis=1)
    return np.where(ok, sums, np.nan)


def value_at(values, x, y, shape) -> np.ndarray:
    """``values`` (a scalar, or an image of ``shape``) at the pixels nearest to each (x, y)."""
    x = np.asarray(x, float)
    if not np.ndim(values):
        return np.full(x.size, float(values))
    xi = np.clip(np.rint(x).astype(int), 0, shape[1] - 1)
    yi = np.clip(np.rint(np.asarray(y, float)).astype(int), 0, shape[0] - 1)
    # the pixels first: a float copy of a whole image would be 8 bytes per pixel
    return np.asarray(np.asarray(values)[yi, xi], float)


def brightest_neighbours(x, y, brightness, *, max_distance: float, min_ratio: float,
                         min_distance: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Each detection's brightest neighbour within ``max_distance`` (and at least
    ``min_distance``) that is at least ``min_ratio`` times brighter.

    Returns
    -------
    tested, neighbour : ndarray of int
        The detections that have such a neighbour, and that neighbour, in detection order.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    brightness = np.asarray(brightness, float)
    empty = np.zeros(0, int)
    if x.size < 2:
        return empty, empty
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(max_distance, output_type="ndarray")
    if pairs.size == 0:
        return empty, empty
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    with np.errstate(invalid="ignore"):
        brighter = np.isfinite(brightness[i]) & np.isfinite(brightness[j]) & \
            (brightness[j] > 0) & (brightness[j] >= min_ratio * np.clip(brightness[i], 0.0, None))
    if min_distance > 0:
        brighter &= np.hypot(x[i] - x[j], y[i] - y[j]) >= min_distance
    i, j = i[brighter], j[brighter]
    if i.size == 0:
        return empty, empty
    order = np.lexsort((brightness[j], i))  # by detection, then neighbour brightness
    i, j = i[order], j[order]
    last = np.r_[i[1:] != i[:-1], True]
    return i[last], j[last]


def swarm_members(data: np.ndarray, x, y, flux, *, aperture_radius: float,
                  max_distance: float, min_ratio: float = 10.0, nsigma: float = 3.0,
                  background_rms: float | np.ndarray = 0.0, n_samples: int = 16,
                  exptime: float = 0.0, background: np.ndarray | None = None) -> np.ndarray:
    """Detections that are features of a brighter neighbour's profile (see module notes).

    Parameters
    ----------
    data : 2-D ndarray
        Image the sources were detected on: background-subtracted, or give ``background``.
    x, y : array_like
        0-based positions of the detections.
    flux : array_like
        A brightness measure of each detection (e.g. DAOStarFinder's ``flux``); a neighbour
        counts when its flux is at least ``min_ratio`` times the detection's.
    aperture_radius : float
        Radius (pixels) of the aperture compared around the neighbour.
    max_distance : float
        Largest detection-neighbour distance tested (pixels).
    min_ratio : float, optional
    nsigma : float, optional
    background_rms : float or ndarray, optional
        Per-pixel background noise (scalar, or an image like ``data``): floor of the scatter.
    n_samples : int, optional
        Azimuths sampled around the neighbour.
    exptime : float, optional
        Exposure time turning ``data`` (a rate) into counts for the Poisson noise of the
        neighbour's light in the mirror test; 0: background noise only.
    background : 2-D ndarray, optional
        Background of ``data`` (same shape), subtracted where apertures are summed (no
        subtracted copy of the whole image is made).

    Returns
    -------
    ndarray of bool
        True for swarm members.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    flux = np.asarray(flux, float)
    n = x.size
    members = np.zeros(n, bool)
    if n < 2:
        return members
    tree = cKDTree(np.column_stack([x, y]))
    tested, b = brightest_neighbours(x, y, flux, max_distance=max_distance, min_ratio=min_ratio)
    if tested.size == 0:
        return members
    ddx, ddy = x[tested] - x[b], y[tested] - y[b]
    distance = np.hypot(ddx, ddy)
    angle = np.arctan2(ddy, ddx)
    steps = 2 * np.pi * np.arange(1, n_samples) / n_samples
    theta = angle[:, None] + steps[None, :]
    sx = x[b][:, None] + distance[:, None] * np.cos(theta)
    sy = y[b][:, None] + distance[:, None] * np.sin(theta)
    # samples whose aperture overlaps the detection's would carry its light into the reference
    chord = 2 * distance[:, None] * np.abs(np.sin(steps[None, :] / 2))
    usable = chord > 2 * aperture_radius
    ring = aperture_sums(data, sx.ravel(), sy.ravel(), aperture_radius,
                          background).reshape(sx.shape)
    ring = np.where(usable, ring, np.nan)
    own = aperture_sums(data, x[tested], y[tested], aperture_radius, background)
    enough = np.sum(np.isfinite(ring), axis=1) >= max(4, n_samples // 3)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (too few samples)
        median = np.nanmedian(ring, axis=1)
        scatter = 1.4826 * np.nanmedian(np.abs(ring - median[:, None]), axis=1)
    rms = value_at(background_rms, x[tested], y[tested], data.shape)
    area = np.pi * aperture_radius ** 2
    noise = np.maximum(scatter, rms * np.sqrt(area))
    ring_like = enough & np.isfinite(own) & (own - median < nsigma * noise)
    # point symmetry: the mirror image through the neighbour's centre holds as much of any
    # symmetric profile. A member must look like the profile by both references: in a
    # crowded field the ring holds other stars, so its scatter hides a real star's excess,
    # but the mirror point (when no detection sits there) shows it
    mx, my = 2 * x[b] - x[tested], 2 * y[b] - y[tested]
    mirror = aperture_sums(data, mx, my, aperture_radius, background)
    # any detection whose aperture overlaps the mirror aperture blocks the test (two swarm
    # members facing each other are then kept: in a crowded field the detection there is
    # more likely a star than another member)
    crowded = np.array([len(tree.query_ball_point((u, v), 2 * aperture_radius + 1.0)) > 0
                        for u, v in zip(mx, my)], bool)
    usable_mirror = np.isfinite(mirror) & np.isfinite(own) & ~crowded & \
        (distance > aperture_radius)
    poisson = np.clip(mirror, 0.0, None) / exptime if exptime > 0 else 0.0
    noise_mirror = np.sqrt(2.0 * (rms ** 2 * area + poisson))
    mirror_like = usable_mirror & (own - mirror < nsigma * noise_mirror)
    # where the ring holds no other detection (a sparse field), one reference suffices: the
    # mirror for elongated galaxies, the ring for a detection whose mirror sum happens to be
    # low; in a crowded field both must agree
    xy = np.column_stack([x, y])
    ring_clean = np.ones(tested.size, bool)
    for m, (i, nb, r) in enumerate(zip(tested, b, distance)):
        for k in tree.query_ball_point(xy[nb], r + aperture_radius + 1.0):
            if k in (i, nb):
                continue
            if np.hypot(*(xy[k] - xy[nb])) > r - aperture_radius - 1.0:
                ring_clean[m] = False
                break
    swarm = (ring_like & mirror_like) | (ring_clean & ~crowded & (ring_like | mirror_like))
    members[tested[swarm]] = True
    log.debug("swarm filter: %d of %d detections near a %.0fx brighter neighbour are profile "
              "features", int(swarm.sum()), tested.size, min_ratio)
    return members
