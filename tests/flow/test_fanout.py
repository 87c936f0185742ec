"""The svm-fanout flow: many visits on a local Dask cluster, failures isolated (issue #8)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.fanout import (FanoutError, check_dask_address, check_output_dir,
                          expand_poller_sources, format_summary, main, run_fanout,
                          visit_options_for)
from hap_models.run_options import VisitOptions
from hapsim import simulate_visit

pytest.importorskip("prefect_dask")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _broken_poller(directory: Path) -> Path:
    """A well-formed poller line naming an exposure that does not exist."""
    directory.mkdir(parents=True, exist_ok=True)
    poller = directory / "wfc3_zzz_01_input.out"
    poller.write_text("izzz01a0q_flc.fits,15999,ZZZ,01,300.0,F606W,UVIS,"
                      f"{directory / 'izzz01a0q_flc.fits'}\n")
    return poller


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_backend")
def test_three_visits_one_broken(tmp_path):
    pollers = [simulate_visit(tmp_path / f"v{seed}", seed=seed, subarray=256).poller
               for seed in (21, 22)]
    pollers.append(_broken_poller(tmp_path / "broken"))
    out = tmp_path / "out"

    state, outcomes = run_fanout(pollers, out, workers=2,
                                 visit_options=VisitOptions(output_dir=out, n_workers=1))

    assert state.is_failed(), state
    assert [o.visit for o in outcomes] == [p.stem for p in pollers]
    by_visit = {o.visit: o for o in outcomes}
    for poller in pollers[:2]:
        done = by_visit[poller.stem]
        assert done.state == "Completed" and done.n_products > 0 and done.wall_s > 0
        assert (out / poller.stem / f"{poller.stem}.log").is_file()
        assert set(done.stage_states.values()) == {"Completed"}
    broken = by_visit["wfc3_zzz_01_input"]
    assert broken.state == "Failed" and broken.n_products == 0
    assert "izzz01a0q_flc.fits" in broken.message and "not found" in broken.message

    table = format_summary(outcomes)
    assert table.splitlines()[0].split() == ["visit", "state", "products", "wall_s", "message"]
    assert "2/3 visit(s) completed, 1 failed" in table
    assert any(line.startswith("wfc3_zzz_01_input") and " Failed " in line
               for line in table.splitlines())


def test_direct_fanout_three_visits_one_broken(tmp_path):
    """The direct engine: worker processes, no Prefect; the same outcomes and summary."""
    pollers = [simulate_visit(tmp_path / f"v{seed}", seed=seed, subarray=256).poller
               for seed in (23, 24)]
    pollers.append(_broken_poller(tmp_path / "broken"))
    out = tmp_path / "out"

    state, outcomes = run_fanout(pollers, out, workers=2, engine="direct",
                                 visit_options=VisitOptions(output_dir=out))

    assert state.is_failed() and not state.is_completed(), state
    assert [o.visit for o in outcomes] == [p.stem for p in pollers]
    for done in outcomes[:2]:
        assert done.state == "Completed" and done.n_products > 0 and done.wall_s > 0
        assert set(done.stage_states.values()) == {"Completed"}
        log = (out / done.visit / f"{done.visit}.log").read_text()
        assert "task align-uvis: Completed" in log and "Flow run" not in log
        assert not (out / done.visit / ".hapsvm.lock").exists()
    broken = outcomes[2]
    assert broken.state == "Failed" and broken.n_products == 0
    assert "izzz01a0q_flc.fits" in broken.message and "not found" in broken.message
    assert "not found" in (out / broken.visit / f"{broken.visit}.log").read_text()
    assert "2/3 visit(s) completed, 1 failed" in format_summary(outcomes)

    # the command, run again: every completed visit from its cache, exit 1 for the broken one
    done = subprocess.run([sys.executable, "-m", "flows.fanout", "--engine", "direct",
                           "-o", str(out), *map(str, pollers)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "2/3 visit(s) completed, 1 failed" in done.stdout
    states = [ln for ln in (out / pollers[0].stem / f"{pollers[0].stem}.log").read_text()
              .splitlines() if "stages: " in ln]
    assert "Completed" not in states[-1] and "Cached" in states[-1]


def test_sources_dir_list_and_missing(tmp_path):
    visits = tmp_path / "visits"
    visits.mkdir()
    for name in ("a_input.out", "b_input.out"):
        (visits / name).write_text("x_flc.fits\n")
    (visits / "notes.txt").write_text("not a poller\n")
    listing = tmp_path / "pollers.txt"
    listing.write_text("# my visits\nvisits/b_input.out\n\n/elsewhere/c_input.out\n")
    found = expand_poller_sources([visits, listing])
    assert [p.name for p in found] == ["a_input.out", "b_input.out", "c_input.out"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FanoutError, match="no poller files"):
        expand_poller_sources([empty])


def test_visit_options_per_visit(tmp_path):
    options = visit_options_for(Path("/d/wfc3_b46_06_input.out"), tmp_path,
                                VisitOptions(output_dir=tmp_path, force=True))
    assert options.output_dir == tmp_path / "wfc3_b46_06_input"
    assert options.force and options.n_workers == 1
    explicit = visit_options_for(Path("/d/v_input.out"), tmp_path,
                                 VisitOptions(output_dir=tmp_path, n_workers=3))
    assert explicit.n_workers == 3


def test_unwritable_output_dir_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(FanoutError, match="not writable"):
        check_output_dir(blocker / "out")
    poller = _broken_poller(tmp_path / "v")
    assert main([str(poller), "-o", str(blocker / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: output directory") and "\n" not in err


def test_dead_dask_address_fails_fast(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    with pytest.raises(FanoutError, match="no Dask scheduler answers"):
        check_dask_address(address, timeout=2)
    assert time.perf_counter() - start < 15
    poller = _broken_poller(tmp_path / "v")
    assert main([str(poller), "-o", str(tmp_path / "out"), "--dask-address", address,
                 "--dask-timeout", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: no Dask scheduler answers at {address}") and "\n" not in err


def test_command_help_runs():
    done = subprocess.run([sys.executable, "-m", "flows.fanout", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--dask-address" in done.stdout
