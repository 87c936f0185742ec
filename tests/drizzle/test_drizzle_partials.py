"""The drizzle stage's partials (issue #16): each speed-up must give what the plain computation
gives, the drizzle package being the reference for drizzling.

* the sparse square kernel (`hapcore.drizzle.sparse`) against drizzle's own kernel;
* a chip partial derived by the pixels that differ (`chip_partials.derive_chip_partial`)
  against the same chip drizzled with the target settings;
* the row-range layout, the products' weighted mean, the streamed product file (byte for byte
  what astropy writes) and the lazily evaluated driz_cr against its full-image definition.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from drizzle.resample import Drizzle, blot_image
from scipy import ndimage

from hapcore.drizzle.chip_partials import (
    ChipInputs,
    Settings,
    derive_chip_partial,
    drizzle_chip_partial,
)
from hapcore.drizzle.cr import detect_cosmic_rays
from hapcore.drizzle.fits_stream import write_product_file
from hapcore.drizzle.fits_table import binary_table_bytes
from hapcore.drizzle.footprint import coverage_bins as image_bins
from hapcore.drizzle.inputs import ChipData
from hapcore.drizzle.product_jobs import _nearest
from hapcore.drizzle.products import write_drizzle_product
from hapcore.drizzle.ragged import (
    ChipPartial,
    ExposurePartial,
    RowRanges,
    combine_exposures,
    coverage_bins,
    exposure_rows,
    footprint_ranges,
)
from hapcore.drizzle.sparse import square_contributions, turbo_contributions
from hapcore.drizzle.workspace import DrizzleWorkspace, scratch_parent

OUT = (150, 160)


def _pixmap(ny=70, nx=90, angle=28.0, scale=1.02, seed=0):
    """A rotated, slightly distorted map of a ``ny x nx`` chip into `OUT`."""
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    a = np.radians(angle)
    u, v = xx - nx / 2, yy - ny / 2
    x = scale * (np.cos(a) * u - np.sin(a) * v) + 1e-4 * u * v + OUT[1] / 2 + 0.31
    y = scale * (np.sin(a) * u + np.cos(a) * v) + 2e-4 * u * u + OUT[0] / 2 - 0.17
    return np.ascontiguousarray(np.dstack([x, y]))


def _drizzle(data, weight, pixmap, pixfrac=1.0, iscale=1.0, kernel="square", ratio=1.0):
    acc = Drizzle(kernel=kernel, fillval=None, out_img=np.zeros(OUT, np.float32),
                  out_wht=np.zeros(OUT, np.float32), disable_ctx=True, exptime=1e-300)
    acc.add_image(data.astype(np.float32), exptime=1.0, pixmap=pixmap,
                  weight_map=weight.astype(np.float32), pixfrac=pixfrac, in_units="cps",
                  iscale=iscale, pixel_scale_ratio=ratio)
    return acc.out_img, acc.out_wht


def _assert_contributions_drizzle(k, oy, ox, fraction, values, sci, wht, *, weight):
    """Sparse contributions (input k -> output (oy, ox) with ``fraction`` of its area) summed
    as drizzle sums them equal drizzle's own output (weights in float32, as its kernels)."""
    dow = (fraction * weight).astype(np.float32).astype(np.float64)
    index = oy * OUT[1] + ox
    den = np.bincount(index, dow, minlength=OUT[0] * OUT[1]).reshape(OUT)
    num = np.bincount(index, dow * values[k], minlength=OUT[0] * OUT[1]).reshape(OUT)
    covered = wht > 0
    np.testing.assert_array_equal(covered, den > 0)
    np.testing.assert_allclose(den[covered], wht[covered], rtol=2e-6)
    np.testing.assert_allclose(num[covered] / den[covered], sci[covered], rtol=2e-6)


@pytest.mark.parametrize("pixfrac", [1.0, 0.8])
def test_sparse_contributions_match_drizzle(pixfrac):
    rng = np.random.default_rng(1)
    pm = _pixmap()
    data = rng.normal(5.0, 1.0, pm.shape[:2]).astype(np.float32)
    chosen = rng.random(pm.shape[:2]) < 0.2
    chosen[0, :] = chosen[:, -1] = True   # the edges extrapolate the map
    sci, wht = _drizzle(data, np.where(chosen, 3.0, 0.0), pm, pixfrac)
    ys, xs = np.nonzero(chosen)
    k, oy, ox, fraction = square_contributions(pm, ys, xs, pixfrac=pixfrac, out_shape=OUT)
    _assert_contributions_drizzle(k, oy, ox, fraction, data[ys, xs], sci, wht, weight=3.0)


@pytest.mark.parametrize(("pixfrac", "ratio"), [(1.0, 1.0), (0.8, 1.0), (1.0, 1.0 / 1.01),
                                              (0.7, 1.13)])
def test_sparse_turbo_contributions_match_drizzle(pixfrac, ratio):
    rng = np.random.default_rng(3)
    pm = _pixmap(angle=0.4)   # turbo: nearly aligned axes (any map is drizzled the same)
    data = rng.normal(5.0, 1.0, pm.shape[:2]).astype(np.float32)
    chosen = rng.random(pm.shape[:2]) < 0.2
    chosen[0, :] = chosen[:, -1] = True
    sci, wht = _drizzle(data, np.where(chosen, 3.0, 0.0), pm, pixfrac, kernel="turbo",
                        ratio=ratio)
    ys, xs = np.nonzero(chosen)
    k, oy, ox, fraction = turbo_contributions(pm, ys, xs, pixfrac=pixfrac, pscale_ratio=ratio,
                                              out_shape=OUT)
    _assert_contributions_drizzle(k, oy, ox, fraction, data[ys, xs], sci, wht, weight=3.0)


def _inputs(seed=2, sky_level=1.5):
    rng = np.random.default_rng(seed)
    pm = _pixmap()
    ny, nx = pm.shape[:2]
    sci = rng.normal(sky_level, 0.2, (ny, nx)).astype(np.float32)
    sci[rng.random((ny, nx)) < 0.03] += 50.0          # "cosmic rays"
    dq = np.where(rng.random((ny, nx)) < 0.02, 4, 0).astype(np.uint32)
    chip = ChipData(sci=sci, err=None, dq=dq, finite=np.ones((ny, nx), bool), exptime=400.0,
                    gain=1.0, readnoise=3.0, extver=1)
    return ChipInputs(1, chip, pm, 1.0 / 1.01, footprint_ranges(pm, OUT, margin=4)), rng


def _dense(partial: ChipPartial):
    sci, wht = partial.load()
    return (partial.ranges.rows(np.asarray(sci), 0, OUT[0], OUT[1]),
            partial.ranges.rows(np.asarray(wht), 0, OUT[0], OUT[1]))


@pytest.mark.parametrize(("in_place", "kernel"), [(False, "square"), (True, "square"),
                                                  (True, "turbo")])
def test_derived_partial_matches_drizzled(tmp_path, in_place, kernel):
    inputs, rng = _inputs()
    grid = SimpleNamespace(shape=OUT)
    cr = (inputs.chip.sci > 20) | (rng.random(inputs.chip.shape) < 0.01)
    static = rng.random(inputs.chip.shape) < 0.01
    base = Settings(kernel, 1.0, 0, "EXP", 1.5, static_files={1: static})
    targets = {"final": Settings(kernel, 1.0, 0, "EXP", 1.5, cr_files={1: (cr,)}),
               "exposure": Settings(kernel, 1.0, 65535, "EXP", 0.0)}
    for name, target in targets.items():
        made = drizzle_chip_partial(inputs, base, exposure="e", grid=grid,
                                    stem=tmp_path / f"base-{name}")
        derived = derive_chip_partial(made, inputs, base, target, grid_shape=OUT,
                                      in_place=in_place)
        direct = drizzle_chip_partial(inputs, target, exposure="e", grid=grid,
                                      stem=tmp_path / f"direct-{name}")
        (s1, w1), (s2, w2) = _dense(derived), _dense(direct)
        np.testing.assert_array_equal(w1 > 0, w2 > 0)
        covered = w2 > 0
        np.testing.assert_allclose(w1[covered], w2[covered], rtol=1e-4)
        # data: to float32 rounding of the values drizzled (50 e-/s cosmic rays removed)
        np.testing.assert_allclose(s1[covered], s2[covered], atol=2e-4 * 50, rtol=1e-5)
        assert derived.masks == direct.masks and derived.sky == target.sky


def test_derivation_refused_when_most_pixels_change(tmp_path):
    inputs, _ = _inputs()
    base = Settings("square", 1.0, 0, "EXP", 0.0)
    made = drizzle_chip_partial(inputs, base, exposure="e", grid=SimpleNamespace(shape=OUT),
                                stem=tmp_path / "b")
    half = np.zeros(inputs.chip.shape, bool)
    half[: half.shape[0] // 2] = True
    target = Settings("square", 1.0, 0, "EXP", 0.0, cr_files={1: (half,)})
    assert derive_chip_partial(made, inputs, base, target, grid_shape=OUT) is None
    assert not Settings("turbo", 1.0, 0, "EXP", 0.0).derivable_from(base)
    assert not Settings("square", 0.8, 0, "EXP", 0.0).derivable_from(base)
    assert not Settings("square", 1.0, 0, "IVM", 1.0).derivable_from(
        Settings("square", 1.0, 0, "IVM", 0.0))


def test_footprint_ranges_hold_every_drizzled_pixel():
    for angle, scale in ((28.0, 1.02), (90.0, 0.5), (-3.0, 2.0)):
        pm = _pixmap(angle=angle, scale=scale)
        _, wht = _drizzle(np.ones(pm.shape[:2]), np.ones(pm.shape[:2]), pm)
        ranges = footprint_ranges(pm, OUT, margin=2 + int(np.ceil(max(1.0, scale))))
        ys, xs = np.nonzero(wht > 0)
        assert (ranges.index(ys, xs) >= 0).all(), angle
        assert ranges.size < 3 * np.count_nonzero(wht)


def test_row_ranges_pack_rows_and_index():
    rng = np.random.default_rng(4)
    starts = rng.integers(0, 50, 30).astype(np.int32)
    stops = (starts + rng.integers(0, 60, 30)).astype(np.int32)
    ranges = RowRanges(7, starts, stops)
    dense = rng.random((60, 120)).astype(np.float32)
    flat = ranges.pack(dense)
    back = ranges.rows(flat, 0, 60, 120)
    inside = np.zeros(dense.shape, bool)
    for r, (a, b) in enumerate(zip(starts, stops)):
        inside[7 + r, a:b] = True
    np.testing.assert_array_equal(back, np.where(inside, dense, 0))
    ys, xs = np.nonzero(np.ones(dense.shape, bool))
    index = ranges.index(ys, xs)
    np.testing.assert_array_equal(index >= 0, inside.ravel())
    np.testing.assert_array_equal(flat[index[index >= 0]], dense[inside])


def _memory_partial(exposure, extver, ranges, sci, wht):
    return ChipPartial(exposure, extver, ranges, None, None, iscale=1.0, sky=0.0,
                       arrays=(ranges.pack(sci), ranges.pack(wht)))


@pytest.mark.parametrize("fillval", [0.0, np.nan])
def test_combine_exposures_is_the_weighted_mean(fillval):
    rng = np.random.default_rng(5)
    shape = (90, 110)
    exposures, full = [], []
    for e in range(3):
        chips, s_sum, w_sum = [], np.zeros(shape), np.zeros(shape)
        for extver in (1, 2):
            y0 = int(rng.integers(0, 40))
            starts = rng.integers(0, 40, 40).astype(np.int32)
            stops = (starts + rng.integers(1, 60, 40)).astype(np.int32)
            ranges = RowRanges(y0, starts, stops)
            w = (rng.random(shape) * (rng.random(shape) > 0.3)).astype(np.float32)
            s = rng.normal(size=shape).astype(np.float32)
            inside = ranges.rows(np.ones(ranges.size, np.float32), 0, *shape) > 0
            w = np.where(inside, w, 0).astype(np.float32)
            s[w == 0] = 0      # a partial's contract: no data without weight
            chips.append(_memory_partial(f"e{e}", extver, ranges, s, w))
            s_sum += np.where(w > 0, s.astype(np.float64) * w, 0)
            w_sum += w
        exposures.append(ExposurePartial(f"e{e}", chips))
        full.append((s_sum, w_sum))
    num = sum(s for s, _ in full)
    den = sum(w for _, w in full)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(den > 0, num / den, fillval).astype(np.float32)
    ctx = sum((w > 0).astype(np.int64) << k for k, (_, w) in enumerate(full)).astype(np.int32)
    sci, wht, got_ctx = combine_exposures(exposures, shape, fillval=fillval, rows_per_block=16)
    np.testing.assert_array_equal(sci, expected)
    np.testing.assert_array_equal(wht, den.astype(np.float32))
    np.testing.assert_array_equal(got_ctx, ctx)
    np.testing.assert_array_equal(coverage_bins(exposures, shape, 16),
                                  image_bins(wht > 0, 16))
    for partial, (s_sum, w_sum) in zip(exposures, full):   # one exposure, its chips overlapping
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(w_sum > 0, s_sum / w_sum, 0).astype(np.float32)
        got_sci, got_wht = exposure_rows(partial, 5, 77, shape[1])
        np.testing.assert_array_equal(got_sci, mean[5:77])
        np.testing.assert_array_equal(got_wht, w_sum[5:77].astype(np.float32))


@pytest.mark.parametrize("planes,fill,window", [(1, 0.0, False), (2, 0.0, False),
                                                (1, np.nan, False), (1, 0.0, True),
                                                (2, np.nan, True)])
def test_streamed_product_file_is_what_astropy_writes(tmp_path, planes, fill, window):
    rng = np.random.default_rng(6)
    ny, nx = 120, 97
    sci = rng.normal(size=(ny, nx)).astype(np.float32)
    wht = rng.random((ny, nx)).astype(np.float32)
    shape = (ny, nx) if planes == 1 else (planes, ny, nx)
    ctx = rng.integers(0, 2**31 - 1, size=shape).astype(np.int32)
    sci[:20] = fill      # rows never asked for: fill in SCI, zero elsewhere
    wht[:20] = 0
    ctx[..., :20, :] = 0
    x0, x1 = (13, 71) if window else (0, nx)
    for image, value in ((sci, fill), (wht, 0), (ctx, 0)):   # outside the window, the same
        image[..., :, :x0] = value
        image[..., :, x1:] = value
    primary = fits.Header([("FOO", 1, "c"), ("S_REGION", "POLYGON ICRS " + "1.0 " * 60)])
    sci_header = fits.Header([("INHERIT", True), ("CRPIX1", 3.0)])
    table = binary_table_bytes([("A", np.array([1, 2])), ("B", np.array(["x", "yy"]))],
                               extname="HDRTAB")
    headers = {"primary_header": primary, "sci_header": sci_header, "hdrtab_hdu": table,
               "wht_header": fits.Header([("CRPIX1", 3.0)]),
               "ctx_header": fits.Header([("CRPIX1", 3.0)])}
    a = write_drizzle_product(tmp_path / "a.fits", sci, wht, ctx, **headers)
    b = write_product_file(tmp_path / "b.fits", (ny, nx), planes,
                           lambda s, e: (sci[s:e, x0:x1], wht[s:e], ctx[..., s:e, :],
                                         (x0, x1)),
                           row_blocks=[(70, 120), (20, 70)], fill=fill, **headers)
    assert a.read_bytes() == b.read_bytes()


def _reference_detect(sci, blot, *, sky, readnoise, snr, scale, valid):
    """driz_cr over whole images, as AstroDrizzle writes it (no excess test)."""
    noise = np.sqrt(np.abs(blot + sky) + readnoise**2)
    diff = np.abs(sci - blot)
    padded = np.pad(blot, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    dx = np.maximum(np.abs(centre - padded[1:-1, :-2]), np.abs(centre - padded[1:-1, 2:]))
    dy = np.maximum(np.abs(centre - padded[:-2, 1:-1]), np.abs(centre - padded[2:, 1:-1]))
    deriv = np.sqrt(dx * dx + dy * dy)
    strict = diff > scale[0] * deriv + snr[0] * noise
    loose = diff > scale[1] * deriv + snr[1] * noise
    near = ndimage.convolve(strict.astype(np.uint8), np.ones((3, 3), np.uint8),
                            mode="constant") > 0
    return near & loose & valid


def test_driz_cr_evaluated_where_needed_is_driz_cr():
    rng = np.random.default_rng(7)
    blot = ndimage.gaussian_filter(rng.random((200, 230)) ** 8 * 4e4, 1.0).astype(np.float32)
    sci = (blot + rng.normal(0, np.sqrt(blot + 30.0))).astype(np.float32)
    hits = rng.random(sci.shape) < 0.02
    sci[hits] += rng.uniform(20, 2000, hits.sum()).astype(np.float32)
    valid = rng.random(sci.shape) > 0.05
    for snr, scale in (((3.5, 3.0), (1.5, 1.2)), ((5.0, 4.0), (3.0, 2.4))):
        got = detect_cosmic_rays(sci, blot, sky_electrons=30.0, readnoise=3.0, snr=snr,
                                 scale=scale, valid=valid)
        expected = _reference_detect(sci, blot, sky=30.0, readnoise=3.0, snr=snr, scale=scale,
                                     valid=valid)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("interp", ["poly5", "poly3", "linear"])
def test_blot_updated_where_the_median_changed_is_drizzles_blot(tmp_path, interp):
    """The second CR pass blots again only where its median differs from the first's (and
    near the grid's edges): the same values as drizzle's blot of the whole chip."""
    from hapcore.drizzle.product_jobs import _blot

    rng = np.random.default_rng(5)
    pm = _pixmap(ny=90, nx=110, angle=31.0, scale=1.2)
    pm[..., 0] -= 8.0          # some chip pixels land near (and off) the grid's edge
    first = rng.normal(10.0, 2.0, OUT).astype(np.float32)
    second = first.copy()
    ys, xs = rng.integers(0, OUT[0], 40), rng.integers(0, OUT[1], 40)
    second[ys, xs] += rng.normal(0.0, 50.0, ys.size).astype(np.float32)
    second[0, 5] += 30.0       # at the grid's edge
    files = []
    for name, image in (("m1", first), ("m2", second)):
        files.append(tmp_path / f"{name}.npy")
        np.save(files[-1], image)
    inputs = ChipInputs(1, None, pm, 1.0 / 1.2, footprint_ranges(pm, OUT, margin=4))
    job = SimpleNamespace(interp=interp, sinscl=1.0, previous=None, blot_stem=None)
    whole_first = _blot(job, inputs, np.load(files[0], mmap_mode="r"))
    np.save(tmp_path / "blot-p1-blot1.npy", whole_first)    # as `_flag` keeps it
    reference = blot_image(second, pm, interp=interp, iscale=1.2**2, fillval=0.0)
    np.testing.assert_array_equal(whole_first, blot_image(first, pm, interp=interp,
                                                          iscale=1.2**2, fillval=0.0))
    job = SimpleNamespace(interp=interp, sinscl=1.0, previous=(files[0], tmp_path / "blot-p1"),
                          blot_stem=None)
    updated = _blot(job, inputs, np.load(files[1], mmap_mode="r"))
    assert not np.array_equal(updated, whole_first)
    np.testing.assert_array_equal(updated, reference)


def test_nearest_lookup_is_drizzles_nearest_blot():
    rng = np.random.default_rng(8)
    grid = (rng.random(OUT) > 0.5).astype(np.uint8)
    pm = _pixmap()
    pm[3, 4] = [-5.0, 3.0]   # off the grid
    blotted = blot_image(grid.astype(np.float32), pm, interp="nearest", fillval=0.0) > 0.5
    got = _nearest(grid, pm, rows=16)
    # positions within 1e-4 of a pixel edge may round either way in drizzle's float32 blot
    edge = np.abs((pm + 0.5) % 1.0 - 0.5).max(axis=2) > 0.4999
    np.testing.assert_array_equal(got[~edge], blotted[~edge])


def test_scratch_on_tmpfs_and_orphans_removed(tmp_path):
    parent = scratch_parent(1 << 20)
    if parent is None:
        pytest.skip("no tmpfs with room here: the scratch goes to the work folder")
    orphan = parent / "hapsvm-drizzle-999999999-abc"
    orphan.mkdir()
    (orphan / "x.npy").write_bytes(b"0")
    grid = SimpleNamespace(shape=(10, 10))
    with DrizzleWorkspace(grid, output_dir=tmp_path, n_workers=1) as ws:
        assert ws.scratch.parent == parent and ws.scratch.name.startswith(
            f"hapsvm-drizzle-{os.getpid()}-")
        scratch = ws.scratch
    assert not scratch.exists() and not orphan.exists()


# -- the worker's memory (issue #16): each economy must give what the plain computation gives


def test_contributions_by_blocks_are_the_contributions_in_one_go(monkeypatch):
    import hapcore.drizzle.chip_partials as chip_partials

    inputs, rng = _inputs()
    pixels = rng.random(inputs.chip.shape) < 0.2
    for kernel in ("square", "turbo"):
        settings = Settings(kernel, 1.0, 0, "EXP", 1.5)
        args = (inputs, inputs.ranges, pixels, settings, 1.5, 0.9, OUT)
        monkeypatch.setattr(chip_partials, "_CONTRIBUTION_BLOCK", 1 << 30)
        whole = chip_partials._contributions(*args)
        monkeypatch.setattr(chip_partials, "_CONTRIBUTION_BLOCK", 37)
        blocks = chip_partials._contributions(*args)
        for a, b in zip(whole, blocks):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        empty = chip_partials._contributions(inputs, inputs.ranges, np.zeros_like(pixels),
                                             settings, 1.5, 0.9, OUT)
        assert all(a.size == 0 for a in empty)


def test_patched_weights_are_the_weights_before_the_derivation(tmp_path):
    """The first CR pass keeps its separate drizzles' weights as the values its in-place
    derivation changes (`PatchedWeights`): read back, they are a copy taken before."""
    from hapcore.drizzle.ragged import PatchedWeights

    inputs, rng = _inputs()
    base = Settings("square", 1.0, 0, "EXP", 1.5)
    cr = rng.random(inputs.chip.shape) < 0.03
    target = Settings("square", 1.0, 0, "EXP", 1.5, cr_files={1: (cr,)})
    made = drizzle_chip_partial(inputs, base, exposure="e", grid=SimpleNamespace(shape=OUT),
                                stem=tmp_path / "sep")
    before = np.array(made.load()[1])
    patch = (tmp_path / "valid-index.npy", tmp_path / "valid-value.npy")
    derived = derive_chip_partial(made, inputs, base, target, grid_shape=OUT, in_place=True,
                                  old_weights=patch)
    after = np.array(derived.load()[1])
    assert (after != before).any()
    valid = PatchedWeights(made.exposure, made.extver, made.ranges, derived.wht_file,
                           derived.wht_file, iscale=made.iscale, sky=made.sky,
                           index_file=patch[0], value_file=patch[1])
    _, wht = valid.load()
    n = before.size
    for key in (slice(None), slice(0, n), slice(5, 777), slice(3, n - 2, 16), slice(None, None, 16),
                slice(n - 10, n + 10), slice(40, 40)):
        np.testing.assert_array_equal(wht[key], before[key])
    # as the second pass's median reads it (rows of the grid), and its weight median
    partial = ExposurePartial("e", [valid])
    copy = ExposurePartial("e", [ChipPartial("e", 1, made.ranges, derived.sci_file,
                                             tmp_path / "copy.npy", 1.0, 1.5)])
    np.save(tmp_path / "copy.npy", before)
    for a, b in ((0, OUT[0]), (17, 91)):
        np.testing.assert_array_equal(exposure_rows(partial, a, b, OUT[1])[1],
                                      exposure_rows(copy, a, b, OUT[1])[1])
    from hapcore.drizzle.cr_passes import _covered_median

    assert _covered_median(partial) == _covered_median(copy)
    valid.remove()        # the patch only: the weights are the partial's
    assert not patch[0].exists() and not patch[1].exists() and derived.wht_file.exists()


def test_driz_cr_of_an_electron_image_is_driz_cr_of_the_electrons():
    """`ElectronImage` (the chip in electrons where indexed) and the row blocks of
    `_Pixels.above` give the masks of the whole-chip computation, excess test included."""
    import hapcore.drizzle.cr as cr_module
    from hapcore.drizzle.cr import ElectronImage

    rng = np.random.default_rng(11)
    blot = ndimage.gaussian_filter(rng.random((300, 230)) ** 8 * 4e4, 1.0).astype(np.float32)
    counts = (blot / 500.0 + 0.7 + rng.normal(0, 0.05, blot.shape)).astype(np.float32)
    hits = rng.random(counts.shape) < 0.02
    counts[hits] += rng.uniform(1, 20, hits.sum()).astype(np.float32)
    electrons = counts - np.float32(0.7)
    electrons *= np.float32(500.0)
    lazy = ElectronImage(counts, 0.7, 500.0)
    np.testing.assert_array_equal(lazy[10:20], electrons[10:20])
    ys, xs = np.nonzero(hits)
    np.testing.assert_array_equal(lazy[ys, xs], electrons[ys, xs])
    for excess in (None, "auto", (0.3, 0.6, 0.15)):
        kwargs = {"sky_electrons": 350.0, "readnoise": 3.0, "excess_fraction": excess}
        expected = detect_cosmic_rays(electrons, blot, **kwargs)
        assert expected.any()
        np.testing.assert_array_equal(detect_cosmic_rays(lazy, blot, **kwargs), expected)
    pixels = cr_module._Pixels(electrons, blot, 350.0, 3.0)
    for rows in (1, 7, 256, 1000):
        got = pixels.above(blot, 30.0, rows=rows)
        want = pixels.above(blot, 30.0, rows=blot.shape[0])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_lazy_zeros_are_zeros():
    from hapcore.drizzle.kernel import lazy_zeros

    a = lazy_zeros((301, 257), np.float32)
    assert a.dtype == np.float32 and a.shape == (301, 257) and a.flags.writeable
    assert not a.any()
    a[100:110] = 2.0
    assert a.sum() == 2.0 * 10 * 257
    assert lazy_zeros((0, 5)).shape == (0, 5)


def test_scratch_of_eight_full_frame_exposures_goes_to_the_tmpfs(monkeypatch, tmp_path):
    """An 8-exposure UVIS filter's scratch (1.17 GB measured: 8 separate drizzles, median,
    coverage) is estimated from its chips (`_scratch_bytes`) and on the tmpfs when that has
    room: its drizzle stage's extra time is not disk scratch (issue #16: it is drizzlepac's
    final_pixfrac 0.8 for >= 6 exposures, which no drizzle derives from the separate one)."""
    import hapcore.drizzle.workspace as workspace

    grid = SimpleNamespace(shape=(5410, 5772))        # uvis_n8's grid
    chips = 8 * 2 * 4096 * 2051
    needed = workspace._scratch_bytes(grid, chips)
    assert 1.2e9 < needed < 1.5e9
    assert workspace._scratch_bytes(grid, 4096 * 2051) == workspace._scratch_bytes(grid)
    monkeypatch.setattr(workspace, "_MEMORY_ROOT", tmp_path)
    for free, expected in ((needed + workspace._MEMORY_RESERVE, tmp_path),
                           (needed + workspace._MEMORY_RESERVE - 1, None)):
        monkeypatch.setattr(workspace.os, "statvfs",
                            lambda _, free=free: SimpleNamespace(f_bavail=free, f_frsize=1))
        assert workspace.scratch_parent(needed) == expected
