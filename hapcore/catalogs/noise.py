"""Correlated noise of a drizzled image, measured with empty apertures.

Drizzling spreads each input pixel over several output pixels, so neighbouring output pixels
share noise: the rms of single pixels (what a sky annulus measures) underestimates the noise
of a sum over an aperture. For a square kernel with pixfrac equal to the output scale the
variance of a large aperture is 2.25 times what the pixel rms predicts (Casertano et al. 2000,
AJ 120, 2747); dithers, pixfrac, the kernel, resampling of the exposures and any low-level
structure change the figure, and small apertures see less of it. DAOPHOT-style errors that
ignore it are too small: the MagAp2 pulls of stars had a robust spread of 1.3-1.8 instead of 1.

:func:`aperture_variance_factor` measures it on the image itself, as deep-field photometry
does ("empty apertures"): the variance of sums over many randomly placed apertures that hold
no source, divided by the aperture area times the variance of single pixels from the same
places. The factor multiplies the sky terms of the photometric errors (the source's own
Poisson term is a sum of independent input counts and needs none).

Each empty aperture is measured against a local sky, as the catalogs measure stars against
their annulus: the median of a ring of 3-6 aperture radii around it. Against one image-wide
background the sums also varied with the background's structure on larger scales, which the
catalogs' local sky removes: on a crowded hapsim field (~6000 stars per chip) the unresolved
light of the faint stars drove the factor of aperture 2 to its limit of 4.0, where ~2.8
describes the empty sky, and the MagAp2 errors of isolated stars were ~20% too large (pull
spread 0.83-0.85). The ring median's own noise is taken out of the factor (the photometry
adds the error of its sky as a term of its own).
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["aperture_variance_factor", "aperture_variance_factors"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Normal-distribution factor of the median absolute deviation.
_MAD_TO_SIGMA = 1.482602

#: Inner and outer radius of the local-sky ring of an empty aperture, in aperture radii: outside
#: the aperture's own correlated noise, at the scale of the catalogs' sky annuli (UVIS
#: aperture 2: 0.45-0.90" for an annulus of 0.25-0.50").
_SKY_RING = (3.0, 6.0)

#: Variance of the median of n normal values over that of their mean (large n).
_MEDIAN_VARIANCE = np.pi / 2


def _robust_variance(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if values.size < 10:
        return float("nan")
    median = np.median(values)
    return float((_MAD_TO_SIGMA * np.median(np.abs(values - median))) ** 2)


def aperture_variance_factor(data: np.ndarray, radius: float, *, valid: np.ndarray,
                             sources_xy=None, avoid_radius: float | None = None,
                             background=None, n_apertures: int = 3000, seed: int = 0,
                             limits: tuple[float, float] = (1.0, 4.0)) -> float:
    """Variance of empty-aperture sums over ``area x`` the single-pixel variance.

    Parameters
    ----------
    data : 2-D ndarray
        The image.
    radius : float
        Aperture radius (pixels).
    valid : 2-D ndarray of bool
        Pixels with data (e.g. weight > 0); apertures must lie inside.
    sources_xy : (n, 2) array_like, optional
        Positions of the detected sources: apertures within ``avoid_radius`` of one are
        dropped. Sources are avoided by their catalog positions, never by the pixel values
        themselves, which would keep only the apertures whose noise happened to be low (the
        variance came out 20-40% too small that way).
    avoid_radius : float, optional
        Default three aperture radii plus two pixels.
    background : float or 2-D ndarray, optional
        Subtracted before summing. Default: a local sky per aperture, the median of the
        pixels in a ring of 3-6 aperture radii around it (see the module notes), whose own
        variance (pi / 2 times that of the ring's mean) is divided out of the factor.
    n_apertures : int, optional
        Random aperture centres drawn (those too close to a source or the data's edge are
        dropped). On the 3 x UVIS F555W product (apertures 1 and 2, five seeds): 3000 give
        1.53 / 2.09, spread 2% / 2%, 0.24 s; 20000 1.55 / 2.20, 2% / 1%, 1.6 s. The factor's
        square root scales the sky errors: 3000 keep them within ~1-2%.
    seed : int, optional
        The centres are drawn reproducibly.
    limits : tuple of float, optional
        The factor is clipped to this range; 1 (no correction) when fewer than 50 empty
        apertures are found.

    Returns
    -------
    float
    """
    return aperture_variance_factors(data, (radius,), valid=valid, sources_xy=sources_xy,
                                     avoid_radius=avoid_radius, background=background,
                                     n_apertures=n_apertures, seed=seed, limits=limits)[0]


def _inside_eroded(valid: np.ndarray, cy: np.ndarray, cx: np.ndarray, iterations: int):
    """``ndimage.binary_erosion(valid, iterations=iterations, border_value=0)[cy, cx]``,
    evaluated at the given pixels only.

    ``iterations`` erosions by the cross are one erosion by the diamond
    ``|dy| + |dx| <= iterations``, and pixels beyond the border count as False.
    """
    ny, nx = valid.shape
    dy, dx = np.mgrid[-iterations:iterations + 1, -iterations:iterations + 1]
    diamond = np.abs(dy) + np.abs(dx) <= iterations
    rows = cy[:, None] + dy[diamond][None, :]
    cols = cx[:, None] + dx[diamond][None, :]
    on_image = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    values = np.zeros(rows.shape, dtype=bool)
    values[on_image] = valid[rows[on_image], cols[on_image]]
    return values.all(axis=1)


def aperture_variance_factors(data: np.ndarray, radii, *, valid: np.ndarray, sources_xy=None,
                              avoid_radius: float | None = None, background=None,
                              n_apertures: int = 3000, seed: int = 0,
                              limits: tuple[float, float] = (1.0, 4.0)) -> tuple[float, ...]:
    """:func:`aperture_variance_factor` of several aperture radii on one image.

    The same factors as one call per radius, with the full-frame work (the valid pixels) done
    once; the erosion that keeps the apertures (and their sky rings) inside the valid pixels
    is evaluated at the drawn centres only.

    Returns
    -------
    tuple of float
        One factor per radius.
    """
    data = np.asarray(data)
    valid = np.asarray(valid, bool) & np.isfinite(data)
    if np.count_nonzero(valid) < 1000:
        return tuple(1.0 for _ in radii)
    return tuple(_variance_factor(data, radius, valid, sources_xy=sources_xy,
                                  avoid_radius=avoid_radius, background=background,
                                  n_apertures=n_apertures, seed=seed, limits=limits)
                 for radius in radii)


def _variance_factor(data, radius, valid, *, sources_xy, avoid_radius, background, n_apertures,
                     seed, limits) -> float:
    r = int(np.ceil(radius))
    # the region each aperture needs: its sky ring when the sky is local
    reach = r if background is not None else int(np.ceil(_SKY_RING[1] * radius))
    ny, nx = data.shape
    if ny <= 2 * reach + 2 or nx <= 2 * reach + 2:
        return 1.0
    rng = np.random.default_rng(seed)
    cy = rng.integers(reach, ny - reach, n_apertures)
    cx = rng.integers(reach, nx - reach, n_apertures)
    free = _inside_eroded(valid, cy, cx, reach + 1)
    if sources_xy is not None and len(sources_xy):
        from scipy.spatial import cKDTree

        avoid = 3.0 * radius + 2.0 if avoid_radius is None else float(avoid_radius)
        distance, _ = cKDTree(np.asarray(sources_xy, float)).query(np.column_stack([cx, cy]))
        free &= distance > avoid
    cy, cx = cy[free], cx[free]
    if cy.size < 50:
        log.debug("empty apertures: only %d free positions; no correlated-noise factor", cy.size)
        return 1.0
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = dx ** 2 + dy ** 2 <= radius ** 2
    pixels = np.asarray(data[cy[:, None] + dy[disk][None, :], cx[:, None] + dx[disk][None, :]],
                        dtype=np.float64)
    sky_term = 1.0
    if background is None:
        dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
        distance = np.hypot(dx, dy)
        ring = (distance >= _SKY_RING[0] * radius) & (distance <= _SKY_RING[1] * radius)
        sky = np.median(data[cy[:, None] + dy[ring][None, :], cx[:, None] + dx[ring][None, :]],
                        axis=1).astype(np.float64)
        # var(sum - area * sky) = factor * area * var_pix * (1 + pi/2 * area / n_ring): the
        # median's variance is pi/2 that of the ring's mean, whose correlated noise is taken
        # to average down by the same factor as the aperture's sum
        sky_term = 1.0 + _MEDIAN_VARIANCE * disk.sum() / ring.sum()
    else:
        sky = np.asarray(np.broadcast_to(background, data.shape)[cy, cx], dtype=np.float64)
    pixels -= sky[:, None]
    sums = pixels.sum(axis=1)
    pixel_variance = _robust_variance(pixels.ravel())
    sum_variance = _robust_variance(sums)
    if not (pixel_variance > 0 and np.isfinite(sum_variance)):
        return 1.0
    factor = sum_variance / (disk.sum() * pixel_variance * sky_term)
    log.debug("empty apertures (r = %.2f px, %d of %d free): variance factor %.3f", radius,
              cy.size, n_apertures, factor)
    return float(np.clip(factor, *limits))
