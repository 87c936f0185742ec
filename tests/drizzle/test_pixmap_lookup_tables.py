"""Pixel maps of chips with NPOL/D2IM lookup tables (issue #15).

The 64-pixel spline nodes cannot follow ACS/WFC's column-width D2IM (a 68-column cycle) nor the
kinks of astropy's bilinear table interpolation; `interpolated_pixmap` adds the tables per
pixel. Checked on full chips against the exact per-pixel transform at random pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from hapcore.drizzle.pixmap import _map_points, exact_pixmap, interpolated_pixmap
from hapsim.detectors import get_detector
from hapsim.distortion import detector_tables
from hapsim.geometry import chip_wcs


def _grid(chip, scale_arcsec):
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.crval = chip.wcs.crval
    grid.wcs.crpix = [3000.0, 3000.0]
    # a north-up grid, rotated against the chip as SVM products are
    grid.wcs.cd = np.array([[-scale_arcsec, 0.0], [0.0, scale_arcsec]]) / 3600.0
    grid.pixel_shape = (6000, 6000)
    return grid


@pytest.mark.parametrize("detector, limit", [("acs/wfc", 0.005), ("wfc3/uvis", 0.002)])
def test_full_chip_map_with_tables_matches_the_exact_map(detector, limit):
    spec = get_detector(detector)
    chip = spec.chips[1]
    tables = detector_tables(detector, chip.ccdchip, chip.shape)
    wcs = chip_wcs(chip, 150.1, 2.2, 37.0, tables=tables).to_astropy()
    grid = _grid(wcs, 0.04)
    pixmap = interpolated_pixmap(wcs, grid)
    rng = np.random.default_rng(4)
    ny, nx = chip.shape
    # random pixels plus the chip corners, where the SIP slope times the D2IM offset peaks
    x = np.r_[rng.integers(0, nx, 20000), 0, nx - 1, 0, nx - 1]
    y = np.r_[rng.integers(0, ny, 20000), 0, 0, ny - 1, ny - 1]
    gx, gy = _map_points(wcs, grid, x.astype(float), y.astype(float))
    err = np.hypot(pixmap[y, x, 0] - gx, pixmap[y, x, 1] - gy)
    assert err.max() < limit, err.max()
    # the tables matter: the map of the same chip without them is ~0.1 px away
    sip_only = chip_wcs(chip, 150.1, 2.2, 37.0).to_astropy()
    sx, sy = _map_points(sip_only, grid, x.astype(float), y.astype(float))
    assert np.hypot(sx - gx, sy - gy).max() > 0.1


def test_subarray_map_with_tables_matches_the_exact_map():
    """A subarray addresses the full-chip tables through its LTV (CRVAL = LTV)."""
    spec = get_detector("acs/wfc")
    chip = spec.chips[1]
    x0, y0, size = 300, 1536, 512
    tables = detector_tables("acs/wfc", chip.ccdchip, chip.shape, (-x0, -y0))
    wcs = chip_wcs(chip, 150.1, 2.2, 37.0, subarray=(x0, y0, size), tables=tables).to_astropy()
    grid = _grid(wcs, 0.05)
    err = np.abs(interpolated_pixmap(wcs, grid) - exact_pixmap(wcs, grid))
    assert err.max() < 0.005
