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
from astropy.io import fits

from hap_models.catalogs import FLAG_HOT_PIXEL
from hapcore.catalogs.image import ProductHeaders

__all__ = ["exposure_photometry", "flag_missing_in_exposures", "measure_in_exposures",
           "missing_in_exposure", "source_stamps"]

log = logging.getLogger(f"hapsvm.{__name__}")


def exposure_photometry(images, x, y, *, aperture_2, skyannulus, dskyannulus, salgorithm="mode",
                        min_weight_fraction=0.5, n_images=None):
    """Aperture-2 flux, its error and coverage of sources in each exposure product.

    Parameters
    ----------
    images : iterable of CatalogImage or path
        Exposure products on the filter product's grid (e-/s). A path is memory-mapped and only
        the boxes around the sources (plus a window for the noise statistics) are read; an
        iterator is consumed once (``n_images`` must then be given).
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
        kwargs = dict(aperture_2=aperture_2, skyannulus=skyannulus, dskyannulus=dskyannulus,
                      salgorithm=salgorithm, min_weight_fraction=min_weight_fraction)
        if isinstance(image, (str, Path)):
            headers = ProductHeaders.from_fits(image)
            with fits.open(image, memmap=True) as hdul:
                sci = hdul["SCI", 1] if ("SCI", 1) in hdul else hdul[0]
                weight = hdul["WHT"].data if "WHT" in hdul else None
                flux[k], error[k] = _stamp_photometry(headers, sci.data, weight, x, y, **kwargs)
                del sci, weight    # no reference to the memory maps outlives the file
        else:
            flux[k], error[k] = _stamp_photometry(image, image.data, image.weight, x, y,
                                                  **kwargs)
        del image
    return flux, error


def _stamp_photometry(image, data, weight, x, y, *, aperture_2, skyannulus, dskyannulus,
                      salgorithm, min_weight_fraction):
    """Aperture-2 flux and error of the sources in one exposure product (NaN: not covered):
    ``image`` gives its keywords (ProductKeywords), ``data`` and ``weight`` its arrays (memory
    maps are read only where indexed; no weight: 1 where there are data, as CatalogImage).

    Only a box around each source is read: the boxes are laid side by side in a small mosaic
    and measured there, which gives the photometry of the full image (every aperture and
    annulus pixel lies inside its own box; pixels off the product are NaN / weight 0, as
    missing there). The image-wide numbers (median and peak weight, the correlated-noise
    factor) come from a sample of rows and a window around the sources.
    """
    from photutils.aperture import CircularAnnulus, CircularAperture

    from hapcore.catalogs.noise import aperture_variance_factor
    from hapcore.catalogs.photometry import iraf_style_photometry

    scale = image.plate_scale
    r2, r_in = aperture_2 / scale, skyannulus / scale
    r_out = (skyannulus + dskyannulus) / scale
    half = int(np.ceil(max(r_out, r2))) + 1
    if weight is None:
        weight = (np.isfinite(data) & (data != 0)).astype(np.float32)
    weight_sample = _row_sample(weight)
    positive = weight_sample[weight_sample > 0]
    if positive.size == 0:
        return np.full(x.size, np.nan), np.full(x.size, np.nan)
    limit = min_weight_fraction * float(np.median(positive))
    window, valid, window_sources = _noise_window(data, weight, x, y)
    stamp_data, stamp_weight, xs, ys = source_stamps(data, weight, x, y, half=half)
    covered = _covered(stamp_weight, xs, ys, radius=r2, limit=limit)
    factor = aperture_variance_factor(window, r2, valid=valid, sources_xy=window_sources)
    del window, valid
    epadu = np.full(x.size, image.epadu)
    peak = float(positive.max())
    if image.exptime > 0 and image.exptime / 3.0 <= peak <= 3.0 * image.exptime:
        local = stamp_weight[np.rint(ys).astype(int), np.rint(xs).astype(int)].astype(float)
        epadu = np.where(local > 0, local, epadu)   # WHT holds the exposure time per pixel
    positions = np.column_stack([xs, ys])
    phot = iraf_style_photometry(CircularAperture(positions, r2),
                                 CircularAnnulus(positions, r_in, r_out), stamp_data,
                                 bg_method=salgorithm, epadu=epadu, sky_variance_factor=factor)
    flux = np.where(covered, np.asarray(phot["flux_1"], dtype=float), np.nan)
    error = np.where(covered, np.asarray(phot["flux_err_1"], dtype=float), np.nan)
    return flux, error


def source_stamps(data, weight, x, y, *, half):
    """Boxes of half-size ``half`` around each source, side by side in one small mosaic.

    Parameters
    ----------
    data, weight : 2-D array_like
        Science and weight (a memory map is read only inside the boxes).
    x, y : ndarray
        0-based positions.
    half : int

    Returns
    -------
    stamp_data, stamp_weight : 2-D ndarray (float32)
        The mosaic; pixels off the image are NaN and weight 0.
    xs, ys : ndarray
        The sources' positions in the mosaic.
    """
    ny, nx = np.shape(data)
    size = 2 * half + 1
    n = x.size
    per_row = max(1, int(np.ceil(np.sqrt(n))))
    n_rows = int(np.ceil(n / per_row))
    stamp_data = np.full((n_rows * size, per_row * size), np.nan, dtype=np.float32)
    stamp_weight = np.zeros(stamp_data.shape, dtype=np.float32)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    # one slice per box: a memory map is read only there (a fancy-index gather of the same
    # pixels was ten times slower)
    for k in range(n):
        y0, x0 = iy[k] - half, ix[k] - half
        ya, yb = max(y0, 0), min(y0 + size, ny)
        xa, xb = max(x0, 0), min(x0 + size, nx)
        if ya >= yb or xa >= xb:
            continue
        r0, c0 = (k // per_row) * size + (ya - y0), (k % per_row) * size + (xa - x0)
        stamp_data[r0:r0 + yb - ya, c0:c0 + xb - xa] = data[ya:yb, xa:xb]
        stamp_weight[r0:r0 + yb - ya, c0:c0 + xb - xa] = weight[ya:yb, xa:xb]
    np.nan_to_num(stamp_weight, copy=False, nan=0.0)
    source = np.arange(n)
    xs = (source % per_row) * size + half + (x - ix)
    ys = (source // per_row) * size + half + (y - iy)
    return stamp_data, stamp_weight, xs, ys


def _row_sample(weight, step=16):
    """Every ``step``-th row of the weight (finite values), for its median and peak."""
    rows = np.asarray(weight[::step], dtype=np.float32)
    return rows[np.isfinite(rows)]


def _noise_window(data, weight, x, y, size=2048):
    """Science, validity and sources of a window (``size`` square, around the sources' median
    position) for the correlated-noise factor: a stationary property of the drizzle, so a
    window gives it without reading the full product."""
    ny, nx = np.shape(data)
    x0 = int(np.clip(np.median(x) - size // 2, 0, max(0, nx - size)))
    y0 = int(np.clip(np.median(y) - size // 2, 0, max(0, ny - size)))
    window = np.s_[y0:y0 + size, x0:x0 + size]
    values = np.asarray(data[window], dtype=np.float32)
    valid = np.asarray(weight[window], dtype=np.float32) > 0
    inside = (x >= x0) & (x < x0 + size) & (y >= y0) & (y < y0 + size)
    sources = np.column_stack([x[inside] - x0, y[inside] - y0])
    return values, valid, sources


def _covered(weight, x, y, *, radius, limit):
    """True where the weight in the box of half-size ``radius`` is everywhere above ``limit``."""
    weight = np.asarray(weight)
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


def measure_in_exposures(positions, exposure_images, *, fcat):
    """The exposure products' aperture-2 photometry at ``positions``, for
    :func:`flag_missing_in_exposures` (which can then run before the rows are measured).

    Parameters
    ----------
    positions : list of (x, y)
        0-based positions per table, in the order of the tables given to
        :func:`flag_missing_in_exposures` (empty ones included).
    exposure_images : sequence of CatalogImage or path
    fcat : CatalogParameters

    Returns
    -------
    dict or None
        ``x``, ``y``, ``flux``, ``error`` (None when the check is off or has nothing to compare).
    """
    if fcat.exposure_check_nsigma is None or len(exposure_images) < 2:
        return None
    x = np.concatenate([np.asarray(px, float) for px, _ in positions] or [np.empty(0)])
    y = np.concatenate([np.asarray(py, float) for _, py in positions] or [np.empty(0)])
    flux, error = exposure_photometry(exposure_images, x, y, aperture_2=fcat.aperture_2,
                                      skyannulus=fcat.skyannulus_arcsec,
                                      dskyannulus=fcat.dskyannulus_arcsec,
                                      salgorithm=fcat.salgorithm, n_images=len(exposure_images))
    return {"x": x, "y": y, "flux": flux, "error": error}


def flag_missing_in_exposures(tables, exposure_images, *, fcat, measured=None) -> list[int]:
    """Set the cosmic-ray bit (16) of rows absent from a covering exposure product.

    ``tables`` is a list of ``(table, x_column, y_column)`` (None tables skipped); the exposure
    products (CatalogImage or paths, memory-mapped one at a time) are measured once for all of
    them, or taken from ``measured`` (:func:`measure_in_exposures` at the same positions: rows
    at other positions are measured again). Returns the number of rows newly flagged per table
    (see :mod:`hapcore.catalogs.exposure_check`).
    """
    counts = [0] * len(tables)
    used = [(k, t) for k, t in enumerate(tables) if t[0] is not None and len(t[0])]
    if fcat.exposure_check_nsigma is None or len(exposure_images) < 2 or not used:
        return counts
    x = np.concatenate([np.asarray(t[x_col], float) for _, (t, x_col, _) in used])
    y = np.concatenate([np.asarray(t[y_col], float) for _, (t, _, y_col) in used])
    if measured is not None and measured["x"].shape == x.shape:
        flux, error = measured["flux"].copy(), measured["error"].copy()
        again = ~(_same(measured["x"], x) & _same(measured["y"], y))
    else:
        flux = error = None
        again = np.ones(x.shape, dtype=bool)
    if again.any():
        log.debug("cross-exposure check: %d of %d row(s) measured in the exposures now",
                  int(again.sum()), x.size)
        redo = measure_in_exposures([(x[again], y[again])], exposure_images, fcat=fcat)
        if flux is None:
            flux, error = redo["flux"], redo["error"]
        else:
            flux[:, again], error[:, again] = redo["flux"], redo["error"]
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


def _same(a, b):
    """Equal values, NaN equal to NaN."""
    return (a == b) | (np.isnan(a) & np.isnan(b))
