"""Matching two source lists in a tangent plane: offset histogram (with a rotation search) first,
then tolerance matching refined by rscale fits (what tweakwcs' XYXYMatch does, plus rotation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from hapcore.align.fit import fit_linear

__all__ = ["MatchResult", "offset_histogram_peak", "match_sources"]

logger = logging.getLogger(f"hapsvm.{__name__}")


@dataclass
class MatchResult:
    """Index pairs of matched sources and the offset/rotation that found them."""

    src_index: np.ndarray
    ref_index: np.ndarray
    offset: np.ndarray
    rotation_deg: float
    peak_counts: int

    def __len__(self) -> int:
        return len(self.src_index)


def _rotate(xy: np.ndarray, angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return xy @ rot.T


def offset_histogram_peak(src: np.ndarray, ref: np.ndarray, *, searchrad: float,
                          binsize: float) -> tuple[np.ndarray, int]:
    """The most common offset ``ref - src`` among pairs closer than ``searchrad``.

    Returns the offset at the peak of a 2-D histogram (refined by the mean offset of the pairs in
    the 3x3 bins around it) and the number of pairs in that peak.
    """
    tree = cKDTree(ref)
    pairs = tree.query_ball_point(src, searchrad)
    counts = np.fromiter((len(p) for p in pairs), int, len(pairs))
    if counts.sum() == 0:
        return np.zeros(2), 0
    si = np.repeat(np.arange(len(src)), counts)
    ri = np.concatenate([np.asarray(p, int) for p in pairs if p])
    d = ref[ri] - src[si]
    nb = int(np.ceil(searchrad / binsize))
    edges = np.linspace(-nb * binsize, nb * binsize, 2 * nb + 1)
    hist, ex, ey = np.histogram2d(d[:, 0], d[:, 1], bins=(edges, edges))
    # sum of 3x3 neighbourhoods, so a peak split between bins is not missed
    from scipy.ndimage import uniform_filter

    smooth = uniform_filter(hist, size=3, mode="constant") * 9
    ix, iy = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    lo_x, hi_x = ex[max(ix - 1, 0)], ex[min(ix + 2, len(ex) - 1)]
    lo_y, hi_y = ey[max(iy - 1, 0)], ey[min(iy + 2, len(ey) - 1)]
    sel = (d[:, 0] >= lo_x) & (d[:, 0] <= hi_x) & (d[:, 1] >= lo_y) & (d[:, 1] <= hi_y)
    return np.median(d[sel], axis=0), int(round(smooth[ix, iy]))


def _nearest_unique(src: np.ndarray, ref: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours closer than ``tolerance``."""
    if len(src) == 0 or len(ref) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d_sr, i_sr = cKDTree(ref).query(src, distance_upper_bound=tolerance)
    d_rs, i_rs = cKDTree(src).query(ref, distance_upper_bound=tolerance)
    ok = np.isfinite(d_sr)
    s_idx = np.flatnonzero(ok)
    r_idx = i_sr[ok]
    mutual = i_rs[r_idx] == s_idx
    return s_idx[mutual], r_idx[mutual]


def match_sources(src: np.ndarray, ref: np.ndarray, *, searchrad: float, tolerance: float,
                  use2dhist: bool = True, max_rotation_deg: float = 0.6,
                  rotation_step_deg: float = 0.1, min_tolerance: float | None = None) -> MatchResult:
    """Match image sources to reference sources (both (N, 2) tangent-plane arcsec).

    Parameters
    ----------
    searchrad : float
        Largest offset searched (arcsec).
    tolerance : float
        Final matching radius (arcsec) after the offset/rotation are removed.
    use2dhist : bool
        Find the offset from a 2-D histogram of pair offsets (with a rotation search of
        +/- ``max_rotation_deg`` about the origin); else assume zero offset.
    min_tolerance : float, optional
        The radius is tightened to 3x the fit rms, but never below this (default tolerance/4).
    """
    src = np.asarray(src, float)
    ref = np.asarray(ref, float)
    empty = MatchResult(np.zeros(0, int), np.zeros(0, int), np.zeros(2), 0.0, 0)
    if len(src) < 2 or len(ref) < 2:
        return empty
    best_rot, best_off, best_n = 0.0, np.zeros(2), 0
    if use2dhist:
        binsize = max(tolerance / 2.0, 0.05)
        n_steps = int(round(max_rotation_deg / rotation_step_deg)) if max_rotation_deg > 0 else 0
        for k in range(-n_steps, n_steps + 1):
            angle = k * rotation_step_deg
            off, n = offset_histogram_peak(_rotate(src, angle), ref, searchrad=searchrad,
                                           binsize=binsize)
            if n > best_n:
                best_rot, best_off, best_n = angle, off, n
        if best_n == 0:
            return empty
    # iterate: match with the current transform, refit rscale, tighten the radius
    m = np.array([[np.cos(np.radians(best_rot)), -np.sin(np.radians(best_rot))],
                  [np.sin(np.radians(best_rot)), np.cos(np.radians(best_rot))]])
    t = best_off.copy()
    radius = max(2.0 * tolerance, 0.5) if use2dhist else tolerance
    floor = tolerance / 4.0 if min_tolerance is None else min_tolerance
    s_idx = r_idx = np.zeros(0, int)
    for _ in range(6):
        moved = src @ m.T + t
        s_idx, r_idx = _nearest_unique(moved, ref, radius)
        if len(s_idx) < 3:
            break
        m, t = fit_linear(src[s_idx], ref[r_idx], fitgeom="rscale")
        resid = ref[r_idx] - (src[s_idx] @ m.T + t)
        rms = float(np.sqrt(np.mean(np.sum(resid ** 2, axis=1))))
        new_radius = min(max(3.0 * rms, floor), tolerance)
        if abs(new_radius - radius) < 1e-3 * tolerance:
            radius = new_radius
            break
        radius = new_radius
    moved = src @ m.T + t
    s_idx, r_idx = _nearest_unique(moved, ref, radius)
    return MatchResult(s_idx, r_idx, best_off, best_rot, best_n)
