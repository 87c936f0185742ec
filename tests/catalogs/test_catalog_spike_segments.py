"""Spike test of segment rows: thin segments pointing at a saturated star get flag 32."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from hapcore.catalogs.flags import spike_segment_flags
from hapcore.catalogs.spike_segments import (
    bright_peaks_on_axis,
    moment_axes,
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
