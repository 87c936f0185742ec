"""Benchmark: alignment of a full-frame 4-exposure WFC3/UVIS visit (target < 20 s on 2 cores).

Usage: ``python benchmarks/bench_align.py [--workdir DIR] [--workers 2]``; prints one JSON line
with the wall time of source detection + fit + writing the SVM copies, and the accuracy against
the simulator's true WCS.
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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
