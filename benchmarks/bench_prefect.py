"""Prefect's cost on a small visit, and the fan-out speed-up (issue #8). Prints JSON.

Usage::

    python benchmarks/bench_prefect.py [--visits 8] [--workers 2] [--subarray 256] [--work DIR]

* ``overhead``: one small visit through :func:`flows.svm.svm_visit`, every stage recomputed
  (``force``) and then all from the cache: flow wall time minus the sum of the stage wall times
  (``StageResult.wall_s``), with Prefect's flow heartbeat at its default and turned off.
* ``fanout``: ``--visits`` small visits processed one after the other in this process
  (``serial``), then by :func:`flows.fanout.run_fanout` on a local Dask cluster with 1 and with
  ``--workers`` worker processes (cluster start included), and on an already running cluster
  with warm workers (``--dask-address``). ``speedup`` = serial / fan-out wall.

Against ``PREFECT_API_URL`` when it is set, else against a temporary local server started once
(its start-up is not timed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (offline Prefect defaults)

__all__ = ["measure_overhead", "measure_fanout", "main"]


def _recording_stage_walls():
    """Patch the visit flow's stage runner so each stage's ``wall_s`` is recorded."""
    import flows.svm as svm

    walls: dict[str, float] = {}
    original = svm._Stages.__call__

    def recording(self, stage_task, *args, **kwargs):
        label = kwargs.get("label", stage_task.name)
        result = original(self, stage_task, *args, **kwargs)
        walls[label] = float(getattr(result, "wall_s", 0.0) or 0.0)
        return result

    svm._Stages.__call__ = recording
    return walls, lambda: setattr(svm._Stages, "__call__", original)


def measure_overhead(work: Path, subarray: int = 256, repeats: int = 2) -> dict:
    """Flow wall minus stage walls for one visit: computed, cached, heartbeat on and off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.svm import svm_visit
    from hap_models.run_options import VisitOptions
    from hapcore.digests import clear_digest_memo
    from hapsim import simulate_visit

    sim = simulate_visit(work / "overhead-visit", seed=101, subarray=subarray, overwrite=True)
    options = VisitOptions(output_dir=work / "overhead-out", refcat=sim.refcat, n_workers=1)
    walls, restore = _recording_stage_walls()
    rows = {}
    try:
        svm_visit(sim.poller, options)     # warm-up: imports, first API calls
        for heartbeat in ("default", "off"):
            settings = {} if heartbeat == "default" else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
            with temporary_settings(settings):
                for mode, force in (("computed", True), ("cached", False)):
                    samples = []
                    for _ in range(repeats):
                        walls.clear()
                        clear_digest_memo()
                        start = time.perf_counter()
                        result = svm_visit(sim.poller, options.model_copy(update={"force": force}))
                        flow_wall = time.perf_counter() - start
                        stage_sum = sum(walls.values()) if force else 0.0
                        samples.append({"flow_wall_s": flow_wall, "stage_wall_sum_s": stage_sum,
                                        "overhead_s": flow_wall - stage_sum,
                                        "n_stages": len(result.stage_states),
                                        "states": sorted(set(result.stage_states.values()))})
                    best = min(samples, key=lambda s: s["flow_wall_s"])
                    rows[f"{mode}_heartbeat_{heartbeat}"] = {
                        k: round(v, 3) if isinstance(v, float) else v for k, v in best.items()}
    finally:
        restore()
    return rows


def measure_fanout(work: Path, n_visits: int = 8, workers: int = 2, subarray: int = 256) -> dict:
    """Serial visits in this process vs the Dask fan-out with 1 and ``workers`` processes."""
    from flows.fanout import run_fanout
    from flows.svm import svm_visit
    from hap_models.run_options import VisitOptions
    from hapsim import simulate_visit

    pollers = [simulate_visit(work / f"fan-visit-{i}", seed=200 + i, subarray=subarray,
                              overwrite=True).poller for i in range(n_visits)]

    def fresh(name: str) -> Path:
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        return out

    out = fresh("serial-out")
    start = time.perf_counter()
    for poller in pollers:
        svm_visit(poller, VisitOptions(output_dir=out / poller.stem, n_workers=1))
    serial = time.perf_counter() - start

    results = {"n_visits": n_visits, "serial_wall_s": round(serial, 2)}
    for n in sorted({1, workers}):
        out = fresh(f"fanout-{n}-out")
        start = time.perf_counter()
        state, outcomes = run_fanout(pollers, out, workers=n,
                                     visit_options=VisitOptions(output_dir=out, n_workers=1))
        wall = time.perf_counter() - start
        assert state.is_completed(), [o.message for o in outcomes if o.state != "Completed"]
        results[f"fanout_{n}_workers_wall_s"] = round(wall, 2)
        results[f"fanout_{n}_workers_visit_wall_mean_s"] = round(
            sum(o.wall_s for o in outcomes) / len(outcomes), 2)
        results[f"speedup_{n}_workers_vs_serial"] = round(serial / wall, 2)

    # steady state: a Dask cluster already running, its workers' imports done (--dask-address)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("flows.svm") and None)
        out = fresh("fanout-warm-out")
        start = time.perf_counter()
        state, outcomes = run_fanout(pollers, out, workers=workers,
                                     dask_address=cluster.scheduler_address,
                                     visit_options=VisitOptions(output_dir=out, n_workers=1))
        wall = time.perf_counter() - start
    assert state.is_completed()
    results[f"fanout_{workers}_workers_warm_cluster_wall_s"] = round(wall, 2)
    results[f"speedup_{workers}_workers_warm_cluster_vs_serial"] = round(serial / wall, 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subarray", type=int, default=256, choices=[256, 512, 1024])
    parser.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-fanout", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    logging.getLogger("hapsvm").setLevel(logging.WARNING)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-prefect-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    report = {"host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "api": os.environ.get("PREFECT_API_URL") or "temporary local server"}}
    import prefect

    report["host"]["prefect"] = prefect.__version__
    if not args.skip_overhead:
        report["overhead"] = measure_overhead(work, subarray=args.subarray)
    if not args.skip_fanout:
        report["fanout"] = measure_fanout(work, n_visits=args.visits, workers=args.workers,
                                          subarray=args.subarray)
    print(json.dumps(report, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
