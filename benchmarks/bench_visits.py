"""The standard benchmark visits of issue #9 (hapsim, fixed seeds) and a simulator front end.

Usage: ``python benchmarks/bench_visits.py [--work DIR] [NAME ...]`` simulates the named visits
(default: all) into ``DIR/<name>/visit`` (default DIR: ``$HAPSVM_BENCH_WORK`` or
``/tmp/hapsvm-bench``); an existing complete visit is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

#: name -> simulate_visit keyword arguments (exptime 500 s, box4 dither, 1" / 0.05 deg error)
VISITS: dict[str, dict] = {
    "uvis": dict(detector="wfc3/uvis", filters={"f606w": 4}, seed=901),
    "ir": dict(detector="wfc3/ir", filters={"f160w": 4}, seed=902),
    "wfc": dict(detector="acs/wfc", filters={"f606w": 2, "f814w": 2}, seed=903),
    "hrc": dict(detector="acs/hrc", filters={"f435w": 1, "f814w": 1}, seed=904),
    # scaling with the number of exposures (UVIS full frame, F606W; 4 is "uvis")
    "uvis_n1": dict(detector="wfc3/uvis", filters={"f606w": 1}, seed=901),
    "uvis_n2": dict(detector="wfc3/uvis", filters={"f606w": 2}, seed=901),
    # 6 and 8: the spec's parameters for >= 6 exposures (final_pixfrac 0.8, median combine)
    "uvis_n6": dict(detector="wfc3/uvis", filters={"f606w": 6}, seed=901),
    "uvis_n8": dict(detector="wfc3/uvis", filters={"f606w": 8}, seed=901),
    # issue #16's side-by-side visits: 3 x F555W UVIS and 3 x F160W IR (`run_benchmarks.py speed`)
    "uvis3": dict(detector="wfc3/uvis", filters={"f555w": 3}, seed=905),
    "ir3": dict(detector="wfc3/ir", filters={"f160w": 3}, seed=906),
}
COMMON = dict(exptime=500.0, dither="box4", pointing_error=(1.0, 0.05))


def default_work() -> Path:
    return Path(os.environ.get("HAPSVM_BENCH_WORK", "/tmp/hapsvm-bench"))


def simulate(name: str, work: Path) -> dict:
    """Simulate visit ``name`` into ``work/name/visit`` (kept if already complete)."""
    from hapsim import simulate_visit

    out = work / name / "visit"
    done = out / ".bench-complete.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    sim = simulate_visit(out, overwrite=True, **COMMON, **VISITS[name])
    info = {"name": name, "visit_dir": str(out), "poller": str(sim.poller),
            "refcat": str(sim.refcat), "exposures": [str(p) for p in sim.exposures],
            "simulate_s": round(time.perf_counter() - t0, 1),
            "kwargs": {**COMMON, **VISITS[name]}}
    done.write_text(json.dumps(info, indent=1))
    return info


def load_sim(name: str, work: Path):
    """A hapsim ``VisitResult``-like object for an already simulated visit."""
    from types import SimpleNamespace

    info = simulate(name, work)
    out = Path(info["visit_dir"])
    return SimpleNamespace(out_dir=out, poller=Path(info["poller"]), refcat=Path(info["refcat"]),
                           exposures=tuple(Path(p) for p in info["exposures"]),
                           truth_sources=out / "truth_sources.ecsv", info=info)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(VISITS))
    parser.add_argument("--work", type=Path, default=default_work())
    args = parser.parse_args(argv)
    for name in args.names:
        print(json.dumps(simulate(name, args.work)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
