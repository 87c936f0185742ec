"""One chip drizzled onto the grid with given settings: drizzled in full, or derived from
another drizzle of the same chip by the pixels that differ (`hapcore.drizzle.sparse`).

The drizzles of a filter differ by which pixels of a chip they include: the separate drizzle
leaves out the static mask, the final one the cosmic rays, an exposure product nothing but NaN.
When the kernel and pixfrac (and the weights of the pixels both include) agree, a partial is
derived from one already made: the contributions of the pixels only the base includes are
removed, those of the pixels only the target includes are added, and a change of sky shifts the
kept pixels' data by ``(sky_base - sky_target) x iscale``. drizzle accumulates a weighted mean,
so this is done on ``sci x wht`` and ``wht`` in float64 at the output pixels touched.

Removing every contribution of an output pixel leaves the rounding of drizzle's float32 running
sum (~1e-7 of the weight): a remaining weight below `EMPTY_FRACTION` of the pixel's weight
before the removal is an empty pixel (weight and data 0), as drizzle would leave it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hapcore.drizzle.grid import OutputGrid, chip_plate_scale
from hapcore.drizzle.inputs import ChipData, _file_key, good_pixel_mask, read_chip
from hapcore.drizzle.kernel import drizzle_chip, lazy_zeros, new_accumulator
from hapcore.drizzle.pixmap import interpolated_pixmap
from hapcore.drizzle.ragged import ChipPartial, RowRanges, footprint_ranges, save_flat
from hapcore.drizzle.sparse import square_contributions, turbo_contributions

__all__ = [
    "EMPTY_FRACTION",
    "MAX_CHANGED_FRACTION",
    "ChipInputs",
    "Settings",
    "clear_chip_cache",
    "derive_chip_partial",
    "drizzle_chip_partial",
    "included_pixels",
    "load_chip",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Weight left after removing contributions, relative to the weight before, below which an
#: output pixel is empty (float32 rounding of drizzle's running sum is ~1e-7 of it).
EMPTY_FRACTION = 1e-6
#: Above this fraction of a chip's pixels changed, drizzling the chip again is cheaper.
MAX_CHANGED_FRACTION = 0.2
#: Kernels whose contributions `hapcore.drizzle.sparse` computes for a few pixels.
_SPARSE_KERNELS = ("square", "turbo")


@dataclass(frozen=True)
class Settings:
    """How the pixels of an exposure's chips are drizzled (one partial per chip).

    ``static_files``/``cr_files`` map an EXTVER to the mask files excluded (CR: one file per
    pass; their union is excluded).
    """

    kernel: str
    pixfrac: float
    good_bits: int
    wht_type: str
    sky: float
    static_files: Mapping = field(default_factory=dict)
    cr_files: Mapping = field(default_factory=dict)

    def derivable_from(self, base: Settings) -> bool:
        """True when the pixels both include get the same contributions (then a partial of
        ``self`` follows from one of ``base`` by the pixels that differ)."""
        return (self.kernel == base.kernel and self.kernel in _SPARSE_KERNELS
                and self.pixfrac == base.pixfrac
                and self.wht_type == base.wht_type
                and (self.wht_type != "IVM" or self.sky == base.sky))


@dataclass
class ChipInputs:
    """A chip read for drizzling, with its map onto the grid and its footprint there."""

    extver: int
    chip: ChipData
    pixmap: np.ndarray
    ratio: float
    ranges: RowRanges


#: Bytes of loaded chips (data and pixel map) a process keeps for the next `load_chip` of the
#: same chip: a filter's chips are loaded three or four times (separate drizzle, each CR pass,
#: exposure product), each costing a FITS read and a pixel map. Three full-frame WFC3/IR chips
#: fit (~26 MB each); a WFC3/UVIS chip (~210 MB) does not, which keeps workers small.
CHIP_CACHE_BYTES = 160 * 2**20
_CHIP_CACHE: OrderedDict = OrderedDict()


def clear_chip_cache() -> None:
    """Forget the chips `load_chip` keeps (a workspace closing)."""
    _CHIP_CACHE.clear()


def _inputs_bytes(inputs: ChipInputs) -> int:
    chip = inputs.chip
    arrays = (chip.sci, chip.err, chip.dq, chip.finite, inputs.pixmap)
    return sum(int(a.nbytes) for a in arrays if a is not None)


def load_chip(path: Path, extver: int, chip_wcs, grid: OutputGrid, *,
              err: bool = False) -> ChipInputs | str:
    """The chip ``path[SCI, extver]`` and its pixel map, or why it cannot be drizzled.

    Small chips are kept for the next call on the same chip, file version and grid
    (`CHIP_CACHE_BYTES`); their arrays are read-only.
    """
    try:
        key = (_file_key(path), int(extver), grid.fingerprint, bool(err))
    except (OSError, AttributeError):
        key = None
    if key is not None and key in _CHIP_CACHE:
        _CHIP_CACHE.move_to_end(key)
        return _CHIP_CACHE[key]
    inputs = _load_chip(path, extver, chip_wcs, grid, err=err)
    if key is not None and not isinstance(inputs, str) and \
            _inputs_bytes(inputs) <= CHIP_CACHE_BYTES // 2:
        for array in (inputs.chip.sci, inputs.chip.err, inputs.chip.dq, inputs.chip.finite,
                      inputs.pixmap):
            if array is not None:
                array.flags.writeable = False
        _CHIP_CACHE[key] = inputs
        while sum(_inputs_bytes(v) for v in _CHIP_CACHE.values()) > CHIP_CACHE_BYTES:
            _CHIP_CACHE.popitem(last=False)
    return inputs


def _load_chip(path: Path, extver: int, chip_wcs, grid: OutputGrid, *,
               err: bool = False) -> ChipInputs | str:
    chip = read_chip(path, extver, err=err)
    if chip.is_empty:
        return "no valid pixels (all zero or NaN)"
    pixmap = interpolated_pixmap(chip_wcs, grid.wcs, shape=chip.shape)
    if not _overlaps(pixmap, grid.shape):
        return "does not overlap the output grid"
    ratio = grid.pixel_scale_arcsec / chip_plate_scale(chip_wcs)
    # an input pixel spans 1/ratio output pixels: the footprint's margin must hold its corners
    margin = 2 + int(np.ceil(max(1.0, 1.0 / ratio)))
    return ChipInputs(int(extver), chip, pixmap, ratio,
                      footprint_ranges(pixmap, grid.shape, margin=margin))


def _overlaps(pixmap: np.ndarray, shape: tuple[int, int]) -> bool:
    step = max(1, min(pixmap.shape[:2]) // 64)
    sample = np.asarray(pixmap[::step, ::step])
    x, y = sample[..., 0], sample[..., 1]
    with np.errstate(invalid="ignore"):
        inside = (x > -1) & (x < shape[1]) & (y > -1) & (y < shape[0])
    return bool(inside.any())


def _load_mask(path) -> np.ndarray:
    if isinstance(path, np.ndarray):  # a mask this process has just computed
        return path
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return data["mask"]
    return data


def included_pixels(inputs: ChipInputs, settings: Settings) -> tuple[np.ndarray, list[str]]:
    """Pixels ``settings`` drizzle (good DQ, finite, outside its masks) and the masks' names."""
    chip = inputs.chip
    good = good_pixel_mask(chip.dq, settings.good_bits) & chip.finite
    names = []
    static = settings.static_files.get(inputs.extver)
    if static is not None:
        good &= ~_load_mask(static)
        names.append("static")
    crs = settings.cr_files.get(inputs.extver)
    if crs:
        for file in (crs if isinstance(crs, (tuple, list)) else (crs,)):
            good &= ~_load_mask(file)
        names.append("cr")
    return good, names


def _uniform_weight(chip: ChipData, wht_type: str, sky: float) -> np.float32 | None:
    """The weight every pixel of the chip gets (EXP, IVM); None for per-pixel ERR weights."""
    if wht_type == "EXP":
        return np.float32(chip.exptime)
    if wht_type == "ERR" and chip.err is not None:
        return None
    # IVM (or ERR without an ERR array): background-limited inverse variance in (e-/s)^-2
    t = max(chip.exptime, 1e-9)
    variance = (abs(sky) * t + chip.readnoise**2) / t**2
    return np.float32(1.0 / max(variance, 1e-30))


def _err_weight(err: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(err > 0, 1.0 / err.astype(np.float64) ** 2, 0.0).astype(np.float32)


def weight_map(chip: ChipData, wht_type: str, sky: float) -> np.ndarray:
    """Per-pixel weight before masking: EXP = exposure time, ERR = 1/err^2, IVM = 1/var(sky+rn)."""
    uniform = _uniform_weight(chip, wht_type, sky)
    if uniform is None:
        return _err_weight(chip.err)
    return np.full(chip.shape, uniform, np.float32)


def pixel_weights(chip: ChipData, wht_type: str, sky: float, ys: np.ndarray,
                  xs: np.ndarray) -> np.ndarray:
    """`weight_map` at pixels ``(ys, xs)`` only (the same values)."""
    uniform = _uniform_weight(chip, wht_type, sky)
    if uniform is None:
        return _err_weight(chip.err[ys, xs])
    return np.full(ys.size, uniform, np.float32)


def drizzle_chip_partial(inputs: ChipInputs, settings: Settings, *, exposure: str,
                         grid: OutputGrid, stem: Path,
                         include: tuple[np.ndarray, list[str]] | None = None
                         ) -> ChipPartial | None:
    """Drizzle the chip's included pixels onto the grid; None when it has none.

    ``include`` (``(mask, mask names)``) saves computing `included_pixels` again. The
    accumulators are grid-sized zero arrays whose pages are allocated only where drizzled
    onto (the map needs no shift); the chip's footprint rows are kept (`RowRanges.pack`).
    """
    include, names = included_pixels(inputs, settings) if include is None else include
    if not include.any():
        return None
    chip = inputs.chip
    weight = weight_map(chip, settings.wht_type, settings.sky)
    weight[~include] = 0.0
    sci = lazy_zeros(grid.shape, np.float32)
    wht = lazy_zeros(grid.shape, np.float32)
    acc = new_accumulator(grid.shape, kernel=settings.kernel, out_img=sci, out_wht=wht)
    ratio = inputs.ratio
    drizzle_chip(acc, chip.sci - np.float32(settings.sky), inputs.pixmap, weight=weight,
                 exptime=chip.exptime, pixfrac=settings.pixfrac, iscale=ratio**2,
                 pixel_scale_ratio=ratio)
    del acc, weight
    ranges = _covering(inputs.ranges, wht)
    flat_sci, flat_wht = ranges.pack(sci), ranges.pack(wht)
    del sci, wht
    flat_sci[~(flat_wht > 0)] = 0.0
    return ChipPartial(exposure, inputs.extver, ranges,
                       save_flat(Path(f"{stem}-sci{inputs.extver}.npy"), flat_sci),
                       save_flat(Path(f"{stem}-wht{inputs.extver}.npy"), flat_wht),
                       iscale=float(ratio**2), sky=float(settings.sky), masks=names)


def _covering(ranges: RowRanges, wht: np.ndarray) -> RowRanges:
    """``ranges`` widened to every pixel with weight (a kernel larger than the footprint's
    margin, e.g. gaussian or lanczos); normally ``ranges`` itself."""
    inside = sum(int(np.count_nonzero(wht[ranges.y0 + r, a:b]))
                 for r, (a, b) in enumerate(zip(ranges.starts.tolist(), ranges.stops.tolist()))
                 if b > a)
    if inside == int(np.count_nonzero(wht)):
        return ranges
    rows = np.flatnonzero(wht.any(axis=1))
    cols_lo = np.argmax(wht[rows] > 0, axis=1)
    cols_hi = wht.shape[1] - np.argmax(wht[rows, ::-1] > 0, axis=1)
    ny0 = min(int(rows[0]), ranges.y0) if ranges.size else int(rows[0])
    ny1 = max(int(rows[-1]) + 1, ranges.y1)
    starts = np.full(ny1 - ny0, wht.shape[1], np.int64)
    stops = np.zeros(ny1 - ny0, np.int64)
    starts[rows - ny0] = cols_lo
    stops[rows - ny0] = cols_hi
    r = np.arange(ranges.y0, ranges.y1) - ny0
    starts[r] = np.minimum(starts[r], ranges.starts)
    stops[r] = np.maximum(stops[r], ranges.stops)
    log.debug("footprint widened to the drizzled pixels (rows %d-%d)", ny0, ny1)
    return RowRanges(ny0, starts.astype(np.int32), np.maximum(stops, starts).astype(np.int32))


#: Input pixels per block of `_contributions`: a pixel has up to ~9 contributions, each with
#: a dozen float64 temporaries in `hapcore.drizzle.sparse` (~2 kB per pixel); 1.7% of a UVIS
#: chip at once (a first pass's cosmic rays) cost ~200 MB of a worker's peak, a block ~20 MB.
_CONTRIBUTION_BLOCK = 8192


def _contributions(inputs: ChipInputs, ranges: RowRanges, pixels: np.ndarray,
                   settings: Settings, sky: float, pixfrac: float, grid_shape):
    """Flat indices, weights (float32-rounded, as drizzle's) and data of the contributions of
    ``pixels`` (a mask) of the chip, in the order of the pixels (computed by blocks of
    `_CONTRIBUTION_BLOCK` pixels: every value is per pixel, so the same as in one go)."""
    ys, xs = np.nonzero(pixels)
    weight = pixel_weights(inputs.chip, settings.wht_type, settings.sky, ys, xs)
    iscale = inputs.ratio**2
    values = (inputs.chip.sci[ys, xs] - np.float32(sky)) * np.float32(iscale)
    parts = []
    for start in range(0, max(ys.size, 1), _CONTRIBUTION_BLOCK):
        block = slice(start, start + _CONTRIBUTION_BLOCK)
        if settings.kernel == "turbo":
            k, oy, ox, fraction = turbo_contributions(
                inputs.pixmap, ys[block], xs[block], pixfrac=pixfrac,
                pscale_ratio=inputs.ratio, out_shape=grid_shape)
        else:
            k, oy, ox, fraction = square_contributions(inputs.pixmap, ys[block], xs[block],
                                                       pixfrac=pixfrac, out_shape=grid_shape)
        index = ranges.index(oy, ox)
        if (index < 0).any():
            raise ValueError("contribution outside the chip's footprint")
        w = weight[block].astype(np.float64)[k]
        dow = (fraction * w).astype(np.float32).astype(np.float64)
        parts.append((index, dow, values[block][k].astype(np.float64)))
        del k, oy, ox, fraction, w
    index, dow, data = (np.concatenate(arrays) for arrays in zip(*parts))
    return index, dow, data


def _taint(base: ChipPartial, touched: np.ndarray, removed: np.ndarray,
           size: int) -> Path | None:
    """The pixels the removed input pixels reached, with the base's own (`ChipPartial.
    taint_file`), saved beside the base's files; None when there are none.

    ``touched`` are the sorted flat indices `derive_chip_partial` changed and ``removed`` the
    positions in it of the removed pixels' contributions; ``size`` is the partial's length.
    The union is taken on a mask of the partial (a byte a pixel) rather than by sorting: the
    first pass's taint holds hundreds of thousands of indices per chip."""
    reached = np.zeros(touched.size, bool)
    reached[removed] = True
    flat = touched[reached]
    if base.taint_file is not None and Path(base.taint_file).exists():
        mask = np.zeros(size, bool)
        mask[np.load(base.taint_file)] = True
        mask[flat] = True
        flat = np.flatnonzero(mask)
    if flat.size == 0 or base.sci_file is None:
        return base.taint_file
    file = Path(f"{base.sci_file}-taint.npy")
    # int32 where it indexes the partial (half the scratch of int64)
    np.save(file, flat.astype(np.int32 if size < 2**31 else np.int64, copy=False))
    return file


def derive_chip_partial(base: ChipPartial, inputs: ChipInputs, base_settings: Settings,
                        target: Settings, *, grid_shape: tuple[int, int],
                        in_place: bool = False, base_include: np.ndarray | None = None,
                        target_include: tuple[np.ndarray, list[str]] | None = None,
                        old_weights: tuple[Path, Path] | None = None
                        ) -> ChipPartial | None:
    """The partial of ``target`` from ``base`` (same chip), or None when drizzling the chip
    again is cheaper (more than `MAX_CHANGED_FRACTION` of its pixels differ) or the map is not
    smooth at a changed pixel.

    ``in_place`` rewrites the base's files (the base is gone after); otherwise the result holds
    new in-memory arrays (``ChipPartial.arrays``). ``base_include`` (a mask) and
    ``target_include`` (``(mask, mask names)``, as `included_pixels` gives) save computing them
    again. ``old_weights`` (``(index file, value file)``, with ``in_place``): where the base's
    weights change, their flat indices (sorted) and values before, saved as ``.npy`` (the
    base's weights are then `hapcore.drizzle.ragged.PatchedWeights`). See the module notes.
    """
    if base_include is None:
        base_include, _ = included_pixels(inputs, base_settings)
    target_include, names = included_pixels(inputs, target) if target_include is None \
        else target_include
    remove = base_include & ~target_include
    add = target_include & ~base_include
    changed = int(remove.sum()) + int(add.sum())
    if changed > MAX_CHANGED_FRACTION * remove.size:
        return None
    try:
        r_idx, r_dow, r_data = _contributions(inputs, base.ranges, remove, target,
                                              base_settings.sky, target.pixfrac, grid_shape)
        a_idx, a_dow, a_data = _contributions(inputs, base.ranges, add, target, target.sky,
                                              target.pixfrac, grid_shape)
    except ValueError as exc:
        log.debug("SCI,%d: partial not derived (%s); drizzled instead", inputs.extver, exc)
        return None
    del remove, add   # two chip-sized masks fewer through the accumulation below
    sci, wht = base.load("r+" if in_place else "r")
    if not in_place:
        sci, wht = np.array(sci), np.array(wht)
    touched, inverse = np.unique(np.concatenate([r_idx, a_idx]), return_inverse=True)
    n_r = r_idx.size
    if old_weights is not None:
        # np.unique sorts: the indices are in order for `PatchedWeights`
        np.save(old_weights[0], touched.astype(np.int64))
        np.save(old_weights[1], np.asarray(wht[touched], np.float32))
    num0 = sci[touched].astype(np.float64) * wht[touched]
    den0 = wht[touched].astype(np.float64)
    num = num0 - np.bincount(inverse[:n_r], r_dow * r_data, minlength=touched.size)
    den = den0 - np.bincount(inverse[:n_r], r_dow, minlength=touched.size)
    empty = den <= EMPTY_FRACTION * den0
    num[empty] = 0.0
    den[empty] = 0.0
    shift = (base_settings.sky - target.sky) * inputs.ratio**2
    if shift:
        # the kept pixels' data move with the sky; where nothing is touched, in float32
        num += shift * den
        covered = wht > 0
        sci[covered] += np.float32(shift)
    num += np.bincount(inverse[n_r:], a_dow * a_data, minlength=touched.size)
    den += np.bincount(inverse[n_r:], a_dow, minlength=touched.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        sci[touched] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    wht[touched] = den
    result = ChipPartial(base.exposure, base.extver, base.ranges, base.sci_file, base.wht_file,
                         iscale=base.iscale, sky=float(target.sky), masks=names,
                         taint_file=_taint(base, touched, inverse[:n_r], sci.size)
                         if in_place else None)
    if in_place:
        sci.flush()
        wht.flush()
        del sci, wht
    else:
        result.arrays = (sci, wht)
    return result
