"""Resume: a run killed with SIGKILL while drizzling recomputes only what was not finished, and
its products equal an uninterrupted run's (issue 8)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from hapsim import simulate_visit

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.slow]


def _command(sim, out: Path) -> list[str]:
    return [sys.executable, "-m", "flows.svm", "-o", str(out), "--refcat", str(sim.refcat),
            "--workers", "1", str(sim.poller)]


def _stages(log_text: str) -> dict[str, str]:
    line = [ln for ln in log_text.splitlines() if "stages: " in ln][-1]
    pairs = line.split("stages: ", 1)[1].split(", ")
    return dict(p.rsplit(" ", 1) for p in pairs)


def test_killed_while_drizzling_resumes_and_matches(tmp_path, prefect_backend):
    sim = simulate_visit(tmp_path / "visit", detector="wfc3/uvis", filters={"f606w": 2, "f814w": 2},
                         exptime=300.0, pointing_error=(0.5, 0.02), seed=31, subarray=1024,
                         star_density=600.0)
    env = dict(os.environ, PREFECT_API_URL=prefect_backend)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = subprocess.run(_command(sim, reference), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    # start again elsewhere and kill it while drizzling: once the first filter product's task
    # (the filter product and its two exposure products) has finished and the second one has
    # written its filter product (with one worker, its exposure products come after it)
    proc = subprocess.Popen(_command(sim, resumed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if len(list(resumed.glob("hst_*_drc.fits"))) >= 4:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    made_before_kill = {p.name for p in resumed.glob("hst_*_drc.fits")}
    assert made_before_kill, "the run ended before drizzling started"
    assert not list(resumed.glob("*_manifest.txt"))       # the killed run never finished

    again = subprocess.run(_command(sim, resumed), env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    log = (resumed / (sim.poller.stem + ".log")).read_text()
    states = _stages(log)
    assert states["align-uvis"] == "Cached"
    assert any(k.startswith("drizzle-") and v == "Cached" for k, v in states.items()), states
    assert any(k.startswith("drizzle-") and v == "Completed" for k, v in states.items()), states
    assert not list(resumed.glob(".*.tmp"))

    names = sorted(p.name for p in reference.glob("hst_*_drc.fits"))
    assert names == sorted(p.name for p in resumed.glob("hst_*_drc.fits"))
    for name in names:
        for ext in ("SCI", "WHT", "CTX"):
            assert np.array_equal(fits.getdata(reference / name, ext),
                                  fits.getdata(resumed / name, ext)), (name, ext)
    for cat in sorted(reference.glob("*-cat.ecsv")):
        a, b = Table.read(cat), Table.read(resumed / cat.name)
        assert len(a) == len(b) and np.allclose(np.asarray(a["RA"]), np.asarray(b["RA"]))
