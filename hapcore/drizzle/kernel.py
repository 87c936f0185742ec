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

log = logging.getLogger(f"hapsvm.{__name__}")


def new_accumulator(shape: tuple[int, int], *, kernel: str = "square",
                    out_img: np.ndarray | None = None,
                    out_wht: np.ndarray | None = None) -> Drizzle:
    """An empty drizzle accumulation on a grid of ``shape`` (no context: built per exposure).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the output.
    kernel : str, optional
        Drizzle kernel.
    out_img, out_wht : ndarray, optional
        All-zero float32 arrays of ``shape`` to accumulate into, both or neither (e.g.
        ``np.zeros``, or a fresh ``.npy`` memory map, so that only the pages drizzled onto
        become memory). Default: drizzle's own, whose NaN-filled science image touches every
        pixel. Pixels without weight then hold 0 instead of NaN; drizzled pixels are the same.
    """
    if (out_img is None) != (out_wht is None):
        raise ValueError("new_accumulator: give both out_img and out_wht, or neither")
    if out_img is None:
        return Drizzle(kernel=kernel, fillval=None, out_shape=shape, disable_ctx=True)
    # exptime: drizzle checks given arrays for earlier weight (np.sum over all of out_wht,
    # which would touch every page) only when it is 0; only its informational total
    # (`Drizzle.total_exptime`) sees this value.
    return Drizzle(kernel=kernel, fillval=None, out_img=out_img, out_wht=out_wht,
                   disable_ctx=True, exptime=_UNCHECKED_EXPTIME)


#: Start value of `Drizzle.total_exptime` for given output arrays (see `new_accumulator`).
_UNCHECKED_EXPTIME = 1e-300


def drizzle_chip(accumulator: Drizzle, data: np.ndarray, pixmap: np.ndarray, *,
                 weight: np.ndarray, exptime: float, pixfrac: float = 1.0,
                 iscale: float = 1.0, pixel_scale_ratio: float = 1.0) -> tuple[int, int]:
    """Add one chip (count rates) to ``accumulator``; returns drizzle's ``(nskip, nmiss)``.

    ``weight`` is the per-pixel weight (0 = masked), ``iscale`` the flux scale
    ``(output scale / input reference scale)**2``.
    """
    pixmap = np.ascontiguousarray(pixmap, dtype=np.float64)
    bad_map = _unmapped(pixmap)
    weight = np.asarray(weight, np.float32)
    if bad_map is not None:
        # Unmapped pixels: zero weight and a harmless position (drizzle skips weight-0 pixels).
        pixmap = pixmap.copy()
        pixmap[bad_map] = -1e6
        weight = np.where(bad_map, 0.0, weight).astype(np.float32)
    return accumulator.add_image(np.asarray(data, np.float32), exptime=exptime, pixmap=pixmap,
                                 weight_map=weight, pixfrac=pixfrac, in_units="cps",
                                 iscale=iscale, pixel_scale_ratio=pixel_scale_ratio)


def _unmapped(pixmap: np.ndarray) -> np.ndarray | None:
    """Mask of pixels whose map is not finite, or None when every pixel is mapped.

    A map is almost always finite everywhere; one sum (finite iff every term is: coordinates
    cannot overflow) tells that in a few ms, where ``isfinite(...).all(axis=2)`` over a UVIS
    chip costs ~0.1 s per call.
    """
    if np.isfinite(np.sum(pixmap)):
        return None
    bad = ~np.isfinite(pixmap[..., 0])
    bad |= ~np.isfinite(pixmap[..., 1])
    return bad


def combine_partials(partials: Sequence[tuple[np.ndarray, np.ndarray]], *,
                     rows_per_block: int = 512, fillval: float = 0.0,
                     boxes: Sequence[tuple[int, int, int, int]] | None = None,
                     shape: tuple[int, int] | None = None):
    """Weighted-mean combination of partial accumulations, streamed in row blocks.

    Parameters
    ----------
    partials : sequence of ``(sci, wht)``
        2-D arrays (memory-mapped is fine, or anything whose ``[a:b]`` row slice gives an
        array), all of the grid's shape, or of their box's shape when ``boxes`` is given.
    fillval : float
        Value of pixels without weight.
    boxes : sequence of ``(y0, y1, x0, x1)``, optional
        Where each partial lies on the grid (it is zero outside); default: the whole grid.
        Only the union of the boxes is computed.
    shape : tuple of int, optional
        ``(ny, nx)`` of the grid; required with ``boxes``.

    Returns
    -------
    sci, wht : ndarray float32
    ctx : ndarray int32, shape ``(ny, nx)`` or ``(nplanes, ny, nx)`` for > 32 partials

    Notes
    -----
    Sums run in float64 in partial order, exactly as over the whole grid: the pixels a box
    leaves out would only add zeros. A single partial is its own mean (``s * w / w == s`` in
    float64 for float32 ``s``, ``w``), so it is copied without the arithmetic.
    """
    if boxes is None:
        shape = tuple(partials[0][0].shape)
        boxes = [(0, shape[0], 0, shape[1])] * len(partials)
    elif shape is None:
        raise ValueError("combine_partials: 'shape' is required with 'boxes'")
    ny, nx = (int(v) for v in shape)
    boxes = [tuple(int(v) for v in b) for b in boxes]
    nplanes = (len(partials) - 1) // 32 + 1
    # zeros are lazily allocated pages: the uncovered part of the grid costs nothing here
    sci = np.zeros((ny, nx), np.float32) if fillval == 0 else np.full((ny, nx), fillval,
                                                                       np.float32)
    wht = np.zeros((ny, nx), np.float32)
    ctx = np.zeros((nplanes, ny, nx), np.int32)
    bits = ctx.view(np.uint32)  # bit 31 without signed-overflow arithmetic
    live = [(k, b) for k, b in enumerate(boxes) if b[1] > b[0] and b[3] > b[2]]
    if live:
        uy0 = min(b[0] for _, b in live)
        uy1 = max(b[1] for _, b in live)
        ux0 = min(b[2] for _, b in live)
        ux1 = max(b[3] for _, b in live)
        for start in range(uy0, uy1, rows_per_block):
            stop = min(uy1, start + rows_per_block)
            if len(partials) == 1:
                _copy_single(partials[0], boxes[0], start, stop, sci, wht, bits[0], fillval)
                continue
            num = np.zeros((stop - start, ux1 - ux0), np.float64)
            den = np.zeros((stop - start, ux1 - ux0), np.float64)
            for k, (y0, y1, x0, x1) in live:
                a, b = max(start, y0), min(stop, y1)
                if b <= a:
                    continue
                psci, pwht = partials[k]
                w = np.asarray(pwht[a - y0:b - y0], np.float64)
                s = np.asarray(psci[a - y0:b - y0])
                covered = w > 0
                rows, cols = slice(a - start, b - start), slice(x0 - ux0, x1 - ux0)
                num[rows, cols] += np.where(covered, s * w, 0.0)
                den[rows, cols] += w
                bits[k // 32, a:b, x0:x1] |= covered.astype(np.uint32) << np.uint32(k % 32)
            with np.errstate(invalid="ignore", divide="ignore"):
                sci[start:stop, ux0:ux1] = np.where(den > 0, num / den, fillval)
            wht[start:stop, ux0:ux1] = den
    return sci, wht, (ctx[0] if nplanes == 1 else ctx)


def _copy_single(partial, box, start, stop, sci, wht, bits, fillval) -> None:
    """Rows ``start:stop`` of a one-partial combination (see `combine_partials`)."""
    y0, y1, x0, x1 = box
    a, b = max(start, y0), min(stop, y1)
    if b <= a:
        return
    psci, pwht = partial
    w = np.asarray(pwht[a - y0:b - y0], np.float32)
    s = np.asarray(psci[a - y0:b - y0], np.float32)
    covered = w > 0
    sci[a:b, x0:x1] = np.where(covered, s, np.float32(fillval))
    wht[a:b, x0:x1] = w
    bits[a:b, x0:x1] = covered


def blot_chip(image: np.ndarray, pixmap: np.ndarray, *, interp: str = "poly5",
              sinscl: float = 1.0, iscale: float = 1.0) -> np.ndarray:
    """Interpolate a grid image back onto a chip through the chip's pixmap (AstroDrizzle blot).

    Pixels whose map is undefined get 0.
    """
    pixmap = np.ascontiguousarray(pixmap, dtype=np.float64)
    bad_map = _unmapped(pixmap)
    if bad_map is not None:
        pixmap = np.where(bad_map[..., None], -1e6, pixmap)
    blotted = blot_image(np.ascontiguousarray(image, np.float32), pixmap, interp=interp,
                         sinscl=sinscl, iscale=iscale, fillval=0.0)
    if bad_map is not None:
        blotted[bad_map] = 0.0
    return blotted
