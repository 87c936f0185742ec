"""Overlap-add convolution of a large image by strips of rows (the values of
:func:`scipy.signal.oaconvolve`, bit for bit, without its whole-image temporaries).

``oaconvolve(data, kernel, mode="same")`` cuts the zero-padded image into blocks of ``step``
rows and columns (the block length depends only on the kernel), transforms every block at once
and adds each block's tail onto the next block's head. On a full-frame UVIS total image the
padded copy, the two spectra and the transformed blocks cost ~830 MB. The output rows of a run
of blocks depend only on those blocks and on the tail of the block before them, so convolving
a strip of rows that starts one block earlier, on the same block grid, gives the same blocks,
the same transforms and the same sums in the same order: identical values, for the memory of
a strip.

* :func:`oaconvolve_same` -- ``oaconvolve(data, kernel, mode="same")`` by strips of rows.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import oaconvolve

__all__ = ["oaconvolve_same"]

#: Rows of image per strip (about; a whole number of oaconvolve blocks).
STRIP_ROWS = 512


def _block_rows(rows: int, kernel_rows: int):
    """(block length, step) of oaconvolve along an axis of ``rows``, None when it does not
    split that axis into blocks."""
    try:
        from scipy.signal._signaltools import _calc_oa_lens
    except ImportError:  # pragma: no cover - a scipy without the private helper
        return None
    block, overlap, step, _ = _calc_oa_lens(rows, kernel_rows)
    if overlap is None or kernel_rows >= rows:
        return None
    return block, step


def oaconvolve_same(data, kernel, *, strip_rows=STRIP_ROWS) -> np.ndarray:
    """``scipy.signal.oaconvolve(data, kernel, mode="same")`` computed by strips of rows.

    Parameters
    ----------
    data, kernel : 2-D ndarray
        Real arrays, ``kernel`` smaller than ``data``.
    strip_rows : int, optional
        Rows per strip (rounded to whole oaconvolve blocks; at least two blocks).

    Returns
    -------
    ndarray
        Equal, value for value, to the whole-image ``oaconvolve`` (same dtype).
    """
    data = np.asarray(data)
    kernel = np.asarray(kernel)
    if data.ndim != 2 or kernel.ndim != 2:
        return oaconvolve(data, kernel, mode="same")
    ny, nx = data.shape
    ky, kx = kernel.shape
    blocks = _block_rows(ny, ky) if kx < nx else None
    if blocks is None:
        return oaconvolve(data, kernel, mode="same")
    block, step = blocks
    # a strip convolves its own blocks plus the block before them: at least two blocks, and
    # more rows than one block (else oaconvolve would use one plain FFT on it)
    per_strip = max(2, strip_rows // step)
    if ny <= 2 * per_strip * step:
        return oaconvolve(data, kernel, mode="same")
    # rows of the "full" convolution that mode "same" returns
    top = (ky - 1) // 2
    left = (kx - 1) // 2
    first, last = top // step, (top + ny - 1) // step
    starts = list(range(first, last + 1, per_strip))
    if len(starts) > 1 and (last + 1 - starts[-1]) * step <= block:
        starts.pop()  # a short last strip joins the one before
    out = None
    for n, k0 in enumerate(starts):
        k1 = starts[n + 1] if n + 1 < len(starts) else last + 1
        in_start = max(k0 - 1, 0) * step
        in_stop = min(k1 * step, ny)
        full = oaconvolve(data[in_start:in_stop], kernel, mode="full")
        if out is None:
            out = np.empty(data.shape, dtype=full.dtype)
        f0, f1 = max(k0 * step, top), min(k1 * step, top + ny)
        out[f0 - top:f1 - top] = full[f0 - in_start:f1 - in_start, left:left + nx]
        del full
    return out
