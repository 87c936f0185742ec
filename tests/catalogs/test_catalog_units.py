"""Unit tests of the catalog building blocks on tiny hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from photutils.aperture import CircularAnnulus, CircularAperture

from hapcore.catalogs.flags import ci_flags, nexp_flags, saturation_flags
from hapcore.catalogs.image import make_wht_masks, nexp_from_context
from hapcore.catalogs.total import (
    cr_dominance_threshold,
    join_filter_columns,
    reject_cr_dominated,
    trim_total_catalog,
)
from hapcore.catalogs.photometry import (
    aperture_stats_tbl,
    compute_abmag,
    iraf_style_photometry,
)


def test_aperture_stats_counts_every_overlapping_pixel():
    data = np.ones((41, 41))
    ann = CircularAnnulus((20.0, 20.0), 5.0, 8.0)
    tbl = aperture_stats_tbl(data, ann)
    mask = ann.to_mask(method="exact")
    assert tbl["aperture_area"][0] == np.count_nonzero(mask.data > 0)
    assert tbl["aperture_mean"][0] == 1.0 and tbl["aperture_std"][0] == 0.0
    assert tbl["aperture_mode"][0] == 1.0


def test_aperture_stats_clips_outliers():
    rng = np.random.default_rng(0)
    data = rng.normal(10.0, 1.0, (61, 61))
    data[30, 45] = 1e4  # a star in the annulus
    tbl = aperture_stats_tbl(data, CircularAnnulus((30.0, 30.0), 10.0, 20.0))
    assert abs(tbl["aperture_median"][0] - 10.0) < 0.1
    assert tbl["aperture_std"][0] < 1.2


def test_iraf_style_photometry_error_uses_source_counts():
    data = np.full((51, 51), 2.0)
    data[25, 25] += 1000.0
    ap = CircularAperture((25.0, 25.0), 3.0)
    ann = CircularAnnulus((25.0, 25.0), 8.0, 12.0)
    phot = iraf_style_photometry(ap, ann, data, epadu=4.0)
    assert phot["flux_1"][0] == pytest.approx(1000.0)
    # stdev 0 -> only the Poisson term of the SOURCE: sqrt(1000 / 4)
    assert phot["flux_err_1"][0] == pytest.approx(np.sqrt(250.0))
    assert phot["mag_err_1"][0] == pytest.approx(1.0857 * np.sqrt(250.0) / 1000.0)


def test_abmag_and_missing_photflam():
    mag = compute_abmag([1.0, 0.0, -1.0], 1e-19, 5000.0)
    assert mag[0] == pytest.approx(-2.5 * np.log10(1e-19) - 21.10 - 5 * np.log10(5000.0) + 18.6921)
    assert np.isnan(mag[1]) and np.isnan(mag[2])
    assert np.all(compute_abmag([1.0, 2.0], 0.0, 5000.0) == -9999.0)
    assert np.all(compute_abmag([1.0], None, 5000.0) == -9999.0)


def test_ci_flags_zero_ci_is_a_value():
    flags = ci_flags([0.0, np.nan, 0.9, 1.5], [0.01] * 4, [0.01] * 4, [100.0] * 4, [1.0] * 4,
                     ci_lower=0.75, ci_upper=1.0)
    assert flags[0] == 16           # CI = 0 is low, not "missing" (no extended bit)
    assert flags[1] == 17           # missing: 16 + 1
    assert flags[2] == 0
    assert flags[3] == 1
    faint = ci_flags([0.9], [0.01], [0.01], [4.0], [1.0], ci_lower=0.75, ci_upper=1.0)
    assert faint[0] == 8


def test_saturation_flags_same_pixel_convention():
    flags = saturation_flags([10.0, 30.0], [10.0, 30.0], np.array([[12.0, 10.0]]), radius=3.0)
    assert list(flags) == [4, 0]


def test_nexp_flags():
    nexp = np.full((50, 50), 2)
    nexp[:, 40:] = 1
    flags = nexp_flags([10.0, 45.0, 38.0], [10.0, 20.0, 20.0], nexp, radius=3.0, detector="UVIS")
    assert list(flags) == [0, 64, 64]


def test_nexp_from_context_counts_bits():
    ctx = np.array([[0, 1, 3], [7, 2**31 - 1, 5]], dtype=np.int32)
    assert nexp_from_context(ctx).tolist() == [[0, 1, 2], [3, 31, 2]]


def test_weight_regions():
    weight = np.full((100, 100), 2.0)
    weight[:, 70:] = 1.0
    illum = np.ones((100, 100), bool)
    regions = make_wht_masks(weight, illum, scale=1.5, sensitivity=0.95, ndrizim=2, rms=0.1)
    assert len(regions) == 2
    assert regions[0].rel_weight == 1.0 and regions[1].rel_weight == pytest.approx(0.5)
    assert regions[1].rms == pytest.approx(0.1 / np.sqrt(0.5))
    assert np.all(regions[0].mask | regions[1].mask)


def test_cr_dominance_can_fire_for_mixed_visits():
    # one filter with two exposures, one singleton: drizzlepac's n1 = 0 never rejected this
    exposures = {"f606w": [500.0, 500.0], "f814w": [1000.0]}
    thresh = cr_dominance_threshold(exposures, crfactor=300.0, detector="UVIS",
                                    n_pixels=4096 * 4102)
    assert thresh == pytest.approx(300 * (1000 / 3600) * (1000 / 2000))
    assert cr_dominance_threshold({"f606w": [500.0, 500.0]}, crfactor=300.0) == 0.0
    # a singleton whose cosmic rays the drizzle stage found on its own counts as cleaned
    assert cr_dominance_threshold(exposures, crfactor=300.0, detector="UVIS",
                                  cleaned={"f814w"}) == 0.0
    table = Table({"ID": [1, 2, 3], "Flags_f606w": [0, 16, 16], "Flags_f814w": [16, 16, 16]})
    reasons = reject_cr_dominated({"aperture": table, "segment": table[:0]},
                                  {"aperture": thresh, "segment": thresh})
    assert reasons["aperture"] and reasons["segment"]  # one rejected -> all rejected


def test_join_and_trim():
    total = Table({"ID": [1, 2, 3], "X-Center": [1.0, 2.0, 3.0]})
    filt = Table({"ID": [3, 1], "MagAp2": [20.0, 21.0], "CI": [0.9, 1.0], "Flags": [0, 16]})
    joined = join_filter_columns(total, filt, "f606w")
    assert joined["MagAP2_f606w"][0] == 21.0 and np.isnan(joined["MagAP2_f606w"][1])
    assert joined["Flags_f606w"].tolist() == [16, -9999, 0]
    trimmed = trim_total_catalog(joined, flag_trim_value=5)
    assert trimmed["ID"].tolist() == [3]
