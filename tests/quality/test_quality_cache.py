"""The HLA comparison task's cache key holds what its result depends on (issue #14).

The HLA-classic catalog files and the build version are inputs of the ``quality-hla`` task: a
new ``HLA_BUILD_VER`` (or new catalog content) reruns that task and the summary built from it,
and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from flows.options import HLA_BASEPATH_ENV_VAR, HLA_BUILD_ENV_VAR, read_environment
from flows.svm import svm_visit
from hap_models.run_options import VisitOptions
from hapcore.digests import clear_digest_memo
from hapcore.obset.tree import interpret_obset_input, parse_obset_tree
from hapcore.quality.hla import hla_catalog_directory
from hapsim import simulate_visit, truth_wcs
from hapsim.hla_catalogs import write_hla_catalogs

pytestmark = pytest.mark.usefixtures("prefect_backend")

FILTERS = {"f606w": 2}
EXPTIME = 300.0


def _write_hla_catalogs(sim, directory: Path, fdp) -> list[Path]:
    """HLA-format catalogs of the simulated stars (positions through one exposure's true WCS;
    the comparison recomputes HLA pixel positions from RA/Dec with the product's WCS)."""
    truth = Table.read(sim.truth_sources, format="ascii.ecsv")
    truth = truth[truth["type"] == "star"]
    wcs = truth_wcs(sim.truth_wcs[0])
    x, y = wcs.all_world2pix(np.asarray(truth["ra"], float), np.asarray(truth["dec"], float), 0)
    truth["x"], truth["y"] = x, y
    return write_hla_catalogs(truth, wcs=wcs, filters=list(FILTERS), basename=fdp.basename,
                              output_dir=directory, plate_scale=0.04,
                              exptime={f: EXPTIME * n for f, n in FILTERS.items()},
                              encircled_energy=lambda radius_px: 0.9, seed=1)


def _run(sim, options: VisitOptions, env: dict[str, str]) -> dict[str, str]:
    clear_digest_memo()
    return svm_visit(Path(sim.poller), read_environment(options, env)).stage_states


def test_new_hla_build_reruns_only_the_hla_comparison(tmp_path):
    sim = simulate_visit(tmp_path / "visit", detector="wfc3/uvis", filters=FILTERS,
                         exptime=EXPTIME, pointing_error=(0.5, 0.02), seed=4, subarray=512,
                         star_density=600.0)
    options = VisitOptions(output_dir=tmp_path / "out", refcat=sim.refcat, n_workers=1,
                           quality=True)
    (fdp,) = parse_obset_tree(interpret_obset_input(sim.poller))[0].fdp_list
    base = tmp_path / "hla"
    base.mkdir()
    logs = {build: hla_catalog_directory(fdp, basepath=base,
                                         build_ver=build) for build in ("v1", "v2")}
    written = _write_hla_catalogs(sim, logs["v1"], fdp)
    env = {HLA_BASEPATH_ENV_VAR: str(base), HLA_BUILD_ENV_VAR: "v1"}

    first = _run(sim, options, env)
    assert set(first.values()) == {"Completed"}, first
    compared = sorted(options.output_dir.glob("*_svm_compare_sourcelists.json"))
    assert len(compared) == 2, "the HLA comparison did not run on both catalog types"

    # the same catalogs under a new build version: only the comparison and its summary rerun
    shutil.copytree(logs["v1"], logs["v2"])
    second = _run(sim, options, {**env, HLA_BUILD_ENV_VAR: "v2"})
    rerun = {label for label, state in second.items() if state != "Cached"}
    assert rerun == {"quality-hla", "quality-summary"}, second
    assert second["quality-hla"] == "Completed"

    # new content of a catalog file of the same build reruns it too
    with open(logs["v2"] / written[0].name, "a") as handle:
        handle.write("# revised\n")
    third = _run(sim, options, {**env, HLA_BUILD_ENV_VAR: "v2"})
    assert {label for label, state in third.items() if state != "Cached"} == rerun, third
