"""
Noise-free rendering of sources into a chip image.

Sources are placed through the chip's true WCS (``all_world2pix``,
SIP included) and every source is drawn only in a small stamp. Counts
are divided by the local pixel area relative to the reference pixel
(simulation notes #2): calibrated FLT/FLC images are flat-fielded for
the pixel-area variation, so a flux-conserving drizzle onto an
undistorted grid recovers exactly the truth count rate.

With a Gaussian-mixture PSF every stamp holds the source's whole flux.
An `hapsim.optics.OpticalPSF` reaches several arcseconds, too far for
per-source stamps (a 6" UVIS stamp is 300 x 300 pixels): each star gets
a sub-pixel-exact core stamp (``psf.core_half_size`` + 1 pixels, about
0.6") and the rest of its light is deposited, bilinearly at its position,
on a padded "wing" image that is convolved once with the PSF minus its
core square (`WingImage`); the core stamp takes off what the wing copies
put inside it, and the wing weight is set so that every star renders
exactly its counts within the PSF's modelled extent. The wing kernel is
round and tapered smoothly to zero (`hapsim.optics.round_wing_psf`): a
square kernel, cut where the far halo of the brightest stars is still
several background rms, drew sharp-edged squares that catalogs detect.
It is the PSF itself out to 80% of the modelled half width and holds
exactly the square's flux, so the wing weight stays 1 for a centred star.
The bilinear wing copies are only approximately the star's sub-pixel
phase (about 1% of the PSF): the stamps of bright stars reach 8 pixels
further and hand over to them with a cosine weight, so there is no step
at the core square's edge. Galaxies get the core, normalised, in their
convolution and their share of the wings as a point source.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy.signal import fftconvolve

from .geometry import ChipWCS
from .psf import GaussianMixturePSF

__all__ = ["WingImage", "add_point_sources", "add_stamps", "render_sources", "sersic_stamps"]

_GALAXY_OVERSAMPLE = 3
_GALAXY_HALF_SIZES = np.array([8, 12, 16, 24, 32, 44])
#: Pixels beyond the exact core stamp over which it hands over to the wings...
_JUNCTION_BLEND = 8
#: ...for stars of at least this many electrons: the bilinear wings' error at the
#: junction is about 1e-6 of the flux per pixel, under 0.1 e- below it.
_JUNCTION_BLEND_FLUX = 1.0e5


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


def sersic_stamps(dx, dy, r_eff_px, n, q, theta_pix_deg, half_size, psf, *,
                  kernel_half_size=None):
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
    psf : GaussianMixturePSF or OpticalPSF
    kernel_half_size : int, optional
        Half size of the PSF kernel; default ``min(half_size, 10)``.

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
    kernel = psf.kernel(min(half_size, 10) if kernel_half_size is None else kernel_half_size)
    pix = fftconvolve(pix, kernel[None], mode="same", axes=(1, 2))
    pix = np.clip(pix, 0.0, None)
    # Truncated at the stamp edge; the truth is the flux actually rendered.
    pix /= pix.sum(axis=(1, 2), keepdims=True)
    return pix


class WingImage:
    """
    The far wings of many sources, rendered with one FFT convolution.

    Parameters
    ----------
    shape : tuple of int
        Shape of the chip image.
    psf : OpticalPSF
    """

    def __init__(self, shape, psf):
        self.shape = tuple(shape)
        self.half = psf.wing_half_size
        self.kernel = psf.wing_kernel()
        self.kernel_sum = float(self.kernel.sum())
        ny, nx = self.shape
        self.pad = np.zeros((ny + 2 * self.half, nx + 2 * self.half))
        self.count = 0

    def deposit(self, x, y, weight):
        """
        Add point sources of `weight` wing-kernel units at 0-based chip (x, y).

        Bilinear deposits keep each source's centroid and flux exactly.
        """
        x = np.asarray(x, dtype=float) + self.half
        y = np.asarray(y, dtype=float) + self.half
        weight = np.asarray(weight, dtype=float)
        x0 = np.floor(x).astype(int)
        y0 = np.floor(y).astype(int)
        tx, ty = x - x0, y - y0
        ny, nx = self.pad.shape
        flat = self.pad.reshape(-1)
        for oy, wy in ((0, 1.0 - ty), (1, ty)):
            for ox, wx in ((0, 1.0 - tx), (1, tx)):
                cols, rows = x0 + ox, y0 + oy
                ok = (cols >= 0) & (cols < nx) & (rows >= 0) & (rows < ny)
                np.add.at(flat, rows[ok] * nx + cols[ok], (weight * wy * wx)[ok])
        self.count += int(weight.size)

    def image(self):
        """The wings on the chip (zeros when nothing was deposited)."""
        if not self.count:
            return np.zeros(self.shape)
        # the "valid" part of a circular convolution as large as the padded
        # image never wraps, so no zero padding is needed
        size = [sfft.next_fast_len(n, real=True) for n in self.pad.shape]
        kernel = sfft.rfft(self.kernel, n=size[1], axis=1, workers=2)
        product = (sfft.rfft2(self.pad, s=size, workers=2)
                   * sfft.fft(kernel, n=size[0], axis=0, workers=2))
        full = sfft.irfft2(product, s=size, workers=2)
        k = self.kernel.shape[0] - 1
        return full[k:k + self.shape[0], k:k + self.shape[1]]


def add_point_sources(image, psf, x, y, flux, *, wings=None, half_size=15):
    """
    Add point sources at 0-based (x, y) with total `flux` (in place).

    Parameters
    ----------
    image : ndarray
    psf : GaussianMixturePSF or OpticalPSF
    x, y, flux : array_like
    wings : WingImage, optional
        Where an `OpticalPSF`'s wings go; if None they are made and added here.
    half_size : int, optional
        Stamp half size of a Gaussian mixture (an optical PSF uses its
        ``core_half_size`` and the wings).
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    flux = np.atleast_1d(np.asarray(flux, dtype=float))
    ix = np.rint(x).astype(int)
    iy = np.rint(y).astype(int)
    dx, dy = x - ix, y - iy
    if not hasattr(psf, "wing_kernel"):
        for start in range(0, x.size, 2000):
            part = slice(start, start + 2000)
            stamps = psf.stamps(dx[part], dy[part], half_size) * flux[part, None, None]
            add_stamps(image, stamps, ix[part], iy[part])
        return
    own = wings is None
    wings = WingImage(image.shape, psf) if own else wings
    ny, nx = image.shape
    exact = psf.core_half_size + 1
    # The wing copies of a bilinear deposit sit on the pixels around the star
    # and their holes miss its core square by up to a pixel: the stamps
    # subtract what the copies put there, so the PSF is exact out to
    # `exact` pixels (Chebyshev). Beyond, the bilinear copies differ from
    # the star's sub-pixel phase by ~1 % of the PSF (up to ~8 % on rings and
    # spikes): cutting over to them at once drew a square step around bright
    # stars, so their stamps hand over to the copies smoothly (weight
    # `blend`); for fainter stars the step is far below any noise.
    bright = flux >= _JUNCTION_BLEND_FLUX
    amplitude = np.ones(x.size)          # sources with no stamp: wings as they are
    for group, reach in ((~bright, exact), (bright, exact + _JUNCTION_BLEND)):
        blend = _junction_weight(exact, reach)
        windows = _shifted_wings(wings.kernel, reach)
        touch = group & (ix >= -reach) & (ix < nx + reach) & (iy >= -reach) & (iy < ny + reach)
        _add_cores(image, psf, wings, x, y, flux, touch, reach, blend, windows, amplitude)
    wings.deposit(x, y, flux * amplitude)
    if own:
        image += wings.image()


def _add_cores(image, psf, wings, x, y, flux, touch, reach, blend, windows, amplitude):
    """
    Core stamps of the `touch` sources, handing over to their wing copies.

    Fills ``amplitude[touch]`` with the wing weights that make every source
    render exactly its flux.
    """
    ix = np.rint(x).astype(int)
    iy = np.rint(y).astype(int)
    dx, dy = x - ix, y - iy
    for start in range(0, x.size, 1000):
        idx = np.flatnonzero(touch[start:start + 1000]) + start
        if not idx.size:
            continue
        stamps = psf.stamps(dx[idx], dy[idx], reach, normalize=False)
        ox = np.floor(x[idx]).astype(int) - ix[idx]          # -1 or 0
        oy = np.floor(y[idx]).astype(int) - iy[idx]
        tx = (x[idx] - np.floor(x[idx]))[:, None, None]
        ty = (y[idx] - np.floor(y[idx]))[:, None, None]
        copies = ((1.0 - ty) * ((1.0 - tx) * windows[oy + 1, ox + 1] + tx * windows[oy + 1, ox + 2])
                  + ty * ((1.0 - tx) * windows[oy + 2, ox + 1] + tx * windows[oy + 2, ox + 2]))
        # rendered = blend * exact + (1 - blend) * amplitude * copies, with the
        # amplitude that makes every source render exactly its flux
        stamps *= blend
        copies *= blend
        amplitude[idx] = ((1.0 - stamps.sum(axis=(1, 2)))
                          / (wings.kernel_sum - copies.sum(axis=(1, 2))))
        stamps -= amplitude[idx, None, None] * copies
        add_stamps(image, stamps * flux[idx, None, None], ix[idx], iy[idx])


def _junction_weight(exact, reach):
    """
    Weight of the exact stamp against the wing copies, ``2 reach + 1`` square.

    1 out to Chebyshev radius `exact`, then a cosine falling to 0 at `reach`.
    """
    offsets = np.abs(np.arange(-reach, reach + 1))
    cheb = np.maximum(offsets[:, None], offsets[None, :])
    u = np.clip((cheb - exact) / max(reach - exact, 1), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * u))


def _shifted_wings(kernel, reach):
    """
    The wing kernel over a ``2 reach + 1`` square, for copies 1 pixel off.

    ``out[by + 1, bx + 1]`` is the kernel centred at offset (bx, by) from
    the square's centre pixel.
    """
    h = kernel.shape[0] // 2
    size = 2 * reach + 1
    out = np.empty((3, 3, size, size))
    for by in (-1, 0, 1):
        for bx in (-1, 0, 1):
            out[by + 1, bx + 1] = kernel[h - reach - by:h - reach - by + size,
                                         h - reach - bx:h - reach - bx + size]
    return out


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
    psf : GaussianMixturePSF or OpticalPSF
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
        Stamp half sizes of ordinary and bright stars (Gaussian mixtures).
    bright_counts : float, optional
        Stars above this many electrons get the larger stamp.

    Returns
    -------
    x, y : ndarray
        0-based pixel positions of all sources (NaN where off the chip and
        beyond the reach of the stamps and wings).
    """
    awcs = wcs.to_astropy()
    ny, nx = image.shape
    x, y = awcs.all_world2pix(np.asarray(scene["ra"]), np.asarray(scene["dec"]), 0,
                              tolerance=1e-8, maxiter=50, quiet=True)
    optical = hasattr(psf, "wing_kernel")
    margin = max(bright_half_size, psf.wing_half_size) if optical else bright_half_size
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

    wings = WingImage(image.shape, psf) if optical else None
    if optical:
        idx = np.flatnonzero(near & is_star)
        add_point_sources(image, psf, x[idx], y[idx], electrons[idx], wings=wings)
    else:
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
        kernel_half = psf.core_half_size if optical else None
        core_share = psf.core_fraction() if optical else 1.0
        for k, half in enumerate(_GALAXY_HALF_SIZES):
            sel = np.flatnonzero(which == k)
            for start in range(0, sel.size, 200):
                part = sel[start:start + 200]
                g = gal[part]
                if optical:
                    # only galaxies whose stamps touch the chip need them
                    g_in = ((ix[g] > -half) & (ix[g] < nx + half)
                            & (iy[g] > -half) & (iy[g] < ny + half))
                    part, g = part[g_in], g[g_in]
                    if not g.size:
                        continue
                stamps = sersic_stamps(dx[g], dy[g], r_px[part], n[part], q[part],
                                       theta_pix[part], int(half), psf,
                                       kernel_half_size=kernel_half)
                add_stamps(image, stamps * (core_share * electrons[g])[:, None, None],
                           ix[g], iy[g])
        if optical:
            # the light beyond the core square, as from a point at the centre;
            # normalised so that the galaxy's total is its counts whatever the
            # wing kernel holds (exactly 1 - core_share up to rounding)
            share = (1.0 - core_share) / wings.kernel_sum
            wings.deposit(x[gal], y[gal], electrons[gal] * share)
    if optical:
        image += wings.image()
    return x_out, y_out
