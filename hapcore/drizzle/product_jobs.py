"""Worker jobs that end in products or product partials: driz_cr on an exposure's chips
(`blot_and_flag`) and an exposure product (`exposure_product`).

`blot_and_flag` does, chip by chip, everything that needs the chip in memory after the median
of a cosmic-ray pass: blot the median, flag the cosmic rays (driz_cr), derive the exposure
product's partial from the separate drizzle (if asked), then turn the separate drizzle into the
next drizzle of the filter (the second pass's separate drizzle or the final one) in place
(`hapcore.drizzle.chip_partials.derive_chip_partial`). The chip is read and its pixel map
computed once for all of it.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hapcore.atomic import atomic_output
from hapcore.digests import file_digest, file_version
from hapcore.drizzle.chip_partials import (
    ChipInputs,
    Settings,
    derive_chip_partial,
    drizzle_chip_partial,
    included_pixels,
    load_chip,
)
from hapcore.drizzle.cr import ElectronImage, detect_cosmic_rays, grow_mask
from hapcore.drizzle.grid import OutputGrid
from hapcore.drizzle.inputs import chip_wcs_of, good_pixel_mask
from hapcore.drizzle.jobs import chip_reason, load_mask, save_mask
from hapcore.drizzle.kernel import blot_chip
from hapcore.drizzle.products import WriteContext, write_product
from hapcore.drizzle.ragged import (
    ChipPartial,
    ExposurePartial,
    PatchedWeights,
    save_flat,
)
from hapcore.drizzle.total_partials import save_total_partial, total_partial_key

__all__ = ["BlotCRJob", "ExposureProductJob", "blot_and_flag", "exposure_product",
           "product_digests", "write_exposure_product"]

log = logging.getLogger(f"hapsvm.{__name__}")

# DQ flag of full-well saturation (WFC3, ACS, WFC3/IR): "good" for drizzling, but clipped
_SATURATED_BIT = 256
# boxes (pixels) around a saturated pixel and around a dropped (DQ-bad) pixel, chip side.
# Measured on four 2-exposure UVIS hapsim visits (seeds 11-14): 7 px around saturated pixels
# and around every pixel above half the saturation level, plus no test where a separate image
# had a hole or a partial pixel, left 98.6-99.1% of >5-sigma CR pixels masked; 5 px around
# saturated pixels only, 99.04-99.28%, star flux lost 0.02-0.05% (3 px: 0.15-0.19%)
_SUSPECT_GROW = 5
_DROPPED_GROW = 3


@dataclass(frozen=True)
class ExposureProductJob:
    """An exposure product (HAPLEVEL 1): its drizzle ``settings``, derived from ``base`` (a
    partial of the same exposure drizzled with ``base_settings``) where the settings allow, else
    drizzled; written with ``pars`` and the trailer's ``cr_line``."""

    edp: object
    context: WriteContext
    settings: Settings
    skies: dict
    stem: Path
    cr_line: str
    base: ExposurePartial | None = None
    base_settings: Settings | None = None


@dataclass(frozen=True)
class BlotCRJob:
    """driz_cr of one exposure against a pass's median, and what follows from it.

    ``sep`` is the exposure's separate drizzle (made with ``sep_settings``); ``then`` the
    settings it becomes in place afterwards, this pass's CR masks added to its ``cr_files``
    (None: left as it is). ``keep_weights`` (a first pass of two) keeps the separate drizzle's
    weights (the second pass's median tests its validity on them; as the values the change
    in place alters, `hapcore.drizzle.ragged.PatchedWeights`) and this pass's masks
    (the second pass's separate drizzles leave them out). ``persist`` (``{extver: file}``): write
    the union of every pass's masks there, compressed (the last pass). ``exposure``: derive and
    write the exposure product from ``sep`` before it changes.
    """

    path: Path
    grid: OutputGrid
    sep: ExposurePartial
    sep_settings: Settings
    median_file: Path
    coverage_file: Path
    interp: str
    sinscl: float
    snr: tuple
    scale: tuple
    grow: int
    good_bits: int
    mask_stem: Path
    excess_fraction: tuple | str | None = None
    then: Settings | None = None
    keep_weights: bool = False
    persist: dict = field(default_factory=dict)
    exposure: ExposureProductJob | None = None
    #: keep each chip's blot (count rates) in ``<blot_stem>-blot<extver>.npy`` for the next
    #: pass, if few of its pixels were flagged (`_flag`)
    blot_stem: Path | None = None
    #: ``(median file, blot stem)`` of the previous pass: its blots are updated only where this
    #: pass's median differs from that one (`_blot`)
    previous: tuple[Path, Path] | None = None
    #: the chips of ``sep`` to do (None: all; `hapcore.drizzle.jobs.split_by_chip`). The
    #: exposure product is then written by the job that finishes its last chip
    #: (`_write_when_complete`)
    extvers: tuple | None = None
    #: ``(settings, stem)``: with ``persist``, derive the total product's partial of each chip
    #: (``settings`` plus the persisted CR union) from ``sep`` and save it under ``stem``
    #: (`hapcore.drizzle.total_partials`)
    total: tuple | None = None


def exposure_product(job: ExposureProductJob, chips: dict | None = None) -> Path:
    """Make and write an exposure product (see `ExposureProductJob`).

    ``chips`` (``{extver: ChipPartial}``) are partials already derived for it (by
    `blot_and_flag`); the other chips are derived or drizzled here. Files drizzled for it
    are deleted after the writing.
    """
    t0 = time.perf_counter()
    edp = job.edp
    path = job.context.svm_path(edp)
    chips = dict(chips or {})
    made: list[ChipPartial] = []
    skipped = []
    base = {c.extver: c for c in job.base.chips} if job.base is not None else {}
    derivable = job.base_settings is not None and job.settings.derivable_from(job.base_settings)
    try:
        for extver, chip_wcs in chip_wcs_of(path).items():
            if extver in chips:
                continue
            inputs = load_chip(path, extver, chip_wcs, job.context.grid,
                               err=job.settings.wht_type == "ERR")
            reason = chip_reason(inputs, job.settings)
            if reason is not None:
                log.warning("%s[SCI,%d]: %s; chip skipped", path.name, extver, reason)
                skipped.append(extver)
                continue
            partial = None
            if derivable and extver in base:
                partial = derive_chip_partial(base[extver], inputs, job.base_settings,
                                              job.settings, grid_shape=job.context.grid.shape)
            if partial is None:
                partial = drizzle_chip_partial(inputs, job.settings, exposure=path.name,
                                               grid=job.context.grid, stem=job.stem)
                if partial is not None:
                    made.append(partial)
            if partial is None:
                skipped.append(extver)
                continue
            chips[extver] = partial
        exposure = ExposurePartial(path.name, [chips[k] for k in sorted(chips)], skipped)
        return write_product(job.context, edp, [edp], [exposure], edp.parameters.drizzle,
                             level="exposure", skies=job.skies, cr_lines=[job.cr_line], t0=t0)
    finally:
        for partial in made:
            partial.remove()


def product_digests(path: Path) -> list[tuple[tuple, str]]:
    """``[(file version, SHA-256)]`` of a product a worker just wrote, for the parent's
    `hapcore.digests.remember_digests`.

    The task running the drizzle digests every output file once it returns (a full-frame
    UVIS product: 370 MB, ~0.25 s), in one process while the workers idle; hashed here, the
    file is still in the page cache and the digest is made while the other exposures are
    being processed.
    """
    return [(file_version(path), file_digest(path))]


def write_exposure_product(job: ExposureProductJob) -> tuple[Path, list]:
    """`exposure_product` in a worker: the product and its `product_digests`."""
    path = exposure_product(job)
    return path, product_digests(path)


def blot_and_flag(job: BlotCRJob) -> dict:
    """Blot the median to every chip of one exposure, flag its cosmic rays (driz_cr), and make
    what follows from them (see `BlotCRJob`).

    Returns
    -------
    dict
        ``files`` (``{extver: this pass's mask file}``, with ``keep_weights``), ``counts``
        (flagged pixels),
        ``partial`` (the separate drizzle after ``then``), ``valid`` (the kept weights, an
        `ExposurePartial` or None), ``product`` (the exposure product's path or None),
        ``persisted`` (``{extver: (first pass count, final count, chip pixels)}``) and
        ``digests`` (`product_digests` of the exposure product).
    """
    median = np.load(job.median_file, mmap_mode="r")
    coverage = np.load(job.coverage_file, mmap_mode="r")
    files, counts, persisted = {}, {}, {}
    exposure_chips: dict[int, ChipPartial] = {}
    valid_chips = []
    sep_chips = {c.extver: c for c in job.sep.chips
                 if job.extvers is None or c.extver in job.extvers}
    wcs = chip_wcs_of(job.path)
    for extver, sep in sep_chips.items():
        inputs = load_chip(job.path, extver, wcs[extver], job.grid,
                           err=job.sep_settings.wht_type == "ERR")
        if isinstance(inputs, str):  # drizzled before: cannot happen unless the file changed
            raise RuntimeError(f"{job.path.name}[SCI,{extver}]: {inputs}")  # noqa: TRY004
        cr = _flag(job, inputs, median, coverage)
        if job.keep_weights:
            # the next pass leaves these pixels out of its separate drizzles; compressed
            # (`save_mask`: a 1.7% mask of a UVIS chip, 8.4 MB of scratch, becomes ~1 MB)
            file = Path(f"{job.mask_stem}-cr{extver}.npz")
            save_mask(file, cr)
            files[extver] = file
        counts[extver] = int(cr.sum())
        base_include, _ = included_pixels(inputs, job.sep_settings)
        if job.exposure is not None:
            derived = _exposure_chip(job.exposure, sep, inputs, job.sep_settings, base_include)
            if derived is not None:
                exposure_chips[extver] = derived
        if job.persist:
            earlier = [load_mask(f) for f in _as_tuple(job.sep_settings.cr_files.get(extver))]
            union = np.logical_or.reduce([*earlier, cr]) if earlier else cr
            _persist(job.persist[extver], union)
            first = int(earlier[0].sum()) if earlier else counts[extver]
            persisted[extver] = (first, int(union.sum()), int(union.size))
            if job.total is not None:
                _save_total_partial(job, sep, inputs, base_include, union, extver)
            union = None
        # the next pass's median tests validity on these weights (``keep_weights``): kept as
        # the values the derivation below changes, else (drizzled again, or unchanged) whole
        patch = (Path(f"{job.mask_stem}-valid{extver}-index.npy"),
                 Path(f"{job.mask_stem}-valid{extver}-value.npy")) if job.keep_weights else None
        if job.then is not None:
            then = _with_mask(job.then, extver, cr)
            target = included_pixels(inputs, then)
            derived = None
            if then.derivable_from(job.sep_settings):
                derived = derive_chip_partial(sep, inputs, job.sep_settings, then,
                                              grid_shape=job.grid.shape, in_place=True,
                                              base_include=base_include, target_include=target,
                                              old_weights=patch)
            if derived is None:  # too many pixels change: drizzled again, into the same files
                if patch is not None:
                    valid_chips.append(_weights_copy(sep, job.mask_stem))
                    patch = None
                derived = _redrizzle(sep, inputs, then, target, job.grid)
            elif patch is not None:
                valid_chips.append(PatchedWeights(
                    sep.exposure, sep.extver, sep.ranges, derived.wht_file, derived.wht_file,
                    iscale=sep.iscale, sky=sep.sky, masks=list(sep.masks),
                    index_file=patch[0], value_file=patch[1]))
            sep_chips[extver] = derived
        elif patch is not None:
            valid_chips.append(PatchedWeights(sep.exposure, sep.extver, sep.ranges,
                                              sep.wht_file, sep.wht_file, iscale=sep.iscale,
                                              sky=sep.sky, masks=list(sep.masks)))
        # this chip's arrays are not held through the next chip's (the worker's peak)
        inputs = cr = base_include = target = derived = None
    product, digests = None, []
    if job.exposure is not None and job.extvers is None:
        product = exposure_product(job.exposure, exposure_chips)
        digests = product_digests(product)
    elif job.exposure is not None:
        product, digests = _write_when_complete(job, exposure_chips)
    partial = ExposurePartial(job.sep.exposure, [sep_chips[k] for k in sorted(sep_chips)],
                              list(job.sep.skipped))
    valid = ExposurePartial(job.sep.exposure, valid_chips, []) if job.keep_weights else None
    return {"files": files, "counts": counts, "partial": partial, "valid": valid,
            "product": product, "persisted": persisted, "digests": digests}


def _write_when_complete(job: BlotCRJob, derived: dict) -> tuple[Path | None, list]:
    """The exposure product of a job that does some of the exposure's chips (``extvers``):
    its chips' partials for the product are left in the scratch, and the job that completes
    the set writes the product from them all (else ``(None, [])``).

    Each chip's record (``<mask_stem>-exp<extver>.pkl``, its `ChipPartial` or None: drizzled
    by `exposure_product`) appears by an atomic rename; of the jobs that then see every
    record, the one that creates the claim file (``O_EXCL``) writes.
    """
    stem = str(job.mask_stem)
    for extver in job.extvers:
        chip = derived.get(extver)
        if chip is not None:
            # the derivation's arrays (in memory; its files are still the separate drizzle's)
            sci, wht = chip.arrays
            chip = replace(chip, sci_file=save_flat(Path(f"{stem}-exp{extver}-sci.npy"), sci),
                           wht_file=save_flat(Path(f"{stem}-exp{extver}-wht.npy"), wht),
                           arrays=None)
        with atomic_output(Path(f"{stem}-exp{extver}.pkl")) as tmp:
            Path(tmp).write_bytes(pickle.dumps(chip))
    records = {c.extver: Path(f"{stem}-exp{c.extver}.pkl") for c in job.sep.chips}
    if not all(file.exists() for file in records.values()):
        return None, []
    claim = Path(f"{stem}-exp.claim")
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None, []
    chips = {}
    for extver, file in records.items():
        chip = pickle.loads(file.read_bytes())
        file.unlink()
        if chip is not None:
            chips[extver] = chip
    try:
        product = exposure_product(job.exposure, chips)
    finally:
        for chip in chips.values():
            chip.remove()
    return product, product_digests(product)


def _as_tuple(files) -> tuple:
    if not files:
        return ()
    return tuple(files) if isinstance(files, (tuple, list)) else (files,)


def _with_mask(settings: Settings, extver: int, mask: np.ndarray) -> Settings:
    """``settings`` with ``mask`` added to chip ``extver``'s CR masks."""
    crs = dict(settings.cr_files)
    crs[extver] = _as_tuple(crs.get(extver)) + (mask,)
    return replace(settings, cr_files=crs)


#: Interpolations whose value at grid position ``(x, y)`` depends only on the grid pixels
#: ``int(x) - 2 .. int(x) + 3`` (same in y) away from the grid's edges (drizzle's
#: ``interpolate_poly5`` and the smaller stencils); `_STENCIL` is that range widened by one
#: pixel each way, ``int(x) + lo .. int(x) + hi``.
_STENCIL_INTERPS = ("nearest", "linear", "poly3", "poly5")
_STENCIL = (-3, 4)
#: Above this fraction of stale pixels, the whole chip is blotted again.
_MAX_STALE_FRACTION = 0.5
#: A chip's blot is kept for the next pass only when this pass flagged at most this fraction
#: of its pixels: each cosmic ray changes the next median around it, and every chip pixel
#: whose stencil reaches such a change is blotted again (WFC3/IR, 0.03% flagged: 4.5% of the
#: pixels blotted again; WFC3/UVIS 3 x 600 s, 1.7% flagged: 87%, the whole chip is faster).
_KEEP_BLOT_MAX_FLAGGED = 1.0 / 300.0


def _blot(job: BlotCRJob, inputs: ChipInputs, median) -> np.ndarray:
    """The median blotted onto the chip (count rates, float32, a new array).

    With ``job.previous``, the previous pass's blot of the chip is updated where it can differ:
    at the chip pixels whose interpolation stencil holds a grid pixel where the two medians
    differ (a few per cosmic ray), or that lie near the grid's edges, blotted by drizzle's own
    ``tblot`` (the same values as a blot of the whole chip). `_flag` saves it for the next pass
    (``job.blot_stem``) when that can pay.
    """
    iscale = 1.0 / inputs.ratio**2
    blot = None
    if job.previous is not None and job.interp in _STENCIL_INTERPS:
        previous_median, stem = job.previous
        file = Path(f"{stem}-blot{inputs.extver}.npy")
        if file.exists():
            ys, xs = _stale_pixels(inputs.pixmap, median, np.load(previous_median, mmap_mode="r"),
                                   inputs.ranges)
            if ys.size <= _MAX_STALE_FRACTION * inputs.pixmap.shape[0] * inputs.pixmap.shape[1]:
                blot = np.load(file)
                if ys.size:
                    sub = np.ascontiguousarray(inputs.pixmap[ys, xs][None])
                    blot[ys, xs] = blot_chip(median, sub, interp=job.interp,
                                             sinscl=job.sinscl, iscale=iscale)[0]
            log.debug("SCI,%d: blot %s at %d pixels", inputs.extver,
                      "updated" if blot is not None else "redone (too many)", ys.size)
            del ys, xs
    if blot is None:
        # the whole median, memory-mapped, with the chip's map in grid pixels: blot reads only
        # the part the chip maps onto, and neither the median nor the map is copied
        blot = blot_chip(median, inputs.pixmap, interp=job.interp, sinscl=job.sinscl,
                         iscale=iscale)
    return blot


def _stale_pixels(pixmap: np.ndarray, median, previous, ranges, *,
                  rows: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Chip pixels whose blot of ``median`` may differ from that of ``previous`` (see `_blot`).

    Only the grid rows and columns of the chip's footprint (``ranges``) are compared: no chip
    pixel maps outside them. The chip is scanned in blocks of ``rows`` rows (no chip-sized
    temporaries).
    """
    ny, nx = median.shape
    y0, y1 = ranges.y0, ranges.y1
    used = ranges.stops > ranges.starts
    empty = np.zeros(0, np.intp)
    if y1 <= y0 or not used.any():
        return empty, empty
    x0, x1 = int(ranges.starts[used].min()), int(ranges.stops[used].max())
    gy, gx = np.nonzero(np.asarray(median[y0:y1, x0:x1]) != np.asarray(previous[y0:y1, x0:x1]))
    lo, hi = _STENCIL
    # stencil origins (truncated positions) that reach a changed grid pixel, over the
    # footprint's box with a margin of `hi` pixels
    hit = np.zeros((y1 - y0 + hi - lo, x1 - x0 + hi - lo), bool)
    for dy in range(-hi, -lo + 1):
        for dx in range(-hi, -lo + 1):
            hit[gy + dy + hi, gx + dx + hi] = True
    del gy, gx
    found_y, found_x = [], []
    for start in range(0, pixmap.shape[0], rows):
        # drizzle's tblot takes float32 positions and the stencil of their truncation
        block = pixmap[start:start + rows]
        px = block[..., 0].astype(np.float32)
        py = block[..., 1].astype(np.float32)
        del block
        with np.errstate(invalid="ignore"):
            inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
        ix = np.where(inside, px, 0).astype(np.int32)
        iy = np.where(inside, py, 0).astype(np.int32)
        # near the grid's edges the stencil is reflected: always blotted again
        stale = inside & ((ix < hi) | (ix >= nx - hi) | (iy < hi) | (iy >= ny - hi))
        by = iy - (y0 - hi)
        bx = ix - (x0 - hi)
        within = inside & (by >= 0) & (by < hit.shape[0]) & (bx >= 0) & (bx < hit.shape[1])
        stale[within] |= hit[by[within], bx[within]]
        sy, sx = np.nonzero(stale)
        found_y.append(sy + start)
        found_x.append(sx)
    return np.concatenate(found_y), np.concatenate(found_x)


def _flag(job: BlotCRJob, inputs: ChipInputs, median, coverage) -> np.ndarray:
    """driz_cr's mask of one chip against the median blotted onto it."""
    chip = inputs.chip
    rates = _blot(job, inputs, median)
    covered = _nearest(coverage, inputs.pixmap)
    t = chip.exptime
    regular = None
    if job.excess_fraction is not None:
        # the excess test needs values and blot good to a fraction of the signal: not near
        # a pixel the separate drizzles dropped (holes bend the blot) or a saturated one
        dropped = ~good_pixel_mask(chip.dq, job.good_bits) | ~chip.finite
        saturated = (chip.dq & _SATURATED_BIT) != 0
        if saturated.any():
            full_well = float(np.percentile(chip.sci[saturated], 5.0))
            saturated |= chip.sci >= full_well
        regular = ~grow_mask(saturated, _SUSPECT_GROW) & ~grow_mask(dropped, _DROPPED_GROW)
        del dropped, saturated
    sky = job.sep_settings.sky
    # the chip in electrons where driz_cr looks (a few percent of it), not a chip-sized copy;
    # the blot in electrons in place (it is this function's own)
    electrons = ElectronImage(chip.sci, sky, t)
    blot = rates
    blot *= np.float32(t)
    del rates
    cr = detect_cosmic_rays(electrons, blot, sky_electrons=sky * t,
                            readnoise=chip.readnoise, snr=job.snr, scale=job.scale,
                            grow=job.grow, valid=covered, regular=regular,
                            excess_fraction=job.excess_fraction)
    del blot, covered, regular
    if job.blot_stem is not None and np.count_nonzero(cr) <= _KEEP_BLOT_MAX_FLAGGED * cr.size:
        # kept as count rates: blotted again (the same values; a chip with few cosmic rays,
        # WFC3/IR), rather than a copy of the rates kept beside the electrons through
        # driz_cr on every chip (a UVIS chip: 34 MB of a worker's peak)
        np.save(Path(f"{job.blot_stem}-blot{inputs.extver}.npy"), _blot(job, inputs, median))
    return cr


def _nearest(image: np.ndarray, pixmap: np.ndarray, rows: int = 256) -> np.ndarray:
    """``image`` (uint8 flags on the grid) at the grid pixel nearest to each chip pixel, as
    a bool image of the chip (False off the grid or where the map is undefined).

    drizzle's nearest-neighbour blot gives the same but for pixels mapped within ~1e-4 px of
    a grid pixel's edge (its positions are rounded otherwise), and needs a float32 grid.
    """
    ny, nx = image.shape
    flat = image.ravel()
    out = np.zeros(pixmap.shape[:2], bool)
    for start in range(0, pixmap.shape[0], rows):
        block = pixmap[start:start + rows]
        # truncating x + 0.5 rounds halves up, as floor(x + 0.5), wherever it is >= 0
        x = block[..., 0] + 0.5
        y = block[..., 1] + 0.5
        with np.errstate(invalid="ignore"):
            inside = (x >= 0) & (x < nx) & (y >= 0) & (y < ny)
        index = np.where(inside, y.astype(np.intp) * nx + x.astype(np.intp), 0)
        out[start:start + rows] = inside & (flat[index] > 0)
    return out


def _exposure_chip(spec: ExposureProductJob, sep: ChipPartial, inputs: ChipInputs,
                   sep_settings: Settings, base_include: np.ndarray) -> ChipPartial | None:
    """The exposure product's partial of a chip, from its separate drizzle (None: drizzled
    later by `exposure_product`)."""
    if chip_reason(inputs, spec.settings) is not None or \
            not spec.settings.derivable_from(sep_settings):
        return None
    return derive_chip_partial(sep, inputs, sep_settings, spec.settings,
                               grid_shape=spec.context.grid.shape, base_include=base_include)


def _weights_copy(chip: ChipPartial, stem: Path) -> ChipPartial:
    """A copy of a chip partial's weights (its science left out) in scratch."""
    _, wht = chip.load()
    file = save_flat(Path(f"{stem}-valid{chip.extver}.npy"), np.asarray(wht))
    return replace(chip, sci_file=file, wht_file=file, masks=list(chip.masks), arrays=None)


def _redrizzle(sep: ChipPartial, inputs: ChipInputs, settings: Settings, include,
               grid: OutputGrid) -> ChipPartial:
    """Drizzle the chip with ``settings`` and put the result in ``sep``'s files."""
    stem = Path(str(sep.sci_file).removesuffix(f"-sci{sep.extver}.npy") + "-again")
    fresh = drizzle_chip_partial(inputs, settings, exposure=sep.exposure, grid=grid, stem=stem,
                                 include=include)
    sep.remove()
    if fresh is None:
        empty = np.zeros(sep.ranges.size, np.float32)
        return replace(sep, sci_file=save_flat(sep.sci_file, empty),
                       wht_file=save_flat(sep.wht_file, empty), masks=include[1])
    return fresh


def _save_total_partial(job: BlotCRJob, sep: ChipPartial, inputs: ChipInputs,
                        base_include: np.ndarray, union: np.ndarray, extver: int) -> None:
    """The total product's partial of a chip, derived from the separate drizzle ``sep`` with
    the CR union, saved for the total's task (`hapcore.drizzle.total_partials`)."""
    settings, stem = job.total   # derivable from ``job.sep_settings`` (the caller checks)
    derived = derive_chip_partial(sep, inputs, job.sep_settings,
                                  _with_mask(settings, extver, union),
                                  grid_shape=job.grid.shape, base_include=base_include)
    if derived is not None:
        save_total_partial(derived, stem, total_partial_key(settings, job.persist[extver]))


def _persist(file: Path, mask: np.ndarray) -> None:
    """Write a CR mask that outlives the run (resume, re-drizzling a total) atomically
    (`hapcore.drizzle.jobs.save_mask`)."""
    with atomic_output(file) as tmp:
        save_mask(tmp, mask)
