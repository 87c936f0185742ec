"""The compact pixel map (issue #16): half the memory, the same map to 1e-5 px, and every read
of a pixel the same to the last bit (a sparse drizzle update subtracts exactly what the
whole-chip drizzle added)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from hapcore.drizzle.compact_pixmap import CompactPixmap
from hapcore.drizzle.kernel import blot_chip
from hapcore.drizzle.pixmap import compact_interpolated_pixmap, interpolated_pixmap
from hapcore.drizzle.sparse import pixel_corners
from hapsim.detectors import get_detector
from hapsim.distortion import detector_tables
from hapsim.geometry import chip_wcs


def _grid(chip, scale_arcsec):
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.crval = chip.wcs.crval
    grid.wcs.crpix = [3000.0, 3000.0]
    grid.wcs.cd = np.array([[-scale_arcsec, 0.0], [0.0, scale_arcsec]]) / 3600.0
    grid.pixel_shape = (6000, 6000)
    return grid


@pytest.fixture(scope="module")
def uvis_chip():
    """A full WFC3/UVIS chip with its NPOL/D2IM tables, on a north-up 0.04" grid."""
    spec = get_detector("wfc3/uvis")
    chip = spec.chips[1]
    tables = detector_tables("wfc3/uvis", chip.ccdchip, chip.shape)
    wcs = chip_wcs(chip, 150.1, 2.2, 37.0, tables=tables).to_astropy()
    grid = _grid(wcs, 0.04)
    return wcs, grid, interpolated_pixmap(wcs, grid), compact_interpolated_pixmap(wcs, grid)


def test_compact_map_is_the_map_in_half_the_memory(uvis_chip):
    _, _, full, compact = uvis_chip
    assert compact.shape == full.shape
    assert compact.nbytes == full.nbytes // 2
    expanded = np.asarray(compact)
    assert expanded.dtype == np.float64 and expanded.flags["C_CONTIGUOUS"]
    # float32 remainders of a map whose affine part is removed: far below any drizzle effect
    assert np.abs(expanded - full).max() < 1e-5


def test_every_read_of_a_pixel_is_the_same(uvis_chip):
    _, _, _, compact = uvis_chip
    whole = np.asarray(compact)
    rng = np.random.default_rng(3)
    ny, nx = compact.shape[:2]
    ys, xs = rng.integers(0, ny, 5000), rng.integers(0, nx, 5000)
    np.testing.assert_array_equal(compact[ys, xs], whole[ys, xs])
    np.testing.assert_array_equal(compact[300:900, :, 1], whole[300:900, :, 1])
    np.testing.assert_array_equal(compact[:, 0], whole[:, 0])
    np.testing.assert_array_equal(compact[-1], whole[-1])
    np.testing.assert_array_equal(compact[::37, ::41], whole[::37, ::41])
    # the sparse drizzle's corners: identical from the compact map and from its expansion
    j0 = rng.integers(0, ny - 1, 2000).astype(float)
    i0 = rng.integers(0, nx - 1, 2000).astype(float)
    for got, want in zip(pixel_corners(compact, j0, i0, 0.8), pixel_corners(whole, j0, i0, 0.8)):
        np.testing.assert_array_equal(got, want)


def test_blot_by_rows_equals_the_blot_of_the_whole_map(uvis_chip):
    _, _, _, compact = uvis_chip
    whole = np.asarray(compact)
    rng = np.random.default_rng(5)
    image = rng.normal(1.0, 0.1, (6000, 6000)).astype(np.float32)
    for interp in ("poly5", "linear"):
        np.testing.assert_array_equal(blot_chip(image, compact, interp=interp),
                                      blot_chip(image, whole, interp=interp))


def test_undefined_pixels_stay_undefined():
    ny, nx = 300, 200
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    pixmap = np.dstack([5.0 + 0.9 * x + 0.2 * y + 1e-4 * x * y, 3.0 - 0.2 * x + 0.9 * y])
    pixmap[10:20, 30:40] = np.nan
    compact = CompactPixmap.from_array(pixmap)
    expanded = np.asarray(compact)
    np.testing.assert_array_equal(np.isnan(expanded), np.isnan(pixmap))
    assert np.nanmax(np.abs(expanded - pixmap)) < 1e-5
