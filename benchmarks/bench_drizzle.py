"""Benchmark of the drizzle stage; prints one JSON object.

1. Pixel map of one full WFC3/UVIS chip (4096 x 2051, SIP order 4): exact per-pixel astropy map
   versus the interpolated map (default step 64), with the maximum difference.
2. The whole drizzle stage (`flows.stages.drizzle_stage`, the flow's tasks without Prefect) of a full-frame
   4-exposure WFC3/UVIS hapsim visit (1 filter: 1 filter + 4 exposure + 1 total product), wall
   time, CPU time (this process and its workers, user + system, from ``getrusage``; on a shared
   machine the wall time is noisy, the CPU time much less), load averages around the stage, and
   peak memory (this process plus the largest worker, from ``getrusage``).

Usage::

    python benchmarks/bench_drizzle.py [--workdir DIR] [--workers 2] [--poller FILE]

``--poller`` drizzles an existing visit instead of simulating one (for example the reference
``uvis`` visit of ``run_benchmarks.py``: ``--poller /tmp/hapsvm-bench/uvis/visit/wfc3_xp1_01_input.out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _copies_with_input_wcs(total, out_dir: Path) -> None:
    """SVM copies = the inputs (the benchmark times drizzling, not alignment)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for edp in total.edp_list:
        shutil.copyfile(edp.input_path, out_dir / edp.full_filename)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--poller", type=Path, default=None,
                        help="drizzle this visit's exposures instead of simulating a visit")
    args = parser.parse_args(argv)

    import numpy as np

    import hapsim
    from hapcore.drizzle.grid import make_output_grid
    from hapcore.drizzle.pixmap import exact_pixmap, interpolated_pixmap
    from flows.stages import DirectRunner, drizzle_stage
    from hap_models.stage import StageResult
    from hapcore.obset.tree import interpret_obset_input, parse_obset_tree
    from hapcore.obset.product_parameters import assign_product_parameters
    from hapcore.wcs.files import read_chip_wcs

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_drizzle_"))
    result: dict = {"workers": args.workers}
    t0 = time.perf_counter()
    if args.poller is None:
        sim = hapsim.simulate_visit(workdir / "in", detector="wfc3/uvis", filters={"f606w": 4},
                                    seed=7, overwrite=True)
        result["simulate_s"] = round(time.perf_counter() - t0, 2)
        poller = Path(sim.poller)
    else:
        poller = args.poller.resolve()
        result["poller"] = str(poller)
    cwd = os.getcwd()
    os.chdir(poller.parent)  # poller rows name files relative to the visit folder
    try:
        total = assign_product_parameters(parse_obset_tree(interpret_obset_input(
            str(poller))))[0]
    finally:
        os.chdir(cwd)
    first_exposure = total.edp_list[0].input_path

    chip = read_chip_wcs(first_exposure)[1]
    grid = make_output_grid([chip])
    t0 = time.perf_counter()
    exact = exact_pixmap(chip, grid.wcs)
    t_exact = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        approx = interpolated_pixmap(chip, grid.wcs)  # default step (64 px)
        times.append(time.perf_counter() - t0)
    result["pixmap"] = {"chip_shape": list(exact.shape[:2]), "exact_s": round(t_exact, 3),
                        "interpolated_s": round(min(times), 3),
                        "speedup": round(t_exact / min(times), 1),
                        "max_error_px": float(np.abs(approx - exact).max())}
    del exact, approx

    out = workdir / "out"
    _copies_with_input_wcs(total, out)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_before = [round(v, 2) for v in os.getloadavg()]
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    made = drizzle_stage(DirectRunner(), total, out, StageResult(stage="align"),
                         n_workers=args.workers)
    paths = [p for p in made.outputs if p.endswith(".fits")]
    stage = time.perf_counter() - t0
    cpu1 = _cpu_s()
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["stage"] = {"products": len(paths), "wall_s": round(stage, 1),
                       "cpu_main_s": round(cpu1[0] - cpu0[0], 1),
                       "cpu_workers_s": round(cpu1[1] - cpu0[1], 1),
                       "loadavg_before": load_before,
                       "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                       "grid_shape": list(
                           __import__("hapcore.drizzle.grid", fromlist=["x"])
                           .build_detector_grid(total, out).shape),
                       "peak_rss_main_mb": round(self_peak),
                       "peak_rss_largest_worker_mb": round(child_peak),
                       "peak_rss_bound_mb": round(self_peak + args.workers * child_peak),
                       "main_rss_before_stage_mb": round(rss_before / 1024)}
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


def _cpu_s() -> tuple[float, float]:
    """User + system CPU seconds of this process and of its finished (pool) children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
