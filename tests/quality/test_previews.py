"""Product previews (hapcore.quality.plots.write_preview) on a small synthetic product."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from PIL import Image

from hap_models.products import FilterProduct, TotalProduct
from hapcore.quality.checks import QualityContext
from hapcore.quality.plots import (
    PREVIEW_DPI,
    PREVIEW_WIDTH_IN,
    catalog_overlay,
    compass_angles,
    display_limits,
    pixel_scale_arcsec,
    preview_figsize,
    preview_filename,
    scale_bar_length,
    write_preview,
)
from hapcore.quality.stage import run_previews

SCALE = 0.04            # arcsec / pixel
SHAPE = (300, 360)      # ny, nx
SKY, NOISE = 0.5, 0.02  # e-/s
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tan_wcs(shape=SHAPE, *, scale=SCALE, rotation=0.0, east_left=True, dec=2.2) -> WCS:
    """TAN WCS whose north is turned ``rotation`` degrees clockwise from +y (as displayed with
    the origin lower left); east is left of north unless ``east_left`` is False (mirrored)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, dec]
    wcs.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    s = scale / 3600.0
    c, n = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    sign = -1.0 if east_left else 1.0
    wcs.wcs.cd = [[sign * s * c, s * n], [-sign * s * n, s * c]]
    wcs.pixel_shape = (shape[1], shape[0])
    return wcs


def synthetic_image(shape=SHAPE, seed=3):
    """Sky + noise + a few Gaussian stars; the lower-left corner has no data (NaN, weight 0)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    data = SKY + NOISE * rng.standard_normal(shape)
    stars = np.array([[60.0, 200.0, 50.0], [150.0, 150.0, 5.0], [250.0, 80.0, 1.0],
                      [300.0, 240.0, 0.3], [200.0, 250.0, 20.0]])   # x, y, peak
    yy, xx = np.mgrid[:ny, :nx]
    for x, y, peak in stars:
        data += peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
    weight = np.ones(shape, np.float32)
    weight[:40, :50] = 0.0
    data[:40, :50] = np.nan
    return data.astype(np.float32), weight, stars


def point_catalog(stars, flags):
    return Table({"X-Center": stars[:, 0], "Y-Center": stars[:, 1],
                  "RA": np.zeros(len(stars)), "DEC": np.zeros(len(stars)),
                  "ID": np.arange(1, len(stars) + 1), "Flags": np.asarray(flags)})


def png_size(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size, np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------- helpers

def test_pixel_scale_and_scale_bar_length():
    wcs = tan_wcs()
    assert pixel_scale_arcsec(wcs) == pytest.approx(SCALE, rel=1e-9)
    # 20% of 1000 px at 0.04"/px is 8": the longest round length below is 5" = 125 px
    arcsec, pixels = scale_bar_length(wcs, 1000)
    assert arcsec == 5.0
    assert pixels == pytest.approx(125.0)
    # WFC3/IR-like scale: 20% of 1014 px x 0.128" = 26": 20" = 156.25 px
    arcsec, pixels = scale_bar_length(tan_wcs(scale=0.128), 1014)
    assert (arcsec, pixels) == (20.0, pytest.approx(20.0 / 0.128))
    # rotation does not change the length
    assert scale_bar_length(tan_wcs(rotation=37.0), 1000)[1] == pytest.approx(125.0)


@pytest.mark.parametrize("rotation, east_left, expected", [
    (0.0, True, (90.0, 180.0)),     # north up, east left
    (30.0, True, (60.0, 150.0)),    # rotated: north 30 deg clockwise from up, east follows
    (-90.0, True, (180.0, 270.0)),  # north left, east down
    (0.0, False, (90.0, 0.0)),      # mirrored: east right
])
def test_compass_angles(rotation, east_left, expected):
    wcs = tan_wcs(rotation=rotation, east_left=east_left)
    north, east = compass_angles(wcs, 180.0, 150.0)
    assert north == pytest.approx(expected[0] % 360.0, abs=0.01)
    assert east == pytest.approx(expected[1] % 360.0, abs=0.01)


def test_compass_angles_at_high_declination():
    north, east = compass_angles(tan_wcs(dec=85.0), 10.0, 10.0)
    # off the reference pixel, near the pole the directions turn by the meridian convergence
    assert abs(north - 90.0) < 5.0 and abs(east - 180.0) < 5.0
    assert (east - north) % 360.0 == pytest.approx(90.0, abs=0.1)


def test_catalog_overlay_flags():
    x, y, flagged = catalog_overlay(point_catalog(np.arange(12.0).reshape(4, 3), [0, 1, 4, 64]))
    assert x.tolist() == [0.0, 3.0, 6.0, 9.0] and y.tolist() == [1.0, 4.0, 7.0, 10.0]
    assert flagged.tolist() == [False, False, True, True]
    # total catalog: good when any filter's flag is 0 or 1
    total = Table({"X-Center": [1.0, 2.0, 3.0], "Y-Center": [1.0, 2.0, 3.0],
                   "Flags_f606w": [0, 8, 8], "Flags_f814w": [8, 1, 16]})
    assert catalog_overlay(total)[2].tolist() == [False, False, True]
    assert not catalog_overlay(Table({"X-Center": [1.0], "Y-Center": [2.0]}))[2].any()


def test_display_limits_are_robust():
    data, _, _ = synthetic_image()
    sky, sigma, vmin, vmax = display_limits(data)
    assert sky == pytest.approx(SKY, abs=0.005)
    assert sigma == pytest.approx(NOISE, rel=0.1)
    assert vmin < 0 < 20 * sigma <= vmax
    # nothing valid: a usable default instead of an error
    assert display_limits(np.full((5, 5), np.nan))[1] > 0


# ---------------------------------------------------------------------------------- previews

def test_write_preview_png(tmp_path):
    data, weight, stars = synthetic_image()
    x, y, flagged = catalog_overlay(point_catalog(stars, [0, 0, 1, 8, 4]))
    path = write_preview(data, tmp_path / "p.png", wcs=tan_wcs(), weight=weight, x=x, y=y,
                         flagged=flagged, title="hst_x_drc.fits", subtitle="F606W  800 s")
    (width, height), rgb = png_size(path)
    assert width == round(PREVIEW_WIDTH_IN * PREVIEW_DPI)
    assert height == round(preview_figsize(SHAPE)[1] * PREVIEW_DPI)
    assert height > 0.8 * width * SHAPE[0] / SHAPE[1]
    # the no-data corner is a flat neutral grey, neither black sky nor white star
    grey = rgb[(rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
               & (rgb[..., 0] == 0xD4)]
    assert grey.shape[0] > 500
    # catalog circles are drawn in their colours (cyan good, orange flagged)
    for colour in ((0x22, 0xD3, 0xEE), (0xF9, 0x73, 0x16)):
        assert np.any(np.all(np.abs(rgb.astype(int) - colour) <= 8, axis=-1))


def test_write_preview_large_image_is_block_averaged_and_fast(tmp_path):
    import time

    rng = np.random.default_rng(1)
    data = (1.0 + 0.1 * rng.standard_normal((2600, 2300))).astype(np.float32)
    start = time.perf_counter()
    path = write_preview(data, tmp_path / "big.png", wcs=tan_wcs((2600, 2300)),
                         x=[100.0], y=[200.0])
    assert time.perf_counter() - start < 15.0
    (width, height), _ = png_size(path)
    assert width == round(PREVIEW_WIDTH_IN * PREVIEW_DPI)
    assert height == round(preview_figsize((2600 // 3, 2300 // 3))[1] * PREVIEW_DPI)


def test_write_preview_of_blank_image(tmp_path):
    path = write_preview(np.zeros((50, 60)), tmp_path / "blank.png", wcs=tan_wcs((50, 60)))
    assert png_size(path)[0][0] == round(PREVIEW_WIDTH_IN * PREVIEW_DPI)


def _write_product(path, data, weight, wcs, *, filt, exptime):
    primary = fits.Header()
    primary.update(INSTRUME="WFC3", DETECTOR="UVIS", FILTER=filt.upper(), EXPTIME=exptime,
                   TEXPTIME=exptime, NUMEXP=2)
    sci = wcs.to_header()
    sci["EXTNAME"], sci["BUNIT"] = "SCI", "ELECTRONS/S"
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(data, header=sci),
                  fits.ImageHDU(weight, name="WHT")]).writeto(path)


def test_quality_stage_previews(tmp_path):
    """run_previews: one PNG per total and filter product, the point catalog read from ECSV."""
    data, weight, stars = synthetic_image()
    wcs = tan_wcs(rotation=20.0)
    total = TotalProduct("12345", "01", "wfc3", "uvis", "i00001a1q_flc.fits", "drc")
    fdp = FilterProduct("12345", "01", "wfc3", "uvis", "i00001a1q_flc.fits", "f606w", "drc")
    total.add_product(fdp)
    for product, filt in ((total, "detection"), (fdp, "f606w")):
        _write_product(tmp_path / product.drizzle_filename, data, weight, wcs, filt=filt,
                       exptime=800.0)
    # the filter product has its catalog; the total's is missing: a preview without circles
    point_catalog(stars, [0, 0, 1, 8, 4]).write(tmp_path / fdp.point_cat_filename,
                                                format="ascii.ecsv")
    outcomes = run_previews([total], QualityContext(tmp_path, make_plots=True))
    assert [o.status for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    for product, outcome in zip((total, fdp), outcomes):
        assert outcome.files == [preview_filename(product.drizzle_filename)]
        (width, _), _ = png_size(tmp_path / outcome.files[0])
        assert width == round(PREVIEW_WIDTH_IN * PREVIEW_DPI)


def test_quality_stage_preview_titles(tmp_path, monkeypatch):
    """The preview is titled with the product file, filter(s) and exposure time."""
    from hapcore.quality import stage

    data, weight, _ = synthetic_image()
    total = TotalProduct("12345", "01", "wfc3", "uvis", "i00001a1q_flc.fits", "drc")
    for name in ("f606w", "f814w"):
        total.add_product(FilterProduct("12345", "01", "wfc3", "uvis", "i00001a1q_flc.fits",
                                        name, "drc"))
    _write_product(tmp_path / total.drizzle_filename, data, weight, tan_wcs(),
                   filt="detection", exptime=1600.0)
    seen = {}
    monkeypatch.setattr(stage, "write_preview",
                        lambda data, path, **kw: seen.update(kw) or path)
    outcome = stage._preview(total, QualityContext(tmp_path))
    assert outcome.status == "done"
    assert seen["title"] == total.drizzle_filename
    assert "total of F606W + F814W" in seen["subtitle"]
    assert "1600 s in 2 exposures" in seen["subtitle"]
    assert seen["wcs"] is not None and seen["x"] is None
