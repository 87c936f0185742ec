"""hapsvm benchmarks (issue #9): speed, memory and accuracy on standard hapsim visits, side by side
with drizzlepac's ``runsinglehap`` (the offline peer tool), scaling, fan-out and a profile.

Run from the repository root (venv active)::

    python benchmarks/run_benchmarks.py all                 # everything below, ~45 min on 2 cores
    python benchmarks/run_benchmarks.py visit uvis [--no-peer]   # one standard visit (+ drizzlepac)
    python benchmarks/run_benchmarks.py speed [uvis3 uvis ir3] [--repeats 3]
                                            # issue #16: side by side with drizzlepac, repeated
    python benchmarks/run_benchmarks.py scaling             # UVIS wall vs number of exposures
    python benchmarks/run_benchmarks.py fanout [256 1024]   # benchmarks/bench_prefect.py
    python benchmarks/run_benchmarks.py profile             # pyinstrument of the UVIS run
    python benchmarks/run_benchmarks.py stages              # bench_align/hapsim/drizzle/catalogs
    python benchmarks/run_benchmarks.py table               # markdown tables from results/
    python benchmarks/run_benchmarks.py reaccuracy NAME...  # recompute accuracy of saved runs
    python benchmarks/run_benchmarks.py snapshot DIR        # freeze the code (HAPSVM_BENCH_CODE=DIR)
    python benchmarks/run_benchmarks.py realism [PRESET ...] [--subarray N] [--no-peer]
                                            # hapsim presets scored against the truth (#15)

Visits (benchmarks/bench_visits.py: fixed seeds) are simulated into ``$HAPSVM_BENCH_WORK``
(default ``/tmp/hapsvm-bench``), which also holds the products; only small JSON/text results go
to ``benchmarks/results/``. Every measurement records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PEER = Path(os.environ.get("HAPSVM_PEER_TOOL", ROOT.parent / "shared" / "tools" / "peer"))
MEASURE = PEER / "measure.py"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_visits import default_work, simulate  # noqa: E402

PY = sys.executable
#: the hapsvm source tree to measure (default: this checkout). Other engineers edit the checkout
#: while benchmarks run, so ``HAPSVM_BENCH_CODE`` may name a frozen copy of it (see snapshot).
CODE = Path(os.environ.get("HAPSVM_BENCH_CODE", ROOT)).resolve()


def code_digest(code: Path = None) -> str:
    """sha256 over the measured package sources (no git here: identifies the code measured)."""
    import hashlib

    code = code or CODE
    h = hashlib.sha256()
    for pkg in ("flows", "tasks", "hapcore", "hap_models", "configs", "hapsim"):
        for f in sorted((code / pkg).rglob("*")):
            if f.is_file() and f.suffix in (".py", ".json"):
                h.update(str(f.relative_to(code)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def snapshot(dest: Path) -> Path:
    """Freeze the checkout's packages into ``dest`` (plus a sitecustomize that disables the
    editable install there); run with ``HAPSVM_BENCH_CODE=dest``."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for item in ("flows", "tasks", "hapcore", "hap_models", "configs", "hapsim", "benchmarks",
                 "tests"):
        shutil.copytree(ROOT / item, dest / item,
                        ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copyfile(HERE / "bench_sitecustomize.py", dest / "sitecustomize.py")
    print(f"snapshot {dest} code_digest {code_digest(dest)}", flush=True)
    return dest


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(CODE) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "ram_gb": mem_gb, "cpu_model": model,
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg": list(os.getloadavg())}


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}", flush=True)
    return path


def _stage_groups(stages: list[dict]) -> dict:
    """parse (obset + tree), align, drizzle, catalogs; quality: no stage in the flow yet."""
    groups: dict[str, dict] = {}
    for s in stages:
        key = ("parse" if s["stage"] in ("interpret-obset-input", "build-product-tree")
               else "catalogs" if "catalogs" in s["stage"] else s["stage"].split("-")[0])
        g = groups.setdefault(key, {"wall_s": 0.0, "cpu_s": 0.0, "peak_tree_rss_mb": 0.0})
        g["wall_s"] = round(g["wall_s"] + s["wall_s"], 2)
        g["cpu_s"] = round(g["cpu_s"] + s["cpu_s"], 2)
        g["peak_tree_rss_mb"] = max(g["peak_tree_rss_mb"], s["peak_tree_rss_mb"])
    return groups


def run_hapsvm(name: str, work: Path, *, tag: str = "hapsvm", workers: int = 2) -> dict:
    """``runsinglehap`` (through bench_stagewise.py) under measure.py, on a fresh output dir."""
    info = simulate(name, work)
    visit = Path(info["visit_dir"])
    out = work / name / f"{tag}_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    mjson, sjson = work / name / f"{tag}.measure.json", work / name / f"{tag}.stages.json"
    cmd = [PY, str(MEASURE), "--json", str(mjson), "--log", str(work / name / f"{tag}.console"),
           "--", PY, str(CODE / "benchmarks" / "bench_stagewise.py"), "--stages-json", str(sjson),
           "-o", str(out), "--refcat", str(visit / "refcat.ecsv"), "--workers", str(workers),
           str(Path(info["poller"]))]
    load0 = _load()
    subprocess.run(cmd, check=False, env=_env())
    m = json.loads(mjson.read_text())
    st = json.loads(sjson.read_text()) if sjson.exists() else {}
    return {"command": f"runsinglehap -o OUT --refcat {visit}/refcat.ecsv --workers {workers} "
                       f"{info['poller']}",
            "exit_code": m["exit_code"], "wall_s": round(m["wall_s"], 2),
            "cpu_s": round(m["user_s"] + m["sys_s"], 2), "max_rss_mb": m["max_rss_mb"],
            "peak_tree_rss_mb": m["peak_tree_rss_mb"],
            "peak_tree_memory_tmpfs_once_mb": st.get("peak_tree_memory_tmpfs_once_mb"),
            "stages": st.get("stages", []),
            "stage_groups": _stage_groups(st.get("stages", [])),
            "prefect_and_other_s": st.get("prefect_and_other_s"),
            "loadavg_before": load0, "loadavg_after": _load(), "products_dir": str(out),
            "code": str(CODE), "code_digest": code_digest(), "when": time.strftime("%H:%M:%S")}


def run_peer(name: str, work: Path, reuse: bool = False) -> dict:
    info = simulate(name, work)
    visit = Path(info["visit_dir"])
    run_dir = work / name / "drizzlepac"
    saved = work / name / "drizzlepac.result.json"
    if reuse:
        old = RESULTS / f"visit_{name}.json"
        res = (json.loads(saved.read_text()) if saved.exists() else
               json.loads(old.read_text()).get("drizzlepac") if old.exists() else None)
        if res and res.get("exit_code") is not None:
            res.pop("accuracy", None)
            res["reused_from_earlier_run"] = True
            return res
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [str(PEER / "run_drizzlepac.sh"), "--poller", Path(info["poller"]).name,
           "--refcat", str(visit / "refcat.ecsv"), "--run-dir", str(run_dir), str(visit)]
    res = _run_peer(cmd, run_dir)
    res["when_finished"] = time.strftime("%H:%M:%S")
    saved.write_text(json.dumps(res, indent=1))
    return res


def _run_peer(cmd: list, run_dir: Path) -> dict:
    """Run the peer tool's ``run_drizzlepac.sh`` command; its JSON line plus command, load, CPU."""
    load0 = _load()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    res = json.loads(line) if line else {"error": proc.stdout[-2000:] + proc.stderr[-2000:]}
    res.update({"command": " ".join(["../shared/tools/peer/run_drizzlepac.sh", *cmd[1:]]),
                "loadavg_before": load0, "loadavg_after": _load(), "products_dir": str(run_dir)})
    if "user_s" in res:
        res["cpu_s"] = round(res["user_s"] + res["sys_s"], 2)
    return res


def accuracy(name: str, work: Path, products: str) -> dict:
    from bench_accuracy import evaluate

    try:
        return evaluate(work / name / "visit", Path(products))
    except Exception as exc:  # noqa: BLE001
        return {"error": repr(exc)}


def cmd_visit(name: str, work: Path, peer: bool = True, reuse_peer: bool = False) -> dict:
    result = {"visit": name, "simulate_kwargs": simulate(name, work)["kwargs"],
              "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    if peer:   # drizzlepac first, then hapsvm right after it (same minutes, same load)
        result["drizzlepac"] = run_peer(name, work, reuse=reuse_peer)
    result["hapsvm"] = run_hapsvm(name, work)
    result["hapsvm"]["accuracy"] = accuracy(name, work, result["hapsvm"]["products_dir"])
    if peer and result["drizzlepac"].get("exit_code") is not None:
        result["drizzlepac"]["accuracy"] = accuracy(name, work, result["drizzlepac"]["products_dir"])
        h, d = result["hapsvm"], result["drizzlepac"]
        result["ratios"] = {
            "speedup_wall": round(d["wall_s"] / h["wall_s"], 2),
            "cpu_ratio": round(d["cpu_s"] / h["cpu_s"], 2),
            "peak_tree_rss_ratio_hapsvm_over_drizzlepac":
                round(h["peak_tree_rss_mb"] / d["peak_tree_rss_mb"], 3)}
    _save(f"visit_{name}", result)
    return result


#: issue #16's targets: hapsvm wall <= drizzlepac's / N and peak memory <= drizzlepac's x M
SPEED_TARGETS = {"uvis3": (5.0, 0.5), "uvis": (5.0, 0.5), "ir3": (3.0, 1.0)}


def cmd_speed(names: list[str], work: Path, repeats: int = 3, append: bool = False) -> dict:
    """Issue #16's side-by-side runs: drizzlepac and hapsvm back to back, ``repeats`` times per
    visit, their order alternated (drizzlepac first on odd repeats), the load recorded around
    each run; accuracy of both pipelines' products against the truth from the first repeat.
    ``append``: the runs are added to those of ``results/speed_issue16.json`` (same code only),
    the other visits there kept, and each visit's summary is over all its runs."""
    import statistics

    out = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
           "code_digest": code_digest(), "visits": {}}
    saved = RESULTS / "speed_issue16.json"
    if append and saved.exists():
        previous = json.loads(saved.read_text())
        if previous.get("code_digest") != out["code_digest"]:
            raise SystemExit("speed --append: results/speed_issue16.json measured other code")
        out["visits"] = previous["visits"]
        out["appended"] = previous.get("appended", []) + [out["when"]]
    for name in names or list(SPEED_TARGETS):
        sim = simulate(name, work)
        runs = list(out["visits"].get(name, {}).get("runs", []))
        first = not runs
        for rep in range(repeats):
            pair = {}
            order = ("drizzlepac", "hapsvm") if rep % 2 == 0 else ("hapsvm", "drizzlepac")
            for who in order:
                pair[who] = run_peer(name, work) if who == "drizzlepac" else run_hapsvm(name, work)
                if rep == 0 and first and pair[who].get("exit_code") == 0:
                    pair[who]["accuracy"] = accuracy(name, work, pair[who]["products_dir"])
            h, d = pair["hapsvm"], pair["drizzlepac"]
            pair["ratios"] = {
                "speedup_wall": round(d["wall_s"] / h["wall_s"], 2),
                "cpu_ratio": round(d["cpu_s"] / h["cpu_s"], 2),
                "peak_rss_hapsvm_over_drizzlepac": round(
                    h["peak_tree_rss_mb"] / d["peak_tree_rss_mb"], 3),
                "peak_tmpfs_once_hapsvm_over_drizzlepac": round(
                    (h.get("peak_tree_memory_tmpfs_once_mb") or h["peak_tree_rss_mb"])
                    / d["peak_tree_rss_mb"], 3)}
            pair["order"] = list(order)
            runs.append(pair)
            print(json.dumps({"visit": name, "repeat": len(runs), **pair["ratios"],
                              "hapsvm_wall_s": h["wall_s"], "drizzlepac_wall_s": d["wall_s"]}),
                  flush=True)
        speed_target, memory_target = SPEED_TARGETS.get(name, (None, None))
        summary = {k: statistics.median(r["ratios"][k] for r in runs) for k in runs[0]["ratios"]}
        summary.update({
            "min_speedup_wall": min(r["ratios"]["speedup_wall"] for r in runs),
            "max_peak_rss_ratio": max(r["ratios"]["peak_rss_hapsvm_over_drizzlepac"] for r in runs),
            "max_peak_tmpfs_once_ratio": max(r["ratios"]["peak_tmpfs_once_hapsvm_over_drizzlepac"]
                                             for r in runs),
            "target_speedup": speed_target, "target_memory_ratio": memory_target})
        if speed_target:
            summary["speed_target_met_every_repeat"] = summary["min_speedup_wall"] >= speed_target
            summary["memory_target_met_every_repeat"] = (
                summary["max_peak_tmpfs_once_ratio"] <= memory_target)
        out["visits"][name] = {"simulate_kwargs": sim["kwargs"], "summary": summary, "runs": runs}
        _save("speed_issue16", out)
    return out


def cmd_scaling(work: Path) -> dict:
    """UVIS full frame, 1/2/4/6/8 x F606W, hapsvm only, back to back (6 and 8 exposures
    are drizzled with the spec's >= 6-exposure parameters: compare them with each other)."""
    rows = []
    for n, name in ((1, "uvis_n1"), (2, "uvis_n2"), (4, "uvis"), (6, "uvis_n6"),
                    (8, "uvis_n8")):
        r = run_hapsvm(name, work, tag="scaling")
        rows.append({"n_exposures": n, "visit": name, **{k: r[k] for k in (
            "exit_code", "wall_s", "cpu_s", "peak_tree_rss_mb", "stage_groups",
            "prefect_and_other_s", "loadavg_before", "loadavg_after")}})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        r["wall_per_exposure_s"] = round(r["wall_s"] / r["n_exposures"], 2)
        r["wall_vs_linear_from_n1"] = round(r["wall_s"] / (base["wall_s"] * r["n_exposures"]), 3)
    # fit wall = a + b n (least squares)
    import numpy as np

    n = np.array([r["n_exposures"] for r in rows], float)
    w = np.array([r["wall_s"] for r in rows], float)
    b, a = np.polyfit(n, w, 1)
    out = {"machine": machine(), "rows": rows,
           "linear_fit": {"intercept_s": round(float(a), 2), "slope_s_per_exposure": round(float(b), 2),
                          "max_abs_residual_s": round(float(np.max(np.abs(w - (a + b * n)))), 2)}}
    _save("scaling_uvis", out)
    return out


def cmd_fanout(work: Path, subarray: int = 256) -> dict:
    load0 = _load()
    extra = [] if subarray == 256 else ["--subarray", str(subarray), "--skip-overhead"]
    cmd = [PY, str(CODE / "benchmarks" / "bench_prefect.py"), "--visits", "8", "--workers", "2",
           "--work", str(work / f"prefect{subarray}"), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_env())
    text = proc.stdout
    start = text.find("{")
    try:
        data = json.loads(text[start:])
    except ValueError:
        data = {"error": (text + proc.stderr)[-3000:]}
    data.update({"command": "python benchmarks/bench_prefect.py --visits 8 --workers 2 "
                            + " ".join(extra),
                 "total_wall_s": round(time.perf_counter() - t0, 1), "loadavg_before": load0,
                 "loadavg_after": _load(), "machine": machine()})
    _save("fanout_prefect" if subarray == 256 else f"fanout_prefect_sub{subarray}", data)
    return data


def _profile_summary(session_path: Path, top: int = 25) -> str:
    """Text: the call tree (frames >= 1 % of the run), the top functions by own time, and the
    hapsvm (hapcore/tasks/flows) functions by cumulative time."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    session = Session.load(str(session_path))
    tree = ConsoleRenderer(show_all=False, processor_options={"filter_threshold": 0.01}
                           ).render(session)
    root = session.root_frame()
    total = root.time if root else 0.0
    cum: dict[str, float] = {}

    def walk(frame, active: frozenset):
        key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        ours = any(part in (frame.file_path or "") for part in ("/hapcore/", "/tasks/", "/flows/"))
        if ours and key not in active:
            cum[key] = cum.get(key, 0.0) + frame.time
            active = active | {key}
        for child in frame.children:
            walk(child, active)

    own: dict[str, float] = {}

    def walk_self(frame):
        if frame.function == "[self]" or frame.is_synthetic:
            return
        key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        real = [c for c in frame.children if not (c.function == "[self]" or c.is_synthetic)]
        t = frame.time - sum(c.time for c in real)
        own[key] = own.get(key, 0.0) + t
        for child in real:
            walk_self(child)

    if root:
        walk(root, frozenset())
        walk_self(root)
    flat = "\n".join(f"{t:8.2f} s {100 * t / total:5.1f} %  {k}"
                      for k, t in sorted(own.items(), key=lambda kv: -kv[1])[:top])
    rows = sorted(cum.items(), key=lambda kv: -kv[1])[:top]
    ours = "\n".join(f"{t:8.2f} s {100 * t / total:5.1f} %  {k}" for k, t in rows)
    return (f"## hapsvm functions by cumulative time (of {total:.1f} s)\n{ours}\n\n"
            f"## top functions by own (self) time\n{flat}\n\n## call tree (frames >= 1 %)\n{tree}")


def cmd_profile(work: Path, render_only: bool = False) -> Path:
    """pyinstrument of the whole UVIS run (main process; ``--workers 1`` so the heavy stages run
    in-process and show up in the profile)."""
    info = simulate("uvis", work)
    visit = Path(info["visit_dir"])
    out = work / "uvis" / "profile_out"
    shutil.rmtree(out, ignore_errors=True)
    txt = RESULTS / "profile_uvis.txt"
    session = work / "uvis" / "profile.pyisession"
    load0 = _load()
    cmd = [PY, "-m", "pyinstrument", "-r", "pyisession", "-o", str(session),
           str(CODE / "benchmarks" / "bench_stagewise.py"), "--stages-json", str(work / "uvis" / "profile.stages.json"),
           "-o", str(out), "--refcat", str(visit / "refcat.ecsv"), "--workers", "1", info["poller"]]
    t0 = time.perf_counter()
    if not render_only:
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=_env())
        (work / "uvis" / "profile.meta.json").write_text(json.dumps(
            {"wall": time.perf_counter() - t0, "load0": load0, "load1": _load()}))
    meta = json.loads((work / "uvis" / "profile.meta.json").read_text())
    wall, load0 = meta["wall"], meta["load0"]
    stages = json.loads((work / "uvis" / "profile.stages.json").read_text())
    header = (f"# pyinstrument profile of the UVIS visit (4 x F606W full frame), --workers 1\n"
              f"# command: python -m pyinstrument benchmarks/bench_stagewise.py -o OUT "
              f"--refcat VISIT/refcat.ecsv --workers 1 VISIT/wfc3_xp1_01_input.out\n"
              f"# (python benchmarks/run_benchmarks.py profile)\n"
              f"# wall {wall:.1f} s (profiled), load average before {load0}, after {meta['load1']}\n"
              f"# stages: " + ", ".join(f"{s['stage']} {s['wall_s']} s" for s in stages["stages"])
              + "\n\n")
    txt.write_text(header + _profile_summary(session))
    print(f"wrote {txt.relative_to(ROOT)}", flush=True)
    return txt


def cmd_stages(work: Path) -> dict:
    out = {}
    for script, args in (("bench_hapsim.py", []), ("bench_align.py", ["--workdir", str(work / "st-align")]),
                         ("bench_drizzle.py", ["--workdir", str(work / "st-drizzle")]),
                         ("bench_catalogs.py", [])):
        load0 = _load()
        t0 = time.perf_counter()
        proc = subprocess.run([PY, str(CODE / "benchmarks" / script), *args], capture_output=True,
                              text=True, check=False, env=_env())
        text = proc.stdout
        start = text.find("{")
        try:
            data = json.loads(text[start:])
        except ValueError:
            data = {"error": (text + proc.stderr)[-3000:]}
        data = {"command": f"python benchmarks/{script}", "script_wall_s": round(time.perf_counter() - t0, 1),
                "loadavg_before": load0, "loadavg_after": _load(), "result": data}
        _save("stage_" + script[len("bench_"):-3], data)
        out[script] = data
    return out


#: seed of the realism visits (one per preset name, so each preset is one fixed visit)
REALISM_SEED = 15


def simulate_realism(preset: str, out: Path, *, seed: int = REALISM_SEED, subarray=None,
                     pointing_error=None) -> dict:
    """Simulate (or reuse) the hapsim preset ``preset`` into ``out`` (``hapsim.presets``)."""
    key = {"preset": preset, "seed": seed, "subarray": subarray,
           "pointing_error": list(pointing_error) if pointing_error is not None else None}
    done = out / ".bench-complete.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("key") == key:
            info["reused"] = True
            return info
    try:
        from hapsim.presets import simulate_preset
    except ImportError as exc:   # presets not in this checkout yet
        raise SystemExit(f"realism: hapsim.presets is not available ({exc})") from exc
    overrides = {} if pointing_error is None else {"pointing_error": tuple(pointing_error)}
    t0 = time.perf_counter()
    sim = simulate_preset(out, preset, seed=seed, subarray=subarray, overwrite=True, **overrides)
    info = {"key": key, "visit_dir": str(out), "poller": str(sim.poller), "refcat": str(sim.refcat),
            "exposures": [str(p) for p in sim.exposures], "detector": sim.detector,
            "simulate_s": round(time.perf_counter() - t0, 1),
            "preset": (sim.summary or {}).get("preset")}
    done.write_text(json.dumps(info, indent=1, default=str))
    return info


def run_hapsvm_realism(info: dict, out: Path) -> dict:
    """``python -m flows.svm POLLER --refcat REFCAT`` in a fresh products directory (under
    measure.py when the peer tool is there: wall, CPU, peak memory)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    svm = [PY, "-m", "flows.svm", info["poller"], "--refcat", info["refcat"]]
    mjson = out.parent / "hapsvm.measure.json"
    console = out.parent / "hapsvm.console"
    cmd = ([PY, str(MEASURE), "--json", str(mjson), "--log", str(console), "--", *svm]
           if MEASURE.exists() else svm)
    load0 = _load()
    t0 = time.perf_counter()
    if MEASURE.exists():
        proc = subprocess.run(cmd, cwd=out, env=_env(), check=False)
    else:
        with open(console, "w") as log:
            proc = subprocess.run(cmd, cwd=out, env=_env(), check=False, stdout=log,
                                  stderr=subprocess.STDOUT)
    res = {"command": f"cd {out} && python -m flows.svm {info['poller']} --refcat {info['refcat']}",
           "exit_code": proc.returncode, "wall_s": round(time.perf_counter() - t0, 2)}
    if mjson.exists():
        m = json.loads(mjson.read_text())
        res.update({"exit_code": m.get("exit_code", proc.returncode), "wall_s": round(m["wall_s"], 2),
                    "cpu_s": round(m["user_s"] + m["sys_s"], 2), "max_rss_mb": m.get("max_rss_mb"),
                    "peak_tree_rss_mb": m.get("peak_tree_rss_mb")})
    res.update({"loadavg_before": load0, "loadavg_after": _load(), "products_dir": str(out),
                "console": str(console), "code": str(CODE), "code_digest": code_digest()})
    return res


def run_peer_realism(info: dict, run_dir: Path, reuse: bool = False) -> dict:
    saved = run_dir.parent / "drizzlepac.result.json"
    if reuse and saved.exists():   # only a run on this very visit (same preset, seed, ...)
        res = json.loads(saved.read_text())
        if res.get("exit_code") is not None and res.get("visit_key") == info.get("key"):
            res["reused_from_earlier_run"] = True
            return res
    shutil.rmtree(run_dir, ignore_errors=True)
    visit = Path(info["visit_dir"])
    cmd = [str(PEER / "run_drizzlepac.sh"), "--poller", Path(info["poller"]).name,
           "--refcat", info["refcat"], "--run-dir", str(run_dir), str(visit)]
    res = _run_peer(cmd, run_dir)
    res["visit_key"] = info.get("key")
    saved.write_text(json.dumps(res, indent=1))
    return res


def score_realism(info: dict, products: str, label: str, register: bool = False) -> dict:
    from bench_realism import evaluate

    load0 = _load()
    try:
        res = evaluate(Path(info["visit_dir"]), Path(products), label=label, register=register)
    except Exception as exc:  # noqa: BLE001 - a failed score is a result too
        import traceback

        res = {"error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
    res["command"] = (f"python benchmarks/bench_realism.py {info['visit_dir']} {products} --label {label}"
                      + (" --register" if register else ""))
    res["loadavg_before"], res["loadavg_after"] = load0, _load()
    return res


#: a pipeline whose products are farther than this from the truth (median chip rms, mas) failed
#: its alignment; it is also scored in its own frame (``bench_realism --register``)
REGISTER_ABOVE_MAS = 100.0


def _score_registered(info: dict, result: dict) -> None:
    """When either pipeline's alignment failed (its chips ~1" off the truth), score both again
    in their own frames (truth moved by an affine fit on bright stars): ``realism_registered``,
    so the catalogs can still be compared side by side."""
    rms = [((result.get(w) or {}).get("realism") or {}).get("alignment", {}).get("median_chip_rms_mas")
           for w in ("hapsvm", "drizzlepac")]
    if not any(v is not None and v > REGISTER_ABOVE_MAS for v in rms):
        return
    for who in ("hapsvm", "drizzlepac"):
        if (result.get(who) or {}).get("exit_code") is not None and result[who].get("products_dir"):
            result[who]["realism_registered"] = score_realism(info, result[who]["products_dir"], who,
                                                              register=True)


def cmd_realism(presets: list[str], work: Path, *, subarray=None, peer=True, reuse_peer=False,
                seed: int = REALISM_SEED, pointing_error=None, score_only=False) -> list[dict]:
    """hapsim presets, full frame (or ``subarray``), processed by hapsvm (and drizzlepac) and
    scored with bench_realism.py; writes ``results/realism_<preset>[_sub<N>].json``
    (``score_only``: re-score the products of the last run, nothing re-run)."""
    if not presets:
        try:
            from hapsim.presets import PRESETS
        except ImportError as exc:
            raise SystemExit(f"realism: hapsim.presets is not available ({exc})") from exc
        presets = list(PRESETS)
    note = None
    if subarray is not None and pointing_error is None:
        # a subarray holds too few reference stars to align: without a pointing error the
        # catalogs are scored, not a failed alignment (give --pointing-error to keep one)
        pointing_error = (0.0, 0.0)
        note = "subarray: simulated without a pointing error (too few reference stars to align)"
    results = []
    for preset in presets:
        tag = preset.replace("+", "_") + (f"_sub{subarray}" if subarray else "")
        base = work / "realism" / tag
        if score_only:   # re-score the products of the last run (still in the scratch area)
            saved = RESULTS / f"realism_{tag}.json"
            if not saved.exists():
                print(f"realism {tag}: no {saved.name} to re-score", flush=True)
                continue
            result = json.loads(saved.read_text())
            for who in ("hapsvm", "drizzlepac"):
                if result.get(who, {}).get("products_dir") and result[who].get("exit_code") is not None:
                    result[who]["realism"] = score_realism(result["visit"], result[who]["products_dir"], who)
            _score_registered(result["visit"], result)
            result["rescored"] = time.strftime("%Y-%m-%d %H:%M:%S")
            _save(f"realism_{tag}", result)
            results.append(result)
            continue
        t0 = time.perf_counter()
        info = simulate_realism(preset, base / "visit", seed=seed, subarray=subarray,
                                pointing_error=pointing_error)
        result = {"preset": preset, "subarray": subarray, "seed": seed,
                  "pointing_error": list(pointing_error) if pointing_error is not None else "preset's",
                  "note": note, "visit": info,
                  "command": "python benchmarks/run_benchmarks.py " + " ".join(sys.argv[1:]),
                  "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        print(f"realism {tag}: visit {'reused' if info.get('reused') else 'simulated'} "
              f"({info['visit_dir']})", flush=True)
        if peer:   # drizzlepac first, then hapsvm right after it (same minutes, same load)
            result["drizzlepac"] = run_peer_realism(info, base / "drizzlepac", reuse=reuse_peer)
        result["hapsvm"] = run_hapsvm_realism(info, base / "hapsvm_out")
        print(f"realism {tag}: hapsvm exit {result['hapsvm']['exit_code']} in "
              f"{result['hapsvm']['wall_s']} s; scoring", flush=True)
        result["hapsvm"]["realism"] = score_realism(info, result["hapsvm"]["products_dir"], "hapsvm")
        if peer and result["drizzlepac"].get("exit_code") is not None:
            result["drizzlepac"]["realism"] = score_realism(
                info, result["drizzlepac"]["products_dir"], "drizzlepac")
            _score_registered(info, result)
        result["total_wall_s"] = round(time.perf_counter() - t0, 1)
        _save(f"realism_{tag}", result)
        results.append(result)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["all", "visit", "scaling", "fanout", "profile", "stages",
                                         "table", "machine", "snapshot", "reaccuracy", "realism",
                                         "speed"])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--work", type=Path, default=default_work())
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--render-only", action="store_true",
                        help="profile: re-render results/profile_uvis.txt from the saved session")
    parser.add_argument("--reuse-peer", action="store_true",
                        help="reuse the last drizzlepac measurement of the visit (not re-run)")
    parser.add_argument("--subarray", type=int, default=None,
                        help="realism: simulate N x N single-chip subarrays (fast; no pointing "
                             "error unless --pointing-error is given)")
    parser.add_argument("--seed", type=int, default=REALISM_SEED, help="realism: hapsim seed")
    parser.add_argument("--pointing-error", default=None, metavar="SHIFT,ROT",
                        help="realism: pointing error (arcsec,deg) instead of the preset's")
    parser.add_argument("--repeats", type=int, default=3, help="speed: runs per visit")
    parser.add_argument("--append", action="store_true",
                        help="speed: add the runs to results/speed_issue16.json's")
    parser.add_argument("--score-only", action="store_true",
                        help="realism: re-score the products of the last run (nothing re-run)")
    args = parser.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.what == "reaccuracy":   # recompute the accuracy of saved runs (products still in work)
        for name in args.names:
            path = RESULTS / f"visit_{name}.json"
            res = json.loads(path.read_text())
            for who in ("hapsvm", "drizzlepac"):
                if who in res and "products_dir" in res[who]:
                    res[who]["accuracy"] = accuracy(name, work, res[who]["products_dir"])
            _save(f"visit_{name}", res)
    elif args.what == "realism":   # names: hapsim presets (default: all of hapsim.presets)
        pe = (tuple(float(v) for v in args.pointing_error.split(","))
              if args.pointing_error else None)
        cmd_realism(args.names, work, subarray=args.subarray, peer=not args.no_peer,
                    reuse_peer=args.reuse_peer, seed=args.seed, pointing_error=pe,
                    score_only=args.score_only)
    elif args.what == "snapshot":
        snapshot(Path(args.names[0]) if args.names else work / "code")
    elif args.what == "machine":
        _save("machine", machine())
    elif args.what == "visit":
        for name in args.names or ["uvis", "ir", "wfc", "hrc"]:
            cmd_visit(name, work, peer=not args.no_peer, reuse_peer=args.reuse_peer)
    elif args.what == "speed":   # names: visits (default uvis3 uvis ir3)
        cmd_speed(args.names, work, repeats=args.repeats, append=args.append)
    elif args.what == "scaling":
        cmd_scaling(work)
    elif args.what == "fanout":   # names: subarray sizes (default 256; 1024 = bigger visits)
        for size in args.names or ["256"]:
            cmd_fanout(work, int(size))
    elif args.what == "profile":
        cmd_profile(work, render_only=args.render_only)
    elif args.what == "stages":
        cmd_stages(work)
    elif args.what == "table":
        from bench_table import main as table_main

        table_main()
    else:
        _save("machine", machine())
        for name in ["uvis", "ir", "wfc", "hrc"]:
            cmd_visit(name, work, peer=not args.no_peer)
        cmd_scaling(work)
        cmd_fanout(work)
        cmd_fanout(work, 1024)
        cmd_profile(work)
        cmd_stages(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
