"""Correlated noise of drizzled images: empty-aperture factor and honest point-catalog errors."""

from __future__ import annotations

import numpy as np
import pytest

from hapcore.catalogs.image import CatalogImage
from hapcore.catalogs.noise import aperture_variance_factor
from hapcore.catalogs.point import measure_point_photometry
from hapsim.psf import GaussianMixturePSF
from hapsim.render import add_stamps
from test_catalog_scene import make_wcs, product_headers

SHAPE = (900, 900)


def _shifted(field, fx, fy):
    """Bilinear resampling by a sub-pixel shift: the pixel-sharing of a drizzle (pixfrac 1)."""
    return ((1 - fx) * (1 - fy) * field + fx * (1 - fy) * np.roll(field, 1, 1)
            + (1 - fx) * fy * np.roll(field, 1, 0) + fx * fy * np.roll(np.roll(field, 1, 0), 1, 1))


def _dithered_noise(rng, sigma, n=4):
    """Mean of n resampled white-noise frames, scaled to unit input noise per frame."""
    frames = [_shifted(rng.normal(0.0, sigma, SHAPE), *rng.uniform(0.0, 1.0, 2)) for _ in range(n)]
    return np.mean(frames, axis=0)


def test_white_noise_needs_no_factor():
    rng = np.random.default_rng(3)
    white = rng.normal(0.0, 1.0, SHAPE)
    assert aperture_variance_factor(white, 3.75, valid=np.ones(SHAPE, bool)) == pytest.approx(1.0,
                                                                                              abs=0.1)


def test_resampled_noise_factor_and_source_positions_only():
    rng = np.random.default_rng(4)
    noise = _dithered_noise(rng, 1.0)
    factor = aperture_variance_factor(noise, 3.75, valid=np.ones(SHAPE, bool))
    # bilinear sharing over four random shifts: 1.6-1.9 (2.25 is the limit of pixfrac 1, one shift)
    assert 1.5 < factor < 2.0, factor
    # sources avoided by position: bright stars do not change the factor
    image = noise.copy()
    xy = rng.uniform(50, 850, (60, 2))
    for x, y in xy:
        image[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] += 500.0
    with_sources = aperture_variance_factor(image, 3.75, valid=np.ones(SHAPE, bool), sources_xy=xy)
    assert with_sources == pytest.approx(factor, rel=0.1)


def test_background_structure_is_not_correlated_noise():
    """Light on scales larger than the catalogs' sky annulus (a crowded field's unresolved
    stars, a galaxy's halo) is removed by the local sky of the photometry: it must not enter
    the factor. Against one image-wide background it did (4.0 instead of 2.8 on a crowded
    hapsim field)."""
    rng = np.random.default_rng(6)
    noise = _dithered_noise(rng, 1.0)
    plain = aperture_variance_factor(noise, 3.75, valid=np.ones(SHAPE, bool))
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    # a smooth pattern of ~150 px scale, amplitude 0.3 pixel sigma (the pixel rms is 0.33)
    structure = 0.1 * np.sin(2 * np.pi * xx / 150.0) * np.cos(2 * np.pi * yy / 170.0)
    structured = aperture_variance_factor(noise + structure, 3.75, valid=np.ones(SHAPE, bool))
    assert structured == pytest.approx(plain, rel=0.1)
    # measured against one global background, the same pattern inflates the factor
    inflated = aperture_variance_factor(noise + structure, 3.75, valid=np.ones(SHAPE, bool),
                                        background=float(np.median(noise)))
    assert inflated > 1.3 * plain


def test_point_errors_are_honest_on_resampled_noise():
    """MagAp2 pulls of stars of known flux on correlated noise: robust std 0.85-1.2."""
    rng = np.random.default_rng(5)
    exptime, sky_sigma = 1000.0, 0.02
    psf = GaussianMixturePSF([1.0, 2.5], [0.85, 0.15])
    n = 400
    grid = np.stack(np.meshgrid(np.arange(20), np.arange(20)), -1).reshape(-1, 2)
    xy = 30.0 + 42.0 * grid + rng.uniform(-0.5, 0.5, (n, 2))
    rate = 10 ** rng.uniform(-0.5, 1.5, n)             # e-/s: S/N ~ 5 to 300 in aperture 2
    model = np.zeros(SHAPE)
    ix, iy = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    add_stamps(model, psf.stamps(xy[:, 0] - ix, xy[:, 1] - iy, 15) * rate[:, None, None], ix, iy)
    data = model + rng.poisson(model * exptime) / exptime - model + _dithered_noise(rng, sky_sigma * 1.6)
    wcs = make_wcs(SHAPE, 0.04)
    primary, sci = product_headers("wfc3/uvis", "f606w", exptime=exptime, numexp=4,
                                   photflam=1e-19, photplam=5900.0, wcs=wcs)
    image = CatalogImage.from_arrays(data.astype(np.float32), wcs=wcs, primary_header=primary,
                                     sci_header=sci, weight=np.full(SHAPE, exptime, np.float32))
    stamp = psf.stamps([0.0], [0.0], 40)[0]
    truth_fraction = {}
    for corr, floor in ((False, 0.0), (True, 0.005)):
        table = measure_point_photometry(image, xy[:, 0], xy[:, 1], correlated_noise=corr,
                                         relative_error_floor=floor)
        flux, error = np.asarray(table["FluxAp2"]), np.asarray(table["FluxErrAp2"])
        if not truth_fraction:
            # the aperture-2 fraction (after the annulus sky) of a noiseless star
            from photutils.aperture import CircularAnnulus, CircularAperture

            from hapcore.catalogs.photometry import iraf_style_photometry

            phot = iraf_style_photometry([CircularAperture((40, 40), 3.75)],
                                         CircularAnnulus((40, 40), 6.25, 12.5), stamp)
            truth_fraction["ap2"] = float(phot["flux_1"][0])
        pull = (flux - rate * truth_fraction["ap2"]) / error
        use = flux / error >= 10
        spread = 1.4826 * np.median(np.abs(pull[use] - np.median(pull[use])))
        if corr:
            assert 0.85 <= spread <= 1.2, spread
        else:
            assert spread > 1.2, spread  # without the factor the errors are too small
