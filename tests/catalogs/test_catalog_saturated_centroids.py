"""Saturated stars' segment rows take their star's position (hapcore.catalogs.saturated_centroids)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from hapcore.catalogs.saturated_centroids import (
    recentre_saturated_segments,
    saturated_star_matches,
)


def test_matches_within_the_offset_only():
    seg_x, seg_y = np.array([100.0, 200.0, 300.0, 400.0]), np.array([100.0, 203.5, 300.0, 410.0])
    saturated = np.array([True, True, False, True])
    star_x, star_y = np.array([200.0, 400.0, np.nan, 100.5]), np.array([200.0, 400.0, 0.0, 100.0])
    match = saturated_star_matches(seg_x, seg_y, saturated, star_x, star_y, max_offset=6.0)
    # the row 3.5 px from a star moves to it; a row not flagged saturated or 10 px away does not
    assert match.tolist() == [3, 0, -1, -1]


def test_segment_rows_and_filter_rows_moved_to_the_star():
    """A saturated star's segment centroid pulled 3 px (0.12") along its bleed columns is moved
    to the star's point-catalog position, in the total and every filter table; a galaxy and a
    saturated star's fragment (flag 32) are not used or moved."""
    segment = Table({"ID": [1, 2, 3], "X-Centroid": [100.0, 300.0, 500.0],
                     "Y-Centroid": [103.0, 300.0, 500.0], "RA": [1.0, 2.0, 3.0],
                     "DEC": [1.0, 2.0, 3.0]})
    point = Table({"id": [10, 11, 12], "xcentroid": [100.2, 300.0, 501.0],
                   "ycentroid": [100.1, 300.0, 500.0], "RA": [10.0, 11.0, 12.0],
                   "DEC": [20.0, 21.0, 22.0]})
    seg_f1 = Table({"ID": [3, 2, 1], "Flags": [5, 0, 5], "X-Centroid": [500.0, 300.0, 100.0],
                    "Y-Centroid": [500.0, 300.0, 103.0], "RA": [3.0, 2.0, 1.0],
                    "DEC": [3.0, 2.0, 1.0]})
    seg_f2 = Table({"ID": [1, 2, 3], "Flags": [1, 0, 0], "X-Centroid": [100.0, 300.0, 500.0],
                    "Y-Centroid": [103.0, 300.0, 500.0], "RA": [1.0, 2.0, 3.0],
                    "DEC": [1.0, 2.0, 3.0]})
    # point 10: the star (4 in one filter); 11: no saturation; 12: a fragment (4 and 32)
    pt_f1 = Table({"ID": [10, 11, 12], "Flags": [4, 0, 36]})
    pt_f2 = Table({"ID": [10, 11, 12], "Flags": [0, 0, 36]})
    n = recentre_saturated_segments(segment, point, [seg_f1, seg_f2], [pt_f1, pt_f2],
                                    plate_scale=0.04)
    assert n == 1
    assert segment["X-Centroid"][0] == pytest.approx(100.2)
    assert segment["Y-Centroid"][0] == pytest.approx(100.1)
    assert (segment["RA"][0], segment["DEC"][0]) == (10.0, 20.0)
    assert segment["X-Centroid"][1:].tolist() == [300.0, 500.0]
    assert seg_f1["Y-Centroid"].tolist() == [500.0, 300.0, pytest.approx(100.1)]
    assert seg_f2["RA"].tolist() == [10.0, 2.0, 3.0]
    # nothing saturated: nothing moves
    assert recentre_saturated_segments(segment, point, [seg_f2[1:]], [pt_f1],
                                       plate_scale=0.04) == 0


def test_nothing_moved_on_ir():
    segment = Table({"ID": [1], "X-Centroid": [100.0], "Y-Centroid": [101.5], "RA": [1.0],
                     "DEC": [1.0]})
    point = Table({"id": [10], "xcentroid": [100.0], "ycentroid": [100.0], "RA": [2.0],
                   "DEC": [2.0]})
    tables = ([Table({"ID": [1], "Flags": [5]})], [Table({"ID": [10], "Flags": [4]})])
    assert recentre_saturated_segments(segment, point, *tables, plate_scale=0.128,
                                       detector="ir") == 0
    assert segment["Y-Centroid"][0] == 101.5
    assert recentre_saturated_segments(segment, point, *tables, plate_scale=0.128,
                                       detector="uvis") == 1
    assert segment["Y-Centroid"][0] == 100.0
