"""Faults of a shared archive host (issue #18, items 2 and 3).

* two runs into one output directory at once: the second refuses at once (exit 75, one line
  naming the holder's host, pid and start time) and writes nothing -- the first run's log is
  not truncated; the lock of a killed run is taken over;
* SIGTERM (a worker being stopped) and SIGINT (Ctrl-C, to the whole process group): the run
  stops within seconds with 143/130, writes its log, leaves no temporary file, no worker
  process and no file under a final name that differs from a completed run's; a rerun resumes
  (finished stages cached) and its products equal an uninterrupted run's.

One small visit, one reference run (module fixture), each fault run once with ``--workers 2``
and resumed once. The visit is small, so its alignment runs in threads and its drizzle in the
run's own process (`hapcore.drizzle.workspace.INLINE_MAX_INPUT_PIXELS`): each fault arrives
while the drizzle stage's scratch is open, and any process the run started must be gone after
it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from hapsim import simulate_visit

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.slow]

RUNSINGLEHAP = str(Path(sys.executable).with_name("runsinglehap"))
# a stop must take seconds, not the remaining run (generous: 2 shared cores, a loaded CI)
STOP_WITHIN_S = 15.0


# -- helpers --------------------------------------------------------------------------------------

def _command(sim, out: Path, workers: int = 2) -> list[str]:
    return [RUNSINGLEHAP, "-o", str(out), "--refcat", str(sim.refcat), "--workers", str(workers),
            str(sim.poller)]


def _env(prefect_backend) -> dict[str, str]:
    return dict(os.environ, PREFECT_API_URL=prefect_backend)


def _start(sim, out: Path, env: dict[str, str], name: str) -> subprocess.Popen:
    """A run in its own process group (as at a terminal: Ctrl-C signals the whole group)."""
    logs = out.parent / f"{name}.stdout", out.parent / f"{name}.stderr"
    return subprocess.Popen(_command(sim, out), env=env,
                            stdout=logs[0].open("w"), stderr=logs[1].open("w"),
                            start_new_session=True)


def _stderr(out: Path, name: str) -> str:
    return (out.parent / f"{name}.stderr").read_text()


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _processes() -> list[tuple[int, str, int, int, bytes]]:
    """(pid, state, ppid, process group, command line) of every process (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found.append((int(entry.name), fields[0], int(fields[1]), int(fields[2]), cmdline))
    return found


def _drizzling(out: Path) -> bool:
    """The drizzle stage is running: its scratch (or the link to its tmpfs scratch) is there."""
    return bool(list(out.glob(".hapsvm-work/*/.drizzle-scratch-*")))


def _group_left(pgid: int, wait_s: float = 10.0) -> list[int]:
    """Live (not zombie) processes still in the run's process group after ``wait_s``."""
    deadline = time.time() + wait_s
    while True:
        left = [pid for pid, state, _, group, _ in _processes() if group == pgid and state != "Z"]
        if not left or time.time() > deadline:
            return left
        time.sleep(0.1)


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _stop(proc: subprocess.Popen, send) -> tuple[int, float]:
    start = time.perf_counter()
    send()
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return code, time.perf_counter() - start


def _stages(log_text: str) -> dict[str, str]:
    line = [ln for ln in log_text.splitlines() if "stages: " in ln][-1]
    return dict(p.rsplit(" ", 1) for p in line.split("stages: ", 1)[1].split(", "))


def _columns_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return np.array_equal(a, b, equal_nan=True)
    return np.array_equal(a, b)


def _assert_same_product(path: Path, reference: Path) -> None:
    """FITS: every image array; catalogs: every column; the manifest: its lines. (Trailers and
    the binary tables of headerlets carry dates and timings: their existence is compared.)"""
    assert reference.exists(), f"{path.name} is not a product of an uninterrupted run"
    if path.suffix == ".fits":
        with fits.open(path) as ours, fits.open(reference) as ref:
            assert [h.name for h in ours] == [h.name for h in ref], path.name
            for a, b in zip(ours, ref):
                if a.is_image and a.data is not None:
                    assert _columns_equal(a.data, b.data), (path.name, a.name)
    elif path.suffix == ".ecsv":
        a, b = Table.read(path), Table.read(reference)
        assert a.colnames == b.colnames and len(a) == len(b), path.name
        for name in a.colnames:
            assert _columns_equal(a[name], b[name]), (path.name, name)
    elif path.name.endswith("_manifest.txt"):
        assert path.read_text() == reference.read_text()


def _products(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith((".log", ".log.part")))


def _assert_clean_stop(out: Path, reference: Path, poller) -> None:
    """What an interrupted run leaves: its log, complete products only, no temporary file."""
    log = out / (poller.stem + ".log")
    assert log.exists() and not (out / (poller.stem + ".log.part")).exists()
    assert not list(out.rglob(".*.tmp")), list(out.rglob(".*.tmp"))
    assert not list(out.rglob(".drizzle-scratch-*"))
    assert not (out / ".hapsvm.lock").exists()
    assert not list(out.glob("*_manifest.txt"))            # the run did not finish
    for path in _products(out):
        _assert_same_product(path, reference / path.name)


def _assert_resumed(out: Path, reference: Path, poller, *, cached: list[str]) -> None:
    states = _stages((out / (poller.stem + ".log")).read_text())
    for label in cached:
        assert states[label] == "Cached", states
    assert any(v == "Completed" for v in states.values()), states
    assert [p.name for p in _products(out)] == [p.name for p in _products(reference)]
    for path in _products(out):
        _assert_same_product(path, reference / path.name)
    assert not list(out.rglob(".*.tmp")) and not (out / ".hapsvm.lock").exists()


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    sim = simulate_visit(base / "visit", detector="wfc3/uvis", filters={"f606w": 2, "f814w": 2},
                         subarray=256, seed=5, exptime=400.0, star_density=2000.0,
                         star_mag_range=(17.0, 25.0), pointing_error=(0.5, 0.02))
    return SimpleNamespace(sim=sim, base=base, inputs=_digests(base / "visit"))


@pytest.fixture(scope="module")
def reference(visit, prefect_backend):
    """The products of an uninterrupted run. In one process (``--workers 1``, faster here):
    hapsvm's products do not depend on the number of workers."""
    out = visit.base / "reference"
    done = subprocess.run(_command(visit.sim, out, workers=1), env=_env(prefect_backend),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def terminated(visit, reference, prefect_backend):
    """A run stopped with SIGTERM while drizzling; while it drizzled, the same command was run
    again into the same directory."""
    sim, out = visit.sim, visit.base / "terminated"
    proc = _start(sim, out, _env(prefect_backend), "terminated")
    log_part = out / (sim.poller.stem + ".log.part")
    try:
        _wait_for(lambda: _drizzling(out), proc, "drizzling")
        log_before = log_part.read_bytes()
        start = time.perf_counter()
        second = subprocess.run(_command(sim, out), env=_env(prefect_backend),
                                capture_output=True, text=True, timeout=120)
        second_s = time.perf_counter() - start
        log_after = log_part.read_bytes()
        code, stop_s = _stop(proc, lambda: proc.send_signal(signal.SIGTERM))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return SimpleNamespace(out=out, proc=proc, code=code, stop_s=stop_s, second=second,
                           second_s=second_s, log_before=log_before, log_after=log_after,
                           left=_group_left(proc.pid))


@pytest.fixture(scope="module")
def interrupted(visit, reference, prefect_backend):
    """A run stopped by Ctrl-C (SIGINT to its process group, workers included) while it
    drizzles. The Prefect engine without PREFECT_API_URL: on Prefect's temporary server,
    which must outlive the Ctrl-C to record the run's end."""
    sim, out = visit.sim, visit.base / "interrupted"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["HAPSVM_ENGINE"] = "prefect"         # without an API, auto would be the direct engine
    proc = _start(sim, out, env, "interrupted")
    try:
        _wait_for(lambda: _drizzling(out), proc, "drizzling")
        servers = [pid for pid, _, ppid, _, cmd in _processes()
                   if ppid == proc.pid and b"uvicorn" in cmd]
        code, stop_s = _stop(proc, lambda: os.killpg(proc.pid, signal.SIGINT))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return SimpleNamespace(out=out, proc=proc, code=code, stop_s=stop_s, servers=servers,
                           left=_group_left(proc.pid))


@pytest.fixture(scope="module")
def terminated_direct(visit, reference):
    """The direct engine (no PREFECT_API_URL, ``auto``) stopped with SIGTERM while drizzling;
    meanwhile the same command was run again into the same directory."""
    sim, out = visit.sim, visit.base / "terminated-direct"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "HAPSVM_ENGINE")}
    proc = _start(sim, out, env, "terminated-direct")
    try:
        _wait_for(lambda: _drizzling(out), proc, "drizzling")
        second = subprocess.run(_command(sim, out), env=env, capture_output=True, text=True,
                                timeout=120)
        code, stop_s = _stop(proc, lambda: proc.send_signal(signal.SIGTERM))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return SimpleNamespace(out=out, proc=proc, code=code, stop_s=stop_s, second=second,
                           left=_group_left(proc.pid), env=env)


# -- a second run into a busy directory -----------------------------------------------------------

def test_second_run_into_a_busy_directory_refuses_at_once(terminated):
    second = terminated.second
    assert second.returncode == 75, second.stderr[-3000:]
    lines = second.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runsinglehap: error: "), second.stderr
    assert "Traceback" not in second.stderr and second.stdout == ""
    holder = lines[0]
    assert f"host {socket.gethostname()}" in holder and f"pid {terminated.proc.pid}" in holder
    assert "started 20" in holder and str(terminated.out) in holder
    assert terminated.second_s < 10.0                        # before Prefect starts
    # the first run's log was not truncated, nor written to by the second
    assert terminated.log_after.startswith(terminated.log_before)
    assert b"another hapsvm run" not in terminated.log_after


def test_sigterm_stops_within_seconds_cleanly(terminated, reference, visit):
    assert terminated.code == 143, _stderr(terminated.out, "terminated")[-3000:]
    assert terminated.stop_s < STOP_WITHIN_S
    assert terminated.left == [], "worker processes outlived the run"
    log = (terminated.out / (visit.sim.poller.stem + ".log")).read_text()
    assert "stopped by SIGTERM" in log and "return value: 143" in log
    _assert_clean_stop(terminated.out, reference, visit.sim.poller)


def test_rerun_after_sigterm_takes_over_a_killed_runs_lock_and_matches(terminated, reference,
                                                                       visit, prefect_backend):
    out = terminated.out
    # the lock file of a run killed with SIGKILL is left behind: stale, taken over
    script = ("import sys, time\nfrom flows.run_lock import OutputDirLock\n"
              "OutputDirLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\n"
              "time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert f'"pid": {holder.pid}' in (out / ".hapsvm.lock").read_text()

    again = subprocess.run(_command(visit.sim, out), env=_env(prefect_backend),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_resumed(out, reference, visit.sim.poller, cached=["align-uvis"])
    assert _digests(visit.base / "visit") == visit.inputs


# -- the direct engine: the same codes, the same clean stop and resume ----------------------------

def test_direct_engine_stops_refuses_and_resumes_like_prefect(terminated_direct, reference,
                                                              visit):
    done = terminated_direct
    assert done.second.returncode == 75, done.second.stderr[-3000:]
    assert len(done.second.stderr.splitlines()) == 1
    assert done.code == 143, _stderr(done.out, "terminated-direct")[-3000:]
    assert done.stop_s < STOP_WITHIN_S
    assert done.left == [], "worker processes outlived the run"
    log = (done.out / (visit.sim.poller.stem + ".log")).read_text()
    assert "stopped by SIGTERM" in log and "return value: 143" in log
    assert "Flow run" not in log and "task align-uvis: Completed" in log   # no Prefect at all
    _assert_clean_stop(done.out, reference, visit.sim.poller)

    again = subprocess.run(_command(visit.sim, done.out), env=done.env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_resumed(done.out, reference, visit.sim.poller, cached=["align-uvis"])
    assert _digests(visit.base / "visit") == visit.inputs


# -- Ctrl-C ---------------------------------------------------------------------------------------

def test_sigint_stops_within_seconds_cleanly(interrupted, reference, visit):
    stderr = _stderr(interrupted.out, "interrupted")
    assert interrupted.code == 130, stderr[-3000:]
    assert interrupted.stop_s < STOP_WITHIN_S
    assert interrupted.left == [], "worker processes outlived the run"
    assert len(interrupted.servers) == 1                     # Prefect's temporary server ...
    assert not [pid for pid, state, *_ in _processes()       # ... stopped at the run's exit
                if pid in interrupted.servers and state != "Z"]
    # the workers leave Ctrl-C to the run: no traceback from them (nor from the run)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    log = (interrupted.out / (visit.sim.poller.stem + ".log")).read_text()
    assert "stopped by SIGINT" in log and "return value: 130" in log
    _assert_clean_stop(interrupted.out, reference, visit.sim.poller)


def test_rerun_after_sigint_matches(interrupted, reference, visit, prefect_backend):
    again = subprocess.run(_command(visit.sim, interrupted.out), env=_env(prefect_backend),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_resumed(interrupted.out, reference, visit.sim.poller, cached=["align-uvis"])
    assert _digests(visit.base / "visit") == visit.inputs


# -- the pieces, in this process ------------------------------------------------------------------

def test_lock_refuses_a_second_holder_and_is_removed_on_release(tmp_path):
    from flows.run_lock import LOCK_NAME, OutputDirLock
    from hap_models.errors import ExitCode, OutputLockedError

    (tmp_path / LOCK_NAME).write_text('{"host": "gone", "pid": 1, "started": "then"}\n')
    with OutputDirLock(tmp_path):                            # a stale record is taken over
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text()
        with pytest.raises(OutputLockedError) as refused:
            OutputDirLock(tmp_path).acquire()                # also within one process
        assert refused.value.exit_code == ExitCode.OUTPUT_LOCKED == 75
        assert f"pid {os.getpid()}" in str(refused.value)
    assert not (tmp_path / LOCK_NAME).exists()
    with OutputDirLock(tmp_path):
        pass


def test_deployment_flow_takes_the_lock(tmp_path, visit):
    """``svm_visit`` started by a deployment (no log_part) refuses a busy directory before it
    writes its log."""
    from flows.run_lock import OutputDirLock
    from flows.visit_flow import svm_visit
    from hap_models.errors import OutputLockedError
    from hap_models.run_options import VisitOptions

    out = tmp_path / "out"
    with OutputDirLock(out), pytest.raises(OutputLockedError):
        svm_visit.fn(visit.sim.poller, VisitOptions(output_dir=out))
    assert sorted(p.name for p in out.iterdir()) == []


def test_signal_handlers_raise_once_and_are_restored():
    from flows.interrupts import StopOnSignals
    from hap_models.errors import RunInterrupted

    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignals() as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)                                        # interrupted by the handler
        pytest.fail("SIGTERM did not interrupt")
    assert isinstance(stopped.caught, RunInterrupted) and stopped.caught.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before

    with StopOnSignals() as stopped:
        with pytest.raises(RunInterrupted) as first:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)                  # while stopping: ignored
        time.sleep(0.05)
    assert first.value.exit_code == 130 and stopped.caught is None

    outside: list = []                                       # other threads: no handlers
    worker = threading.Thread(target=lambda: outside.append(StopOnSignals().__enter__()._saved))
    worker.start()
    worker.join()
    assert outside == [{}]
