"""The square drizzle kernel for a sparse set of input pixels, vectorised with numpy.

A product's partial drizzle often differs from one already computed only at a few input
pixels: the final drizzle of a filter excludes the cosmic rays that the separate drizzle
included (~2% of a chip), an exposure product includes the few DQ-flagged and static-mask pixels
the separate drizzle left out. Drizzle is linear in (data x weight) and in weight, so such a
partial is the computed one plus (or minus) the contributions of those pixels alone.
`drizzle`'s C kernel cannot drizzle a sparse set cheaply: its square kernel computes the
polygon overlaps of every input pixel, whatever its weight (a chip costs the same with 2% or
100% of its weights non-zero). This module computes the contributions of the given pixels only.

The geometry is drizzle's (``cdrizzlebox.c``, ``do_kernel_square``): each input pixel, shrunk by
``pixfrac``, has its four corners placed on the output grid by bilinear interpolation of the
pixel map (extrapolated from the outermost two map nodes at the chip edges), the Jacobian is
half the cross product of the diagonals, and an output pixel receives ``area / jacobian`` of the
pixel's weight, with ``area`` the overlap of the quadrilateral with the output pixel. The
overlap is computed as the sum over the quadrilateral's edges of the integral of the edge's
height, clamped to the output pixel's rows, over the edge's extent clipped to the pixel's
columns (a clamp of a linear function integrates in closed form); it agrees with drizzle's
``compute_area`` to ~1e-12 (`tests/drizzle/test_drizzle_partials.py` checks contributions
against the drizzle package itself).

The turbo kernel (``do_kernel_turbo``) is simpler: an axis-aligned box of side ``pixfrac /
pscale_ratio`` centred on the pixel's mapped centre, its overlap with each output pixel scaled
by ``(pscale_ratio / pixfrac)**2`` (`turbo_contributions`, same parity test).
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["overlap_area", "pixel_corners", "square_contributions", "turbo_contributions"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: A pixel whose quadrilateral spans more output pixels than this on a side is not a sparse
#: pixel of a well-behaved map (an unmapped neighbour, a fold): `square_contributions` refuses.
MAX_SPAN = 16


def _fortran_round(value: np.ndarray) -> np.ndarray:
    """drizzle's ``fortran_round``: halves away from zero."""
    return np.where(value >= 0, np.floor(value + 0.5), -np.floor(0.5 - value)).astype(np.int64)


def pixel_corners(pixmap: np.ndarray, ys: np.ndarray, xs: np.ndarray, pixfrac: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Output positions of the corners of input pixels ``(ys, xs)`` shrunk by ``pixfrac``.

    Returns
    -------
    qx, qy : ndarray, shape ``(n, 4)``
        Corners in drizzle's order: ``(x-h, y+h), (x+h, y+h), (x+h, y-h), (x-h, y-h)``,
        ``h = pixfrac / 2``, each interpolated bilinearly in the map as drizzle does (the cell
        index truncated toward zero and clamped to the map, so edges extrapolate).
    """
    ny, nx = pixmap.shape[:2]
    half = 0.5 * float(pixfrac)
    xs = np.asarray(xs, np.float64)
    ys = np.asarray(ys, np.float64)
    xin = np.stack([xs - half, xs + half, xs + half, xs - half], axis=1)
    yin = np.stack([ys + half, ys + half, ys - half, ys - half], axis=1)
    i0 = np.clip(np.trunc(xin).astype(np.int64), 0, max(nx - 2, 0))
    j0 = np.clip(np.trunc(yin).astype(np.int64), 0, max(ny - 2, 0))
    fx = xin - i0
    fy = yin - j0
    gx, gy = 1.0 - fx, 1.0 - fy
    out = []
    for axis in (0, 1):
        plane = pixmap[..., axis]
        out.append(plane[j0, i0] * gx * gy + plane[j0, i0 + 1] * fx * gy
                   + plane[j0 + 1, i0] * gx * fy + plane[j0 + 1, i0 + 1] * fx * fy)
    return out[0], out[1]


def _ramp_mean(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Mean of ``max(f, 0)`` over a segment where ``f`` runs linearly from ``low`` to ``high``
    (``low <= high``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mixed = high * high / (2.0 * (high - low))
    return np.where(low >= 0, 0.5 * (low + high), np.where(high <= 0, 0.0, mixed))


def overlap_area(left: np.ndarray, bottom: np.ndarray, qx: np.ndarray, qy: np.ndarray
                 ) -> np.ndarray:
    """Area of each quadrilateral ``(qx[k], qy[k])`` inside the unit square whose lower-left
    corner is ``(left[k], bottom[k])``.

    Every edge adds the integral of its height above ``bottom``, clamped to [0, 1], over its
    x-extent clipped to the square's columns, signed by its direction: the sum is the signed
    area of the clipped polygon (the same decomposition as drizzle's ``compute_area``).
    """
    right = left + 1.0
    total = np.zeros(np.shape(left))
    for a in range(4):
        b = (a + 1) & 3
        x0, y0, x1, y1 = qx[:, a], qy[:, a], qx[:, b], qy[:, b]
        u0 = np.clip(x0, left, right)
        u1 = np.clip(x1, left, right)
        dx = x1 - x0
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(dx != 0, (y1 - y0) / dx, 0.0)
        f0 = y0 + slope * (u0 - x0) - bottom
        f1 = y0 + slope * (u1 - x0) - bottom
        low, high = np.minimum(f0, f1), np.maximum(f0, f1)
        total += (u1 - u0) * (_ramp_mean(low, high) - _ramp_mean(low - 1.0, high - 1.0))
    return np.abs(total)


def square_contributions(pixmap: np.ndarray, ys: np.ndarray, xs: np.ndarray, *,
                         pixfrac: float, out_shape: tuple[int, int]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the square kernel puts input pixels ``(ys, xs)`` and with which fraction.

    Parameters
    ----------
    pixmap : ndarray, shape ``(ny, nx, 2)``
        The chip's map onto the output grid (``pixmap[j, i] = (x, y)``), finite.
    ys, xs : ndarray of int
        Input pixels.
    pixfrac : float
        drizzle's ``pixfrac``.
    out_shape : tuple of int
        ``(ny, nx)`` of the output grid: contributions outside it are dropped, as drizzle
        clips them.

    Returns
    -------
    k : ndarray of int
        Index into ``ys``/``xs`` of each contribution.
    out_y, out_x : ndarray of int
        Output pixel of each contribution.
    fraction : ndarray of float64
        ``overlap area / jacobian``: the weight the output pixel receives is ``fraction x
        weight`` (drizzle rounds that product to float32), its data ``iscale x value``.

    Raises
    ------
    ValueError
        A pixel's quadrilateral is not finite or spans more than `MAX_SPAN` output pixels:
        the map is not smooth there, drizzle the chip instead.
    """
    ys = np.asarray(ys, np.int64)
    xs = np.asarray(xs, np.int64)
    empty = np.zeros(0, np.int64)
    if ys.size == 0:
        return empty, empty, empty, np.zeros(0)
    qx, qy = pixel_corners(pixmap, ys, xs, pixfrac)
    if not (np.isfinite(qx).all() and np.isfinite(qy).all()):
        raise ValueError("pixel map not finite at pixels to drizzle sparsely")
    jaco = 0.5 * np.abs((qx[:, 1] - qx[:, 3]) * (qy[:, 0] - qy[:, 2])
                        - (qx[:, 0] - qx[:, 2]) * (qy[:, 1] - qy[:, 3]))
    oy, ox = out_shape
    jmin = np.maximum(_fortran_round(qy.min(axis=1)), 0)
    jmax = np.minimum(_fortran_round(qy.max(axis=1)), oy - 1)
    imin = np.maximum(_fortran_round(qx.min(axis=1)), 0)
    imax = np.minimum(_fortran_round(qx.max(axis=1)), ox - 1)
    nj = np.maximum(jmax - jmin + 1, 0)
    ni = np.maximum(imax - imin + 1, 0)
    if max(int(nj.max()), int(ni.max())) > MAX_SPAN:
        raise ValueError("pixel quadrilaterals span more than "
                         f"{MAX_SPAN} output pixels: not a smooth map")
    count = nj * ni
    k = np.repeat(np.arange(ys.size), count)
    local = np.arange(k.size) - np.repeat(np.cumsum(count) - count, count)
    out_y = jmin[k] + local // ni[k]
    out_x = imin[k] + local % ni[k]
    area = overlap_area(out_x - 0.5, out_y - 0.5, qx[k], qy[k])
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = area / jaco[k]
    keep = fraction > 0
    return k[keep], out_y[keep], out_x[keep], fraction[keep]


def turbo_contributions(pixmap: np.ndarray, ys: np.ndarray, xs: np.ndarray, *,
                        pixfrac: float, pscale_ratio: float, out_shape: tuple[int, int]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where the turbo kernel puts input pixels ``(ys, xs)`` and with which fraction.

    drizzle's ``do_kernel_turbo``: the pixel's mapped centre ``(x, y)`` carries an
    axis-aligned box of half-side ``pixfrac / pscale_ratio / 2`` (``pscale_ratio`` is a
    float32 in drizzle's parameters); output pixel ``(i, j)`` (spanning ``i +- 0.5``,
    ``j +- 0.5``) receives the box's overlap with it times ``(pscale_ratio / pixfrac)**2``.

    Parameters
    ----------
    pixmap : ndarray, shape ``(ny, nx, 2)``
        The chip's map onto the output grid, finite at ``(ys, xs)``.
    ys, xs : ndarray of int
        Input pixels.
    pixfrac, pscale_ratio : float
        drizzle's ``pixfrac`` and ``pixel_scale_ratio`` (as given to ``add_image``).
    out_shape : tuple of int
        ``(ny, nx)`` of the output grid (contributions outside it are dropped).

    Returns
    -------
    k, out_y, out_x, fraction
        As `square_contributions`.

    Raises
    ------
    ValueError
        The map is not finite at a pixel, or a box spans more than `MAX_SPAN` output pixels.
    """
    ys = np.asarray(ys, np.int64)
    xs = np.asarray(xs, np.int64)
    empty = np.zeros(0, np.int64)
    if ys.size == 0:
        return empty, empty, empty, np.zeros(0)
    centre = pixmap[ys, xs]
    cx, cy = centre[:, 0].astype(np.float64), centre[:, 1].astype(np.float64)
    if not (np.isfinite(cx).all() and np.isfinite(cy).all()):
        raise ValueError("pixel map not finite at pixels to drizzle sparsely")
    ratio = float(np.float32(pscale_ratio))
    pfo = float(pixfrac) / ratio / 2.0
    scale = (1.0 / (float(pixfrac) * float(pixfrac))) * ratio * ratio
    xlo, xhi, ylo, yhi = cx - pfo, cx + pfo, cy - pfo, cy + pfo
    oy, ox = out_shape
    imin = np.maximum(_fortran_round(xlo), 0)
    imax = np.minimum(_fortran_round(xhi), ox - 1)
    jmin = np.maximum(_fortran_round(ylo), 0)
    jmax = np.minimum(_fortran_round(yhi), oy - 1)
    nj = np.maximum(jmax - jmin + 1, 0)
    ni = np.maximum(imax - imin + 1, 0)
    if max(int(nj.max()), int(ni.max())) > MAX_SPAN:
        raise ValueError(f"turbo boxes span more than {MAX_SPAN} output pixels")
    count = nj * ni
    k = np.repeat(np.arange(ys.size), count)
    local = np.arange(k.size) - np.repeat(np.cumsum(count) - count, count)
    out_y = jmin[k] + local // ni[k]
    out_x = imin[k] + local % ni[k]
    dx = np.minimum(xhi[k], out_x + 0.5) - np.maximum(xlo[k], out_x - 0.5)
    dy = np.minimum(yhi[k], out_y + 0.5) - np.maximum(ylo[k], out_y - 0.5)
    keep = (dx > 0.0) & (dy > 0.0)
    fraction = (dx * dy)[keep] * scale
    return k[keep], out_y[keep], out_x[keep], fraction
