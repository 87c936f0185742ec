"""CI limits centred on the product's stellar locus (hapcore.catalogs.stellar_locus)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from hapcore.catalogs.stage import build_catalogs
from hapcore.catalogs.stellar_locus import locus_ci_limits, stellar_ci_locus
from hapcore.obset.parameters import build_product_parameters
from test_catalog_scene import make_visit

IR_SCALE = 0.128


def _population(rng, locus=0.51, n_stars=300, n_galaxies=150, n_hot=40):
    """Stars at ``locus`` (pixel-phase scatter 0.04), galaxies above, hot pixels below."""
    ci = np.r_[locus + rng.normal(0, 0.04, n_stars), rng.uniform(0.85, 1.6, n_galaxies),
               rng.uniform(0.05, 0.25, n_hot)]
    snr = rng.uniform(21, 400, ci.size)
    return ci, snr


def test_locus_found_between_galaxies_and_hot_pixels():
    ci, snr = _population(np.random.default_rng(4))
    locus = stellar_ci_locus(ci, snr, start=0.67, half_width=0.17)
    assert abs(locus - 0.51) < 0.01
    limits, found = locus_ci_limits(ci, snr, limits=(0.50, 0.84), peak=0.67)
    assert found == locus
    assert limits == pytest.approx((0.50 + locus - 0.67, 0.84 + locus - 0.67))


def test_faint_detections_ignored_and_too_few_stars_keep_the_table():
    rng = np.random.default_rng(5)
    ci, snr = _population(rng, n_stars=8, n_galaxies=10, n_hot=5)
    assert stellar_ci_locus(ci, snr, start=0.67, half_width=0.17) is None
    # many faint (S/N < 20) detections do not make a locus
    faint_ci = np.r_[ci, rng.normal(0.5, 0.1, 200)]
    faint_snr = np.r_[snr, rng.uniform(3, 19, 200)]
    limits, locus = locus_ci_limits(faint_ci, faint_snr, limits=(0.5, 0.84), peak=0.67)
    assert locus is None and limits == (0.5, 0.84)


def test_a_locus_too_far_from_the_table_keeps_the_limits():
    """A field of compact galaxies (CI ~0.93) is not a stellar locus 0.26 above the peak."""
    rng = np.random.default_rng(6)
    ci, snr = rng.normal(0.93, 0.05, 300), rng.uniform(30, 300, 300)
    limits, locus = locus_ci_limits(ci, snr, limits=(0.5, 0.84), peak=0.67)
    assert locus == pytest.approx(0.93, abs=0.02) and limits == (0.5, 0.84)


def _ir_params(kind, name, *, from_locus):
    base = "hst_12345_01_wfc3_ir_" + ("total" if kind == "total" else name) + "_i00001"
    params = build_product_parameters("wfc3", "ir", kind, product_basename=base,
                                      filter_name=None if kind == "total" else name,
                                      n_exposures=3, first_expstart_mjd=58604.5)
    return params.model_copy(update={"catalog": params.catalog.model_copy(
        update={"ci_limits_from_locus": from_locus, "trim_filter_catalogs": False})})


@pytest.fixture(scope="module")
def ir_field():
    """A drizzled-like WFC3/IR F160W field whose PSF (hapsim's Gaussian mixture) is more
    concentrated than the real one the CI table was calibrated on: stars have CI ~0.5 against
    the table's 0.50/0.67/0.84."""
    return make_visit((500, 500), detector="wfc3/ir", filters=(("f160w", 300.0, 3),),
                      n_stars=250, n_galaxies=40, star_mags=(18.0, 24.5), seed=12,
                      scale=IR_SCALE)


def _bright_stars_flagged_16(visit, *, from_locus):
    cats = build_catalogs(visit.total, visit.filters,
                          total_parameters=_ir_params("total", None, from_locus=from_locus),
                          filter_parameters={"f160w": _ir_params("filter", "f160w",
                                                                 from_locus=from_locus)})
    point = cats.filters[0].point
    truth = visit.truth
    star = np.asarray(truth["type"]) == "star"
    tree = cKDTree(np.column_stack([truth["x"][star], truth["y"][star]]))
    dist, _ = tree.query(np.column_stack([point["X-Center"], point["Y-Center"]]))
    snr = np.asarray(point["FluxAp2"]) / np.asarray(point["FluxErrAp2"])
    on_star = (dist < 1.0) & (snr >= 20)
    assert on_star.sum() > 40
    return float(np.mean((np.asarray(point["Flags"])[on_star] & 16) > 0))


def test_ir_stars_keep_their_rows_with_locus_limits(ir_field):
    assert _bright_stars_flagged_16(ir_field, from_locus=True) <= 0.02


def test_ir_stars_lost_with_the_table_limits(ir_field):
    """The failure the locus limits fix (3 x IR visit: completeness 0.56 -> 0.94)."""
    assert _bright_stars_flagged_16(ir_field, from_locus=False) >= 0.2
