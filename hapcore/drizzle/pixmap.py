"""Pixel maps from input chips to the output grid (the drizzle kernel's only geometry input).

The kernel of `drizzle` takes a precomputed map ``pixmap[j, i] = (x_out, y_out)`` of input pixel
``(i, j)`` instead of calling the WCS itself. The exact map costs ~0.4 us per pixel through
wcslib + SIP + lookup tables, more than the square kernel, so it is computed once per chip on a
coarse node grid (every ``step`` pixels, the last row/column always included so the chip edges are
nodes) and filled in by bicubic spline interpolation. The SIP is smooth at that scale: the
interpolated map agrees with the exact one to far better than 0.01 px.

Nodes where the WCS is undefined (NaN) are filled from their nearest valid neighbour before the
spline is built, so they cannot poison it, and every pixel whose spline support touches such a
node is recomputed exactly (giving NaN where the map really is undefined).

Lookup tables (D2IM ``D2IMARR``, NPOL ``WCSDVARR``) are not smooth at the node scale: astropy
interpolates them bilinearly on their own grid (64 px, with kinks at every table node), and the
ACS/WFC D2IM holds one value per column. The nodes therefore carry the map without the tables,
and the tables' offsets are added per pixel: evaluated exactly as astropy does (bilinear, clamped
at the table edges, as tensor products over rows and columns) and carried to the grid through
the Jacobian of the focal-plane-to-grid map. What this neglects -- the tables evaluated at the
raw instead of the D2IM-corrected pixel, and the SIP's slope times the D2IM offset -- is below
0.004 px for ACS/WFC (chip corners) and 0.001 px for WFC3/UVIS.

`PixmapCache` keeps maps per (file, extver, grid, step), in memory and optionally as ``.npy`` files
in a scratch folder that worker processes memory-map, so one map serves every drizzle and blot of
a visit.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from hapcore.atomic import atomic_output
from hapcore.drizzle.spline_basis import cubic_spline_basis

__all__ = [
    "exact_pixmap",
    "interpolated_pixmap",
    "pixmap_nodes",
    "PixmapCache",
]

log = logging.getLogger(f"hapsvm.{__name__}")


def _chip_shape(chip_wcs: WCS, shape: tuple[int, int] | None) -> tuple[int, int]:
    if shape is not None:
        return int(shape[0]), int(shape[1])
    if chip_wcs.pixel_shape is None:
        raise ValueError("chip WCS has no pixel_shape; pass shape=(ny, nx)")
    nx, ny = chip_wcs.pixel_shape
    return int(ny), int(nx)


_TABLES = ("det2im1", "det2im2", "cpdis1", "cpdis2")


def _split_tables(chip_wcs: WCS):
    """``(WCS without lookup tables, {attribute: table})``; ``(chip_wcs, {})`` without tables."""
    tables = {name: getattr(chip_wcs, name) for name in _TABLES
              if getattr(chip_wcs, name) is not None}
    if not tables:
        return chip_wcs, {}
    smooth = chip_wcs.deepcopy()
    for name in tables:
        setattr(smooth, name, None)
    return smooth, tables


class _LookupTable:
    """A lookup table on a chip's pixel grid, evaluated as astropy's ``distortion.c`` does.

    astropy maps 1-based image coordinate ``p`` to table coordinate ``(p - CRVAL) / CDELT + CRPIX
    - 1`` (0-based), clamps it to the table and interpolates bilinearly: a tensor product of a
    per-column and a per-row linear interpolation. The table is interpolated along x once
    (``along_x``, one row per table row); an image row is then a weighted sum of two of them.
    """

    def __init__(self, table, axis: int, nx: int, ny: int):
        self.axis = axis
        data = np.asarray(table.data, dtype=np.float64)
        n2, n1 = data.shape
        px = self._coordinates(np.arange(nx, dtype=np.float64), table, 0, n1)
        self.position = self._coordinates(np.arange(ny, dtype=np.float64), table, 1, n2)
        self.along_x = np.array([np.interp(px, np.arange(n1), row) for row in data])
        self.lower = np.minimum(np.floor(self.position).astype(np.intp), max(n2 - 2, 0))
        self.n_rows = n2

    @staticmethod
    def _coordinates(pixels, table, axis, n):
        position = (pixels + 1.0 - table.crval[axis]) / table.cdelt[axis] + table.crpix[axis] - 1.0
        return np.clip(position, 0.0, n - 1)

    def segment_keys(self) -> np.ndarray:
        """Per image row: changes wherever the row weights stop being linear in the row."""
        clamp = np.where(self.position <= 0.0, 0, np.where(self.position >= self.n_rows - 1, 2, 1))
        return self.lower * 3 + clamp

    def row(self, j: int) -> np.ndarray:
        """Offsets (pixels) of image row ``j``."""
        lower = self.lower[j]
        upper = min(lower + 1, self.n_rows - 1)
        weight = self.position[j] - lower
        return (1.0 - weight) * self.along_x[lower] + weight * self.along_x[upper]


def _focal_to_grid_jacobian(chip_wcs: WCS, grid_wcs: WCS, *, step: float = 8.0) -> np.ndarray:
    """d(grid x, y) / d(focal x, y) at CRPIX: constant over a chip to ~1e-6 (both are tangent
    projections), so one matrix carries table offsets to the grid."""
    x0, y0 = chip_wcs.wcs.crpix - 1.0
    fx = np.array([x0 + step, x0 - step, x0, x0])
    fy = np.array([y0, y0, y0 + step, y0 - step])
    # focal-plane coordinates go through the linear WCS and the projection only
    ra, dec = chip_wcs.wcs_pix2world(fx, fy, 0)
    if grid_wcs.has_distortion:
        gx, gy = grid_wcs.all_world2pix(ra, dec, 0, quiet=True)
    else:
        gx, gy = grid_wcs.wcs_world2pix(ra, dec, 0)
    return np.array([[gx[0] - gx[1], gx[2] - gx[3]],
                     [gy[0] - gy[1], gy[2] - gy[3]]]) / (2.0 * step)


def _add_table_offsets(pixmap: np.ndarray, chip_wcs: WCS, grid_wcs: WCS, tables: dict) -> None:
    """Add the lookup tables' offsets, carried to the grid, to a map built without them.

    Between the rows where some table's interpolation cell (or edge clamp) changes, every
    table's row weight is linear in the row, so the summed grid offset is ``v(a) + (j - a) *
    (v(a + 1) - v(a))``: two exact rows per segment and one pass over the map.
    """
    ny, nx = pixmap.shape[:2]
    jac = _focal_to_grid_jacobian(chip_wcs, grid_wcs)
    luts = [_LookupTable(table, int(name[-1]) - 1, nx, ny) for name, table in tables.items()]

    def grid_offsets(j: int) -> np.ndarray:
        total = np.zeros((nx, 2))
        for lut in luts:
            total += lut.row(j)[:, None] * jac[:, lut.axis][None, :]
        return total

    keys = np.stack([lut.segment_keys() for lut in luts])
    breaks = np.r_[0, np.flatnonzero(np.any(keys[:, 1:] != keys[:, :-1], axis=0)) + 1, ny]
    for a, b in zip(breaks[:-1], breaks[1:]):
        first = grid_offsets(a)
        if b - a == 1:
            pixmap[a] += first
            continue
        slope = grid_offsets(a + 1) - first
        steps = np.arange(b - a, dtype=np.float64)[:, None, None]
        pixmap[a:b] += first[None] + steps * slope[None]


def _map_points(chip_wcs: WCS, grid_wcs: WCS, x: np.ndarray, y: np.ndarray):
    """Exact map of chip pixels (0-based) to grid pixels (0-based); NaN where undefined."""
    with np.errstate(invalid="ignore"):
        ra, dec = chip_wcs.all_pix2world(x, y, 0)
        if grid_wcs.has_distortion:
            gx, gy = grid_wcs.all_world2pix(ra, dec, 0, quiet=True)
        else:
            gx, gy = grid_wcs.wcs_world2pix(ra, dec, 0)
    return np.asarray(gx, float), np.asarray(gy, float)


def exact_pixmap(chip_wcs: WCS, grid_wcs: WCS, *, shape: tuple[int, int] | None = None,
                 rows_per_block: int = 256) -> np.ndarray:
    """The exact per-pixel map of a chip onto the grid, computed in row blocks.

    Parameters
    ----------
    chip_wcs : `~astropy.wcs.WCS`
        Full WCS of the input chip.
    grid_wcs : `~astropy.wcs.WCS`
        Output grid WCS.
    shape : tuple of int, optional
        ``(ny, nx)`` of the chip (default: from ``chip_wcs.pixel_shape``).
    rows_per_block : int, optional
        Rows transformed per call (bounds temporary memory).

    Returns
    -------
    pixmap : `~numpy.ndarray` of shape ``(ny, nx, 2)``, float64
        ``pixmap[j, i] = (x, y)`` on the grid, 0-based; NaN where the WCS is undefined.
    """
    ny, nx = _chip_shape(chip_wcs, shape)
    pixmap = np.empty((ny, nx, 2), dtype=np.float64)
    xs = np.arange(nx, dtype=np.float64)
    for start in range(0, ny, rows_per_block):
        stop = min(ny, start + rows_per_block)
        y, x = np.meshgrid(np.arange(start, stop, dtype=np.float64), xs, indexing="ij")
        gx, gy = _map_points(chip_wcs, grid_wcs, x.ravel(), y.ravel())
        pixmap[start:stop, :, 0] = gx.reshape(y.shape)
        pixmap[start:stop, :, 1] = gy.reshape(y.shape)
    return pixmap


def _node_positions(n: int, step: int) -> np.ndarray:
    # At least 4 nodes per axis (cubic spline); the last pixel is always a node.
    step = max(1, min(step, (n - 1) // 3 if n > 3 else 1))
    return np.unique(np.r_[np.arange(0, n, step), n - 1]).astype(np.float64)


def pixmap_nodes(chip_wcs: WCS, grid_wcs: WCS, *, shape: tuple[int, int] | None = None,
                 step: int = 64):
    """Exact map on the coarse node grid: ``(y_nodes, x_nodes, gx, gy)``."""
    ny, nx = _chip_shape(chip_wcs, shape)
    x_nodes, y_nodes = _node_positions(nx, step), _node_positions(ny, step)
    yy, xx = np.meshgrid(y_nodes, x_nodes, indexing="ij")
    gx, gy = _map_points(chip_wcs, grid_wcs, xx.ravel(), yy.ravel())
    return y_nodes, x_nodes, gx.reshape(yy.shape), gy.reshape(yy.shape)


def interpolated_pixmap(chip_wcs: WCS, grid_wcs: WCS, *, shape: tuple[int, int] | None = None,
                        step: int = 64) -> np.ndarray:
    """Pixel map from exact values on a coarse grid and bicubic spline interpolation.

    Parameters
    ----------
    chip_wcs, grid_wcs, shape
        As for `exact_pixmap`.
    step : int, optional
        Node spacing in chip pixels (the last row and column are always nodes).

    Returns
    -------
    pixmap : `~numpy.ndarray` of shape ``(ny, nx, 2)``, float64, C-contiguous

    Notes
    -----
    Where nodes are undefined (NaN), the spline is built on values filled from the nearest
    valid node and every pixel within two node cells of an undefined node is recomputed with
    `exact_pixmap`'s per-pixel transform; if more than half of the nodes are undefined the whole
    map is computed exactly. Lookup tables (D2IM, NPOL) are left out of the nodes and added per
    pixel (see the module notes).
    """
    ny, nx = _chip_shape(chip_wcs, shape)
    smooth_wcs, tables = _split_tables(chip_wcs)
    y_nodes, x_nodes, gx, gy = pixmap_nodes(smooth_wcs, grid_wcs, shape=(ny, nx), step=step)
    invalid = ~(np.isfinite(gx) & np.isfinite(gy))
    if invalid.all() or invalid.mean() > 0.5 or min(len(x_nodes), len(y_nodes)) < 4:
        if invalid.any():
            log.debug("pixmap: %.0f%% of nodes undefined; computing the exact map",
                      100 * invalid.mean())
        return exact_pixmap(chip_wcs, grid_wcs, shape=(ny, nx))
    if invalid.any():
        _, (iy, ix) = ndimage.distance_transform_edt(invalid, return_indices=True)
        gx, gy = gx[iy, ix], gy[iy, ix]
    pixmap = np.empty((ny, nx, 2), dtype=np.float64)
    y_all = np.arange(ny, dtype=np.float64)
    x_all = np.arange(nx, dtype=np.float64)
    # The tensor-product interpolating cubic spline is linear in the node values:
    # map = By @ nodes @ Bx.T with By, Bx the splines through unit vectors (not-a-knot ends,
    # as RectBivariateSpline with s=0). Two BLAS products replace 2 x ny x nx spline calls.
    basis_y = cubic_spline_basis(y_nodes, y_all)
    basis_x = cubic_spline_basis(x_nodes, x_all)
    # both axes in one product written straight into the map (x and y interleaved as the
    # map's last axis): no map-sized temporaries, half the time of one product per axis
    inner = np.empty((len(y_nodes), nx, 2))
    for axis, values in enumerate((gx, gy)):
        inner[:, :, axis] = values @ basis_x.T
    np.matmul(basis_y, inner.reshape(len(y_nodes), 2 * nx), out=pixmap.reshape(ny, 2 * nx))
    if tables:
        _add_table_offsets(pixmap, chip_wcs, grid_wcs, tables)
    if invalid.any():
        # A cubic spline's value depends on nodes up to two cells away: recompute exactly every
        # pixel of a cell with a corner near an undefined node.
        near = ndimage.binary_dilation(invalid, iterations=2)
        cell = near[:-1, :-1] | near[1:, :-1] | near[:-1, 1:] | near[1:, 1:]
        cy = np.clip(np.searchsorted(y_nodes, y_all, side="right") - 1, 0, cell.shape[0] - 1)
        cx = np.clip(np.searchsorted(x_nodes, x_all, side="right") - 1, 0, cell.shape[1] - 1)
        suspect = cell[np.ix_(cy, cx)]
        jj, ii = np.nonzero(suspect)
        ex, ey = _map_points(chip_wcs, grid_wcs, ii.astype(float), jj.astype(float))
        pixmap[jj, ii, 0] = ex
        pixmap[jj, ii, 1] = ey
        log.debug("pixmap: %d undefined nodes; %d pixels recomputed exactly",
                  int(invalid.sum()), int(jj.size))
    return pixmap


class PixmapCache:
    """Pixel maps keyed by (file, extver, grid, step), computed once and reused.

    Parameters
    ----------
    directory : path-like, optional
        Scratch folder for ``.npy`` copies; maps found there are memory-mapped read-only, so
        worker processes constructed with the same folder share them. None = memory only.
    step : int, optional
        Node spacing of `interpolated_pixmap`.
    max_memory_bytes : int, optional
        Bound on the maps held in memory (least recently used are dropped; memory-mapped files
        cost only page cache).

    Examples
    --------
    >>> cache = PixmapCache(scratch)                                  # doctest: +SKIP
    >>> pixmap = cache.get(path, 1, grid, chip_wcs=wcs)               # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, step: int = 64,
                 max_memory_bytes: int = 512 * 2**20):
        self.directory = Path(directory) if directory is not None else None
        self.step = int(step)
        self.max_memory_bytes = int(max_memory_bytes)
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __getstate__(self):
        # Worker processes get the folder and settings, never the arrays.
        return {"directory": self.directory, "step": self.step,
                "max_memory_bytes": self.max_memory_bytes}

    def __setstate__(self, state):
        self.__init__(state["directory"], step=state["step"],
                      max_memory_bytes=state["max_memory_bytes"])

    def key(self, path: str | os.PathLike, extver: int, grid) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        text = f"{path}|{stat.st_mtime_ns}|{stat.st_size}|{extver}|{grid.fingerprint}|{self.step}"
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def _remember(self, key: str, pixmap: np.ndarray) -> None:
        if isinstance(pixmap, np.memmap):
            return
        self._memory[key] = pixmap
        self._memory.move_to_end(key)
        while (sum(a.nbytes for a in self._memory.values()) > self.max_memory_bytes
               and len(self._memory) > 1):
            self._memory.popitem(last=False)

    def get(self, path: str | os.PathLike, extver: int, grid, *, chip_wcs: WCS | None = None,
            shape: tuple[int, int] | None = None) -> np.ndarray:
        """The map of ``path[SCI, extver]`` onto ``grid`` (computed on first use).

        ``chip_wcs`` avoids re-reading the header when the caller has it already.
        """
        key = self.key(path, extver, grid)
        if key in self._memory:
            self.hits += 1
            self._memory.move_to_end(key)
            return self._memory[key]
        file = self.directory / f"pixmap-{key}.npy" if self.directory is not None else None
        if file is not None and file.exists():
            self.hits += 1
            return np.load(file, mmap_mode="r")
        self.misses += 1
        if chip_wcs is None:
            from hapcore.wcs.files import read_chip_wcs
            chip_wcs = read_chip_wcs(path)[extver]
        pixmap = interpolated_pixmap(chip_wcs, grid.wcs, shape=shape, step=self.step)
        if file is not None:
            with atomic_output(file) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, pixmap)
        self._remember(key, pixmap)
        return pixmap
