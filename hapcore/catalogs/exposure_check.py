"""Cross-exposure check of filter-catalog sources: cosmic-ray residuals seen in one exposure only.

A real source is in every exposure that covers it. A cosmic ray that the filter product's
rejection missed (most often in two-exposure filters, where the median of two images cannot
tell which one is wrong) is in one exposure only: in the exposure products (drizzled without
cosmic-ray masks) of the others its aperture holds nothing but sky. drizzlepac has no such test,
so its filter catalogs keep these residuals as ordinary sources (its CI test misses the many
residuals that are not single-pixel spikes).

:func:`exposure_photometry` measures the aperture-2 flux of every source in each exposure
product (the same photometry as the catalog); :func:`missing_in_exposure` flags a source whose
flux in some covering exposure falls short of the filter flux by more than
``nsigma`` times that exposure's error plus ``tolerance`` times the flux. Flagged sources get the
hot-pixel / cosmic-ray bit (16) of their filter catalog.

A real star whose cosmic ray was masked in the filter product is *not* flagged: its exposure
fluxes are all at least the filter flux (the cosmic ray only adds flux in its exposure).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hap_models.catalogs import FLAG_HOT_PIXEL

__all__ = ["exposure_photometry", "exposure_product", "flag_missing_in_exposures",
           "missing_in_exposure"]

log = logging.getLogger(f"hapsvm.{__name__}")


def exposure_photometry(images, x, y, *, aperture_2, skyannulus, dskyannulus, salgorithm="mode",
                        min_weight_fraction=0.5, n_images=None):
    """Aperture-2 flux, its error and coverage of sources in each exposure product.

    Parameters
    ----------
    images : iterable of CatalogImage
        Exposure products on the filter product's grid (e-/s); an iterator is consumed once
        (``n_images`` must then be given), so products can be loaded one at a time.
    x, y : array_like
        0-based positions.
    aperture_2, skyannulus, dskyannulus : float
        Aperture radius and sky annulus (arcsec), as the catalog.
    salgorithm : str, optional
    min_weight_fraction : float, optional
        A source is covered by an exposure when the exposure's weight everywhere within the
        aperture is at least this fraction of that exposure's median weight.
    n_images : int, optional
        Number of images (default ``len(images)``).

    Returns
    -------
    flux, error : ndarray, shape (n_exposures, n_sources)
        NaN where not covered.
    """
    from hapcore.catalogs.point import measure_point_photometry

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n_images = len(images) if n_images is None else n_images
    flux = np.full((n_images, x.size), np.nan)
    error = np.full((n_images, x.size), np.nan)
    if x.size == 0:
        return flux, error
    # no enumerate: its reused (index, image) tuple kept the previous product alive while the
    # next one was read (two full-frame products at once)
    k = -1
    for image in images:
        k += 1
        table = measure_point_photometry(image, x, y, aperture_1=0.5 * aperture_2,
                                         aperture_2=aperture_2, skyannulus=skyannulus,
                                         dskyannulus=dskyannulus, salgorithm=salgorithm)
        covered = _covered(image.weight, x, y, radius=aperture_2 / image.plate_scale,
                           min_weight_fraction=min_weight_fraction)
        flux[k] = np.where(covered, np.asarray(table["FluxAp2"], dtype=float), np.nan)
        error[k] = np.where(covered, np.asarray(table["FluxErrAp2"], dtype=float), np.nan)
        del image, table    # before the next product is loaded
    return flux, error


def _covered(weight, x, y, *, radius, min_weight_fraction):
    """True where the weight in the box of half-size ``radius`` is everywhere above the limit."""
    weight = np.asarray(weight)
    positive = weight[weight > 0]
    if positive.size == 0:
        return np.zeros(np.shape(x), dtype=bool)
    limit = min_weight_fraction * float(np.median(positive[:: max(1, positive.size // 200000)]))
    ny, nx = weight.shape
    half = int(np.ceil(radius))
    ix = np.rint(x).astype(int)
    iy = np.rint(y).astype(int)
    inside = (ix - half >= 0) & (iy - half >= 0) & (ix + half < nx) & (iy + half < ny)
    covered = np.zeros(ix.shape, dtype=bool)
    offsets = np.arange(-half, half + 1)
    rows = np.flatnonzero(inside)
    for start in range(0, rows.size, 10000):    # (sources, box) gathers of bounded size
        k = rows[start:start + 10000]
        box = weight[iy[k, None, None] + offsets[None, :, None],
                     ix[k, None, None] + offsets[None, None, :]]
        covered[k] = np.all(box >= limit, axis=(1, 2))
    return covered


def missing_in_exposure(filter_flux, exposure_flux, exposure_error, *, nsigma=4.0,
                        tolerance=0.1, min_exposures=2):
    """Sources absent from at least one exposure that covers them.

    Parameters
    ----------
    filter_flux : array_like, shape (n,)
        Aperture-2 flux in the filter product.
    exposure_flux, exposure_error : array_like, shape (m, n)
        From :func:`exposure_photometry` (NaN: not covered).
    nsigma : float, optional
        A covered exposure misses the source when
        ``flux_i < filter_flux - nsigma * error_i - tolerance * filter_flux``.
    tolerance : float, optional
        Fractional allowance for exposure-to-exposure differences of bright sources (pixel
        phase of the undersampled PSF, sky and flat-field errors).
    min_exposures : int, optional
        Sources covered by fewer exposures are never flagged (nothing to compare).

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    f = np.asarray(filter_flux, dtype=float)
    flux = np.asarray(exposure_flux, dtype=float).reshape(-1, f.size)
    err = np.asarray(exposure_error, dtype=float).reshape(-1, f.size)
    usable = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    n_cover = usable.sum(axis=0)
    with np.errstate(invalid="ignore"):
        short = usable & (flux < f[None, :] - nsigma * err - tolerance * np.abs(f[None, :]))
    return (n_cover >= min_exposures) & np.isfinite(f) & (f > 0) & short.any(axis=0)


def exposure_product(path):
    """An exposure product for the cross-exposure check: science and weight only (the check
    uses no exposure counts; the default ones, from the weight, were a full-frame array)."""
    from hapcore.catalogs.image import CatalogImage

    image = CatalogImage.from_fits(path, context=False)
    image.nexp = None
    return image


def flag_missing_in_exposures(tables, exposure_images, *, fcat) -> list[int]:
    """Set the cosmic-ray bit (16) of rows absent from a covering exposure product.

    ``tables`` is a list of ``(table, x_column, y_column)`` (None tables skipped); the exposure
    products (CatalogImage or paths, loaded one at a time) are measured once for all of them.
    Returns the number of rows newly flagged per table (see
    :mod:`hapcore.catalogs.exposure_check`).
    """
    counts = [0] * len(tables)
    used = [(k, t) for k, t in enumerate(tables) if t[0] is not None and len(t[0])]
    if fcat.exposure_check_nsigma is None or len(exposure_images) < 2 or not used:
        return counts
    x = np.concatenate([np.asarray(t[x_col], float) for _, (t, x_col, _) in used])
    y = np.concatenate([np.asarray(t[y_col], float) for _, (t, _, y_col) in used])
    images = (exposure_product(i) if isinstance(i, (str, Path)) else i
              for i in exposure_images)
    flux, error = exposure_photometry(images, x, y, aperture_2=fcat.aperture_2,
                                      skyannulus=fcat.skyannulus_arcsec,
                                      dskyannulus=fcat.dskyannulus_arcsec,
                                      salgorithm=fcat.salgorithm, n_images=len(exposure_images))
    start = 0
    for k, (table, _, _) in used:
        stop = start + len(table)
        missing = missing_in_exposure(table["FluxAp2"], flux[:, start:stop],
                                      error[:, start:stop], nsigma=fcat.exposure_check_nsigma,
                                      tolerance=fcat.exposure_check_tolerance)
        flags = np.asarray(table["Flags"], dtype=np.int64)
        counts[k] = int((missing & ((flags & FLAG_HOT_PIXEL) == 0)).sum())
        table["Flags"] = np.where(missing, flags | FLAG_HOT_PIXEL, flags)
        start = stop
    return counts
