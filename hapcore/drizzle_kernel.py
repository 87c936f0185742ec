"""Drizzling chips onto the grid and blotting back: thin wrappers of `drizzle.resample`.

Each exposure is drizzled into its own *partial* accumulation (``sci``, ``wht``). Partials
combine exactly into the product: drizzle's output is the weighted mean of its inputs, so
``sci = sum(sci_i * wht_i) / sum(wht_i)`` and ``wht = sum(wht_i)``. This lets exposures run in
separate processes and lets one partial serve several products (filter and total) when their
drizzle settings coincide. The context image has one bit per exposure (``wht_i > 0``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from drizzle.resample import Drizzle, blot_image

__all__ = ["drizzle_chip", "new_accumulator", "combine_partials", "blot_chip"]

log = logging.getLogger("hapsvm")


def new_accumulator(shape: tuple[int, int], *, kernel: str = "square") -> Drizzle:
    """An empty drizzle accumulation on a grid of ``shape`` (no context: built per exposure)."""
    return Drizzle(kernel=kernel, fillval=None, out_shape=shape, disable_ctx=True)


def drizzle_chip(accumulator: Drizzle, data: np.ndarray, pixmap: np.ndarray, *,
                 weight: np.ndarray, exptime: float, pixfrac: float = 1.0,
                 iscale: float = 1.0, pixel_scale_ratio: float = 1.0) -> tuple[int, int]:
    """Add one chip (count rates) to ``accumulator``; returns drizzle's ``(nskip, nmiss)``.

    ``weight`` is the per-pixel weight (0 = masked), ``iscale`` the flux scale
    ``(output scale / input reference scale)**2``.
    """
    pixmap = np.ascontiguousarray(pixmap, dtype=np.float64)
    bad_map = ~np.isfinite(pixmap).all(axis=2)
    weight = np.asarray(weight, np.float32)
    if bad_map.any():
        # Unmapped pixels: zero weight and a harmless position (drizzle skips weight-0 pixels).
        pixmap = pixmap.copy()
        pixmap[bad_map] = -1e6
        weight = np.where(bad_map, 0.0, weight).astype(np.float32)
    return accumulator.add_image(np.asarray(data, np.float32), exptime=exptime, pixmap=pixmap,
                                 weight_map=weight, pixfrac=pixfrac, in_units="cps",
                                 iscale=iscale, pixel_scale_ratio=pixel_scale_ratio)


def combine_partials(partials: Sequence[tuple[np.ndarray, np.ndarray]], *,
                     rows_per_block: int = 512, fillval: float = 0.0):
    """Weighted-mean combination of partial accumulations, streamed in row blocks.

    Parameters
    ----------
    partials : sequence of ``(sci, wht)`` arrays (memory-mapped is fine), same shape
    fillval : float
        Value of pixels without weight.

    Returns
    -------
    sci, wht : ndarray float32
    ctx : ndarray int32, shape ``(ny, nx)`` or ``(nplanes, ny, nx)`` for > 32 partials
    """
    ny, nx = partials[0][0].shape
    nplanes = (len(partials) - 1) // 32 + 1
    sci = np.empty((ny, nx), np.float32)
    wht = np.empty((ny, nx), np.float32)
    ctx = np.zeros((nplanes, ny, nx), np.int32)
    for start in range(0, ny, rows_per_block):
        stop = min(ny, start + rows_per_block)
        num = np.zeros((stop - start, nx), np.float64)
        den = np.zeros((stop - start, nx), np.float64)
        for k, (psci, pwht) in enumerate(partials):
            w = np.asarray(pwht[start:stop], np.float64)
            s = np.asarray(psci[start:stop], np.float64)
            covered = w > 0
            num += np.where(covered, s * w, 0.0)
            den += w
            ctx[k // 32, start:stop] |= (covered.astype(np.int64) << (k % 32)).astype(np.int32)
        with np.errstate(invalid="ignore", divide="ignore"):
            sci[start:stop] = np.where(den > 0, num / den, fillval)
        wht[start:stop] = den
    return sci, wht, (ctx[0] if nplanes == 1 else ctx)


def blot_chip(image: np.ndarray, pixmap: np.ndarray, *, interp: str = "poly5",
              sinscl: float = 1.0, iscale: float = 1.0) -> np.ndarray:
    """Interpolate a grid image back onto a chip through the chip's pixmap (AstroDrizzle blot).

    Pixels whose map is undefined get 0.
    """
    pixmap = np.ascontiguousarray(pixmap, dtype=np.float64)
    bad_map = ~np.isfinite(pixmap).all(axis=2)
    if bad_map.any():
        pixmap = np.where(bad_map[..., None], -1e6, pixmap)
    blotted = blot_image(np.ascontiguousarray(image, np.float32), pixmap, interp=interp,
                         sinscl=sinscl, iscale=iscale, fillval=0.0)
    if bad_map.any():
        blotted[bad_map] = 0.0
    return blotted
