"""Diffraction-spike fragments of saturated stars (issue #15): the spikes are measured on the
image (any roll angle), fragments on them are flagged, real stars on or near them are not."""

from __future__ import annotations

import numpy as np
from test_catalog_scene import saturated_flagging_inputs

from hapcore.catalogs.saturated_features import saturated_stars
from hapcore.catalogs.saturated_spikes import saturated_spike_features, spike_directions

SHAPE = (401, 401)
CENTRE = (200.0, 200.0)
SKY_RMS = 0.01
ANGLE = 56.0            # the spikes' roll on the product (not 0 or 45 degrees)


def _gauss(x0, y0, flux, sigma=1.2):
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    return flux / (2 * np.pi * sigma ** 2) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2)
                                                   / (2 * sigma ** 2))


def _on_spike(k, r, across=0.0):
    a = np.radians(ANGLE + 90.0 * k)
    return (CENTRE[0] + r * np.cos(a) - across * np.sin(a),
            CENTRE[1] + r * np.sin(a) + across * np.cos(a))


def _scene(*, lumps=(), stars=(), seed=3):
    """A saturated star at CENTRE: r^-3 halo, four spikes at ANGLE + k 90 degrees (the pair
    k = 0, 2 1.5 times brighter than k = 1, 3), a plateau, a bleed column, and a neighbour's
    bleed column on the k = 1 spike 40 px out; spike lumps ``(k, r, flux)`` and stars ``(x, y, flux)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    dx, dy = xx - CENTRE[0], yy - CENTRE[1]
    r = np.hypot(dx, dy)
    image = 2000.0 / np.maximum(r, 3.0) ** 3
    for k, gain in enumerate((1.5, 1.0, 1.5, 1.0)):
        a = np.radians(ANGLE + 90.0 * k)
        along = dx * np.cos(a) + dy * np.sin(a)
        across = -dx * np.sin(a) + dy * np.cos(a)
        image += np.where(along > 0, gain * 60.0 / np.maximum(along, 3.0) ** 1.5
                          * np.exp(-0.5 * (across / 1.2) ** 2), 0.0)
    for k, rr, flux in lumps:
        image += _gauss(*_on_spike(k, rr), flux)
    for x0, y0, flux in stars:
        image += _gauss(x0, y0, flux)
    plateau = r <= 5.0
    bleed = (np.abs(dx) <= 1) & (dy >= -60) & (dy <= 40)
    # a neighbour's bleed column across the k = 1 spike, 40 px out
    nx, ny = _on_spike(1, 40.0)
    neighbour = (np.abs(xx - nx) <= 1) & (np.abs(yy - ny) <= 8)
    saturated = plateau | bleed | neighbour
    image[saturated] = 80.0
    image += rng.normal(0.0, SKY_RMS, SHAPE)
    ys, xs = np.nonzero(saturated)
    return image, np.column_stack([xs, ys]).astype(float)


def _features(image, sat, x, y):
    sx, sy, _, pixels = saturated_stars(sat, shape=SHAPE, min_pixels=4)
    return saturated_spike_features(image, np.asarray(x, float), np.asarray(y, float), (sx, sy),
                                    pixels, aperture_radius=3.75, max_distance=150.0,
                                    background=np.zeros(SHAPE), background_rms=SKY_RMS,
                                    exptime=1000.0, nsigma=3.0, model_error=0.3)


def test_spike_directions_are_measured_at_any_roll():
    image, sat = _scene()
    _, _, _, pixels = saturated_stars(sat, shape=SHAPE, min_pixels=4)
    mask = np.zeros(SHAPE, bool)
    mask[pixels[:, 1], pixels[:, 0]] = True
    angles, amplitudes = spike_directions(image, *CENTRE, inner=15.0, outer=80.0,
                                          background=0.0, background_rms=SKY_RMS,
                                          saturated_mask=mask)
    expected = (ANGLE + 90.0 * np.arange(4)) % 360.0
    assert np.allclose(np.sort(angles), np.sort(expected), atol=1.0)
    # the brighter pair (56 and 236 degrees) is measured brighter
    bright = np.isclose(angles, ANGLE, atol=1.0) | np.isclose(angles, ANGLE + 180.0, atol=1.0)
    assert amplitudes[bright].min() > amplitudes[~bright].max()


def test_no_spikes_no_directions():
    rng = np.random.default_rng(4)
    image = rng.normal(0.0, SKY_RMS, SHAPE) + 2000.0 / np.maximum(
        np.hypot(*np.mgrid[:SHAPE[0], :SHAPE[1]] - 200.0), 3.0) ** 3
    angles, _ = spike_directions(image, 200.0, 200.0, inner=15.0, outer=80.0, background=0.0,
                                 background_rms=SKY_RMS)
    assert angles is None


def test_spike_fragments_flagged_real_stars_near_spikes_kept():
    # fragments: lumps of 10-15% of the spike's aperture light (1.6-11 e-/s here) on each
    # spike; the first one's 90-degree copy lands on the neighbour's bleed column
    lumps = [(0, 40.0, 1.2), (2, 70.0, 0.5), (1, 55.0, 0.5), (3, 30.0, 1.5), (0, 110.0, 0.2)]
    # real stars: on the k = 2 spike (2.8 times its 7.1 e-/s there), 4 pixels off the k = 3
    # spike, and one far from the spikes
    on_spike = _on_spike(2, 45.0)
    off_spike = _on_spike(3, 60.0, across=4.0)
    stars = [(*on_spike, 20.0), (*off_spike, 1.0), (280.0, 120.0, 1.0)]
    image, sat = _scene(lumps=lumps, stars=stars)
    fx, fy = zip(*[_on_spike(k, r) for k, r, _ in lumps])
    x = list(fx) + [s[0] for s in stars]
    y = list(fy) + [s[1] for s in stars]
    features = _features(image, sat, x, y)
    assert features.tolist() == [True] * len(lumps) + [False] * len(stars)


def test_detections_on_the_saturated_pixels_are_left_to_the_fragment_test():
    image, sat = _scene()
    features = _features(image, sat, [200.0, 200.0], [230.0, 202.0])
    assert not features.any()


def test_flag_saturated_light_flags_spike_fragments_32_keeps_the_star_on_the_spike():
    from astropy.table import Table

    from hapcore.catalogs.saturated_features import flag_saturated_light

    lumps = [(0, 40.0, 1.2), (3, 30.0, 1.5)]
    star = _on_spike(2, 45.0)
    image, sat = _scene(lumps=lumps, stars=[(*star, 20.0)])

    product, options, background = saturated_flagging_inputs(image, sky_rms=SKY_RMS)

    fx, fy = zip(*[_on_spike(k, r) for k, r, _ in lumps])
    table = Table({"X": [*fx, star[0]], "Y": [*fy, star[1]], "FluxAp2": [9.0, 12.0, 27.0],
                   "Flags": [1, 1, 0]})
    flag_saturated_light(table, "X", "Y", "FluxAp2", product, sat, options, background)
    assert table["Flags"].tolist() == [33, 33, 0]


def test_no_spike_test_in_a_crowded_field():
    """Above SPIKE_TEST_MAX_DENSITY rows per arcsec^2 every reference aperture holds other
    stars (real ACS/HRC 47 Tuc: the test had trimmed 5493 rows to 1776): it is not run."""
    from hapcore.catalogs.saturated_features import (
        SPIKE_TEST_MAX_DENSITY,
        _rows_per_arcsec2,
    )

    class _Image:
        shape = SHAPE
        plate_scale = 0.04
        footprint = np.ones(SHAPE, bool)

    area = SHAPE[0] * SHAPE[1] * 0.04**2
    assert _rows_per_arcsec2(3, _Image()) < SPIKE_TEST_MAX_DENSITY
    crowd = int(np.ceil(1.1 * SPIKE_TEST_MAX_DENSITY * area))
    assert _rows_per_arcsec2(crowd, _Image()) > SPIKE_TEST_MAX_DENSITY
