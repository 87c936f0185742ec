"""The interpolating cubic spline (not-a-knot ends) as a matrix: values at any points of the
splines through unit vectors.

`hapcore.drizzle.pixmap.interpolated_pixmap` writes the pixel map as ``By @ nodes @ Bx.T``
with ``By``, ``Bx`` the splines through the unit vectors of its node rows and columns. They were
``scipy.interpolate.CubicSpline(nodes, np.eye(n))(points)``; importing ``scipy.interpolate``
loads ~30 MB of modules (``scipy.optimize``, ``scipy.spatial``, ...) into every drizzle
worker, for a 65 x 65 linear system (issue #16: the drizzle stage's memory peak is two workers
and the scratch). This is the same spline: scipy's not-a-knot equations for the slopes, solved
densely, and the cubic Hermite pieces evaluated at the points (the interval of a point found as
scipy does, the last interval closed). It agrees with scipy to ~1e-15 of the node values
(`tests/drizzle/test_spline_basis.py`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cubic_spline_basis"]


def _slope_system(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A, R)`` with ``A @ slopes = R @ values`` for the not-a-knot interpolating spline
    through ``values`` at ``x`` (scipy's ``CubicSpline`` equations, ``n >= 4`` nodes)."""
    n = x.size
    dx = np.diff(x)
    a = np.zeros((n, n))
    r = np.zeros((n, n))
    # the divided differences as rows acting on the values: slope[i] = (v[i+1] - v[i]) / dx[i]
    slope = np.zeros((n - 1, n))
    i = np.arange(n - 1)
    slope[i, i] = -1.0 / dx
    slope[i, i + 1] = 1.0 / dx
    for k in range(1, n - 1):
        a[k, k - 1] = dx[k]
        a[k, k] = 2.0 * (dx[k - 1] + dx[k])
        a[k, k + 1] = dx[k - 1]
        r[k] = 3.0 * (dx[k] * slope[k - 1] + dx[k - 1] * slope[k])
    d = x[2] - x[0]
    a[0, 0], a[0, 1] = dx[1], d
    r[0] = ((dx[0] + 2.0 * d) * dx[1] * slope[0] + dx[0] ** 2 * slope[1]) / d
    d = x[-1] - x[-3]
    a[-1, -1], a[-1, -2] = dx[-2], d
    r[-1] = (dx[-1] ** 2 * slope[-2] + (2.0 * d + dx[-1]) * dx[-2] * slope[-1]) / d
    return a, r


def cubic_spline_basis(nodes, points) -> np.ndarray:
    """Values at ``points`` of the not-a-knot cubic splines through the unit vectors at
    ``nodes``: ``B[p, j]``, so that ``B @ values`` interpolates ``values`` (given at the nodes).

    Parameters
    ----------
    nodes : 1-D array_like
        Strictly increasing, at least 4.
    points : 1-D array_like
        Where to evaluate (beyond the nodes, the end pieces extrapolate).

    Returns
    -------
    ndarray, shape (len(points), len(nodes)), float64
    """
    x = np.asarray(nodes, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if x.ndim != 1 or x.size < 4 or not np.all(np.diff(x) > 0):
        raise ValueError("nodes must be 1-D, strictly increasing, at least 4")
    n = x.size
    a, r = _slope_system(x)
    slopes = np.linalg.solve(a, r)            # (n, n): slopes of every unit-vector spline
    dx = np.diff(x)
    eye = np.eye(n)
    secant = (eye[1:] - eye[:-1]) / dx[:, None]
    # the cubic pieces' coefficients, each an (n - 1, n) matrix acting on the values
    c2 = (3.0 * secant - 2.0 * slopes[:-1] - slopes[1:]) / dx[:, None]
    c3 = (slopes[:-1] + slopes[1:] - 2.0 * secant) / dx[:, None] ** 2
    k = np.clip(np.searchsorted(x, p, side="right") - 1, 0, n - 2)
    t = (p - x[k])[:, None]
    return eye[:-1][k] + t * (slopes[:-1][k] + t * (c2[k] + t * c3[k]))
