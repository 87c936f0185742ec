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


def _write_product(path, image):
    hdul = fits.HDUList([fits.PrimaryHDU(header=image.primary_header),
                         fits.ImageHDU(image.data, header=image.wcs.to_header(), name="SCI"),
                         fits.ImageHDU(image.weight, name="WHT")])
    hdul.writeto(path)
    return path


def test_stamps_measure_as_the_full_image(tmp_path):
    """Memory-mapped products measured on boxes around the sources give the catalog's own
    aperture-2 photometry of the full image, edges included."""
    from hapcore.catalogs.point import measure_point_photometry

    exposures, _ = _scene()
    x = np.array([50.0, 150.3, 101.0, 2.4, 197.6, 120.0])
    y = np.array([50.0, 59.8, 120.0, 100.0, 3.0, 198.9])
    kwargs = dict(aperture_2=0.15, skyannulus=0.25, dskyannulus=0.25)
    paths = [_write_product(tmp_path / f"e{k}_drc.fits", image) for k, image in enumerate(exposures)]
    flux, error = exposure_photometry(paths, x, y, **kwargs)
    for k, path in enumerate(paths):
        # (read back: the written header's pixel scale differs in the 14th digit, which moves
        # annulus pixels lying exactly on a radius)
        full = measure_point_photometry(CatalogImage.from_fits(path), x, y, aperture_1=0.075,
                                        **kwargs)
        inside = np.isfinite(flux[k])
        # the three sources whose aperture box reaches the edge are not covered
        assert inside.tolist() == [True, True, True, False, False, False]
        np.testing.assert_allclose(flux[k][inside], np.asarray(full["FluxAp2"])[inside], rtol=1e-9)
        np.testing.assert_allclose(error[k][inside], np.asarray(full["FluxErrAp2"])[inside], rtol=1e-9)
    # the same from the images in memory
    flux_mem, error_mem = exposure_photometry([CatalogImage.from_fits(p) for p in paths], x, y,
                                              **kwargs)
    np.testing.assert_array_equal(np.isfinite(flux), np.isfinite(flux_mem))
    np.testing.assert_allclose(flux_mem, flux, rtol=1e-9)
    np.testing.assert_allclose(error_mem, error, rtol=1e-9)


def test_source_stamps_layout():
    from hapcore.catalogs.exposure_check import source_stamps

    data = np.arange(100.0, dtype=np.float32).reshape(10, 10)
    weight = np.ones_like(data)
    sd, sw, xs, ys = source_stamps(data, weight, np.array([5.2, 0.0]), np.array([4.0, 9.0]), half=2)
    assert sd[int(ys[0]), int(round(xs[0]))] == data[4, 5]
    assert sd[int(ys[1]), int(xs[1])] == data[9, 0]
    # off the image: NaN data, zero weight
    assert np.isnan(sd[int(ys[1]) + 1, int(xs[1])]) and sw[int(ys[1]) + 1, int(xs[1])] == 0
    assert np.isnan(sd[int(ys[1]), int(xs[1]) - 1])


def test_flags_from_photometry_measured_ahead():
    """The exposures measured before the rows (in a side thread) give the flags of measuring
    after; a row whose position moved since is measured again."""
    from types import SimpleNamespace

    from astropy.table import Table

    from hapcore.catalogs.exposure_check import flag_missing_in_exposures, measure_in_exposures

    exposures, filter_image = _scene()
    fcat = SimpleNamespace(exposure_check_nsigma=4.0, exposure_check_tolerance=0.1,
                           aperture_2=0.15, skyannulus_arcsec=0.25, dskyannulus_arcsec=0.25,
                           salgorithm="mode")
    x = np.array([50.0, 150.0, 101.0])
    y = np.array([50.0, 60.0, 120.0])
    ffilter, _ = exposure_photometry([filter_image], x, y, aperture_2=0.15, skyannulus=0.25,
                                     dskyannulus=0.25)

    def table(x_moved):
        return Table({"X": x_moved, "Y": y, "FluxAp2": ffilter[0], "Flags": np.zeros(3, int)})

    fresh = table(x)
    assert flag_missing_in_exposures([(fresh, "X", "Y"), (None, "X", "Y")], exposures,
                                     fcat=fcat) == [1, 0]
    ahead = measure_in_exposures([(x, y)], exposures, fcat=fcat)
    # measured at a wrong position for the residual: re-measured, the same flags
    ahead["x"] = ahead["x"].copy()
    ahead["x"][2] = 10.0
    ahead["flux"][:, 2] = 1e3     # (not flagged, were it used)
    again = table(x)
    flag_missing_in_exposures([(again, "X", "Y")], exposures, fcat=fcat, measured=ahead)
    assert again["Flags"].tolist() == fresh["Flags"].tolist() == [0, 0, 16]
