"""The fast paths of the alignment source detection give the numbers of the plain formulations
they replace (scipy.ndimage morphology and maximum filters, numpy's nanmedian, fancy indexing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hapcore.align import sources


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(16)


def test_nanmedian_last(rng):
    for dtype in (np.float32, np.float64):
        for n in (1, 2, 5, 196, 197):
            values = (rng.normal(size=(40, 30, n)) * 1e3).astype(dtype)
            values[rng.random(values.shape) < 0.4] = np.nan
            values[0, 0] = np.nan  # an all-NaN row
            with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
                expected = np.nanmedian(values, axis=-1)
            got = sources._nanmedian_last(values)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("by_offsets", [True, False], ids=["offsets", "bounding-box"])
def test_detection_mask_matches_morphology(rng, monkeypatch, by_offsets):
    if not by_offsets:
        monkeypatch.setattr(sources, "_GROW_BY_OFFSETS", 0)
    dq = np.zeros((120, 90), ">i2")
    dq[rng.random(dq.shape) < 0.01] = 4            # bad pixels
    dq[rng.random(dq.shape) < 0.01] = 256          # isolated saturations (eroded away)
    dq[10:16, 20:27] |= 256                        # saturated stars, one at the border
    dq[0:4, 0:5] |= 2048
    dq[60:63, 85:90] |= 256 | 16
    plain = dq.astype(np.int64)
    expected = (plain & ~sources.SATURATION_BITS) != 0
    cores = ndimage.binary_erosion((plain & sources.SATURATION_BITS) != 0, iterations=1)
    expected |= ndimage.binary_dilation(cores, iterations=5)
    np.testing.assert_array_equal(sources.detection_mask(dq), expected)
    np.testing.assert_array_equal(sources.detection_mask(dq.astype(np.uint16)), expected)


def test_peak_pixels_match_maximum_filter(rng):
    image = ndimage.gaussian_filter(rng.normal(size=(300, 257)).astype(np.float32), 1.4)
    image[100:110, 50:60] = image.max()  # a plateau: ties count as maxima
    mask = rng.random(image.shape) < 0.05
    floor, edge = 0.05, 6
    local_max = (ndimage.maximum_filter(image, size=5) == image) & (image > floor) & ~mask
    local_max[:edge] = local_max[-edge:] = False
    local_max[:, :edge] = local_max[:, -edge:] = False
    expected = np.nonzero(local_max)
    got = sources._peak_pixels(image, floor=floor, mask=mask, size=5, edge=edge)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_upsample_matches_bilinear_formula(rng):
    mesh = rng.random((9, 13)).astype(np.float32) * 100
    shape, box = (250, 360), 27
    yc = np.clip((np.arange(shape[0]) + 0.5) / box - 0.5, 0, mesh.shape[0] - 1)
    xc = np.clip((np.arange(shape[1]) + 0.5) / box - 0.5, 0, mesh.shape[1] - 1)
    y0, x0 = np.floor(yc).astype(int), np.floor(xc).astype(int)
    y1, x1 = np.minimum(y0 + 1, mesh.shape[0] - 1), np.minimum(x0 + 1, mesh.shape[1] - 1)
    fy = (yc - y0).astype(np.float32)[:, None]
    fx = (xc - x0).astype(np.float32)[None, :]
    top = mesh[y0][:, x0] * (1 - fx) + mesh[y0][:, x1] * fx
    bottom = mesh[y1][:, x0] * (1 - fx) + mesh[y1][:, x1] * fx
    np.testing.assert_array_equal(sources._upsample(mesh, shape, box),
                                  top * (1 - fy) + bottom * fy)


def test_stamps_and_chunked_moments(rng, monkeypatch):
    image = rng.normal(size=(80, 70)).astype(np.float32)
    yi = rng.integers(6, 74, 500)
    xi = rng.integers(6, 64, 500)
    offsets = np.arange(-5, 6)
    expected = image[yi[:, None, None] + offsets[None, :, None],
                     xi[:, None, None] + offsets[None, None, :]]
    stamps = sources._stamps(image, xi, yi)
    np.testing.assert_array_equal(stamps, expected)
    whole = sources.stamp_moments(stamps)
    monkeypatch.setattr(sources, "_MOMENT_CHUNK", 64)
    for got, want in zip(sources.stamp_moments(stamps), whole):
        np.testing.assert_array_equal(got, want)
