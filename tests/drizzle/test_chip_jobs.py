"""Worker jobs by chip (`hapcore.drizzle.jobs.split_by_chip`): the same products as by exposure.

A filter of multi-chip exposures is drizzled twice in worker processes, once with one job per
chip (the default: the workers share the chips, and the exposure product is written by the job
that finishes the exposure's last chip) and once with one job per exposure; every product and
cosmic-ray mask must be the same to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import hapsim
from hapsim.distortion import write_true_wcs_copy
from hapcore.drizzle import DrizzleWorkspace, drizzle_filter_with_exposures
from hapcore.drizzle.grid import build_detector_grid
from hapcore.drizzle.jobs import load_mask, split_by_chip
from hapcore.obset.product_parameters import assign_product_parameters
from hapcore.obset.tree import interpret_obset_input, parse_obset_tree


@dataclass(frozen=True)
class _Job:
    path: Path
    extvers: tuple | None = None


def test_split_by_chip_one_job_per_chip_of_multichip_exposures():
    chips = {"a": [1, 2], "b": [1], "c": [1, 2, 3, 4]}
    jobs = [_Job(Path(name)) for name in chips]
    out, owner = split_by_chip(jobs, lambda job: chips[job.path.name])
    assert [(j.path.name, j.extvers) for j in out] == [
        ("a", (1,)), ("a", (2,)), ("b", None), ("c", (1,)), ("c", (2,)), ("c", (3,)),
        ("c", (4,))]
    assert owner == [0, 0, 1, 2, 2, 2, 2]
    whole, owner = split_by_chip(jobs, lambda job: chips[job.path.name], split=False)
    assert whole == jobs and owner == [0, 1, 2]


def _drizzle(sim, total, out: Path, *, split: bool) -> dict:
    out.mkdir()
    for edp in total.edp_list:
        write_true_wcs_copy(edp.input_path, out / edp.full_filename,
                            sim.exposures[0].parent / "truth_wcs")
    grid = build_detector_grid(total, out)
    fdp = total.fdp_list[0]
    with DrizzleWorkspace(grid, output_dir=out, n_workers=2) as ws:
        ws.split_chips = split
        made = drizzle_filter_with_exposures(fdp, workspace=ws)
        masks = {k: load_mask(v) for k, v in ws.cr_masks.items()}
    return {"made": made, "masks": masks}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("chip_jobs")
    sim = hapsim.simulate_visit(base / "in", detector="wfpc2", filters={"f814w": 2},
                                exptime=500.0, seed=5, star_density=300.0,
                                galaxy_density=20.0, pointing_error=(0.0, 0.0))
    total = assign_product_parameters(parse_obset_tree(interpret_obset_input(sim.poller)))[0]
    # square separate and exposure drizzles: the exposure products follow from the separate
    # drizzles, in the first cosmic-ray pass's chip jobs (`_write_when_complete`)
    assert total.fdp_list[0].parameters.drizzle.driz_sep_kernel == "square"
    assert all(e.parameters.drizzle.final_kernel == "square" for e in total.edp_list)
    return {split: _drizzle(sim, total, base / f"out-{split}", split=split)
            for split in (True, False)}


def test_chip_jobs_give_the_products_of_exposure_jobs(runs):
    by_chip, by_exposure = runs[True], runs[False]
    assert len(by_chip["made"]) == 3        # the filter product and two exposure products
    for a, b in zip(by_chip["made"], by_exposure["made"]):
        assert a.name == b.name
        with fits.open(a) as ha, fits.open(b) as hb:
            for ext in ("SCI", "WHT", "CTX"):
                assert np.array_equal(ha[ext].data, hb[ext].data, equal_nan=True), (a.name, ext)
            assert ha["SCI"].header["NCOMBINE"] == hb["SCI"].header["NCOMBINE"]
    assert by_chip["masks"].keys() == by_exposure["masks"].keys()
    assert len(by_chip["masks"]) == 8       # 2 exposures x 4 chips
    flagged = 0
    for key, mask in by_chip["masks"].items():
        assert np.array_equal(mask, by_exposure["masks"][key]), key
        flagged += int(mask.sum())
    assert flagged > 0                      # the cosmic-ray passes ran and found some


def test_chip_jobs_leave_no_records_behind(runs):
    for path in runs[True]["made"]:
        assert not list(path.parent.glob("*.pkl")) and not list(path.parent.glob("*.claim"))
