"""
Noise-free rendering of sources into a chip image.

Sources are placed through the chip's true WCS (``all_world2pix``,
SIP included) and every source is drawn only in a small stamp. Counts
are divided by the local pixel area relative to the reference pixel
(simulation notes #2): calibrated FLT/FLC images are flat-fielded for
the pixel-area variation, so a flux-conserving drizzle onto an
undistorted grid recovers exactly the truth count rate.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from .geometry import ChipWCS
from .psf import GaussianMixturePSF

__all__ = ["add_stamps", "render_sources", "sersic_stamps"]

_GALAXY_OVERSAMPLE = 3
_GALAXY_HALF_SIZES = np.array([8, 12, 16, 24, 32, 44])


def add_stamps(image, stamps, ix, iy):
    """
    Add stamps centred on integer pixels into `image` (in place).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
    stamps : ndarray, shape (n, s, s)
        Odd-sized stamps.
    ix, iy : ndarray of int
        0-based pixel of each stamp centre.
    """
    if len(stamps) == 0:
        return
    ny, nx = image.shape
    half = stamps.shape[1] // 2
    offsets = np.arange(-half, half + 1)
    cols = ix[:, None, None] + offsets[None, None, :]
    rows = iy[:, None, None] + offsets[None, :, None]
    cols, rows = np.broadcast_arrays(cols, rows)
    inside = (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
    flat = rows[inside] * nx + cols[inside]
    image += np.bincount(flat, weights=stamps[inside], minlength=nx * ny).reshape(ny, nx)


def _sersic_bn(n):
    """Ciotti & Bertin (1999) approximation of b_n."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n**2)


def sersic_stamps(dx, dy, r_eff_px, n, q, theta_pix_deg, half_size, psf):
    """
    PSF-convolved, pixel-integrated Sersic profiles of unit total flux.

    Parameters
    ----------
    dx, dy : ndarray
        Centre offsets from the stamp's central pixel (pixels).
    r_eff_px : ndarray
        Effective (half-light) radius along the major axis, pixels.
    n : ndarray
        Sersic index.
    q : ndarray
        Axis ratio b/a.
    theta_pix_deg : ndarray
        Major-axis angle counter-clockwise from the +x axis.
    half_size : int
    psf : GaussianMixturePSF

    Returns
    -------
    ndarray, shape (len(dx), 2 * half_size + 1, 2 * half_size + 1)
    """
    os_ = _GALAXY_OVERSAMPLE
    size = 2 * half_size + 1
    sub = (np.arange(size * os_) - (size * os_ - 1) / 2.0) / os_
    xs = sub[None, None, :] - dx[:, None, None]
    ys = sub[None, :, None] - dy[:, None, None]
    th = np.deg2rad(theta_pix_deg)[:, None, None]
    xr = xs * np.cos(th) + ys * np.sin(th)
    yr = -xs * np.sin(th) + ys * np.cos(th)
    radius = np.sqrt(xr**2 + (yr / q[:, None, None]) ** 2)
    nn = n[:, None, None]
    profile = np.exp(-_sersic_bn(nn) * ((radius / r_eff_px[:, None, None]) ** (1.0 / nn) - 1.0))
    pix = profile.reshape(len(dx), size, os_, size, os_).sum(axis=(2, 4))
    kernel = psf.kernel(min(half_size, 10))
    pix = fftconvolve(pix, kernel[None], mode="same", axes=(1, 2))
    pix = np.clip(pix, 0.0, None)
    # Truncated at the stamp edge; the truth is the flux actually rendered.
    pix /= pix.sum(axis=(1, 2), keepdims=True)
    return pix


def render_sources(image, wcs: ChipWCS, psf: GaussianMixturePSF, scene, counts, *,
                   orientat_deg, pixel_scale_arcsec, star_half_size=15,
                   bright_half_size=40, bright_counts=3.0e5):
    """
    Add all sources of `scene` falling on the chip to `image` (in place).

    Parameters
    ----------
    image : ndarray
        Image in electrons (float64).
    wcs : ChipWCS
        The TRUE WCS of the chip.
    psf : GaussianMixturePSF
    scene : astropy.table.Table
        From `hapsim.scene.make_scene`.
    counts : ndarray
        Total electrons of each source in this exposure (before the
        pixel-area division).
    orientat_deg : float
        ORIENTAT of the chip, to turn galaxy position angles into pixels.
    pixel_scale_arcsec : float
        Mean pixel scale, to turn r_eff into pixels.
    star_half_size, bright_half_size : int, optional
        Stamp half sizes of ordinary and bright stars.
    bright_counts : float, optional
        Stars above this many electrons get the larger stamp.

    Returns
    -------
    x, y : ndarray
        0-based pixel positions of all sources (NaN where off the chip).
    """
    awcs = wcs.to_astropy()
    ny, nx = image.shape
    x, y = awcs.all_world2pix(np.asarray(scene["ra"]), np.asarray(scene["dec"]), 0,
                              tolerance=1e-8, maxiter=50, quiet=True)
    margin = bright_half_size
    near = (x > -margin) & (x < nx - 1 + margin) & (y > -margin) & (y < ny - 1 + margin)
    is_star = np.asarray(scene["type"]) == "star"
    x_out = np.where(near, x, np.nan)
    y_out = np.where(near, y, np.nan)

    area = np.ones_like(x)
    area[near] = wcs.pixel_area_ratio(x[near], y[near])
    electrons = np.asarray(counts, dtype=float) / area
    ix = np.rint(x).astype(int)
    iy = np.rint(y).astype(int)
    dx, dy = x - ix, y - iy

    for select, half in ((near & is_star & (electrons < bright_counts), star_half_size),
                         (near & is_star & (electrons >= bright_counts), bright_half_size)):
        idx = np.flatnonzero(select)
        for start in range(0, idx.size, 2000):
            chunk = idx[start:start + 2000]
            stamps = psf.stamps(dx[chunk], dy[chunk], half) * electrons[chunk, None, None]
            add_stamps(image, stamps, ix[chunk], iy[chunk])

    gal = np.flatnonzero(near & ~is_star)
    if gal.size:
        r_px = np.asarray(scene["r_eff"])[gal] / pixel_scale_arcsec
        n = np.asarray(scene["sersic_n"])[gal]
        q = 1.0 - np.asarray(scene["ellipticity"])[gal]
        # Sky position angle (east of north) -> angle from +x in pixels:
        # the y axis points to ORIENTAT and x to ORIENTAT - 90 (east left).
        theta_pix = 90.0 + (np.asarray(scene["theta"])[gal] - orientat_deg)
        want = np.ceil(4.0 * r_px * (1.0 + 0.3 * n)) + 4
        which = np.searchsorted(_GALAXY_HALF_SIZES, np.minimum(want, _GALAXY_HALF_SIZES[-1]))
        for k, half in enumerate(_GALAXY_HALF_SIZES):
            sel = np.flatnonzero(which == k)
            for start in range(0, sel.size, 200):
                part = sel[start:start + 200]
                g = gal[part]
                stamps = sersic_stamps(dx[g], dy[g], r_px[part], n[part], q[part],
                                       theta_pix[part], int(half), psf)
                add_stamps(image, stamps * electrons[g, None, None], ix[g], iy[g])
    return x_out, y_out
