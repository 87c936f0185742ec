"""Fragments of saturated stars (plateau, bleed, rings) are flagged; the star itself is not."""

from __future__ import annotations

import numpy as np

from hapcore.catalogs.saturated_fragments import saturated_fragments


def _plateau(cx, cy, half_width, bleed):
    """Saturated pixels: a square plateau and a bleed column above and below it."""
    xs, ys = np.meshgrid(np.arange(cx - half_width, cx + half_width + 1),
                         np.arange(cy - half_width - bleed, cy + half_width + bleed + 1))
    core = (np.abs(xs - cx) <= half_width) & (np.abs(ys - cy) <= half_width)
    column = np.abs(xs - cx) <= 1
    keep = core | column
    return np.column_stack([xs[keep], ys[keep]]).astype(float)


def test_fragments_on_a_saturated_star_but_not_the_star_or_a_distant_source():
    sat = np.vstack([_plateau(100, 100, 4, 15), _plateau(300, 200, 2, 0)])
    # star A at (100, 100), two fragments on its plateau and bleed, one on star B's ring,
    # star B itself, and a real source far from both
    x = np.array([100.2, 104.0, 100.5, 300.1, 303.5, 200.0])
    y = np.array([99.8, 103.0, 117.0, 200.2, 201.0, 50.0])
    flux = np.array([5000.0, 80.0, 40.0, 900.0, 30.0, 20.0])
    fragments = saturated_fragments(x, y, flux, sat, shape=(400, 400), radius=3.75)
    assert fragments.tolist() == [False, True, True, False, True, False]


def test_no_saturation_no_fragments():
    x = np.array([10.0, 12.0])
    assert not saturated_fragments(x, x, [1.0, 2.0], None, shape=(50, 50), radius=3).any()
    assert not saturated_fragments(x, x, [1.0, 2.0], np.empty((0, 2)), shape=(50, 50),
                                   radius=3).any()
