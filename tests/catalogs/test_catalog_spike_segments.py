"""Spike test of segment rows: thin segments pointing at a saturated star get flag 32."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from hapcore.catalogs.flags import spike_segment_flags
from hapcore.catalogs.spike_segments import (
    aligned_with_spikes,
    bright_peaks_on_axis,
    moment_axes,
    spike_direction,
    spike_ridge_rows,
    spike_segments,
)


def _moments(a, b, theta):
    """Second moments of an ellipse of axes ``a``, ``b`` (sigma, pixels) at ``theta``."""
    c, s = np.cos(theta), np.sin(theta)
    return (a * a * c * c + b * b * s * s, a * a * s * s + b * b * c * c, (a * a - b * b) * s * c)


def test_spike_pieces_pointing_at_a_saturated_star_flagged_32():
    star = (300.0, 300.0)
    # a spike piece 50 px above the star (thin, vertical), one along a diagonal spike, the
    # star's own segment (elongated by its bleed columns, centred on it), a thin edge-on
    # galaxy pointing elsewhere, and a round galaxy on the spike's line
    rows = [((300.0, 350.0), (6.0, 0.35, np.pi / 2)), ((335.0, 335.0), (5.0, 0.3, np.pi / 4)),
            ((300.5, 301.0), (12.0, 0.8, np.pi / 2)), ((300.0, 420.0), (5.0, 0.4, 0.0)),
            ((300.0, 380.0), (2.0, 1.6, 0.3))]
    x = np.array([r[0][0] for r in rows])
    y = np.array([r[0][1] for r in rows])
    x2, y2, xy = np.array([_moments(*r[1]) for r in rows]).T
    elongation, angle = moment_axes(x2, y2, xy)
    assert elongation[0] == pytest.approx(6.0 / 0.35)
    assert np.cos(angle[0]) == pytest.approx(0.0, abs=1e-9)
    out = spike_segments(x, y, x2, y2, xy, [star[0]], [star[1]])
    assert out.tolist() == [True, True, False, False, False]
    assert not spike_segments(x, y, x2, y2, xy, [], []).any()
    # through flag_catalog's helper: saturated pixels of the star's plateau
    table = Table({"X-Centroid": x, "Y-Centroid": y, "X2": x2, "Y2": y2, "XY": xy})
    plateau = np.array([(star[0] + dx, star[1] + dy) for dx in range(-2, 3) for dy in range(-2, 3)])
    flags = spike_segment_flags(table, x_column="X-Centroid", y_column="Y-Centroid",
                                saturated_xy=plateau, data=np.zeros((600, 600)),
                                plate_scale=0.04)
    assert flags.tolist() == [32, 32, 0, 0, 0]


def test_spike_pieces_of_an_unsaturated_bright_star_flagged_by_contrast():
    """A star that does not saturate in this filter: its core outshines its spike piece by far
    more than ``contrast``; a thin galaxy pointing at a faint neighbour is kept."""
    rng = np.random.default_rng(4)
    data = rng.normal(0.0, 1.0, (400, 400))
    yy, xx = np.mgrid[:400, :400]
    data += 2e4 * np.exp(-0.5 * ((xx - 200) ** 2 + (yy - 200) ** 2))      # the bright star
    data[230:260, 199:202] += 6.0                                          # its spike piece
    data += 40.0 * np.exp(-0.5 * ((xx - 320) ** 2 + (yy - 100) ** 2))     # a faint star
    data[100:103, 340:370] += 5.0                                          # a thin galaxy
    x, y = np.array([200.0, 355.0]), np.array([245.0, 101.0])
    x2, y2, xy = np.array([_moments(9.0, 0.5, np.pi / 2), _moments(9.0, 0.6, 0.0)]).T
    assert bright_peaks_on_axis(data, x, y, x2, y2, xy).tolist() == [True, False]
    table = Table({"X-Centroid": x, "Y-Centroid": y, "X2": x2, "Y2": y2, "XY": xy})
    flags = spike_segment_flags(table, x_column="X-Centroid", y_column="Y-Centroid",
                                saturated_xy=None, data=data, plate_scale=0.04)
    assert flags.tolist() == [32, 0]


def test_thin_rows_along_the_spikes_direction_flagged_without_a_star():
    """Spike pieces of a star off the product: as thin as the pieces found with their star and
    along the same direction (modulo 90 degrees); a thin galaxy at another angle is kept."""
    spike = np.radians(54.0)
    rows = [(6.0, 0.3, spike), (6.0, 0.3, spike + 0.01), (5.0, 0.3, spike - np.pi / 2),
            (6.0, 0.3, spike + np.pi / 2 + np.radians(1.5)),        # an off-product star's piece
            (6.0, 0.3, spike + np.radians(20.0)),                    # a thin galaxy elsewhere
            (3.0, 1.0, spike)]                                       # a round-ish one, aligned
    x2, y2, xy = np.array([_moments(*r) for r in rows]).T
    reference = np.array([True, True, True, False, False, False])
    assert np.degrees(spike_direction(x2, y2, xy, reference)) % 90 == pytest.approx(54.0,
                                                                                   abs=0.5)
    assert aligned_with_spikes(x2, y2, xy, reference).tolist() == [True] * 4 + [False] * 2
    # too few reference pieces: no direction, nothing flagged
    assert spike_direction(x2, y2, xy, reference & (np.arange(6) < 2)) is None
    assert not aligned_with_spikes(x2, y2, xy, reference & (np.arange(6) < 2)).any()


def test_rows_on_a_spike_ridge_flagged_sources_on_it_kept():
    """A spike crossing the image from a star off it (a ridge 5 px wide at 54 degrees over a
    halo gradient): its pieces are flagged whatever their shape; a galaxy standing out of the
    ridge, a source beside it and a source on a plain gradient are kept."""
    rng = np.random.default_rng(7)
    ny, nx = 300, 300
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    rms = 1.0
    data = 50.0 + 0.02 * xx + rng.normal(0.0, rms, (ny, nx))
    angle = np.radians(54.0)
    c, s = np.cos(angle), np.sin(angle)
    across = -(xx - 150.0) * s + (yy - 150.0) * c                   # distance from the ridge
    data += 4.0 * np.exp(-0.5 * (across / 2.0) ** 2)
    on_ridge = [(150.0 + t * c, 150.0 + t * s) for t in (-60.0, 0.0, 45.0)]
    galaxy = (150.0 + 90 * c, 150.0 + 90 * s)                        # on the ridge, 10x brighter
    data += 40.0 * np.exp(-0.5 * ((xx - galaxy[0]) ** 2 + (yy - galaxy[1]) ** 2) / 2.0 ** 2)
    beside = (150.0 - 20 * s + 10 * c, 150.0 + 20 * c + 10 * s)      # 20 px off the ridge
    plain = (40.0, 250.0)
    for px, py in (beside, plain):
        data += 3.0 * np.exp(-0.5 * ((xx - px) ** 2 + (yy - py) ** 2) / 1.5 ** 2)
    rows = np.array(on_ridge + [galaxy, beside, plain])
    out = spike_ridge_rows(data, rows[:, 0], rows[:, 1], angle, rms=rms)
    assert out.tolist() == [True, True, True, False, False, False]
    # the perpendicular direction is tested too
    assert spike_ridge_rows(data, rows[:, 0], rows[:, 1], angle - np.pi / 2,
                            rms=rms).tolist() == out.tolist()
    # no spike: nothing flagged
    plain_data = 50.0 + 0.02 * xx + rng.normal(0.0, rms, (ny, nx))
    assert not spike_ridge_rows(plain_data, rows[:, 0], rows[:, 1], angle, rms=rms).any()
