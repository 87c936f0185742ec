"""Alignment sources near saturated stars: the fragments of their halos and spikes (bright,
compact peaks around a saturated core and its bleed column) must not crowd out the real stars."""

from __future__ import annotations

import numpy as np
import pytest

from hapcore.align import sources

SHAPE = (400, 400)
SIGMA = 1.4  # px: FWHM 3.3 px, as WFC3/UVIS with drizzlepac's fwhmpsf


def _add_gaussian(image, x, y, peak, sigma=SIGMA):
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    image += peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


@pytest.fixture(scope="module")
def chip():
    """A chip with 16 faint real stars, one saturated star (core and bleed column flagged 256)
    and 12 compact fragments of its halo, each brighter than any real star."""
    rng = np.random.default_rng(5)
    sci = rng.normal(50.0, 5.0, SHAPE).astype(np.float32)
    dq = np.zeros(SHAPE, np.int16)
    # real stars on a grid, all further than 80 px from the saturated star at (200, 200)
    grid = np.array([30.0, 110.0, 290.0, 370.0])
    stars = np.array([(x + 0.3, y - 0.2) for x in grid for y in grid])
    for x, y in stars:
        _add_gaussian(sci, x, y, 400.0)
    # the saturated star: a round core and a bleed column, both at the full well
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    saturated = ((xx - 200) ** 2 + (yy - 200) ** 2 <= 36) | ((abs(xx - 200) <= 2)
                                                             & (abs(yy - 200) <= 50))
    _add_gaussian(sci, 200.0, 200.0, 2.0e5, sigma=3.0)
    sci[saturated] = 60000.0
    dq[saturated] = 256
    # halo fragments 15-45 px from the core (within 2 sqrt(N) of it: N ~ 600 saturated px)
    angles = np.linspace(0.0, 2 * np.pi, 12, endpoint=False) + 0.2
    radii = np.linspace(15.0, 45.0, 12)
    fragments = np.column_stack([200.0 + radii * np.cos(angles), 200.0 + radii * np.sin(angles)])
    for x, y in fragments:
        _add_gaussian(sci, x, y, 2000.0)
    return sci, dq, stars, fragments


def _nearest(table, points):
    xy = np.column_stack([table["x"], table["y"]])
    return np.min(np.hypot(*(xy[:, None, :] - points[None, :, :]).transpose(2, 0, 1)), axis=1)


def test_saturated_stars_finds_the_region(chip):
    _, dq, _, _ = chip
    dq = dq.copy()
    dq[5, 5] = 256  # an isolated saturated pixel is no star
    x, y, n_pixels = sources.saturated_stars(dq.astype(">i2"))
    assert len(x) == 1
    assert x[0] == pytest.approx(200.0, abs=0.5) and y[0] == pytest.approx(200.0, abs=0.5)
    assert n_pixels[0] == np.count_nonzero(chip[1] == 256)


def test_halo_fragments_do_not_crowd_out_the_stars(chip):
    sci, dq, stars, fragments = chip
    found = sources.detect_chip_sources(sci, dq, fwhm_px=2.3548 * SIGMA,
                                        max_sources=len(stars))
    table = found.table
    # every source is a real star (centroid within 0.2 px), and every real star is there
    assert len(table) == len(stars)
    assert np.all(_nearest(table, stars) < 0.2)
    assert np.all(_nearest(table, fragments) > 30.0)


def test_without_dq_the_fragments_win(chip):
    """The test above is not passed by chance: without the saturation flags the (brighter)
    fragments take most places of the list."""
    sci, _, stars, fragments = chip
    found = sources.detect_chip_sources(sci, None, fwhm_px=2.3548 * SIGMA,
                                        max_sources=len(stars))
    assert np.sum(_nearest(found.table, fragments) < 0.5) >= 8
