"""Chip partials stored row by row: only the output columns a chip can reach.

A WFC3/UVIS chip drizzled onto a north-up mosaic grid is a rotated rectangle: its bounding box
is about twice its area (an exposure's two chips span 30 M grid pixels for 17 M covered). A
:class:`RowRanges` keeps, for every grid row the chip reaches, one interval of columns: the
chip's footprint (from its pixel map's outline, widened by a margin) -- so every input pixel of
the chip, whatever its weight in one drizzle or another, lands inside it, and partials of the
same chip with other pixel masks share the layout. A :class:`ChipPartial` is a chip's drizzled
science and weight in that layout, as flat float32 arrays (``.npy`` files in the workspace's
scratch, memory-mapped by the processes that read them).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ChipPartial",
    "ExposurePartial",
    "PatchedWeights",
    "RowRanges",
    "accumulate_rows",
    "combine_exposures",
    "coverage_bins",
    "exposure_rows",
    "footprint_ranges",
    "reserve_file",
    "save_flat",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Output columns and rows added around the outline of a chip's pixel centres: the pixels'
#: corners reach half a pixel beyond it, the outline is sampled every pixel.
FOOTPRINT_MARGIN = 3


@dataclass(frozen=True)
class RowRanges:
    """Grid rows ``y0 .. y0 + len(starts) - 1``, row ``y0 + r`` holding columns
    ``starts[r] <= x < stops[r]``; element ``offsets[r] + x - starts[r]`` of a flat array."""

    y0: int
    starts: np.ndarray
    stops: np.ndarray
    offsets: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        lengths = np.maximum(np.asarray(self.stops, np.int64) - self.starts, 0)
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(lengths)]))

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    @property
    def y1(self) -> int:
        return self.y0 + len(self.starts)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` bounding the ranges."""
        if self.size == 0:
            return (self.y0, self.y0, 0, 0)
        used = self.stops > self.starts
        return (self.y0, self.y1, int(self.starts[used].min()), int(self.stops[used].max()))

    def index(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Flat indices of grid pixels ``(rows, cols)``; -1 where outside the ranges."""
        r = np.asarray(rows, np.int64) - self.y0
        inside = (r >= 0) & (r < len(self.starts))
        rc = np.clip(r, 0, max(len(self.starts) - 1, 0))
        cols = np.asarray(cols, np.int64)
        inside &= (cols >= self.starts[rc]) & (cols < self.stops[rc])
        return np.where(inside, self.offsets[rc] + cols - self.starts[rc], -1)

    def pack(self, dense: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """The ranges of a dense array whose element ``[0, 0]`` is grid pixel ``origin``
        (``(y, x)``), as a new flat array."""
        out = np.empty(self.size, dense.dtype)
        oy, ox = origin
        for r, (a, b) in enumerate(zip(self.starts.tolist(), self.stops.tolist())):
            if b > a:
                out[self.offsets[r]:self.offsets[r + 1]] = dense[self.y0 + r - oy, a - ox:b - ox]
        return out

    def rows(self, flat: np.ndarray, start: int, stop: int, width: int, *,
             out: np.ndarray | None = None) -> np.ndarray:
        """Grid rows ``start:stop`` (``width`` columns) of a flat array, zero outside."""
        if out is None:
            out = np.zeros((stop - start, width), flat.dtype)
        a = max(start, self.y0)
        b = min(stop, self.y1)
        for y in range(a, b):
            r = y - self.y0
            lo, hi = int(self.starts[r]), int(self.stops[r])
            if hi > lo:
                out[y - start, lo:hi] = flat[self.offsets[r]:self.offsets[r + 1]]
        return out

    def __getstate__(self):
        return {"y0": self.y0, "starts": self.starts, "stops": self.stops}

    def __setstate__(self, state):
        object.__setattr__(self, "y0", state["y0"])
        object.__setattr__(self, "starts", state["starts"])
        object.__setattr__(self, "stops", state["stops"])
        self.__post_init__()


def footprint_ranges(pixmap: np.ndarray, shape: tuple[int, int], *,
                     margin: int = FOOTPRINT_MARGIN) -> RowRanges:
    """The grid columns, row by row, that a chip's pixels can reach (see the module notes).

    The outline of the map (its edge rows and columns, one point per pixel) bounds the chip's
    pixel centres; a convex region's extent within a row lies on its outline, so each grid row
    takes the outline points within ``margin`` rows of it, widened by ``margin`` columns.
    Non-finite map values are ignored.
    """
    edges = [pixmap[0], pixmap[-1], pixmap[:, 0], pixmap[:, -1]]
    pts = np.concatenate([np.asarray(e, np.float64).reshape(-1, 2) for e in edges])
    pts = pts[np.isfinite(pts).all(axis=1)]
    ny, nx = shape
    if pts.size == 0:
        return RowRanges(0, np.zeros(0, np.int32), np.zeros(0, np.int32))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - margin, 0, ny))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + margin + 1, 0, ny))
    n = max(y1 - y0, 0)
    lo = np.full(n, np.iinfo(np.int64).max, np.int64)
    hi = np.full(n, np.iinfo(np.int64).min, np.int64)
    base = np.floor(pts[:, 1]).astype(np.int64) - y0
    xmin = np.floor(pts[:, 0]).astype(np.int64) - margin
    xmax = np.ceil(pts[:, 0]).astype(np.int64) + margin + 1
    for dy in range(-margin, margin + 2):
        r = base + dy
        ok = (r >= 0) & (r < n)
        np.minimum.at(lo, r[ok], xmin[ok])
        np.maximum.at(hi, r[ok], xmax[ok])
    missing = lo > hi
    if missing.any():
        # a row between outline samples (a map steeper than one row per pixel): the extent of
        # its neighbours, which bound it for a convex footprint
        idx = np.flatnonzero(~missing)
        fill = np.interp(np.arange(n), idx, idx).round().astype(np.int64)
        lo = np.where(missing, lo[fill], lo)
        hi = np.where(missing, hi[fill], hi)
    starts = np.clip(lo, 0, nx).astype(np.int32)
    stops = np.clip(hi, 0, nx).astype(np.int32)
    return RowRanges(y0, starts, np.maximum(stops, starts))


def reserve_file(path: Path, nbytes: int) -> None:
    """Allocate a file's blocks now: on a full file system (or tmpfs) this is an ``OSError``
    (ENOSPC) that the entry point reports in one line, not a SIGBUS when a page of a memory map
    is first written."""
    if nbytes <= 0:
        return
    with open(path, "r+b") as fh:
        os.posix_fallocate(fh.fileno(), 0, int(nbytes))


def save_flat(path: Path, array: np.ndarray) -> Path:
    """Save a flat array as ``.npy`` (blocks reserved first, see `reserve_file`)."""
    path = Path(path)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    reserve_file(path, out.offset + array.nbytes)
    out[...] = array
    del out
    return path


@dataclass
class ChipPartial:
    """One chip drizzled onto the grid: flat ``sci``/``wht`` over ``ranges``.

    ``sci_file``/``wht_file`` hold the arrays (``.npy``); `load` maps them, unless
    ``arrays`` holds them in memory (a partial derived for one product in a worker).
    ``iscale`` is the flux scale the chip was drizzled with (a sky change shifts its data by
    ``sky x iscale``), ``masks`` the names of the masks its weights excluded besides DQ.
    ``sci`` is 0 wherever ``wht`` is (readers copy rows as they are). ``taint_file`` (``.npy``,
    optional) holds the flat indices (sorted) of the pixels that input pixels left out by a
    mask reached: their values lean on the remaining, partly covering input pixels
    (`combine_exposures` prefers other exposures there).
    """

    exposure: str
    extver: int
    ranges: RowRanges
    sci_file: Path | None
    wht_file: Path | None
    iscale: float
    sky: float
    masks: list = field(default_factory=list)
    arrays: tuple | None = field(default=None, repr=False)
    taint_file: Path | None = None

    def load(self, mode: str = "r") -> tuple[np.ndarray, np.ndarray]:
        """``(sci, wht)``: the in-memory arrays, else the files memory-mapped (``mode`` 'r'
        or 'r+')."""
        if self.arrays is not None:
            return self.arrays
        return (np.load(self.sci_file, mmap_mode=mode), np.load(self.wht_file, mmap_mode=mode))

    def remove(self) -> None:
        """Delete the files (scratch no longer needed)."""
        for file in (self.sci_file, self.wht_file, self.taint_file):
            if file is not None:
                Path(file).unlink(missing_ok=True)

    def __getstate__(self):
        # a partial crosses processes by its files, never its arrays
        state = dict(self.__dict__)
        state["arrays"] = None
        return state


@dataclass
class ExposurePartial:
    """An exposure drizzled onto the grid: one `ChipPartial` per chip drizzled.

    ``skipped`` lists the chips left out (empty, every pixel flagged, off the grid).
    """

    exposure: str
    chips: list
    skipped: list = field(default_factory=list)

    @classmethod
    def from_parts(cls, exposure: str, chips, skipped=()) -> ExposurePartial:
        """An exposure's partial from chips made by several jobs (any order, EXTVER order
        kept) and the chips they skipped."""
        return cls(exposure, sorted(chips, key=lambda chip: chip.extver), sorted(set(skipped)))

    @property
    def used(self) -> list[int]:
        return [c.extver for c in self.chips]

    @property
    def masks(self) -> dict[str, list[str]]:
        """``{str(extver): [mask names]}`` as the product's drizzle history records them."""
        return {str(c.extver): list(c.masks) for c in self.chips}

    @property
    def rows(self) -> tuple[int, int]:
        """Grid rows ``(y0, y1)`` holding every chip."""
        live = [c.ranges for c in self.chips if c.ranges.size]
        if not live:
            return (0, 0)
        return (min(r.y0 for r in live), max(r.y1 for r in live))

    def remove(self) -> None:
        for chip in self.chips:
            chip.remove()


class _PatchedFlat:
    """A flat array (memory-mapped) with the values at sorted flat indices replaced, read by
    slices (``[a:b]``, ``[a:b:step]``) as `exposure_rows` and the medians read partials."""

    def __init__(self, base: np.ndarray, index: np.ndarray, values: np.ndarray):
        self.base, self.index, self.values = base, index, values
        self.shape, self.dtype = base.shape, base.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, step = key.indices(self.shape[0])
        if step <= 0:
            raise IndexError("a patched flat array is read by forward slices")
        out = np.array(self.base[start:stop:step])
        lo, hi = np.searchsorted(self.index, [start, stop])
        index, values = self.index[lo:hi] - start, self.values[lo:hi]
        if step != 1:
            on = index % step == 0
            index, values = index[on], values[on]
        out[index // step] = values
        return out


@dataclass
class PatchedWeights(ChipPartial):
    """The weights a chip partial's files held before a derivation changed them in place:
    its ``wht_file`` with the values at the flat indices of ``index_file`` replaced by
    ``value_file``'s (`hapcore.drizzle.chip_partials.derive_chip_partial`'s ``old_weights``).

    The first cosmic-ray pass keeps its separate drizzles' weights this way for the second
    pass's median: the cosmic rays change ~1 grid pixel in 20 of a chip's footprint, so the
    two files hold ~1/8 of the bytes of a copy of the weights (full-frame UVIS: 4 MB per
    chip). `load` gives ``(weights now, weights before)``, the second read by slices (readers
    of validity use only it); `remove` deletes only the patch (the weights are the
    partial's).
    """

    index_file: Path | None = None
    value_file: Path | None = None

    def load(self, mode: str = "r"):
        if mode != "r":
            raise ValueError("patched weights are read-only")
        base = np.load(self.wht_file, mmap_mode="r")
        if self.index_file is None:
            return base, base
        wht = _PatchedFlat(base, np.load(self.index_file, mmap_mode="r"),
                           np.load(self.value_file, mmap_mode="r"))
        # the science slot (meaningless for weights) unpatched: half the per-row work of
        # `exposure_rows` in the second pass's median
        return base, wht

    def remove(self) -> None:
        for file in (self.index_file, self.value_file):
            if file is not None:
                Path(file).unlink(missing_ok=True)


def _chip_arrays(chip: ChipPartial, loaded: dict | None):
    if loaded is not None and id(chip) in loaded:
        return loaded[id(chip)]
    # plain views of the maps: slicing a memmap costs ~5 us in Python overhead, per row
    arrays = tuple(a if isinstance(a, _PatchedFlat) else np.asarray(a) for a in chip.load())
    if loaded is not None:
        loaded[id(chip)] = arrays
    return arrays


def _row_slices(ranges: RowRanges, a: int, b: int) -> list[tuple[int, int, int, int, int]]:
    """``(grid row, x0, x1, flat start, flat stop)`` of the non-empty rows ``a:b``."""
    r = np.arange(a - ranges.y0, b - ranges.y0)
    x0, x1 = ranges.starts[r], ranges.stops[r]
    keep = x1 > x0
    rows = (r + ranges.y0)[keep]
    return list(zip(rows.tolist(), x0[keep].tolist(), x1[keep].tolist(),
                    ranges.offsets[r][keep].tolist(), ranges.offsets[r + 1][keep].tolist()))


def accumulate_rows(partial: ExposurePartial, start: int, stop: int, num: np.ndarray,
                    den: np.ndarray, *, loaded: dict | None = None,
                    taint: np.ndarray | None = None) -> None:
    """Add grid rows ``start:stop`` of an exposure's ``sci x wht`` and ``wht`` (float64) to
    ``num``/``den`` (shape ``(stop - start, nx)``). ``loaded`` caches the chips' arrays;
    ``taint`` (bool, the same shape), if given, is set at the chips' tainted pixels
    (`ChipPartial.taint_file`)."""
    for chip in partial.chips:
        ranges = chip.ranges
        a, b = max(start, ranges.y0), min(stop, ranges.y1)
        if b <= a:
            continue
        sci, wht = _chip_arrays(chip, loaded)
        lo, hi = ranges.offsets[a - ranges.y0], ranges.offsets[b - ranges.y0]
        w = np.asarray(wht[lo:hi], np.float64)
        sw = w * np.asarray(sci[lo:hi], np.float64)
        for y, x0, x1, f0, f1 in _row_slices(ranges, a, b):
            num[y - start, x0:x1] += sw[f0 - lo:f1 - lo]
            den[y - start, x0:x1] += w[f0 - lo:f1 - lo]
        if taint is not None and chip.taint_file is not None:
            flat = _chip_taint(chip, loaded)
            flat = flat[np.searchsorted(flat, lo):np.searchsorted(flat, hi)]
            if flat.size:
                row = np.searchsorted(ranges.offsets, flat, side="right") - 1
                col = ranges.starts[row] + (flat - ranges.offsets[row])
                taint[row + ranges.y0 - start, col] = True


def _chip_taint(chip: ChipPartial, loaded: dict | None) -> np.ndarray:
    key = ("taint", id(chip))
    if loaded is not None and key in loaded:
        return loaded[key]
    flat = np.load(chip.taint_file)
    if loaded is not None:
        loaded[key] = flat
    return flat


def exposure_rows(partial: ExposurePartial, start: int, stop: int, nx: int, *,
                  loaded: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grid rows ``start:stop`` of one exposure: its ``sci`` (0 where uncovered) and ``wht``,
    float32 -- the weighted mean of its chips, which is each chip's own value where only one
    chip reaches: the chips of an exposure do not overlap, their rows are copied (rows where
    two chips' footprints meet are computed as `accumulate_rows` does)."""
    sci = np.zeros((stop - start, nx), np.float32)
    wht = np.zeros((stop - start, nx), np.float32)
    filled: dict[int, list[tuple[int, int]]] = {}
    for chip in partial.chips:
        ranges = chip.ranges
        a, b = max(start, ranges.y0), min(stop, ranges.y1)
        if b <= a:
            continue
        csci, cwht = _chip_arrays(chip, loaded)
        for y, x0, x1, f0, f1 in _row_slices(ranges, a, b):
            row = y - start
            s, w = csci[f0:f1], cwht[f0:f1]
            if any(x0 < q1 and p0 < x1 for p0, q1 in filled.get(row, ())):
                earlier = wht[row, x0:x1].astype(np.float64)
                num = sci[row, x0:x1] * earlier + np.where(w > 0, s.astype(np.float64) * w,
                                                           0.0)
                den = earlier + w
                with np.errstate(invalid="ignore", divide="ignore"):
                    sci[row, x0:x1] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0)
                wht[row, x0:x1] = den
            else:
                sci[row, x0:x1] = s
                wht[row, x0:x1] = w
            filled.setdefault(row, []).append((x0, x1))
    return sci, wht


def combine_exposures(partials: list, shape: tuple[int, int], *, fillval: float = 0.0,
                      rows_per_block: int = 256, threads: int = 2
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A product's SCI, WHT and CTX from its exposures' partials (weighted mean).

    ``sci = sum(sci_i wht_i) / sum(wht_i)`` over every chip partial, in float64, streamed in
    row blocks; ``wht = sum(wht_i)``; CTX bit ``k`` set where exposure ``k`` has weight (one
    int32 plane per 32 exposures, 2-D for up to 32). A pixel with one contributor is its own
    mean exactly (``s * w / w == s`` in float64 for float32 ``s``, ``w``).

    The row blocks are combined in ``threads`` threads (each writes its own rows; numpy
    releases the GIL in the sums): the drizzle workers are idle while the parent combines.
    """
    ny, nx = (int(v) for v in shape)
    nplanes = (len(partials) - 1) // 32 + 1
    # zeros are lazily allocated pages: the uncovered part of the grid costs nothing here
    sci = np.zeros((ny, nx), np.float32) if fillval == 0 else np.full((ny, nx), fillval,
                                                                       np.float32)
    wht = np.zeros((ny, nx), np.float32)
    ctx = np.zeros((nplanes, ny, nx), np.int32)
    bits = ctx.view(np.uint32)  # bit 31 without signed-overflow arithmetic
    spans = [p.rows for p in partials]
    live = [s for s in spans if s[1] > s[0]]
    if live:
        y0, y1 = min(s[0] for s in live), max(s[1] for s in live)
        # the chips' maps, opened once for every thread
        loaded: dict = {}
        for partial in partials:
            for chip in partial.chips:
                _chip_arrays(chip, loaded)

        tainted = len(partials) > 1 and any(c.taint_file is not None
                                            for p in partials for c in p.chips)

        def combine_block(start: int) -> None:
            stop = min(y1, start + rows_per_block)
            num = np.zeros((stop - start, nx), np.float64)
            den = np.zeros((stop - start, nx), np.float64)
            clean = _CleanSums(num.shape) if tainted else None
            covered_by = {}
            for k, partial in enumerate(partials):
                a, b = spans[k]
                if min(b, stop) <= max(a, start):
                    continue
                if clean is not None:
                    covered_by[k] = clean.add(partial, start, stop, num, den, loaded)
                    continue
                before = den.copy() if len(partials) > 1 else None
                accumulate_rows(partial, start, stop, num, den, loaded=loaded)
                covered = den > 0 if before is None else den > before
                bits[k // 32, start:stop] |= covered.astype(np.uint32) << np.uint32(k % 32)
            if clean is not None:
                # CTX keeps marking the exposures that cover a pixel (the exposure counts the
                # catalogs read), whether or not the clean mean left a tainted one out
                clean.apply(num, den)
                for k, (covered, _) in covered_by.items():
                    bits[k // 32, start:stop] |= covered.astype(np.uint32) << np.uint32(k % 32)
            with np.errstate(invalid="ignore", divide="ignore"):
                sci[start:stop] = np.where(den > 0, num / np.where(den > 0, den, 1.0), fillval)
            wht[start:stop] = den

        starts = range(y0, y1, rows_per_block)
        if threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(combine_block, starts))
        else:
            for start in starts:
                combine_block(start)
    return sci, wht, (ctx[0] if nplanes == 1 else ctx)


class _CleanSums:
    """`combine_exposures`' sums over the exposures that are not tainted at a pixel.

    Where an exposure lost input pixels to a mask (a cosmic ray), the output pixels those
    pixels reached keep only the remaining, partly covering input pixels' light, each
    weighted by its overlap: on a star's slope the brighter neighbours weigh in, and the
    exposure's value there is biased high (measured on hapsim visits: +0.05 to +0.9 % of a
    star's 0.2" flux per star with flagged pixels). Where another exposure covers such a pixel
    untainted, the mean is taken over the untainted exposures only; elsewhere over all.
    """

    def __init__(self, shape):
        self.num = np.zeros(shape, np.float64)
        self.den = np.zeros(shape, np.float64)
        self.any_taint = np.zeros(shape, bool)
        self._num = np.empty(shape, np.float64)
        self._den = np.empty(shape, np.float64)

    def add(self, partial, start, stop, num, den, loaded):
        """Add one exposure to the sums of all (``num``/``den``) and of the clean ones;
        returns its ``(covered, taint)`` masks."""
        self._num[:] = 0.0
        self._den[:] = 0.0
        taint = np.zeros(self._num.shape, bool)
        accumulate_rows(partial, start, stop, self._num, self._den, loaded=loaded, taint=taint)
        num += self._num
        den += self._den
        keep = ~taint
        self.num[keep] += self._num[keep]
        self.den[keep] += self._den[keep]
        self.any_taint |= taint & (self._den > 0)
        return self._den > 0, taint

    def apply(self, num, den) -> np.ndarray:
        """Replace ``num``/``den`` by the clean sums where those have weight and some exposure
        is tainted; returns where they were replaced."""
        use = self.any_taint & (self.den > 0)
        num[use] = self.num[use]
        den[use] = self.den[use]
        return use


def coverage_bins(partials: list, shape: tuple[int, int], bin_size: int = 16) -> np.ndarray:
    """Where the partials have weight, binned by ``bin_size`` (as
    `hapcore.drizzle.footprint.coverage_bins` bins a whole weight image)."""
    ny, nx = shape
    binned = np.zeros((-(-ny // bin_size), -(-nx // bin_size)), bool)
    for partial in partials:
        for chip in partial.chips:
            _, wht = chip.load()
            ranges = chip.ranges
            starts, offsets = ranges.starts.tolist(), ranges.offsets.tolist()
            for r, (a, b) in enumerate(zip(starts, ranges.stops.tolist())):
                if b <= a:
                    continue
                cols = np.flatnonzero(wht[offsets[r]:offsets[r + 1]] > 0)
                if cols.size:
                    binned[(ranges.y0 + r) // bin_size, (a + cols) // bin_size] = True
    return binned
