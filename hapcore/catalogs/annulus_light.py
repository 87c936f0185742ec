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

__all__ = ["DRIZZLEPAC_ANNULUS", "annulus_ci_shift", "correct_annulus_light", "psf_aware_sky"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: drizzlepac's sky annulus for every detector (inner radius, width; arcsec): the CI limits
#: of its tables were calibrated with it.
DRIZZLEPAC_ANNULUS: tuple[float, float] = (0.25, 0.25)


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


def correct_annulus_light(table, image, points, fcat, ci_limits) -> float:
    """Aperture fluxes of ``table`` with the PSF's own light removed from the sky (in place).

    The PSF is stacked from the filter image's own bright isolated stars and
    :func:`psf_aware_sky` measures each star's sky without its own light. ``table`` is a filter
    point catalog measured on ``image`` (a CatalogImage) at ``points`` (the detection table),
    ``fcat`` the filter's CatalogParameters, ``ci_limits`` its CI limits. Returns the median change of the concentration
    index of the stars (added to the CI limits, which are calibrated on the uncorrected
    photometry, so that the CI flags do not change); 0 when no stack was possible.
    """
    from hapcore.catalogs.photometry import compute_abmag
    from hapcore.catalogs.psf_features import empirical_psf, point_like

    scale = image.plate_scale
    r1, r2 = fcat.aperture_1 / scale, fcat.aperture_2 / scale
    r_in = fcat.skyannulus_arcsec / scale
    r_out = (fcat.skyannulus_arcsec + fcat.dskyannulus_arcsec) / scale
    if r_in < r2:
        # an annulus overlapping aperture 2 holds the PSF's core, which a stack centred on
        # whole pixels cannot remove exactly (it made IR fluxes worse): such a configuration
        # is left uncorrected (the shipped IR/WFPC2 annuli start outside aperture 2)
        log.debug("%s: sky annulus overlaps aperture 2: no annulus-light correction",
                  image.filename)
        return 0.0
    valid = image.weight > 0
    sample = image.data[valid][::11]
    sample = sample[np.isfinite(sample)]
    if len(table) < 5 or sample.size < 100:
        return 0.0
    # products are sky-subtracted; what is left is measured robustly (sources are a minority)
    zero = float(np.median(sample))
    flux2 = np.nan_to_num(np.asarray(table["FluxAp2"], float), nan=0.0)
    # only point-like sources are stacked: the brightest detections are often galaxies, whose
    # profiles would pass for a huge PSF halo
    flux2 = np.where(point_like(np.asarray(table["CI"], float), flux2, limits=ci_limits), flux2,
                     0.0)
    psf = empirical_psf(image.data, points["xcentroid"], points["ycentroid"], flux2,
                        radius=int(np.ceil(r_out)) + 3, norm_radii=(r_in, r_out),
                        background=zero, valid=valid, significant_only=False)
    if psf is None:
        log.debug("%s: too few isolated stars for the annulus-light correction", image.filename)
        return 0.0
    old_sky = np.array(table["MSkyAp2"], dtype=float)  # a copy: the column is rewritten below
    areas = np.pi * np.array([r1, r2]) ** 2
    raw2 = np.asarray(table["FluxAp2"], float) + areas[1] * old_sky
    sky = psf_aware_sky(image.data, np.asarray(points["xcentroid"], float),
                        np.asarray(points["ycentroid"], float), raw_sums=raw2,
                        aperture_areas=areas[1], psf_image=psf.image, aperture_2=r2,
                        annulus=(r_in, r_out), bg_method=fcat.salgorithm)
    change = np.where(np.isfinite(sky) & np.isfinite(old_sky), old_sky - sky, 0.0)
    ci_before = np.array(table["CI"], dtype=float)  # a copy: the column is rewritten below
    for k, area in zip((1, 2), areas):
        # assigned into the columns (not replacing them): formats and units stay
        table[f"FluxAp{k}"][:] = np.asarray(table[f"FluxAp{k}"], float) + area * change
        table[f"MagAp{k}"][:] = compute_abmag(np.asarray(table[f"FluxAp{k}"], float),
                                              image.photflam, image.photplam)
    table["MSkyAp2"][:] = np.where(np.isfinite(sky), sky, old_sky)
    f1, f2 = np.asarray(table["FluxAp1"], float), np.asarray(table["FluxAp2"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ci = np.where((f1 > 0) & (f2 > 0), -2.5 * np.log10(f1 / f2), np.nan)
    table["CI"][:] = ci
    # the CI of bright stars moves (faint ones hardly): the limits move with the typical star
    snr = f2 / np.asarray(table["FluxErrAp2"], float)
    usable = np.isfinite(ci) & np.isfinite(ci_before) & (snr > 20)
    shift = float(np.median(ci[usable] - ci_before[usable])) if usable.sum() >= 5 else 0.0
    log.debug("%s: PSF light in the sky annulus (stack of %d stars): median aperture-2 flux "
              "change %+.2f%%, CI limits shifted by %+.4f", image.filename, psf.n_stars,
              100 * float(np.nanmedian(area * change / np.where(f2 > 0, f2, np.nan))), shift)
    return shift


def annulus_ci_shift(table, image, points, fcat) -> float:
    """Median CI change of bright stars between ``fcat``'s sky annulus and drizzlepac's.

    WFC3/IR and WFPC2 measure their sky outside aperture 2 (drizzlepac's 0.25-0.50" annulus
    overlaps it): their stars' CI is ~0.02-0.05 lower than with drizzlepac's annulus, which
    the CI limits (drizzlepac's tables) were calibrated with, and bright stars fell below the
    lower limit (flag 16, trimmed). The limits are moved by this shift instead. 0 when the
    annulus is drizzlepac's or fewer than five stars have S/N > 20.
    """
    from hapcore.catalogs.point import measure_point_photometry

    annulus = (float(fcat.skyannulus_arcsec), float(fcat.dskyannulus_arcsec))
    if np.allclose(annulus, DRIZZLEPAC_ANNULUS) or len(table) < 5:
        return 0.0
    reference = measure_point_photometry(
        image, np.asarray(points["xcentroid"], float), np.asarray(points["ycentroid"], float),
        ra=np.asarray(table["RA"]), dec=np.asarray(table["DEC"]), aperture_1=fcat.aperture_1,
        aperture_2=fcat.aperture_2, skyannulus=DRIZZLEPAC_ANNULUS[0],
        dskyannulus=DRIZZLEPAC_ANNULUS[1], salgorithm=fcat.salgorithm, correlated_noise=False)
    ci, ci_reference = np.asarray(table["CI"], float), np.asarray(reference["CI"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.asarray(table["FluxAp2"], float) / np.asarray(table["FluxErrAp2"], float)
    usable = np.isfinite(ci) & np.isfinite(ci_reference) & (snr > 20)
    if usable.sum() < 5:
        return 0.0
    shift = float(np.median(ci[usable] - ci_reference[usable]))
    log.debug("%s: sky annulus %.2f-%.2f\" instead of drizzlepac's: CI limits shifted by %+.4f",
              image.filename, annulus[0], annulus[0] + annulus[1], shift)
    return shift

