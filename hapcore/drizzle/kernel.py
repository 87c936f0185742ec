"""Drizzling chips onto the grid and blotting back: thin wrappers of `drizzle.resample`.

Each chip is drizzled into its own *partial* accumulation (``sci``, ``wht``). Partials
combine exactly into the product: drizzle's output is the weighted mean of its inputs, so
``sci = sum(sci_i * wht_i) / sum(wht_i)`` and ``wht = sum(wht_i)``
(`hapcore.drizzle.ragged.combine_exposures`). This lets chips run in separate processes and
lets one drizzle serve several products. The context image has one bit per exposure.
"""

from __future__ import annotations

import logging
import mmap

import numpy as np
from drizzle.resample import Drizzle, blot_image

__all__ = ["blot_chip", "drizzle_chip", "lazy_zeros", "new_accumulator"]

log = logging.getLogger(f"hapsvm.{__name__}")


def lazy_zeros(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A zero array in fresh private anonymous pages: memory only where written.

    The accumulators of a chip's drizzle are grid-sized (~113 MB each for full-frame UVIS)
    but a chip writes only its footprint. ``np.zeros`` gives that only when the allocator maps
    fresh pages; in a worker, whose large blocks come from the heap
    (`hapcore.drizzle.jobs.run_captured`), a reused block is cleared in full, so every page
    would be memory. The pages are private (counted as the process's anonymous memory) and
    returned when the array is collected.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


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
