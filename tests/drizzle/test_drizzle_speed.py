"""Unit tests of the drizzle stage's speed helpers: each must give what the plain computation
gives (issue #5: faster, same products)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from astropy.wcs import WCS

from hapcore.drizzle import DrizzleWorkspace
from hapcore.drizzle.footprint import (
    _hull,
    _row_extremes,
    footprint_keywords,
    s_region_from_weight,
)
from hapcore.drizzle.kernel import _unmapped, blot_chip, drizzle_chip, new_accumulator


def test_unmapped_only_when_needed():
    pm = np.zeros((4, 5, 2))
    assert _unmapped(pm) is None
    pm[1, 2, 0] = np.nan
    pm[3, 0, 1] = np.inf
    bad = _unmapped(pm)
    assert bad.sum() == 2 and bad[1, 2] and bad[3, 0]


def test_lazy_accumulator_and_unmapped_pixels_match_drizzle_default():
    rng = np.random.default_rng(3)
    data = rng.random((40, 50)).astype(np.float32)
    yy, xx = np.mgrid[0:40, 0:50].astype(np.float64)
    pm = np.dstack([xx * 1.1 + 3.3, yy * 0.9 + 5.7])
    pm[5, 7] = np.nan
    results = []
    for lazy in (False, True):
        shape = (60, 70)
        arrays = {"out_img": np.zeros(shape, np.float32),
                  "out_wht": np.zeros(shape, np.float32)} if lazy else {}
        acc = new_accumulator(shape, **arrays)
        drizzle_chip(acc, data, pm, weight=np.ones_like(data), exptime=1.0)
        wht = acc.out_wht.copy()
        results.append((np.where(wht > 0, acc.out_img, 0.0), wht))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    blotted = blot_chip(results[0][0].astype(np.float32), pm, interp="linear")
    assert blotted[5, 7] == 0.0 and np.isfinite(blotted).all()
    with pytest.raises(ValueError):
        new_accumulator((3, 3), out_img=np.zeros((3, 3), np.float32))


def _plain_footprint(ctx, wht, exptimes):
    """The per-pixel computation `footprint_keywords` replaced with a histogram."""
    nexp = np.zeros(ctx.shape, np.int32)
    expt = np.zeros(ctx.shape, np.float64)
    for k, t in enumerate(exptimes):
        bit = (ctx >> k) & 1
        nexp += bit
        expt += bit * float(t)
    cov = nexp > 0
    return {"NPIXFRAC": float(cov.mean()), "MEANEXPT": float(expt[cov].mean()),
            "MEDEXPT": float(np.median(expt[cov])), "MEANNEXP": float(nexp[cov].mean()),
            "MEDNEXP": float(np.median(nexp[cov])), "MEANWHT": float(wht[cov].mean()),
            "MEDWHT": float(np.median(wht[cov]))}


@pytest.mark.parametrize("seed", range(6))
def test_footprint_keywords_histogram_matches_per_pixel(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    exptimes = list(rng.choice([30.0, 347.3, 600.0, 1.5e-3], n))
    ctx = rng.integers(0, 1 << n, size=(300, 200)).astype(np.int32)
    if seed % 2:
        ctx[:150] = 0  # uncovered half
    wht = (rng.random(ctx.shape) * (ctx > 0)).astype(np.float32)
    got = footprint_keywords(ctx, wht, exptimes)
    expected = _plain_footprint(ctx, wht, exptimes)
    for key, value in expected.items():
        if key == "MEANEXPT":  # summed in another order: float64 rounding only
            assert got[key] == pytest.approx(value, rel=1e-14)
        else:
            assert got[key] == value, key


def test_footprint_keywords_ignores_bits_of_no_input_and_empty():
    ctx = np.array([[0, 4, 5]], np.int32)  # bit 2: no third input
    wht = np.array([[0, 1, 2]], np.float32)
    got = footprint_keywords(ctx, wht, [10.0, 20.0])
    assert got["NPIXFRAC"] == pytest.approx(1 / 3) and got["MEANWHT"] == 2.0
    empty = footprint_keywords(np.zeros((3, 3), np.int32), np.zeros((3, 3), np.float32), [1.0])
    assert set(empty.values()) == {0.0}


def test_row_extremes_give_the_same_hull():
    rng = np.random.default_rng(5)
    for _ in range(20):
        mask = np.zeros((40, 60), bool)
        for _ in range(int(rng.integers(1, 4))):
            y0, x0 = rng.integers(0, 35), rng.integers(0, 55)
            mask[y0:y0 + rng.integers(1, 20), x0:x0 + rng.integers(1, 30)] = True
        yy, xx = np.nonzero(mask)
        full = np.column_stack([np.r_[xx, xx + 1, xx, xx + 1], np.r_[yy, yy, yy + 1, yy + 1]])
        ry, rx = _row_extremes(mask)
        reduced = np.column_stack([np.r_[rx, rx + 1, rx, rx + 1], np.r_[ry, ry, ry + 1, ry + 1]])
        np.testing.assert_array_equal(_hull(full.astype(float)), _hull(reduced.astype(float)))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-1e-5, 1e-5]
    wcs.wcs.crval = [10.0, 20.0]
    wht = np.zeros((100, 120), np.float32)
    wht[10:60, 5:50] = 1
    assert s_region_from_weight(wht, wcs, bin_size=8).startswith("POLYGON ICRS")


def _square(x):
    time.sleep(0.05)
    return x * x


def test_background_jobs(tmp_path):
    grid = None  # the pool machinery needs no grid
    for workers in (1, 2):
        with DrizzleWorkspace(grid, output_dir=tmp_path / f"w{workers}",
                              n_workers=workers) as ws:
            futures = [ws.submit_background(_square, k) for k in range(5)]
            # foreground work is not starved by the queued background jobs
            assert ws.map(_square, [10, 11, 12]) == [100, 121, 144]
            assert [ws.background_result(f) for f in futures] == [0, 1, 4, 9, 16]
            assert ws._inflight == 0


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9])
def test_sort_stack_matches_numpy_sort(n):
    from hapcore.drizzle.cr import _sort_stack

    rng = np.random.default_rng(n)
    data = rng.normal(size=(n, 37, 41)).astype(np.float32)
    data[data > 1.2] = np.inf          # invalid values are +inf in combine_images
    expected = np.sort(data, axis=0)
    _sort_stack(data)
    assert np.array_equal(data, expected)


@pytest.mark.parametrize("n", range(2, 9))
def test_sorting_networks_sort_every_binary_input(n):
    """The 0-1 principle: a comparator network that sorts every 0/1 sequence sorts all."""
    import itertools

    from hapcore.drizzle.cr import _NETWORKS

    for bits in itertools.product((0, 1), repeat=n):
        values = list(bits)
        for i, j in _NETWORKS[n]:
            if values[i] > values[j]:
                values[i], values[j] = values[j], values[i]
        assert values == sorted(values), bits
