"""Drizzle stage: resuming across workspaces (persisted CR masks), trailers, WFC3/IR.

The resume test drizzles the filter products in one workspace, closes it, and drizzles the
total in a new one (as a process restarted after a kill would): the total must be identical to
the one-workspace result, with the filter CR masks loaded from disk.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import hapsim
from flows.stages import DirectRunner, drizzle_stage
from hap_models.stage import StageResult
from hapcore.drizzle import (
    drizzle_filter_product,
    drizzle_total_product,
    filter_cr_mask_files,
    open_detector_workspace,
)
from hapcore.obset.tree import interpret_obset_input, parse_obset_tree
from hapcore.obset.product_parameters import assign_product_parameters


def _copies(total, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for edp in total.edp_list:
        shutil.copyfile(edp.input_path, out_dir / edp.full_filename)


def _total(sim):
    return assign_product_parameters(parse_obset_tree(interpret_obset_input(sim.poller)))[0]


@pytest.fixture(scope="module")
def two_filters(tmp_path_factory):
    base = tmp_path_factory.mktemp("drizzle_resume")
    sim = hapsim.simulate_visit(base / "in", detector="wfc3/uvis",
                                filters={"f606w": 2, "f814w": 2}, subarray=256, seed=5,
                                exptime=400.0, star_density=400.0, galaxy_density=10.0,
                                star_mag_range=(17.0, 22.0))
    return sim, _total(sim), base


def _drizzle_stage(total, out: Path) -> list[Path]:
    """The flow's drizzle sequence (its tasks, without Prefect): the product files written."""
    made = drizzle_stage(DirectRunner(), total, out, StageResult(stage="align"), n_workers=2)
    return [Path(p) for p in made.outputs if p.endswith(".fits")]


def _arrays(path):
    with fits.open(path) as hdul:
        return [np.array(hdul[name].data) for name in ("SCI", "WHT", "CTX")]


def test_total_resumes_from_persisted_cr_masks(two_filters, caplog):
    sim, total, base = two_filters
    one, two = base / "one", base / "two"
    _copies(total, one)
    _copies(total, two)
    with open_detector_workspace(total, output_dir=one, n_workers=1) as ws:
        for fdp in total.fdp_list:
            drizzle_filter_product(fdp, workspace=ws)
        reference = drizzle_total_product(total, workspace=ws)
    with open_detector_workspace(total, output_dir=two, n_workers=2) as ws:
        for fdp in total.fdp_list:
            drizzle_filter_product(fdp, workspace=ws)
        files = {fdp.filters: filter_cr_mask_files(fdp, workspace=ws) for fdp in total.fdp_list}
        work_dir, scratch = ws.work_dir, ws.scratch
    assert not scratch.exists() and work_dir.is_dir()
    assert work_dir.parent == two / ".hapsvm-work"
    for fdp in total.fdp_list:
        assert len(files[fdp.filters]) == len(fdp.edp_list)  # one chip per subarray exposure
        assert all(f.exists() and f.parent == work_dir for f in files[fdp.filters])
    caplog.set_level(logging.INFO, logger="hapsvm")
    with open_detector_workspace(total, output_dir=two, n_workers=1) as ws:
        assert ws.work_dir == work_dir
        assert not ws.cr_masks  # nothing in memory: a new process
        resumed = drizzle_total_product(total, workspace=ws)
        assert filter_cr_mask_files(total.fdp_list[0], workspace=ws) == files[
            total.fdp_list[0].filters]
    assert "4 chip CR masks applied" in caplog.text
    for a, b in zip(_arrays(reference), _arrays(resumed)):
        np.testing.assert_array_equal(a, b)


def test_trailers_written(two_filters):
    sim, total, base = two_filters
    out = base / "driver"
    _copies(total, out)
    paths = _drizzle_stage(total, out)
    assert len(paths) == 2 + 4 + 1
    for product in [*total.fdp_list, *total.edp_list, total]:
        trailer = out / product.trl_filename
        assert trailer.exists(), trailer
        text = trailer.read_text()
        assert product.drizzle_filename in text
        assert "# ---- run log ----" not in text
        assert "parameters:" in text and "final_bits" in text and "cosmic rays:" in text
        with fits.open(out / product.drizzle_filename) as hdul:
            assert hdul[0].header["DRIZPARS"] == product.trl_filename
    fdp = total.fdp_list[0]
    text = (out / fdp.trl_filename).read_text()
    assert "first pass" in text and all(e.full_filename in text for e in fdp.edp_list)
    assert "excluded" in (out / total.trl_filename).read_text()
    assert not list(out.glob(".drizzle-scratch-*"))


def test_wfc3_ir_two_exposures(tmp_path):
    sim = hapsim.simulate_visit(tmp_path / "in", detector="wfc3/ir", filters={"f160w": 2},
                                seed=3, exptime=300.0, star_density=300.0,
                                galaxy_density=5.0, star_mag_range=(19.0, 22.0))
    from test_drizzle import _aperture_flux, _isolated_stars, _true_wcs_copies

    total = _total(sim)
    out = tmp_path / "out"
    # true WCS: the truth catalogue's positions are then exact on the grid
    _true_wcs_copies(sim, total, out)
    paths = _drizzle_stage(total, out)
    assert len(paths) == 1 + 2 + 1 and all(p.exists() for p in paths)

    fdp = total.fdp_list[0]
    from hapcore.drizzle.grid import build_detector_grid

    grid = build_detector_grid(total, out)
    with fits.open(out / fdp.drizzle_filename) as hdul:
        data = hdul["SCI"].data.astype(float)
        wht = hdul["WHT"].data
        assert hdul["SCI"].header["BUNIT"] == "ELECTRONS/S"
    # unsaturated stars only: final_bits 528 of IR filter products exclude DQ 256 (saturation)
    stars, x, y = _isolated_stars(sim, "f160w", grid.wcs, data.shape, min_rate=50.0,
                                  radius_px=24, edge=36)
    covered = np.array([wht[int(round(b)) - 34:int(round(b)) + 35,
                            int(round(a)) - 34:int(round(a)) + 35].min() > 0
                        for a, b in zip(x, y)])
    stars, x, y = stars[covered], x[covered], y[covered]
    assert len(stars) >= 3
    # against the same stars in the exposure products (drizzled without CR rejection): the
    # filter combination (sky, CR masks, weights) must conserve flux
    singles = []
    for edp in fdp.edp_list:
        with fits.open(out / edp.drizzle_filename) as hdul:
            singles.append(_aperture_flux(hdul["SCI"].data.astype(float), x, y, r=10.0,
                                          r_in=14.0, r_out=22.0))
    ratio = _aperture_flux(data, x, y, r=10.0, r_in=14.0, r_out=22.0) / np.mean(singles, axis=0)
    assert abs(np.median(ratio) - 1) < 0.005, (np.median(ratio), len(stars))
    truth_ratio = np.median(_aperture_flux(data, x, y) / stars["countrate_f160w"])
    assert abs(truth_ratio - 1) < 0.05, truth_ratio  # includes the PSF beyond 22 px


def test_total_of_six_exposures_from_the_derived_partials(tmp_path, caplog):
    """From 6 UVIS exposures the filter is drizzled with pixfrac 0.8 and the total with 1.0: the
    total's partials are derived by the filter's CR pass (`hapcore.drizzle.total_partials`),
    and the total equals the one drizzled from the inputs to float rounding."""
    from hapcore.drizzle import drizzle_filter_with_exposures
    from hapcore.drizzle.total_partials import total_partial_stem

    sim = hapsim.simulate_visit(tmp_path / "in", detector="wfc3/uvis", filters={"f606w": 6},
                                subarray=192, seed=6, exptime=300.0, star_density=300.0,
                                galaxy_density=10.0, star_mag_range=(17.0, 22.0))
    total = _total(sim)
    fdp = total.fdp_list[0]
    assert fdp.parameters.drizzle.final_pixfrac != total.parameters.drizzle.final_pixfrac
    derived_dir, drizzled_dir = tmp_path / "derived", tmp_path / "drizzled"
    caplog.set_level(logging.DEBUG, logger="hapsvm")
    made = {}
    for out, with_total in ((derived_dir, total), (drizzled_dir, None)):
        _copies(total, out)
        with open_detector_workspace(total, output_dir=out, n_workers=1) as ws:
            drizzle_filter_with_exposures(fdp, workspace=ws, total=with_total)
            stems = [total_partial_stem(ws.work_dir, e.product_basename) for e in fdp.edp_list]
            saved = [f for s in stems for f in s.parent.glob(f"{s.name}-sci*.pkl")]
            assert len(saved) == (len(fdp.edp_list) if with_total is not None else 0)
            caplog.clear()
            made[out] = drizzle_total_product(total, workspace=ws)
            used = "the partials the filter's CR pass derived" in caplog.text
            assert used == (with_total is not None)
            assert not [f for s in stems for f in s.parent.glob(f"{s.name}-sci*")]  # removed
    derived, drizzled = _arrays(made[derived_dir]), _arrays(made[drizzled_dir])
    np.testing.assert_array_equal(derived[2] > 0, drizzled[2] > 0)   # the same coverage
    covered = drizzled[1] > 0
    np.testing.assert_allclose(derived[1][covered], drizzled[1][covered], rtol=1e-4)
    scale = float(np.percentile(np.abs(drizzled[0][covered]), 99))
    np.testing.assert_allclose(derived[0][covered], drizzled[0][covered], rtol=0,
                               atol=1e-4 * scale)
