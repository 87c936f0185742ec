"""Orchestration costs (issues #8, #16): engines, cached reruns, the temporary API, the fan-out.

Usage::

    python benchmarks/bench_prefect.py [--visits 8] [--workers 2] [--subarray 256] [--work DIR]
    python benchmarks/bench_prefect.py --skip-overhead --fanout-engine direct \\
        --detector wfc3/ir --exposures 3 --subarray 0 --save fanout_ir8     # issue #16's fan-out
    python benchmarks/bench_prefect.py --only cached-rerun --poller P --refcat R --save cached_rerun
    python benchmarks/bench_prefect.py --only early-api --save early_api

* ``overhead``: one small visit through :func:`flows.visit_flow.svm_visit` (the Prefect engine),
  every stage recomputed (``force``) and then all from the cache: flow wall time minus the sum
  of the stage wall times (``StageResult.wall_s``), with Prefect's flow heartbeat at its
  default and turned off.
* ``fanout``: ``--visits`` visits (``--detector``, ``--exposures`` of one filter, ``--subarray``
  px or 0 for full frame; each at its own place in the sky, one shared reference catalog)
  processed one after the other in this process (``serial``: the same engine, one drizzle
  worker per visit), then by :func:`flows.fanout.run_fanout` with ``--workers`` processes
  (pool or cluster start included); with the Prefect engine also with 1 worker and on an
  already running Dask cluster. ``speedup`` = serial / fan-out wall.
* ``cached-rerun``: the whole process ``python -m flows.svm -o OUT --refcat R POLLER`` (the
  direct engine) after a first run, best of ``--repeat``, and where its time goes (phases
  timed inside the process, lazy imports included; the imports alone from ``-X importtime``).
* ``early-api``: the Prefect engine without ``PREFECT_API_URL`` (its temporary API server),
  whole process, with the server started in the background right after the input checks
  (``flows.svm.OVERLAP_API_START``) and without (Prefect starts it when the flow needs it):
  a first run of a small visit and a cached rerun, alternated, ``--repeat`` times each.

Every mode records the 1/5/15-min load average before and after (the machine is shared).
Prints JSON; ``--save NAME`` also writes ``benchmarks/results/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401  (offline Prefect defaults)

__all__ = ["measure_overhead", "measure_fanout", "measure_cached_rerun", "measure_early_api",
           "main"]

PY = sys.executable


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the fan-out's workers)."""
    import resource

    return sum(getattr(resource.getrusage(who), field)
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def _recording_stage_walls():
    """Patch the Prefect engine's stage runner so each stage's ``wall_s`` is recorded."""
    import flows.visit_flow as visit_flow

    walls: dict[str, float] = {}
    original = visit_flow._Stages.__call__

    def recording(self, stage_task, *args, **kwargs):
        label = kwargs.get("label", stage_task.name)
        result = original(self, stage_task, *args, **kwargs)
        walls[label] = float(getattr(result, "wall_s", 0.0) or 0.0)
        return result

    visit_flow._Stages.__call__ = recording
    return walls, lambda: setattr(visit_flow._Stages, "__call__", original)


def measure_overhead(work: Path, subarray: int = 256, repeats: int = 2) -> dict:
    """Flow wall minus stage walls for one visit: computed, cached, heartbeat on and off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.visit_flow import svm_visit
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


def _simulate_fanout_visits(work: Path, n_visits: int, detector: str, exposures: int,
                            subarray: int | None) -> tuple[list[Path], Path]:
    """``n_visits`` visits 0.1 deg apart (no overlap), and one reference catalog for all."""
    from astropy.table import Table, vstack

    from hapsim import simulate_visit

    filt = "f160w" if detector == "wfc3/ir" else "f606w"
    pollers, refcats = [], []
    for i in range(n_visits):
        folder = work / f"fan-visit-{i}"
        kwargs = dict(detector=detector, filters={filt: exposures}, exptime=500.0, seed=200 + i,
                      subarray=subarray, target=(150.1163 + 0.1 * i, 2.2009),
                      program_id=f"f{i:02d}")
        done = folder / ".bench-visit.json"
        # a visit simulated before with the same arguments is kept (repeats, other engines)
        if not done.is_file() or json.loads(done.read_text())["kwargs"] != json.loads(
                json.dumps(kwargs)):
            sim = simulate_visit(folder, overwrite=True, **kwargs)
            done.write_text(json.dumps({"kwargs": kwargs, "poller": str(sim.poller),
                                        "refcat": str(sim.refcat)}))
        info = json.loads(done.read_text())
        pollers.append(Path(info["poller"]))
        refcats.append(Path(info["refcat"]))
    refcat = work / "fan-refcat.ecsv"
    vstack([Table.read(r) for r in refcats], metadata_conflicts="silent").write(
        refcat, overwrite=True)
    return pollers, refcat


def measure_fanout(work: Path, n_visits: int = 8, workers: int = 2, subarray: int = 256,
                   engine: str = "prefect", detector: str = "wfc3/uvis",
                   exposures: int = 2) -> dict:
    """Serial visits in this process vs the fan-out (same engine), see the module docstring."""
    from flows.fanout import run_fanout
    from hap_models.run_options import VisitOptions

    pollers, refcat = _simulate_fanout_visits(work, n_visits, detector, exposures,
                                              subarray or None)

    def fresh(name: str) -> Path:
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        return out

    if engine == "direct":
        from flows.direct import run_visit as serial_visit
    else:
        from flows.visit_flow import svm_visit as serial_visit
    results: dict = {"engine": engine, "n_visits": n_visits, "detector": detector,
                     "exposures": exposures, "subarray": subarray or "full frame",
                     "workers": workers, "loadavg_before_serial": _load()}
    out = fresh("serial-out")
    cpu0 = _cpu()
    start = time.perf_counter()
    walls = []
    for poller in pollers:
        t0 = time.perf_counter()
        serial_visit(poller, VisitOptions(output_dir=out / poller.stem, n_workers=1,
                                          refcat=refcat))
        walls.append(time.perf_counter() - t0)
    serial = time.perf_counter() - start
    results.update({"serial_wall_s": round(serial, 2), "serial_cpu_s": round(_cpu() - cpu0, 2),
                    "serial_visit_wall_s": [round(w, 2) for w in walls],
                    "loadavg_after_serial": _load()})

    counts = sorted({1, workers}) if engine == "prefect" else [workers]
    for n in counts:
        out = fresh(f"fanout-{n}-out")
        results[f"loadavg_before_fanout_{n}"] = _load()
        cpu0 = _cpu()
        start = time.perf_counter()
        state, outcomes = run_fanout(pollers, out, workers=n, engine=engine,
                                     visit_options=VisitOptions(output_dir=out, n_workers=1,
                                                                refcat=refcat))
        wall = time.perf_counter() - start
        assert state.is_completed(), [o.message for o in outcomes if o.state != "Completed"]
        results[f"loadavg_after_fanout_{n}"] = _load()
        results[f"fanout_{n}_workers_wall_s"] = round(wall, 2)
        results[f"fanout_{n}_workers_cpu_s"] = round(_cpu() - cpu0, 2)
        results[f"fanout_{n}_workers_visit_wall_s"] = [round(o.wall_s, 2) for o in outcomes]
        results[f"fanout_{n}_workers_visit_wall_mean_s"] = round(
            sum(o.wall_s for o in outcomes) / len(outcomes), 2)
        results[f"speedup_{n}_workers_vs_serial"] = round(serial / wall, 2)
    if engine != "prefect":
        return results

    # steady state: a Dask cluster already running, its workers' imports done (--dask-address)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("flows.visit_flow") and None)
        out = fresh("fanout-warm-out")
        start = time.perf_counter()
        state, outcomes = run_fanout(pollers, out, workers=workers,
                                     dask_address=cluster.scheduler_address,
                                     visit_options=VisitOptions(output_dir=out, n_workers=1,
                                                                refcat=refcat))
        wall = time.perf_counter() - start
    assert state.is_completed()
    results[f"fanout_{workers}_workers_warm_cluster_wall_s"] = round(wall, 2)
    results[f"speedup_{workers}_workers_warm_cluster_vs_serial"] = round(serial / wall, 2)
    return results


# where a cached rerun's time goes: phases timed inside the process (lazy imports included)
_PHASES = """
import json, sys, time
start = time.perf_counter()
import flows.svm as svm
spent = {{"import flows.svm (entry point)": time.perf_counter() - start}}

def timed(owner, name, label):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
    setattr(owner, name, wrapper)

import flows.visit, flows.visit_log, tasks.cache_store
timed(svm, "check_visit_inputs", "preflight: poller, exposure headers")
timed(svm, "read_environment", "environment (refcat check)")
timed(flows.visit_log.VisitLog, "__enter__", "visit log opened")
timed(tasks.cache_store, "task_cache_key", "cache keys (input digests from the memo)")
timed(tasks.cache_store.TaskCache, "lookup", "records read, unpickled, outputs checked")
timed(flows.visit, "load_digest_memo", "digest memo loaded")
timed(flows.visit, "save_digest_memo", "digest memo saved")
timed(flows.visit, "_write_total_trailers", "trailers")
timed(flows.visit, "finish_drizzle_work", "scratch clean-up")
timed(flows.visit, "_catalog_counts", "catalog counts")
code = svm.main({argv!r})
spent["run_hap_processing (all)"] = time.perf_counter() - start - spent[
    "import flows.svm (entry point)"]
spent["in-process total"] = time.perf_counter() - start
print(json.dumps({{"code": code, "phases_s": {{k: round(v, 3) for k, v in spent.items()}},
                  "modules": len(sys.modules)}}))
"""


def _run_process(args: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600)
    return time.perf_counter() - start, done


def _import_total(stderr: str) -> float:
    """Seconds of imports from ``-X importtime`` (sum of the top-level cumulative times)."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = line.split("|")
            if not parts[2].startswith("  ") and parts[1].strip().isdigit():
                total += int(parts[1])
    return round(total / 1e6, 3)


def measure_cached_rerun(poller: Path, refcat: Path | None, out: Path, repeat: int = 5) -> dict:
    """A cached rerun of ``python -m flows.svm`` (direct engine): wall and breakdown."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "HAPSVM_ENGINE")}
    argv = ["-o", str(out), *(["--refcat", str(refcat)] if refcat else []), str(poller)]
    command = [PY, "-m", "flows.svm", *argv]
    first_s, done = _run_process(command, env)       # the first run (or a rerun already)
    assert done.returncode == 0, done.stderr[-3000:]
    walls = []
    for _ in range(repeat):
        wall, done = _run_process(command, env)
        assert done.returncode == 0 and "0 stage task(s) computed" in done.stderr, \
            done.stderr[-3000:]
        walls.append(round(wall, 3))
    wall, phases = _run_process([PY, "-c", textwrap.dedent(_PHASES.format(argv=argv))], env)
    report = json.loads(phases.stdout.strip().splitlines()[-1])
    _, imports = _run_process([PY, "-X", "importtime", "-m", "flows.svm", *argv], env)
    bare_s, _ = _run_process([PY, "-c", "pass"], env)
    return {"command": " ".join(["python", "-m", "flows.svm", *argv]),
            "first_run_s": round(first_s, 2), "cached_rerun_wall_s": walls,
            "best_s": min(walls), "median_s": sorted(walls)[len(walls) // 2],
            "python_startup_s": round(bare_s, 3),
            "breakdown_wall_s": round(wall, 3), "phases_s": report["phases_s"],
            "modules_loaded": report["modules"],
            "imports_s_from_importtime": _import_total(imports.stderr)}


_OVERLAP = """
import sys
import flows.svm as svm
svm.OVERLAP_API_START = {overlap}
sys.exit(svm.main({argv!r}))
"""


def measure_early_api(work: Path, repeat: int = 3, subarray: int = 256) -> dict:
    """The Prefect engine on its temporary server, the server started early or not."""
    from hapsim import simulate_visit

    sim = simulate_visit(work / "early-visit", seed=116, subarray=subarray, overwrite=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["HAPSVM_ENGINE"] = "prefect"
    rows: dict[str, list] = {f"{kind}_{mode}": [] for kind in ("first", "cached")
                             for mode in ("overlap", "sequential")}
    for i in range(repeat):
        for mode in ("overlap", "sequential"):
            out = work / f"early-out-{mode}-{i}"
            shutil.rmtree(out, ignore_errors=True)
            argv = ["-o", str(out), "--refcat", str(sim.refcat), "--workers", "1",
                    str(sim.poller)]
            script = textwrap.dedent(_OVERLAP.format(overlap=mode == "overlap", argv=argv))
            for kind in ("first", "cached"):
                wall, done = _run_process([PY, "-c", script], env)
                assert done.returncode == 0, done.stderr[-3000:]
                rows[f"{kind}_{mode}"].append(round(wall, 2))
    result: dict = {"visit": f"WFC3/UVIS {subarray} px subarray, 2 exposures", "walls_s": rows}
    for kind in ("first", "cached"):
        best = {mode: min(rows[f"{kind}_{mode}"]) for mode in ("overlap", "sequential")}
        result[f"{kind}_gain_best_s"] = round(best["sequential"] - best["overlap"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subarray", type=int, default=256,
                        help="px of the visits' subarrays; 0: full frame")
    parser.add_argument("--detector", default="wfc3/uvis")
    parser.add_argument("--exposures", type=int, default=2, help="exposures per fan-out visit")
    parser.add_argument("--fanout-engine", default="prefect", choices=["prefect", "direct"])
    parser.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--only", choices=["cached-rerun", "early-api"], default=None)
    parser.add_argument("--poller", default=None, help="cached-rerun: the visit's poller")
    parser.add_argument("--refcat", default=None, help="cached-rerun: its reference catalog")
    parser.add_argument("--out", default=None, help="cached-rerun: the output directory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--save", default=None, help="also write benchmarks/results/NAME.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    logging.getLogger("hapsvm").setLevel(logging.WARNING)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-prefect-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    report: dict = {"host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "api": os.environ.get("PREFECT_API_URL") or "temporary local server",
                             "prefect": version("prefect")},
                    "command": " ".join(["python", "benchmarks/bench_prefect.py",
                                         *(argv if argv is not None else sys.argv[1:])]),
                    "loadavg_before": _load()}
    t0 = time.perf_counter()
    if args.only == "cached-rerun":
        report["cached_rerun"] = measure_cached_rerun(
            Path(args.poller).resolve(), Path(args.refcat).resolve() if args.refcat else None,
            Path(args.out or work / "cached-out").resolve(), repeat=args.repeat)
    elif args.only == "early-api":
        report["early_api"] = measure_early_api(work, repeat=args.repeat)
    else:
        if not args.skip_overhead:
            report["overhead"] = measure_overhead(work, subarray=args.subarray or 256)
        if not args.skip_fanout:
            report["fanout"] = measure_fanout(work, n_visits=args.visits, workers=args.workers,
                                              subarray=args.subarray, engine=args.fanout_engine,
                                              detector=args.detector, exposures=args.exposures)
    report["total_wall_s"] = round(time.perf_counter() - t0, 1)
    report["loadavg_after"] = _load()
    text = json.dumps(report, indent=2)
    print(text)
    if args.save:
        (ROOT / "benchmarks" / "results" / f"{args.save}.json").write_text(text + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
