"""Reading a filter product for its measurements: the total's background reused on a copy."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
from astropy.io import fits

from hapcore.catalogs.detection import catalog_background
from hapcore.catalogs.filter_product import _filter_background, same_product_images
from hapcore.catalogs.image import CatalogImage, ProductHeaders
from test_catalog_scene import make_wcs

SHAPE = (300, 260)
SETTINGS = dict(nsigma_clip=3.0, maxiters=3, bkg_box_size=27, bkg_filter_size=3,
                bkg_skew_threshold=0.5, negative_percent=15.0, zero_percent=25.0,
                simple_bkg=False)


def _write(path, data):
    header = make_wcs(SHAPE, 0.04).to_header()
    primary = fits.Header({"DETECTOR": "UVIS", "EXPTIME": 300.0, "TEXPTIME": 900.0,
                           "NUMEXP": 3, "READNSE": 3.0})
    weight = np.where(data != 0, 900.0, 0.0).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(header=primary),
                  fits.ImageHDU(data.astype(np.float32), header=header, name="SCI"),
                  fits.ImageHDU(weight, name="WHT"),
                  fits.ImageHDU((data != 0).astype(np.int32) * 7, name="CTX")]).writeto(path)
    return path


def _pieces(tmp_path, copy=True):
    rng = np.random.default_rng(1)
    data = rng.normal(0.5, 0.02, SHAPE)
    data[:, :20] = 0.0
    data[150, 130] = np.nan
    total = _write(tmp_path / "total_drc.fits", data)
    filt = tmp_path / "f555w_drc.fits"
    if copy:
        shutil.copy(total, filt)
    else:
        data[10, 100] += 0.001
        _write(filt, data)
    image = CatalogImage.from_fits(filt)
    cat = SimpleNamespace(**SETTINGS)
    detection = SimpleNamespace(total_image=ProductHeaders.from_fits(total),
                                total_parameters=SimpleNamespace(catalog=cat),
                                background=catalog_background(CatalogImage.from_fits(total), cat))
    fdp = SimpleNamespace(parameters=SimpleNamespace(catalog=SimpleNamespace(**SETTINGS)),
                          drizzle_filename=filt.name, product_basename="f555w")
    return image, fdp, detection, total, filt


def test_same_product_images(tmp_path):
    _, _, _, total, filt = _pieces(tmp_path)
    assert same_product_images(total, filt)          # NaN equal to NaN
    other = tmp_path / "other"
    other.mkdir()
    _, _, _, total, filt = _pieces(other, copy=False)
    assert not same_product_images(total, filt)


def test_copy_of_the_total_reuses_its_background(tmp_path):
    image, fdp, detection, _, _ = _pieces(tmp_path)
    assert _filter_background(image, fdp, detection, tmp_path) is detection.background
    # other settings, or other pixels: computed, and equal to what the filter's own gives
    fdp.parameters.catalog.bkg_box_size = 31
    computed = _filter_background(image, fdp, detection, tmp_path)
    assert computed is not detection.background
    assert computed.median == detection.background.median
    other = tmp_path / "other"
    other.mkdir()
    image, fdp, detection, _, _ = _pieces(other, copy=False)
    computed = _filter_background(image, fdp, detection, other)
    assert computed is not detection.background
    assert computed.median == catalog_background(image, fdp.parameters.catalog).median


def test_when_a_filter_needs_its_own_background():
    from hapcore.catalogs.stage import needs_filter_background

    def detection(segments, points):
        seg = None if segments is None else SimpleNamespace(sources=[0] * segments)
        return SimpleNamespace(segments=seg, point_sources=None if points is None else [0])

    assert needs_filter_background(detection(3, 1), saturated=False)       # segments' photometry
    assert not needs_filter_background(detection(0, 1), saturated=True)    # the detection's
    assert needs_filter_background(detection(None, 1), saturated=True)     # saturated-light tests
    assert not needs_filter_background(detection(None, 1), saturated=False)
    assert not needs_filter_background(detection(None, None), saturated=True)
