"""Footprint keywords of a drizzled product: coverage statistics from its context and weight
images (NPIXFRAC, MEANEXPT, MEDEXPT, MEANNEXP, MEDNEXP) and the S_REGION polygon."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

__all__ = ["coverage_bins", "footprint_keywords", "s_region_from_bins", "s_region_from_weight"]


def footprint_keywords(ctx: np.ndarray, wht: np.ndarray,
                       exptimes: Sequence[float]) -> dict[str, float]:
    """NPIXFRAC, MEANEXPT/MEDEXPT, MEANNEXP/MEDNEXP, MEANWHT/MEDWHT from context and weight.

    ``ctx`` has one bit per input exposure, in the order of ``exptimes``.

    The exposure count and time of a pixel depend only on its context value, so with up to
    `_MAX_HISTOGRAM_BITS` inputs they come from a histogram of the context values (a few
    distinct values instead of per-pixel float64 images; ~10x faster on a UVIS mosaic). The
    medians are then exact; the mean exposure time is summed in a different order (float64
    rounding, ~1e-16 relative).
    """
    n = len(exptimes)
    if ctx.ndim == 2 and 0 < n <= _MAX_HISTOGRAM_BITS:
        values = ctx.view(np.uint32) & np.uint32((1 << n) - 1)  # bits of no input don't count
        counts = np.zeros(1 << n, np.int64)
        for start in range(0, values.shape[0], 256):
            # in row blocks: bincount makes an intp copy of what it counts
            counts += np.bincount(values[start:start + 256].ravel(), minlength=1 << n)
        counts[0] = 0
        ncov = int(counts.sum())
        if ncov == 0:
            return dict(_EMPTY_FOOTPRINT)
        present = np.nonzero(counts)[0]
        weights = counts[present]
        nexp = np.zeros(present.size, np.int64)
        expt = np.zeros(present.size, np.float64)
        for k, exptime in enumerate(exptimes):
            bit = (present >> k) & 1
            nexp += bit
            expt += bit * float(exptime)  # the per-pixel sum, in the same order
        w = wht[values != 0]
        return {"NPIXFRAC": ncov / int(values.size),
                "MEANEXPT": float(np.dot(weights, expt) / ncov),
                "MEDEXPT": _weighted_median(expt, weights),
                "MEANNEXP": float(np.dot(weights, nexp) / ncov),
                "MEDNEXP": _weighted_median(nexp.astype(np.float64), weights),
                "MEANWHT": float(w.mean()), "MEDWHT": float(np.median(w))}
    planes = ctx if ctx.ndim == 3 else ctx[None]
    nexp = np.zeros(planes.shape[1:], np.int32)
    expt = np.zeros(planes.shape[1:], np.float64)
    for k, exptime in enumerate(exptimes):
        bit = (planes[k // 32] >> (k % 32)) & 1
        nexp += bit
        expt += bit * float(exptime)
    covered = nexp > 0
    if not covered.any():
        return dict(_EMPTY_FOOTPRINT)
    w = wht[covered]
    return {"NPIXFRAC": float(covered.mean()),
            "MEANEXPT": float(expt[covered].mean()), "MEDEXPT": float(np.median(expt[covered])),
            "MEANNEXP": float(nexp[covered].mean()), "MEDNEXP": float(np.median(nexp[covered])),
            "MEANWHT": float(w.mean()), "MEDWHT": float(np.median(w))}


#: Inputs up to which `footprint_keywords` works from a histogram of context values.
_MAX_HISTOGRAM_BITS = 20
_EMPTY_FOOTPRINT = {"NPIXFRAC": 0.0, "MEANEXPT": 0.0, "MEDEXPT": 0.0, "MEANNEXP": 0.0,
                    "MEDNEXP": 0.0, "MEANWHT": 0.0, "MEDWHT": 0.0}


def _weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """``np.median`` of ``values`` repeated ``counts`` times (``values`` ascending or not)."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(counts[order])
    total = int(c[-1])
    lo = v[np.searchsorted(c, (total - 1) // 2, side="right")]
    hi = v[np.searchsorted(c, total // 2, side="right")]
    # np.median averages the two middle elements the same way (mean of two float64 values)
    return float(np.mean([lo, hi]))


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise) of 2-D points, monotone chain."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def s_region_from_weight(wht: np.ndarray, wcs: WCS, *, bin_size: int = 16) -> str:
    """``POLYGON ICRS ...`` per disjoint illuminated region (hull of the region, first vertex
    repeated), from the weight map binned by ``bin_size``; '' when nothing is illuminated."""
    return s_region_from_bins(coverage_bins(wht > 0, bin_size), wcs, wht.shape,
                              bin_size=bin_size)


def coverage_bins(covered: np.ndarray, bin_size: int = 16) -> np.ndarray:
    """``covered`` binned by ``bin_size`` (a bin is True when any of its pixels is)."""
    ny, nx = covered.shape
    by, bx = -(-ny // bin_size), -(-nx // bin_size)
    padded = np.zeros((by * bin_size, bx * bin_size), bool)
    padded[:ny, :nx] = covered
    return padded.reshape(by, bin_size, bx, bin_size).any(axis=(1, 3))


def s_region_from_bins(binned: np.ndarray, wcs: WCS, shape: tuple[int, int], *,
                       bin_size: int = 16) -> str:
    """`s_region_from_weight` from the binned illuminated pixels (`coverage_bins`) of an
    image of ``shape``."""
    ny, nx = shape
    labels, n = ndimage.label(binned)
    polygons = []
    for k in range(1, n + 1):
        yy, xx = _row_extremes(labels == k)
        # corners of the occupied bins, in output pixels; the hull's vertices are among the
        # corners of each row's first and last bin (those between lie on a segment joining
        # them), so only those go to the hull: the same polygon from ~100x fewer points
        cx = np.concatenate([xx, xx + 1, xx, xx + 1]) * bin_size - 0.5
        cy = np.concatenate([yy, yy, yy + 1, yy + 1]) * bin_size - 0.5
        cx = np.clip(cx, -0.5, nx - 0.5)
        cy = np.clip(cy, -0.5, ny - 0.5)
        hull = _hull(np.column_stack([cx, cy]))
        ra, dec = wcs.wcs_pix2world(hull[:, 0], hull[:, 1], 0)
        ra, dec = np.r_[ra, ra[0]], np.r_[dec, dec[0]]
        polygons.append("POLYGON ICRS " + " ".join(f"{a:.7f} {d:.7f}" for a, d in zip(ra, dec)))
    return " ".join(polygons)


def _row_extremes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, columns)`` of the first and the last True pixel of every row that has one."""
    rows = np.nonzero(mask.any(axis=1))[0]
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = mask.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    return np.concatenate([rows, rows]), np.concatenate([first, last])


