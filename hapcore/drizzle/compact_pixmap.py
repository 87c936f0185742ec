"""A chip's pixel map held in half the memory: float32 offsets from an affine map.

A WFC3/UVIS chip's float64 map (``4096 x 2051 x 2``) is 134 MB, the largest array of a worker's
cosmic-ray job, where every use of it reads rows or scattered pixels: the blot (by rows,
`hapcore.drizzle.kernel.blot_chip`), the coverage and stale-pixel scans (by rows), the sparse
drizzle of the pixels a mask changes (scattered pixels, `hapcore.drizzle.sparse`).
`CompactPixmap` keeps the map as an affine map fitted to it plus the remainder in float32: the
remainder of a chip (its distortion beyond the affine part) stays within ~100 px, where float32
resolves 8e-6 px, so the map is kept to better than 1e-5 px (0.4 micro-arcsec on UVIS) in 67 MB.

Indexing it (``pixmap[rows]``, ``pixmap[ys, xs]``, ``pixmap[..., 0]``) returns float64 arrays
computed from the stored values by one elementwise formula, so any two reads of a pixel agree
to the last bit, whichever way it is read: a sparse update of a drizzle subtracts exactly what
the whole-chip drizzle added. ``np.asarray(pixmap)`` gives the whole float64 map (the square
kernel of `drizzle` needs it whole: its result changes if the chip is drizzled in strips).
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["CompactPixmap", "as_compact"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Rows converted at a time (no map-sized float64 temporaries).
_ROWS = 256
#: Sampling step of the affine fit, in pixels.
_FIT_STEP = 16


class CompactPixmap:
    """``pixmap[j, i] = (x_out, y_out)`` as ``affine(i, j) + float32 remainder``.

    Parameters
    ----------
    coefficients : ndarray, shape ``(2, 3)``
        ``x_out = c[0, 0] + c[0, 1] * i + c[0, 2] * j`` and the same with ``c[1]`` for ``y_out``.
    remainder : ndarray, shape ``(ny, nx, 2)``, float32
        The map less the affine map (NaN where the map is undefined).
    """

    ndim = 3
    dtype = np.dtype(np.float64)

    def __init__(self, coefficients: np.ndarray, remainder: np.ndarray):
        self.coefficients = np.asarray(coefficients, np.float64).reshape(2, 3)
        self.remainder = remainder
        ny, nx = remainder.shape[:2]
        # pixel indices as zero-stride views: indexed like the map, they cost nothing here
        self._x = np.broadcast_to(np.arange(nx, dtype=np.float64), (ny, nx))
        self._y = np.broadcast_to(np.arange(ny, dtype=np.float64)[:, None], (ny, nx))

    @classmethod
    def from_array(cls, pixmap: np.ndarray, *, rows: int = _ROWS) -> CompactPixmap:
        """The compact form of a float64 map of shape ``(ny, nx, 2)``."""
        ny, nx = pixmap.shape[:2]
        coefficients = _affine_fit(pixmap)
        remainder = np.empty((ny, nx, 2), np.float32)
        compact = cls(coefficients, remainder)
        for start in range(0, ny, rows):
            compact.set_rows(start, pixmap[start:start + rows])
        with np.errstate(invalid="ignore"):
            spread = float(np.nanmax(np.abs(remainder))) if np.isfinite(remainder).any() else 0.0
        log.debug("compact pixmap %d x %d: remainder within %.1f px of the affine map",
                  ny, nx, spread)
        return compact

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.remainder.shape

    @property
    def size(self) -> int:
        return self.remainder.size

    @property
    def nbytes(self) -> int:
        return self.remainder.nbytes

    @property
    def flags(self):
        """The stored remainder's flags (``flags.writeable = False`` makes the map read-only)."""
        return self.remainder.flags

    def __len__(self) -> int:
        return self.remainder.shape[0]

    def _affine(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``(c0 + c1 x) + c2 y`` for both axes at pixels ``(x, y)`` (arrays of one shape),
        shape ``x.shape + (2,)``."""
        c = self.coefficients
        return (c[:, 0] + c[:, 1] * x[..., None]) + c[:, 2] * y[..., None]

    def _affine_grid(self, rows: slice, columns) -> np.ndarray:
        """`_affine` over the rows x columns of two slices (or a slice and an index): the same
        values, from one term per column and one per row."""
        c = self.coefficients
        x = np.arange(self.shape[1], dtype=np.float64)[columns]
        y = np.arange(self.shape[0], dtype=np.float64)[rows]
        along_x = c[:, 0] + c[:, 1] * np.asarray(x)[..., None]
        along_y = c[:, 2] * np.asarray(y)[..., None]
        if np.ndim(x) == 0 or np.ndim(y) == 0:
            return along_x + along_y
        base = np.empty((y.size, x.size, 2))
        for axis in (0, 1):    # one long loop per axis (a broadcast over the pair is slow)
            np.add(along_x[None, :, axis], along_y[:, None, axis], out=base[:, :, axis])
        return base

    def __getitem__(self, key) -> np.ndarray:
        k0, k1, k2 = _three_keys(key)
        if isinstance(k0, slice) and k0.step in (None, 1):
            # many rows: read by strips (the affine part's temporaries stay strip-sized)
            start, stop, _ = k0.indices(self.shape[0])
            if stop - start > _ROWS:
                out = None
                for first in range(start, stop, _ROWS):
                    part = self._read(slice(first, min(first + _ROWS, stop)), k1, k2)
                    if out is None:
                        out = np.empty((stop - start, *part.shape[1:]), part.dtype)
                    out[first - start:first - start + part.shape[0]] = part
                return out
        return self._read(k0, k1, k2)

    def _read(self, k0, k1, k2) -> np.ndarray:
        if isinstance(k0, (slice, int, np.integer)) and isinstance(k1, (slice, int, np.integer)):
            base = self._affine_grid(k0, k1)
        else:
            base = self._affine(self._x[k0, k1], self._y[k0, k1])
        # the same sum for every read of a pixel (see the module notes)
        base += self.remainder[k0, k1]
        return base if isinstance(k2, slice) and k2 == slice(None) else base[..., k2]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        full = self[:, :]
        return full if dtype is None else full.astype(dtype, copy=False)

    def set_rows(self, start: int, rows: np.ndarray) -> None:
        """Store float64 map rows ``start:start + len(rows)``."""
        stop = start + rows.shape[0]
        base = self._affine_grid(slice(start, stop), slice(None))
        np.subtract(rows, base, out=self.remainder[start:stop], casting="same_kind")

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous float64 array ``(stop - start, nx, 2)``."""
        return self[start:stop]


def as_compact(pixmap: np.ndarray | CompactPixmap) -> CompactPixmap:
    """``pixmap`` in compact form (itself if it is already)."""
    return pixmap if isinstance(pixmap, CompactPixmap) else CompactPixmap.from_array(pixmap)


def _affine_fit(pixmap: np.ndarray) -> np.ndarray:
    """Least-squares affine map through every ``_FIT_STEP``-th pixel's finite values."""
    sample = np.asarray(pixmap[::_FIT_STEP, ::_FIT_STEP], np.float64)
    jj, ii = np.mgrid[0:pixmap.shape[0]:_FIT_STEP, 0:pixmap.shape[1]:_FIT_STEP]
    good = np.isfinite(sample).all(axis=-1)
    coefficients = np.zeros((2, 3))
    if np.count_nonzero(good) < 3:
        return coefficients
    design = np.column_stack([np.ones(np.count_nonzero(good)), ii[good], jj[good]])
    for axis in (0, 1):
        coefficients[axis] = np.linalg.lstsq(design, sample[good][:, axis], rcond=None)[0]
    return coefficients


def _three_keys(key) -> tuple:
    """A map index as ``(rows, columns, axis)`` (an ``Ellipsis`` expanded, missing ones ``:``)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(n for n, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (3 - (len(key) - 1)) + key[at + 1:]
    if len(key) > 3:
        raise IndexError(f"too many indices for a pixel map: {len(key)}")
    return key + (slice(None),) * (3 - len(key))
