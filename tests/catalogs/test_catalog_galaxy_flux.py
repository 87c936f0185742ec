"""Total galaxy fluxes (hapcore.catalogs.galaxy_flux): PSF-convolved Sersic galaxies, n 0.5-4,
recovered within 5 % of their (truncated) totals from a compact segment whose Kron aperture
misses a large part of the light."""

import numpy as np
import pytest
from photutils.segmentation import SourceCatalog, detect_sources
from scipy.signal import fftconvolve

from hapcore.catalogs.galaxy_flux import (
    TRUNCATION_N,
    TRUNCATION_RE,
    annulus_profiles,
    sersic_enclosed,
    total_galaxy_flux,
)

FWHM = 2.0
SIZE = 181
#: the pipeline's smallest outer radius on WFC3/UVIS: 1" (the first radius of the handbook
#: encircled-energy table)
MIN_OUTER = 25.0


def _bn(n):
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n ** 2)


def _psf(fwhm=FWHM, half=10):
    sigma = fwhm / 2.3548
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    k = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def sersic_image(shape, x0, y0, n, r_eff, q, theta_deg, *, os_=3):
    """Unit-total Sersic image (major-axis r_eff) of ``shape``, truncated as the module's model
    convention and pixel-integrated by oversampling (before any PSF)."""
    ny, nx = shape
    sx = (np.arange(nx * os_) + 0.5) / os_ - 0.5 - x0
    sy = (np.arange(ny * os_) + 0.5) / os_ - 0.5 - y0
    xx, yy = np.meshgrid(sx, sy)
    th = np.deg2rad(theta_deg)
    along = xx * np.cos(th) + yy * np.sin(th)
    across = -xx * np.sin(th) + yy * np.cos(th)
    radius = np.sqrt(along ** 2 + (across / q) ** 2)
    prof = np.exp(-_bn(n) * (radius / r_eff) ** (1.0 / n))
    prof[radius > TRUNCATION_RE * r_eff * (1 + TRUNCATION_N * n)] = 0.0
    pix = prof.reshape(ny, os_, nx, os_).sum(axis=(1, 3))
    return pix / pix.sum()


def _galaxy(n, r_eff, q, theta_deg, *, x0=90.3, y0=89.6, os_=3):
    """:func:`sersic_image` convolved with a Gaussian PSF (unit total)."""
    pix = fftconvolve(sersic_image((SIZE, SIZE), x0, y0, n, r_eff, q, theta_deg, os_=os_),
                      _psf(), mode="same")
    return pix / pix.sum()


def _measure(image, rms, *, nsigma):
    segm = detect_sources(fftconvolve(image, _psf(), mode="same"), nsigma * rms, 5)
    error = np.full(image.shape, rms)
    cat = SourceCatalog(image, segm, error=error, kron_params=(2.5, 3.5))
    i = int(np.argmax(cat.kron_flux))
    a, b = cat.semimajor_sigma.value, cat.semiminor_sigma.value
    size = 2.5 * cat.kron_radius.value * np.sqrt(a * b)
    flux, err, fac = total_galaxy_flux(
        image, error, segm.data, cat.xcentroid, cat.ycentroid, b / a,
        np.deg2rad(cat.orientation.value), cat.labels, cat.kron_flux, cat.kron_fluxerr, size,
        fwhm_pixels=FWHM, min_outer=MIN_OUTER)
    return flux[i], err[i], cat.kron_flux[i], fac[i]


def test_model_enclosed_fractions():
    # half the (truncated) light inside r_eff; all of it far out
    for n in (0.5, 1.0, 2.0, 4.0):
        trunc_share = sersic_enclosed(1e4, n, 5.0, sigma_px=1e-3)
        assert trunc_share == pytest.approx(1.0, abs=1e-3)
        half = sersic_enclosed(5.0, n, 5.0, sigma_px=1e-3)
        assert 0.49 < half < 0.53


@pytest.mark.parametrize("n, r_eff, q, nsigma", [
    (0.5, 4.0, 0.8, 3.0), (1.0, 6.0, 0.5, 3.0), (1.5, 3.0, 0.9, 3.0), (2.5, 5.0, 0.6, 3.0),
    (4.0, 3.0, 0.7, 3.0), (4.0, 8.0, 0.8, 3.0),
    # compact segments: a high threshold leaves a Kron aperture 2x smaller than the galaxy
    (1.0, 10.0, 0.7, 30.0), (3.0, 8.0, 0.8, 30.0),
])
def test_total_flux_of_sersic_galaxies(n, r_eff, q, nsigma):
    rng = np.random.default_rng(int(10 * n + r_eff))
    total = 2.0e4
    rms = 1.0
    ratios, kron_ratios = [], []
    for k in range(4):
        image = total * _galaxy(n, r_eff, q, 30.0 + 40 * k) + rng.normal(0.0, rms, (SIZE, SIZE))
        flux, err, kron, fac = _measure(image, rms, nsigma=nsigma)
        assert np.isfinite(flux) and np.isfinite(err) and err > 0
        ratios.append(flux / total)
        kron_ratios.append(kron / total)
    # within 5 % of the true total (each of 4 noise draws / orientations)
    assert np.all(np.abs(np.asarray(ratios) - 1.0) < 0.05), (ratios, kron_ratios)


def test_faint_rows_keep_kron_and_never_nan():
    image = np.zeros((60, 60))
    labels = np.zeros((60, 60), int)
    labels[28:33, 28:33] = 1
    x = np.array([30.0, np.nan])
    flux, err, fac = total_galaxy_flux(
        image, np.ones_like(image), labels, x, np.array([30.0, 30.0]), np.ones(2), np.zeros(2),
        np.array([1, 2]), np.array([5.0, 3.0]), np.array([1.0, 1.0]), np.array([3.0, 3.0]),
        fwhm_pixels=2.0)
    assert np.array_equal(flux, [5.0, 3.0]) and np.array_equal(err, [1.0, 1.0])
    assert np.array_equal(fac, [1.0, 1.0])


def test_neighbours_are_masked():
    # a uniform disc of 1 per pixel with a neighbour segment of 100 per pixel in annulus 3
    yy, xx = np.mgrid[:41, :41]
    image = np.ones((41, 41))
    labels = np.ones((41, 41), int)
    neighbour = (np.hypot(xx - 26.0, yy - 20.0) < 1.5)
    image[neighbour] = 100.0
    labels[neighbour] = 2
    flux, var, cover, _ = annulus_profiles(image, np.ones_like(image), labels, np.array([20.0]),
                                        np.array([20.0]), np.array([1.0]), np.array([0.0]),
                                        np.array([1]), r_out=np.array([10.0]))
    n_in = int(np.sum(np.hypot(xx - 20.0, yy - 20.0) < 10.0))
    # the neighbour's pixels take the annulus mean (1), nothing of its 100 per pixel leaks in
    assert np.sum(flux[0]) == pytest.approx(n_in, rel=1e-9)
    assert np.sum(cover[0] < 1.0) >= 1 and np.all(cover[0][cover[0] > 0] > 0.5)
