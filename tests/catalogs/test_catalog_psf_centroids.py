"""Star positions better than the windowed centroid (issue #15).

Dithered exposures of a star field are rendered on their own pixel grid (the PSF integrated
over each native pixel) and drizzled onto the product grid with a square kernel (pixfrac 1,
exact overlaps: separable for an axis-aligned grid), as the pipeline does: a UVIS-like product
(well-sampled PSF, native scale = product scale) and an IR-like one (a sharp core about one
native pixel wide, native pixels 1.28 product pixels: every exposure samples the star at
another phase and the drizzled star is not symmetric about its position).
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.special import j1

from hapcore.catalogs.image import CatalogImage
from hapcore.catalogs.point import is_undersampled, psf_refine, refine_centroids
from hapcore.catalogs.psf_centroids import (
    PSFShape,
    fit_psf_shape,
    pixel_integrated_psf,
    psf_fit_centroids,
)


def _overlap(n_out, n_in, ratio, shift):
    """(n_out, n_in) overlap lengths of output pixels j with native pixels i, the native pixel
    i covering output [(i - 0.5 + shift) ratio, (i + 0.5 + shift) ratio]."""
    j = np.arange(n_out)[:, None]
    i = np.arange(n_in)[None, :]
    lo = np.maximum(j - 0.5, (i - 0.5 + shift) * ratio)
    hi = np.minimum(j + 0.5, (i + 0.5 + shift) * ratio)
    return np.clip(hi - lo, 0.0, None)


def _native_star(profile, u, v, n_in, sub=5):
    """A unit-flux star at native (u, v) integrated over native pixels (``sub`` x ``sub``)."""
    half = 8
    iu, iv = round(u), round(v)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    px = np.arange(iu - half, iu + half + 1)
    py = np.arange(iv - half, iv + half + 1)
    gx = (px[:, None] + offs[None, :]).ravel() - u
    gy = (py[:, None] + offs[None, :]).ravel() - v
    values = profile(gx[None, :], gy[:, None])
    stamp = values.reshape(py.size, sub, px.size, sub).mean(axis=(1, 3))
    stamp /= stamp.sum()
    return stamp, py, px


def _airy(width, halo=0.1, halo_sigma=2.0):
    """An Airy core (``width`` = lambda / D in pixels) and a Gaussian halo."""
    def profile(dx, dy):
        r = np.hypot(dx, dy) * np.pi / width + 1e-9
        core = (2.0 * j1(r) / r) ** 2 / width ** 2
        return (1.0 - halo) * core + halo * np.pi / halo_sigma ** 2 * \
            np.exp(-0.5 * (dx ** 2 + dy ** 2) / halo_sigma ** 2) / (2.0 * np.pi)
    return profile


#: hapsim's ``box4`` and ``line3`` dithers, fractional native pixels (WFC3/IR for ``line3``)
BOX4 = ((0.0, 0.0), (0.5, 0.25), (0.25, 0.5), (0.75, 0.75))
LINE3 = ((0.0, 0.0), (0.43, 0.72), (0.86, 0.44))


def _visit(profile, *, ratio, n_out=360, n_stars=140, noise=1.0, snr=(20.0, 200.0), seed=3,
           shifts=BOX4):
    """Drizzled image (noise per native pixel ``noise`` in each exposure), the true positions
    (0-based product pixels) and the stars' S/N in an aperture of 3 native pixels."""
    rng = np.random.default_rng(seed)
    n_in = int(np.ceil(n_out / ratio)) + 4
    side = int(np.ceil(np.sqrt(n_stars)))
    step = (n_out - 40) / side
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    x = 20 + (gx.ravel()[:n_stars] + 0.5) * step + rng.uniform(-0.3, 0.3, n_stars) * step
    y = 20 + (gy.ravel()[:n_stars] + 0.5) * step + rng.uniform(-0.3, 0.3, n_stars) * step
    n_exp = len(shifts)
    # S/N of the summed exposures in a 3-native-pixel aperture (about 90% of the light)
    sigma_ap = noise / np.sqrt(n_exp) * np.sqrt(np.pi * 9.0)
    target = np.exp(rng.uniform(np.log(snr[0]), np.log(snr[1]), n_stars))
    flux = target * sigma_ap / 0.9
    out = np.zeros((n_out, n_out))
    weight = np.zeros((n_out, n_out))
    for sx, sy in shifts:
        native = rng.normal(0.0, noise, (n_in, n_in))
        for k in range(n_stars):
            stamp, py, px = _native_star(profile, x[k] / ratio - sx, y[k] / ratio - sy, n_in)
            native[py[0]:py[-1] + 1, px[0]:px[-1] + 1] += flux[k] * stamp
        ox = _overlap(n_out, n_in, ratio, sx)
        oy = _overlap(n_out, n_in, ratio, sy)
        out += oy @ native @ ox.T
        weight += oy @ np.ones((n_in, n_in)) @ ox.T
    image = out / weight / ratio ** 2
    return image, x, y, flux, target


def _errors(xs, ys, x, y):
    return np.hypot(xs - x, ys - y)


def _windowed(image, x, y, fwhm):
    start_x, start_y = np.rint(x), np.rint(y)
    return refine_centroids(image, start_x, start_y, sigma=max(fwhm / 2.3548, 1.0))


@pytest.mark.parametrize("case", ["uvis", "ir"])
def test_psf_positions_beat_windowed_centroids(case):
    """Median position error of the stars (S/N 20-200, log-uniform) below the windowed
    centroid's and below issue #15's targets."""
    if case == "uvis":
        # WFC3/UVIS-like: an Airy core (lambda / D = 1.3 px, F606W on 0.04" pixels) and a
        # halo, four-point box dither, product at the native scale. (With only two dithers the
        # drizzled core changes with the pixel phase and the fit loses to the windowed
        # centroid on this scene: 0.029 against 0.022 px.)
        profile, fwhm, shifts, target, undersampled = _airy(1.3), 1.9, BOX4, 0.03, False
    else:
        # WFC3/IR-like: an Airy core (lambda / D = 0.75 px: FWHM ~0.9 px after the pixel),
        # three-point line dither, product at the native scale
        profile, fwhm, shifts, target, undersampled = _airy(0.75), 1.1, LINE3, 0.05, True
    image, x, y, flux, snr = _visit(profile, ratio=1.0, shifts=shifts)
    rms = 1.0 / np.sqrt(len(shifts))
    xw, yw = _windowed(image, x, y, fwhm)
    xn, yn = psf_refine(image, xw, yw, flux, fwhm_pixels=fwhm, rms=rms, rms_value=rms,
                        undersampled=undersampled)
    bright = snr >= 20
    windowed = np.median(_errors(xw, yw, x, y)[bright])
    new = np.median(_errors(xn, yn, x, y)[bright])
    assert new < windowed, (new, windowed)
    assert new < target, (new, windowed)


def test_pixel_integrated_psf_sums_to_one_and_derivatives():
    shape = PSFShape((0.6, 1.8), (0.7, 0.3))
    g = np.arange(-15, 16, dtype=float)
    psf, ddx, _ = pixel_integrated_psf(g[None, :] - 0.3, g[:, None] + 0.2, shape,
                                         derivatives=True)
    assert psf.sum() == pytest.approx(1.0, abs=1e-6)
    eps = 1e-5
    shifted = pixel_integrated_psf(g[None, :] - 0.3 - eps, g[:, None] + 0.2, shape)
    np.testing.assert_allclose(ddx, (shifted - psf) / eps, atol=1e-5)


def test_shape_fit_recovers_a_gaussian_and_extended_sources_keep_their_start():
    rng = np.random.default_rng(5)
    n = 200
    image = rng.normal(0.0, 1.0, (n, n))
    true = PSFShape((1.0,), (1.0,))
    g = np.arange(n, dtype=float)
    xs = np.repeat(np.arange(20, 180, 32.0), 5) + rng.uniform(-0.5, 0.5, 25)
    ys = np.tile(np.arange(20, 180, 32.0), 5) + rng.uniform(-0.5, 0.5, 25)
    flux = np.full(25, 3000.0)
    for k in range(24):
        image += flux[k] * pixel_integrated_psf(g[None, :] - xs[k], g[:, None] - ys[k], true)
    # the last one is a galaxy (sigma 3 px)
    galaxy = PSFShape((3.0,), (1.0,))
    image += flux[24] * pixel_integrated_psf(g[None, :] - xs[24], g[:, None] - ys[24], galaxy)
    shape = fit_psf_shape(image, xs, ys, flux, fwhm=2.35, rms=1.0, n_components=1)
    assert shape is not None
    assert shape.sigmas[0] == pytest.approx(1.0, abs=0.05)
    start_x, start_y = xs + 0.2, ys - 0.2
    fx, fy, fitted = psf_fit_centroids(image, start_x, start_y, shape=shape, rms=1.0)
    assert fitted[:24].all()
    assert not fitted[24]
    assert (fx[24], fy[24]) == (start_x[24], start_y[24])
    assert np.median(np.hypot(fx[:24] - xs[:24], fy[:24] - ys[:24])) < 0.02


def test_undersampled_from_the_input_pixel_scale():
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-0.1 / 3600, 0.1 / 3600]
    header = fits.Header({"INSTRUME": "WFC3", "DETECTOR": "IR", "D001SCAL": 0.128})
    image = CatalogImage.from_arrays(np.ones((10, 10)), wcs=wcs, primary_header=header)
    assert is_undersampled(image, 0.14 / image.plate_scale)
    header["D001SCAL"] = 0.04
    image = CatalogImage.from_arrays(np.ones((10, 10)), wcs=wcs, primary_header=header)
    assert not is_undersampled(image, 0.076 / image.plate_scale)


@pytest.mark.parametrize("case", ["uvis", "ir"])
def test_detect_point_sources_positions(case):
    """The whole detection path: DAOStarFinder, windowed centroids (kept in ``xwindow``,
    ``ywindow``), then the PSF fit or, on the undersampled product (``D001SCAL``), the wide
    first moments."""
    from hapcore.catalogs.background import BackgroundModel
    from hapcore.catalogs.image import WeightRegion
    from hapcore.catalogs.point import detect_point_sources

    if case == "uvis":
        profile, fwhm, shifts, scale, target = _airy(1.3), 1.9, BOX4, 0.04, 0.03
    else:
        profile, fwhm, shifts, scale, target = _airy(0.75), 1.1, LINE3, 0.128, 0.05
    image, x, y, _, _ = _visit(profile, ratio=1.0, shifts=shifts, seed=11)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    header = fits.Header({"EXPTIME": 1000.0, "D001SCAL": scale})
    total = CatalogImage.from_arrays(image, wcs=wcs, primary_header=header,
                                     weight=np.ones_like(image))
    rms = 1.0 / np.sqrt(len(shifts))
    background = BackgroundModel(np.zeros_like(image), np.full_like(image, rms), 0.0, rms,
                                 "zero_background")
    regions = [WeightRegion(np.ones(image.shape, bool), 1.0, rms)]
    table = detect_point_sources(total, background, regions, fwhm_pixels=fwhm, nsigma=5.0)
    assert {"xwindow", "ywindow"} <= set(table.colnames)
    sx, sy = np.asarray(table["xcentroid"]), np.asarray(table["ycentroid"])
    wx, wy = np.asarray(table["xwindow"]), np.asarray(table["ywindow"])
    from scipy.spatial import cKDTree

    d, i = cKDTree(np.column_stack([sx, sy])).query(np.column_stack([x, y]),
                                                     distance_upper_bound=1.5)
    hit = np.isfinite(d)
    assert hit.mean() > 0.95
    new = np.median(np.hypot(sx[i[hit]] - x[hit], sy[i[hit]] - y[hit]))
    windowed = np.median(np.hypot(wx[i[hit]] - x[hit], wy[i[hit]] - y[hit]))
    assert new < windowed, (new, windowed)
    assert new < target, (new, windowed)
