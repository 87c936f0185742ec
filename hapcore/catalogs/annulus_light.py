"""The PSF's own light in the sky annulus of aperture photometry.

The point catalogs subtract a local sky measured in an annulus (0.25-0.50" for every
detector, drizzlepac's convention) that still holds part of the star's PSF: the halo of an
HST PSF reaches arcseconds, and on WFC3/IR the annulus even overlaps aperture 2 (0.45"). That
light is taken for sky and removed from the apertures, so MagAp1/MagAp2 came out fainter than
the light the apertures hold: by ~0.01 mag on WFC3/UVIS and 0.02-0.04 mag on WFC3/IR
(drizzlepac's catalogs carry the same bias).

:func:`psf_aware_sky` measures the sky again with the star's own light removed from the annulus
pixels: a PSF stacked from the product's bright isolated stars
(:func:`hapcore.catalogs.psf_features.empirical_psf`, normalised to unit light in aperture 2)
is scaled by the star's aperture-2 flux, evaluated at every annulus pixel (at the star's
sub-pixel position), subtracted, and the same clipped estimator is applied to what is left;
flux and sky are iterated together. The estimator's response to the wing is not linear
(clipping removes the bright side of a steep wing), so a mean correction would not do: on IR
it over-corrected bright stars by 0.4 mag.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

__all__ = ["psf_aware_sky"]

log = logging.getLogger(f"hapsvm.{__name__}")


def psf_aware_sky(data: np.ndarray, x, y, *, raw_sums, aperture_areas, psf_image: np.ndarray,
                  aperture_2: float, annulus: tuple[float, float], bg_method: str = "mode",
                  iterations: int = 4) -> np.ndarray:
    """Local sky of each star with its own PSF light removed from the annulus.

    Parameters
    ----------
    data : 2-D ndarray
        The image (not background-subtracted).
    x, y : array_like
        0-based positions.
    raw_sums : ndarray, shape (n,)
        Aperture-2 sums (no sky subtracted).
    aperture_areas : float
        Area of aperture 2 (pixels).
    psf_image : 2-D ndarray
        PSF stack centred on its central pixel, zero background (any normalisation).
    aperture_2 : float
        Radius of aperture 2 (pixels): the stack is normalised to unit light inside it.
    annulus : tuple of float
        Inner and outer radius of the sky annulus (pixels).
    bg_method : {"mode", "median", "mean"}, optional
        The catalog's sky estimator (applied with the same 3-sigma clipping).
    iterations : int, optional

    Returns
    -------
    ndarray
        Sky per pixel of each star (NaN where the annulus has no pixels).
    """
    from photutils.aperture import CircularAperture, aperture_photometry

    from hapcore.catalogs.photometry import annulus_pixel_stack, clipped_stats_rows

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    half = psf_image.shape[0] // 2
    r_in, r_out = annulus
    if r_out + 2 > half:
        raise ValueError(f"PSF stack of half size {half} px is smaller than the annulus ({r_out} px)")
    unit = float(aperture_photometry(psf_image, CircularAperture((half, half), aperture_2),
                                     method="exact")["aperture_sum"][0])
    if not unit > 0:
        raise ValueError("the PSF stack has no light in aperture 2")
    model = psf_image / unit
    positions = np.column_stack([x, y])
    values = annulus_pixel_stack(data, positions, r_in, r_out)
    # model at the same pixels: pixel-centre offsets from the source, as annulus_pixel_stack
    box = int(np.ceil(r_out)) + 1
    offsets = np.arange(-box, box + 1)
    dx0 = x - np.rint(x)
    dy0 = y - np.rint(y)
    px = (offsets[None, None, :] - dx0[:, None, None]) + np.zeros((1, offsets.size, 1))
    py = (offsets[None, :, None] - dy0[:, None, None]) + np.zeros((1, 1, offsets.size))
    wing = ndimage.map_coordinates(model, [py.ravel() + half, px.ravel() + half], order=1,
                                   mode="constant", cval=0.0).reshape(values.shape)
    wing = np.where(np.isfinite(values), wing, np.nan)
    sky = _estimate(clipped_stats_rows(values), bg_method)
    raw = np.asarray(raw_sums, float)
    for _ in range(iterations):
        flux = np.clip(raw - aperture_areas * sky, 0.0, None)
        flux = np.where(np.isfinite(flux), flux, 0.0)
        sky = _estimate(clipped_stats_rows(values - flux[:, None] * wing), bg_method)
    return sky


def _estimate(stats, bg_method: str) -> np.ndarray:
    mean, median, _, _ = stats
    if bg_method == "mean":
        return mean
    if bg_method == "median":
        return median
    return 3.0 * median - 2.0 * mean
