"""Point (aperture) catalog: detection on the total image, forced photometry per filter (§6.3).

* :func:`detect_point_sources` -- DAOStarFinder per weight region on the background-subtracted
  total image, with windowed-centroid refinement of the positions;
* :func:`refine_centroids` -- the windowed centroid itself;
* :func:`psf_refine` -- better positions than the windowed centroid's (issue #15): a PSF fit
  (:mod:`hapcore.catalogs.psf_centroids`) on well-sampled products, the first moment in a
  wide aperture (:func:`aperture_centroids`) on undersampled ones (:func:`is_undersampled`);
* :func:`measure_point_photometry` -- two CI apertures and a sky annulus at fixed positions, in
  the columns of the filter point catalog (flags are set by :mod:`hapcore.catalogs.flags`).

drizzlepac's default "psf" star finder deconvolves with TinyTim library PSFs drizzled onto the
product grid; that library is not part of this project, so the DAOStarFinder path (drizzlepac's
own fallback) is always used and the choice is logged once.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
from astropy.stats import gaussian_fwhm_to_sigma
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from photutils.aperture import CircularAnnulus, CircularAperture
from photutils.detection import DAOStarFinder
from photutils.utils import NoDetectionsWarning

from hap_models.catalogs import POINT_FILTER_COLUMNS
from hapcore.catalogs.image import (
    BackgroundModel,
    CatalogImage,
    WeightRegion,
    subtract_background,
)
from hapcore.catalogs.photometry import compute_abmag, iraf_style_photometry

__all__ = [
    "SHARPNESS_LIMITS",
    "aperture_centroids",
    "detect_point_sources",
    "empty_point_sources",
    "is_undersampled",
    "local_epadu",
    "measure_point_photometry",
    "pixel_to_sky",
    "psf_refine",
    "refine_centroids",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: DAOFIND sharpness limits. The upper limit is well above DAOStarFinder's default (1.0) so
#: that single-pixel spikes (hot pixels, cosmic-ray residuals) are detected and FLAGGED by the
#: CI test (flag 16) instead of silently dropped.
SHARPNESS_LIMITS: tuple[float, float] = (0.2, 5.0)
ROUNDNESS_LIMITS: tuple[float, float] = (-1.0, 1.0)
#: Smallest window sigma (pixels) of :func:`refine_centroids`. The windowed centroid is
#: unbiased only when the window times the pixel-integrated profile is well sampled: with the
#: PSF's own sigma on WFC3/IR (0.46 px) the centroids snapped towards pixel centres (median
#: error 0.31 px on undersampled stars, 0.03 px with a 1-px window; 1.5-2 px windows add noise).
MIN_WINDOW_SIGMA: float = 1.0
#: A product is undersampled when the PSF's FWHM (TWEAK_FWHMPSF) spans fewer input pixels than
#: this: WFC3/IR (0.14" on 0.128" pixels: 1.1) is, WFC3/UVIS (1.9), ACS/WFC (1.5) are not.
UNDERSAMPLED_NATIVE_FWHM: float = 1.3
#: Aperture radius of :func:`aperture_centroids` on undersampled products, in FWHMs (WFC3/IR
#: at 0.128"/px, FWHM 1.1 px; stars at S/N >= 20, median error in px at 2.3, 2.7, 3.2 FWHM:
#: ``ir-only`` subarray, optical PSF: 0.037, 0.034, 0.036 (windowed centroid 0.068);
#: 3-exposure Gaussian-PSF visit: 0.029, 0.032, 0.038 (windowed 0.033)).
APERTURE_CENTROID_FWHMS: float = 2.5
#: ... except for sources with a neighbour this many times brighter (DAOFIND flux) within
#: four aperture radii, which keep their windowed centroids.
BRIGHTER_NEIGHBOUR_RATIO: float = 3.0


def pixel_to_sky(wcs, x, y):
    """(RA, DEC) in degrees of 0-based pixel positions (full distortion model)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size == 0:
        return np.empty(0), np.empty(0)
    ra, dec = wcs.all_pix2world(x, y, 0)
    return np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)


def empty_point_sources() -> Table:
    """The empty total source table (xcentroid, ycentroid, RA, DEC, id, Flags)."""
    table = Table()
    for name in ("xcentroid", "ycentroid", "RA", "DEC"):
        table[name] = np.empty(0)
    table["id"] = np.empty(0, dtype=np.int64)
    table["Flags"] = np.empty(0, dtype=np.int64)
    return table


def refine_centroids(data, x, y, *, sigma, iterations=15, max_shift=1.5):
    """Windowed (Gaussian-weighted) centroids, SExtractor ``XWIN`` style, vectorised.

    Iterates ``x <- x + 2 * sum(w I dx) / sum(w I)`` with ``w = exp(-r^2 / (2 sigma^2))``; for a
    symmetric profile the fixed point is its centre, free of the pixel-phase bias of
    marginal Gaussian fits.

    Parameters
    ----------
    data : 2-D ndarray
        Background-subtracted image.
    x, y : array_like
        Starting 0-based positions.
    sigma : float
        Window sigma in pixels (about the PSF sigma).
    iterations : int, optional
    max_shift : float, optional
        Sources moving farther than this from the start keep their start position.

    Returns
    -------
    x, y : ndarray
    """
    x0 = np.asarray(x, dtype=float).copy()
    y0 = np.asarray(y, dtype=float).copy()
    if x0.size == 0:
        return x0, y0
    ny, nx = data.shape
    half = int(np.ceil(4.0 * sigma)) + 1
    offsets = np.arange(-half, half + 1)
    xc, yc = x0.copy(), y0.copy()
    img = np.where(np.isfinite(data), data, 0.0)
    # the stamp follows the start position; positions move by < max_shift, far below half
    ix = np.rint(x0).astype(int)
    iy = np.rint(y0).astype(int)
    cols = np.clip(ix[:, None] + offsets[None, :], 0, nx - 1)
    rows = np.clip(iy[:, None] + offsets[None, :], 0, ny - 1)
    stamps = img[rows[:, :, None], cols[:, None, :]]
    gx = (ix[:, None] + offsets[None, :]).astype(float)
    gy = (iy[:, None] + offsets[None, :]).astype(float)
    for _ in range(iterations):
        dx = gx - xc[:, None]
        dy = gy - yc[:, None]
        w = (np.exp(-0.5 * (dy / sigma) ** 2)[:, :, None] * np.exp(-0.5 * (dx / sigma) ** 2)[:, None, :])
        wi = w * stamps
        norm = wi.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            step_x = 2.0 * (wi * dx[:, None, :]).sum(axis=(1, 2)) / norm
            step_y = 2.0 * (wi * dy[:, :, None]).sum(axis=(1, 2)) / norm
        ok = np.isfinite(step_x) & np.isfinite(step_y) & (norm > 0)
        step_x = np.clip(np.where(ok, step_x, 0.0), -0.5, 0.5)
        step_y = np.clip(np.where(ok, step_y, 0.0), -0.5, 0.5)
        xc += step_x
        yc += step_y
        if np.all(np.abs(step_x) < 1e-4) and np.all(np.abs(step_y) < 1e-4):
            break
    moved = np.hypot(xc - x0, yc - y0) > max_shift
    xc[moved] = x0[moved]
    yc[moved] = y0[moved]
    return xc, yc


def aperture_centroids(data, x, y, *, radius, iterations=10, max_shift=0.5,
                       neighbour_mask=True):
    """First moments of the light in a circular aperture that follows them, vectorised.

    On an undersampled product (WFC3/IR: a diffraction-limited core about one native pixel
    wide) the drizzled star is a sum of a few exposures' pixelated copies, each sampled at
    another phase: its shape changes with the phase, and a narrow weighting (the windowed
    centroid with its 1-px window, or a fit of one symmetric PSF) is pulled with it, 0.07 px
    (0.09 px for the brightest stars, so not noise) off on the ``ir-only`` preset. Drizzling
    keeps the first moment of the light (each native pixel's flux lands about its centre),
    and a pixel-integrated PSF's first moment is nearly free of the phase, so a wide, flat
    aperture recovers the position: 0.034 px there with a radius of 2.5 FWHM.
    Pixels are weighted by how much of them lies inside the aperture (a linear taper over
    one pixel), so the moment does not jump as pixels enter and leave it; pixels nearer to
    another source are left out (``neighbour_mask``).

    Parameters
    ----------
    data : 2-D ndarray
        Background-subtracted image.
    x, y : array_like
        Starting 0-based positions.
    radius : float
        Aperture radius (pixels).
    iterations : int, optional
    max_shift : float, optional
        Sources moving farther than this from the start keep their start position.
    neighbour_mask : bool, optional
        Leave out the pixels nearer to another source (at its start position).

    Returns
    -------
    x, y : ndarray
    """
    from hapcore.catalogs.psf_centroids import own_pixels

    x0 = np.asarray(x, dtype=float)
    y0 = np.asarray(y, dtype=float)
    xc, yc = x0.copy(), y0.copy()
    if x0.size == 0:
        return xc, yc
    ny, nx = data.shape
    half = int(np.ceil(radius + max_shift)) + 1
    offsets = np.arange(-half, half + 1)
    img = np.where(np.isfinite(data), data, 0.0)
    ix = np.rint(x0).astype(int)
    iy = np.rint(y0).astype(int)
    rows = iy[:, None] + offsets[None, :]
    cols = ix[:, None] + offsets[None, :]
    inside = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    stamps = np.where(inside, img[np.clip(rows, 0, ny - 1)[:, :, None],
                                  np.clip(cols, 0, nx - 1)[:, None, :]], 0.0)
    if neighbour_mask:
        stamps = np.where(own_pixels(x0, y0, rows, cols, reach=2.0 * half + 1.0), stamps, 0.0)
    gx = cols.astype(float)[:, None, :]
    gy = rows.astype(float)[:, :, None]
    for _ in range(iterations):
        dx = gx - xc[:, None, None]
        dy = gy - yc[:, None, None]
        w = np.clip(radius + 0.5 - np.hypot(dx, dy), 0.0, 1.0) * stamps
        norm = w.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            step_x = (w * dx).sum(axis=(1, 2)) / norm
            step_y = (w * dy).sum(axis=(1, 2)) / norm
        ok = np.isfinite(step_x) & np.isfinite(step_y) & (norm > 0)
        step_x = np.clip(np.where(ok, step_x, 0.0), -0.5, 0.5)
        step_y = np.clip(np.where(ok, step_y, 0.0), -0.5, 0.5)
        xc += step_x
        yc += step_y
        if np.all(np.abs(step_x) < 1e-4) and np.all(np.abs(step_y) < 1e-4):
            break
    moved = ~(np.hypot(xc - x0, yc - y0) <= max_shift)
    xc[moved] = x0[moved]
    yc[moved] = y0[moved]
    return xc, yc


def psf_refine(data, x, y, flux, *, fwhm_pixels, rms, rms_value, exptime=0.0,
               undersampled=False):
    """Positions better than the windowed centroids: PSF fits, or wide first moments.

    On a well-sampled product the PSF model of :mod:`hapcore.catalogs.psf_centroids`, fitted
    to the image's bright isolated stars, is fitted to every point-like source (the windowed
    centroids are kept without enough stars for the model and where a fit fails). On an
    ``undersampled`` one the drizzled star's shape changes with its pixel phase and one PSF
    fits it as badly as a narrow window does: :func:`aperture_centroids` with a radius of
    :data:`APERTURE_CENTROID_FWHMS` FWHM.

    Parameters
    ----------
    data : 2-D ndarray
        Background-subtracted image.
    x, y : array_like
        Windowed centroids (0-based).
    flux : array_like
        A brightness measure (DAOFIND's ``flux``) to rank the stars of the PSF model.
    fwhm_pixels : float
    rms : float or 2-D ndarray
        Background noise per pixel.
    rms_value : float
        Its scalar value.
    exptime : float, optional
        For the Poisson term of the fit weights (data in rates).
    undersampled : bool, optional
        See :data:`UNDERSAMPLED_NATIVE_FWHM`.

    Returns
    -------
    x, y : ndarray
    """
    from hapcore.catalogs.psf_centroids import fit_psf_shape, psf_fit_centroids

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size == 0:
        return x, y
    clock = time.perf_counter()
    if undersampled:
        radius = APERTURE_CENTROID_FWHMS * fwhm_pixels
        xa, ya = aperture_centroids(data, x, y, radius=radius)
        # on the wing of a brighter star the light's gradient pulls a first moment towards it
        # (a companion 7 px from a star 50 times brighter moved onto the star's PSF and was
        # dropped as a PSF feature): those keep their windowed centroid
        flux = np.asarray(flux, dtype=float)
        near = _brighter_neighbour(x, y, flux, distance=4.0 * radius,
                                   ratio=BRIGHTER_NEIGHBOUR_RATIO)
        xa[near], ya[near] = x[near], y[near]
        log.debug("undersampled product: first moments within %.2f px of %d sources (%d next "
                  "to a brighter star kept) in %.2f s", radius, x.size, int(near.sum()),
                  time.perf_counter() - clock)
        return xa, ya
    shape = fit_psf_shape(data, x, y, flux, fwhm=fwhm_pixels, rms=rms_value)
    if shape is None:
        log.debug("PSF-fit centroids: too few bright isolated stars; windowed centroids kept")
        return x, y
    xf, yf, fitted = psf_fit_centroids(data, x, y, shape=shape, rms=rms, exptime=exptime)
    log.debug("PSF-fit centroids: model FWHM %.2f px from %d stars, %d of %d sources fitted in "
              "%.2f s", shape.fwhm, shape.n_stars, int(fitted.sum()), x.size,
              time.perf_counter() - clock)
    return xf, yf


def _brighter_neighbour(x, y, flux, *, distance, ratio):
    """Sources with a neighbour more than ``ratio`` times brighter within ``distance``."""
    from scipy.spatial import cKDTree

    near = np.zeros(x.size, bool)
    if x.size < 2:
        return near
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(distance, output_type="ndarray")
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        flux = np.where(np.isfinite(flux), flux, 0.0)
        near[i[flux[j] > ratio * np.clip(flux[i], 0.0, None)]] = True
        near[j[flux[i] > ratio * np.clip(flux[j], 0.0, None)]] = True
    return near


def is_undersampled(image: CatalogImage, fwhm_pixels: float) -> bool:
    """Whether the PSF (``fwhm_pixels`` on the product) spans fewer than
    :data:`UNDERSAMPLED_NATIVE_FWHM` pixels of the input exposures (``D001SCAL``; the product
    scale when the keyword is missing)."""
    native = image.keyword("D001SCAL")
    try:
        native = float(native)
    except (TypeError, ValueError):
        native = float("nan")
    if not (np.isfinite(native) and native > 0):
        native = image.plate_scale
    return bool(fwhm_pixels * image.plate_scale / native < UNDERSAMPLED_NATIVE_FWHM)


def _residual(image: CatalogImage, background: BackgroundModel, box) -> np.ndarray:
    """The background-subtracted image within ``box`` (two slices), negatives set to 0 (a new
    array: made per region box, not held through the DAOFIND runs)."""
    model = background.background
    model = model[box] if np.ndim(model) == 2 else model
    residual = subtract_background(image.data[box], model)
    return np.clip(residual, 0.0, None, out=residual)


def _bounding_box(mask: np.ndarray, *, margin: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((y0, y1), (x0, x1))``: the rows and columns holding ``mask``'s True pixels, widened
    by ``margin`` within the image (empty ranges for an empty mask)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0), (0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    ny, nx = mask.shape
    return ((max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, ny)),
            (max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, nx)))


def detect_point_sources(image: CatalogImage, background: BackgroundModel,
                         regions: list[WeightRegion], *, fwhm_pixels, nsigma=5.0,
                         sharpness=SHARPNESS_LIMITS, roundness=ROUNDNESS_LIMITS,
                         refine=True, psf_fit=True) -> Table:
    """Detect point sources on the total image, one DAOStarFinder run per weight region.

    Parameters
    ----------
    image : CatalogImage
        The total product.
    background : BackgroundModel
    regions : list of WeightRegion
        From :func:`~hapcore.catalogs.image.make_wht_masks` (with ``rms`` set).
    fwhm_pixels : float
        Kernel FWHM (TWEAK_FWHMPSF / plate scale).
    nsigma : float, optional
        Threshold in units of each region's rms.
    sharpness, roundness : tuple of float, optional
        DAOFIND shape limits.
    refine : bool, optional
        Replace the DAOFIND centroids by windowed centroids.
    psf_fit : bool, optional
        Then replace the windowed centroids by PSF-fit positions, or by wide first moments
        on an undersampled product (:func:`psf_refine`); only with ``refine``.

    Returns
    -------
    astropy.table.Table
        ``xcentroid``, ``ycentroid``, ``RA``, ``DEC``, ``id`` (1..N), the DAOFIND columns
        (``sharpness``, ``roundness1``, ``roundness2``, ``npix``, ``peak``, ``flux``, ``mag``)
        and, with ``psf_fit``, the windowed centroids (``xwindow``, ``ywindow``);
        empty (see :func:`empty_point_sources`) when nothing is found.
    """
    if image.is_blank or not regions:
        return empty_point_sources()
    tables = []
    for number, region in enumerate(regions, start=1):
        threshold = nsigma * region.rms
        if not np.isfinite(threshold) or threshold <= 0:
            log.warning("weight region %d has no usable rms; skipped", number)
            continue
        finder = DAOStarFinder(threshold, fwhm_pixels, sharplo=sharpness[0], sharphi=sharpness[1],
                               roundlo=roundness[0], roundhi=roundness[1], exclude_border=True)
        # the region's bounding box with a margin wider than the kernel, where the product
        # is zero outside the region: the same sources as on the whole masked image, without
        # a whole-image product (a small region costs its own size)
        (y0, y1), (x0, x1) = _bounding_box(region.mask, margin=int(np.ceil(4 * fwhm_pixels)) + 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            found = finder(_residual(image, background, (slice(y0, y1), slice(x0, x1)))
                           * region.mask[y0:y1, x0:x1]) if y1 > y0 and x1 > x0 else None
        if found is not None and len(found):
            found["xcentroid"] += x0
            found["ycentroid"] += y0
        n_found = 0 if found is None else len(found)
        log.debug("point detection: weight region %d (rel. weight %.3g, %d px): threshold %.4g "
                 "e-/s, %d sources", number, region.rel_weight, int(region.mask.sum()), threshold,
                 n_found)
        if n_found:
            tables.append(found)
    if not tables:
        return empty_point_sources()
    from astropy.table import vstack

    sources = vstack(tables, metadata_conflicts="silent")
    x = np.asarray(sources["xcentroid"], dtype=float)
    y = np.asarray(sources["ycentroid"], dtype=float)
    if refine:
        detection = _residual(image, background, (slice(None), slice(None)))
        x, y = refine_centroids(detection, x, y,
                                sigma=max(fwhm_pixels * gaussian_fwhm_to_sigma, MIN_WINDOW_SIGMA))
        if psf_fit:
            window_x, window_y = x, y
            flux = np.asarray(sources["flux"], dtype=float) if "flux" in sources.colnames \
                else np.ones(x.size)
            x, y = psf_refine(detection, x, y, flux, fwhm_pixels=fwhm_pixels,
                              rms=background.rms, rms_value=background.rms_value,
                              exptime=image.exptime,
                              undersampled=is_undersampled(image, fwhm_pixels))
    ra, dec = pixel_to_sky(image.wcs, x, y)
    table = Table()
    table["xcentroid"] = x
    table["ycentroid"] = y
    table["RA"] = ra
    table["DEC"] = dec
    table["id"] = np.arange(1, len(x) + 1, dtype=np.int64)
    for name in ("sharpness", "roundness1", "roundness2", "npix", "peak", "flux", "mag"):
        if name in sources.colnames:
            table[name] = np.asarray(sources[name])
    if refine and psf_fit:
        # the windowed centroids, for tests tuned on them (the PSF-feature test's CI in a
        # 0.05" aperture moves with the position; see psf_refine)
        table["xwindow"] = window_x
        table["ywindow"] = window_y
    table["xcentroid"].format = table["ycentroid"].format = "10.3f"
    table["RA"].format = table["DEC"].format = "13.7f"
    table["id"].format = "7d"
    return table


def local_epadu(image: CatalogImage, x, y):
    """Electrons per data unit at each position.

    Drizzled WHT images (``final_wht_type`` EXP) hold the exposure time per pixel, so where a
    product is covered by fewer exposures (edges, gaps) the Poisson term must use the local
    value, not the product EXPTIME. The WHT is used when its maximum is compatible with an
    exposure time (within a factor 3 of EXPTIME); otherwise ``image.epadu`` for every source.
    """
    x = np.asarray(x, dtype=float)
    default = np.full(x.shape, image.epadu)
    weight = image.weight
    if weight is None or x.size == 0 or image.exptime <= 0:
        return default
    peak = float(np.max(weight))
    if not (image.exptime / 3.0 <= peak <= 3.0 * image.exptime):
        return default
    ny, nx = weight.shape
    ix = np.clip(np.rint(x).astype(int), 0, nx - 1)
    iy = np.clip(np.rint(np.asarray(y, dtype=float)).astype(int), 0, ny - 1)
    local = weight[iy, ix].astype(float)
    return np.where(local > 0, local, default)


def measure_point_photometry(image: CatalogImage, x, y, *, ids=None, ra=None, dec=None,
                             aperture_1=0.05, aperture_2=0.15, skyannulus=0.25,
                             dskyannulus=0.25, salgorithm="mode",
                             correlated_noise=True, relative_error_floor=0.0) -> Table:
    """Forced aperture photometry of one filter image at given positions (spec §6.3).

    Parameters
    ----------
    image : CatalogImage
        Filter product (data in e-/s, not background-subtracted).
    x, y : array_like
        0-based positions (from the total detection; same pixel grid).
    ids, ra, dec : array_like, optional
        Copied into ``ID``, ``RA``, ``DEC``; computed from ``image.wcs`` when not given.
    aperture_1, aperture_2, skyannulus, dskyannulus : float
        Radii in arcsec; the annulus runs from ``skyannulus`` to ``skyannulus + dskyannulus``.
    salgorithm : {"mode", "median", "mean"}
        Sky estimator.
    correlated_noise : bool, optional
        Scale the sky terms of the errors by the image's empty-aperture variance factor of
        each aperture (:func:`~hapcore.catalogs.noise.aperture_variance_factor`).
    relative_error_floor : float, optional
        Systematic fraction of the flux added to the errors in quadrature.

    Returns
    -------
    astropy.table.Table
        The columns of the filter point catalog (``Flags`` all 0).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    scale = image.plate_scale
    r1, r2 = aperture_1 / scale, aperture_2 / scale
    r_in, r_out = skyannulus / scale, (skyannulus + dskyannulus) / scale
    if ra is None or dec is None:
        ra, dec = pixel_to_sky(image.wcs, x, y)
    ids = np.arange(1, n + 1) if ids is None else np.asarray(ids)

    columns = {"X-Center": x, "Y-Center": y, "RA": np.asarray(ra, dtype=float),
               "DEC": np.asarray(dec, dtype=float), "ID": ids.astype(np.int64)}
    if n:
        positions = np.column_stack([x, y])
        factors = (1.0, 1.0)
        if correlated_noise:
            from hapcore.catalogs.noise import aperture_variance_factors

            factors = aperture_variance_factors(image.data, (r1, r2), valid=image.weight > 0,
                                                sources_xy=positions)
            log.debug("%s: correlated-noise variance factors %.3f (aperture 1), %.3f (aperture 2)",
                      image.filename or "image", *factors)
        phot = iraf_style_photometry([CircularAperture(positions, r1), CircularAperture(positions, r2)],
                                     CircularAnnulus(positions, r_in, r_out), image.data,
                                     bg_method=salgorithm, epadu=local_epadu(image, x, y),
                                     sky_variance_factor=factors,
                                     relative_error_floor=relative_error_floor)
        flux1, flux2 = np.asarray(phot["flux_1"]), np.asarray(phot["flux_2"])
        err1, err2 = np.asarray(phot["flux_err_1"]), np.asarray(phot["flux_err_2"])
        mag1 = compute_abmag(flux1, image.photflam, image.photplam)
        mag2 = compute_abmag(flux2, image.photflam, image.photplam)
        magerr1, magerr2 = np.asarray(phot["mag_err_1"]), np.asarray(phot["mag_err_2"])
        sky, sky_std = np.asarray(phot["sky"]), np.asarray(phot["sky_std"])
        # CI = MagAp1 - MagAp2 from the flux ratio: identical where both magnitudes exist, and
        # still defined (the zero point cancels) when PHOTFLAM is missing and magnitudes are
        # -9999, so the CI flags and the trimming keep working. A CI of exactly 0 is a
        # legitimate value (drizzlepac's `if not ci` treated it as missing).
        with np.errstate(invalid="ignore", divide="ignore"):
            ci = -2.5 * np.log10(flux1 / flux2)
        ci = np.where(np.isfinite(ci) & (flux1 > 0) & (flux2 > 0) & (np.abs(ci) < 1e20), ci, np.nan)
    else:
        flux1 = flux2 = err1 = err2 = mag1 = mag2 = magerr1 = magerr2 = sky = sky_std = ci = np.empty(0)
    columns.update({"MagAp1": mag1, "MagErrAp1": magerr1, "FluxAp1": flux1, "FluxErrAp1": err1,
                    "MagAp2": mag2, "MagErrAp2": magerr2, "MSkyAp2": sky, "StdevAp2": sky_std,
                    "FluxAp2": flux2, "FluxErrAp2": err2, "CI": ci,
                    "Flags": np.zeros(n, dtype=np.int64)})
    table = Table()
    for spec in POINT_FILTER_COLUMNS:
        table[spec.name] = columns[spec.name]
        table[spec.name].format = spec.format
        if spec.unit:
            table[spec.name].unit = spec.unit
    return table
