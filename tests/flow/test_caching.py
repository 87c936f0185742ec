"""Caching that is right for files: content digests, stale outputs, corrupt records (issue 8)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from flows.svm import svm_visit
from hap_models.run_options import VisitOptions
from hapcore.digests import clear_digest_memo
from hapsim import simulate_visit

pytestmark = pytest.mark.usefixtures("prefect_backend")


@pytest.fixture()
def visit(tmp_path):
    sim = simulate_visit(tmp_path / "visit", detector="wfc3/uvis", filters={"f606w": 2},
                         exptime=300.0, pointing_error=(0.5, 0.02), seed=4, subarray=512,
                         star_density=600.0)
    return sim, VisitOptions(output_dir=tmp_path / "out", refcat=sim.refcat, n_workers=1)


def _run(sim, options):
    clear_digest_memo()
    return svm_visit(Path(sim.poller), options).stage_states


def test_second_run_executes_no_stage(visit):
    sim, options = visit
    first = _run(sim, options)
    assert set(first.values()) == {"Completed"}, first
    assert set(_run(sim, options).values()) == {"Cached"}
    forced = _run(sim, options.model_copy(update={"force": True}))
    assert set(forced.values()) == {"Completed"}


def test_changed_input_reruns_exactly_what_depends_on_it(visit):
    sim, options = visit
    _run(sim, options)
    # a comment in the poller changes its content but not the tree built from it
    with open(sim.poller, "a") as handle:
        handle.write("# reprocessed\n")
    states = _run(sim, options)
    assert states["interpret-obset-input"] == "Completed"
    assert states["build-product-tree"] == "Cached" and states["align-uvis"] == "Cached"
    # new pixel values in one exposure: everything that reads that exposure runs again
    with fits.open(sim.exposures[1], mode="update") as hdul:
        hdul["SCI", 1].data[5, 5] += 1.0
    states = _run(sim, options)
    assert set(states.values()) == {"Completed"}, states


def test_deleted_product_reruns_the_stage_that_makes_it(visit, caplog):
    sim, options = visit
    _run(sim, options)
    copies = sorted(options.output_dir.glob("hst_*_flc.fits"))
    assert len(copies) == 2
    copies[0].unlink()
    with caplog.at_level(logging.INFO, logger="hapsvm"):
        states = _run(sim, options)
    assert states["align-uvis"] == "Completed" and states["build-product-tree"] == "Cached"
    assert f"{copies[0].name} is missing" in caplog.text and copies[0].exists()
    # a product changed on disk is not trusted either
    with fits.open(copies[1], mode="update") as hdul:
        hdul[0].header["HISTORY"] = "edited by hand"
    assert _run(sim, options)["align-uvis"] == "Completed"


def test_corrupt_cache_record_is_a_logged_miss(visit, caplog):
    sim, options = visit
    _run(sim, options)
    records = [p for p in (options.output_dir / ".hapsvm-cache").iterdir() if p.is_file()]
    assert records
    for record in records:
        record.write_bytes(b"{not json")
    with caplog.at_level(logging.INFO, logger="hapsvm"):
        states = _run(sim, options)
    assert set(states.values()) == {"Completed"}
    assert "cache record unreadable" in caplog.text


def test_outputs_identical_from_cache_and_fresh(visit, tmp_path):
    sim, options = visit
    _run(sim, options)
    fresh = options.model_copy(update={"output_dir": tmp_path / "fresh"})
    _run(sim, fresh)
    for name in sorted(p.name for p in options.output_dir.glob("hst_*_flc.fits")):
        a = fits.getdata(options.output_dir / name, ("SCI", 1))
        b = fits.getdata(tmp_path / "fresh" / name, ("SCI", 1))
        assert np.array_equal(a, b)
