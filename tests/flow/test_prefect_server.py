"""End to end against a real Prefect server: deploy, event trigger, worker, UI-style retry (issue #8).

Starts ``prefect server start`` (SQLite, its own PREFECT_HOME), registers ``deployment.yaml``,
starts a process worker, sends ``hapsvm.visit.ready`` events and retries a failed run the way the
dashboard's Retry does (state -> Scheduled/AwaitingRetry, prefect_notes §3.3). Everything started
here is stopped at the end, also when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hapsim import simulate_visit

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
POOL = "hapsvm-pool"


def _failing_stage() -> str:
    """The last stage of the visit flow that every visit runs: the catalogs."""
    return "catalogs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """Stop a process started here (and its own process group) by id: TERM, then KILL."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)      # the group this test created (start_new_session)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real server + the deployments of deployment.yaml + one process worker."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(root / "home"), PREFECT_API_URL=api_url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO",
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_RUNNER_POLL_FREQUENCY="2",
               PREFECT_SERVER_API_PORT=str(port))
    started: list[subprocess.Popen] = []
    handles = []
    try:
        server_log = root / "server.log"
        handles.append(open(server_log, "w"))
        server = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], cwd=root, env=env,
                                  stdout=handles[-1], stderr=subprocess.STDOUT,
                                  start_new_session=True)
        started.append(server)
        _wait_healthy(api_url, server, server_log)

        for command in ([*PREFECT, "work-pool", "create", POOL, "--type", "process"],
                        [*PREFECT, "--no-prompt", "deploy", "--prefect-file", "deployment.yaml",
                         "--all"]):
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=180)
            assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

        worker_log = root / "worker.log"
        handles.append(open(worker_log, "w"))
        started.append(subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", POOL, "--limit", "2"], cwd=root, env=env,
            stdout=handles[-1], stderr=subprocess.STDOUT, start_new_session=True))
        yield {"api_url": api_url, "env": env, "root": root, "worker_log": worker_log}
    finally:
        for process in reversed(started):
            _stop(process)
        for handle in handles:
            handle.close()


def _emit(env: dict, resource_id: str, payload: dict) -> None:
    done = subprocess.run([*PREFECT, "event", "emit", "hapsvm.visit.ready",
                           "--resource-id", resource_id, "--payload", json.dumps(payload)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _client(api_url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url)


def _wait_for_run(client, poller: Path, timeout_s: float = 180):
    """The deployment flow run whose poller_file parameter is ``poller``, once it is final."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for r in client.read_flow_runs()
                if r.deployment_id and str(r.parameters.get("poller_file")) == str(poller)]
        if runs and runs[0].state is not None and runs[0].state.is_final():
            return runs[0]
        time.sleep(1)
    pytest.fail(f"no finished flow run for {poller} after {timeout_s} s")


def _wait_final(client, run_id, timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        # AwaitingRetry is a Scheduled state: wait until the worker has started it again
        if run.state.is_final() and run.run_count >= 2:
            return run
        time.sleep(1)
    pytest.fail(f"flow run {run_id} not finished again after {timeout_s} s")


def _run_logs(client, run_id, needle: str, timeout_s: float = 30) -> list[str]:
    """Log messages of a flow run, waiting until one contains ``needle`` (logs come in batches)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout_s
    while True:
        messages = [entry.message for entry in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]
        if any(needle in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(1)


def test_event_run_fails_then_ui_retry_completes_from_cache(prefect_server, tmp_path):
    from prefect.states import Scheduled

    env = prefect_server["env"]
    stage = _failing_stage()
    sim = simulate_visit(tmp_path / "visit", seed=41, subarray=256)
    missing = tmp_path / "nowhere" / "wfc3_zzz_01_input.out"
    # both events at once: the deployment's concurrency limit (2) lets them run side by side
    _emit(env, f"hapsvm.visit.{sim.poller.stem}",
          {"poller_file": str(sim.poller), "output_dir": str(tmp_path / "out"),
           "options": {"fail_stage": stage, "n_workers": 1}})
    _emit(env, "hapsvm.visit.missing",
          {"poller_file": str(missing), "output_dir": str(tmp_path / "out-missing")})

    with _client(prefect_server["api_url"]) as client:
        # an event naming a poller that does not exist: a Failed run that says why, in one line
        lost = _wait_for_run(client, missing)
        assert lost.state.is_failed(), lost.state
        assert f"{missing}: poller file not found" in lost.state.message
        assert any("poller file not found" in m
                   for m in _run_logs(client, lost.id, "poller file not found"))

        # the event's payload became the flow's typed parameters; the first attempt fails
        run = _wait_for_run(client, sim.poller)
        assert run.parameters["options"]["output_dir"] == str(tmp_path / "out")
        assert run.state.is_failed(), run.state
        assert "injected failure" in run.state.message

        # what the dashboard's Retry does (ui-v2 flow-run header): same run id, scheduled again
        client.set_flow_run_state(run.id, Scheduled(name="AwaitingRetry",
                                                    message="Retry from the UI"), force=True)
        retried = _wait_final(client, run.id)
        assert retried.state.is_completed(), retried.state
        assert retried.run_count == 2

        messages = _run_logs(client, run.id, "stages:")
        stage_lines = [m for m in messages if m.startswith("stages:")]
        assert stage_lines, messages[-20:]
        states = dict(item.rsplit(" ", 1) for item in
                      stage_lines[-1].removeprefix("stages:").strip().split(", "))
        labels = list(states)
        failed_at = next(i for i, label in enumerate(labels)
                         if label == stage or label.startswith(f"{stage}-"))
        assert failed_at > 0
        # everything before the failed stage came from the first attempt's cache
        assert all(states[label] == "Cached" for label in labels[:failed_at]), states
        assert states[labels[failed_at]] == "Completed", states
    assert (tmp_path / "out" / f"{sim.poller.stem}.log").is_file()
    assert re.search(r"Cached", (tmp_path / "out" / f"{sim.poller.stem}.log").read_text())
