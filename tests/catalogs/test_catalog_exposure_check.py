"""The cross-exposure check: cosmic-ray residuals are missing from an exposure that covers them."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from hapcore.catalogs.exposure_check import exposure_photometry, missing_in_exposure
from hapcore.catalogs.image import CatalogImage
from test_catalog_scene import make_wcs

SCALE = 0.04
SHAPE = (200, 200)
EXPTIME = 400.0


def _gauss(x0, y0, flux, sigma=1.2):
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    return flux * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)


def _exposure(rng, model, *, weight=None):
    """e-/s image with Poisson + read noise of one EXPTIME exposure and its EXP weight."""
    electrons = rng.poisson(np.clip((model + 0.05) * EXPTIME, 0, None)) + rng.normal(0, 3.0, SHAPE)
    header = fits.Header({"EXPTIME": EXPTIME})
    wht = np.full(SHAPE, EXPTIME, np.float32) if weight is None else weight
    return CatalogImage.from_arrays(electrons / EXPTIME - 0.05, wcs=make_wcs(SHAPE, SCALE),
                                    primary_header=header, weight=wht)


def _scene():
    rng = np.random.default_rng(3)
    stars = _gauss(50, 50, 40.0) + _gauss(150, 60, 2.0)         # bright and faint star
    cr = np.zeros(SHAPE)
    cr[120, 100:103] = [3.0, 6.0, 2.0]                             # a cosmic ray in exposure 1
    cr_on_star = np.zeros(SHAPE)
    cr_on_star[51, 50] = 20.0                                      # a cosmic ray on the bright star
    exposures = [_exposure(rng, stars + cr + cr_on_star), _exposure(rng, stars)]
    # the filter product: the unmasked residual of the first CR at half strength, the CR on
    # the star masked (as the filter product's rejection would)
    filter_image = _exposure(rng, stars + 0.5 * cr)
    return exposures, filter_image


def test_residual_flagged_real_stars_kept():
    exposures, filter_image = _scene()
    x = np.array([50.0, 150.0, 101.0])
    y = np.array([50.0, 60.0, 120.0])
    kwargs = dict(aperture_2=0.15, skyannulus=0.25, dskyannulus=0.25)
    ffilter, _ = exposure_photometry([filter_image], x, y, **kwargs)
    flux, error = exposure_photometry(exposures, x, y, **kwargs)
    assert np.all(np.isfinite(flux)) and np.all(error > 0)
    # the star with a CR in exposure 1 is brighter there, never fainter: not flagged
    assert flux[0, 0] > flux[1, 0]
    missing = missing_in_exposure(ffilter[0], flux, error)
    assert missing.tolist() == [False, False, True]


def test_uncovered_exposures_are_not_compared():
    exposures, filter_image = _scene()
    wht = np.full(SHAPE, EXPTIME, np.float32)
    wht[100:140, 80:120] = 0.0                                     # exposure 2 misses the CR spot
    exposures[1] = CatalogImage.from_arrays(exposures[1].data, wcs=exposures[1].wcs,
                                            primary_header=exposures[1].primary_header,
                                            weight=wht)
    x, y = np.array([101.0]), np.array([120.0])
    kwargs = dict(aperture_2=0.15, skyannulus=0.25, dskyannulus=0.25)
    ffilter, _ = exposure_photometry([filter_image], x, y, **kwargs)
    flux, error = exposure_photometry(iter(exposures), x, y, n_images=2, **kwargs)
    assert np.isnan(flux[1, 0])
    # one covering exposure: nothing to compare, not flagged
    assert not missing_in_exposure(ffilter[0], flux, error)[0]


def test_missing_in_exposure_rule():
    f = np.array([10.0, 10.0, 10.0, 1.0])
    flux = np.array([[10.2, 20.0, 0.1, 1.0], [9.8, 9.9, 9.9, np.nan]])
    err = np.full(flux.shape, 0.2)
    # 1: consistent; 2: brighter in one exposure (masked CR); 3: absent from one; 4: one cover
    assert missing_in_exposure(f, flux, err).tolist() == [False, False, True, False]
    # the tolerance absorbs exposure-to-exposure differences of bright sources
    assert not missing_in_exposure([100.0], [[95.0], [101.0]], [[0.5], [0.5]])[0]
