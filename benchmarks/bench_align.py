"""Benchmark: alignment of a full-frame 4-exposure WFC3/UVIS visit (target < 20 s on 2 cores).

Usage: ``python benchmarks/bench_align.py [--workdir DIR] [--workers 2]``; prints one JSON line
with the wall time of source detection + fit + writing the SVM copies, and the accuracy against
the simulator's true WCS.

``--visit DIR`` aligns an existing visit instead (``DIR/*_input.out``, ``DIR/refcat.ecsv``, e.g.
the standard UVIS visit of ``run_benchmarks.py`` in ``/tmp/hapsvm-bench/uvis/visit``; the inputs
are only read) into ``--workdir`` and reports wall, CPU (this process and its children) and the
peak RSS of the process tree, with the load average. Code under test: the import path, e.g.
``PYTHONPATH=<exported tree>`` for a before/after pair. ``--profile`` adds the cProfile tables
of the run (use ``--workers 1``, or the detection runs outside the profiled thread).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--detector", default="wfc3/uvis")
    parser.add_argument("--filter", default="f606w")
    parser.add_argument("--visit", default=None, help="align this existing visit directory")
    parser.add_argument("--profile", action="store_true", help="with --visit: cProfile tables")
    args = parser.parse_args()
    if args.visit:
        _existing_visit(Path(args.visit), Path(args.workdir or tempfile.mkdtemp(prefix="bench-align-")),
                        args.workers, profile=args.profile)
        return
    from hapcore.align.stage import run_alignment
    from hapsim import simulate_visit
    from test_align import _chip_errors, _total

    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-align-"))
    sim = simulate_visit(root / "visit", detector=args.detector, filters={args.filter: 4},
                         exptime=500.0, pointing_error=(2.0, 0.1), seed=21, overwrite=True)
    total = _total(sim)
    start = time.perf_counter()
    cpu0 = time.process_time()
    result = run_alignment(total, output_dir=root / "out", params=total.parameters.alignment,
                           refcat_path=sim.refcat, n_workers=args.workers)
    wall = time.perf_counter() - start
    errors = _chip_errors(sim, root / "out", total)
    print(json.dumps({
        "benchmark": "align", "detector": args.detector, "exposures": 4, "workers": args.workers,
        "wall_s": round(wall, 2), "parent_cpu_s": round(time.process_time() - cpu0, 2),
        "peak_rss_parent_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "fit": result.exposures[0].record.fit_label,
        "max_chip_rms_mas": round(max(v[0] for v in errors.values()), 2),
        "median_chip_rms_mas": round(float(np.median([v[0] for v in errors.values()])), 2),
    }))


def _existing_visit(visit: Path, workdir: Path, workers: int, *, profile: bool = False) -> None:
    import cProfile
    import io
    import os
    import pstats

    import hapcore.align.stage
    from hapcore.align.stage import run_alignment
    from hapcore.obset.product_parameters import assign_product_parameters
    from hapcore.obset.tree import interpret_obset_input, parse_obset_tree

    # bench_stagewise puts this checkout first on sys.path: undone, or worker processes (which
    # inherit sys.path) would run it instead of the code under test
    saved_path = list(sys.path)
    from bench_stagewise import TreeRSS, _cpu
    sys.path[:] = saved_path

    (poller,) = sorted(visit.glob("*_input.out"))
    (total,) = parse_obset_tree(interpret_obset_input(poller))
    assign_product_parameters([total])
    rss = TreeRSS(period=0.05)
    load_before = os.getloadavg()
    rss.reset()
    profiler = cProfile.Profile() if profile else None
    wall0, cpu0 = time.perf_counter(), _cpu()
    if profiler:
        profiler.enable()
    result = run_alignment(total, output_dir=workdir, params=total.parameters.alignment,
                           refcat_path=visit / "refcat.ecsv", n_workers=workers)
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
    peak = max(rss.peak, rss.sample())
    rss.stop()
    record = result.exposures[0].record
    print(json.dumps({
        "benchmark": "align", "visit": str(visit), "workers": workers,
        "code": str(Path(hapcore.align.stage.__file__).parents[2]),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_tree_rss_mb": round(peak, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "fit": record.fit_label, "nmatches": record.nmatches,
        "rms_ra_mas": record.rms_ra_mas, "rms_dec_mas": record.rms_dec_mas,
    }))
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(22)
        stats.sort_stats("cumulative").print_stats("hapcore", 18)
        print(text.getvalue().replace(sys.prefix + "/lib/python3.11/site-packages/", "")
              .replace(str(Path(hapcore.align.stage.__file__).parents[2]) + "/", ""))


if __name__ == "__main__":
    main()
