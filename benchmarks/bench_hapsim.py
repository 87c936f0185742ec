"""
Time hapsim visits and print the results as JSON.

Cases: a full-frame 4-exposure WFC3/UVIS visit (f606w:4, box4) and a
512x512 subarray 2-exposure visit. Run with ``python benchmarks/bench_hapsim.py``.
"""

import json
import os
import resource
import tempfile
import time

from hapsim import simulate_visit

CASES = {
    "uvis_full_4exp": dict(detector="wfc3/uvis", filters={"f606w": 4}),
    "uvis_sub512_2exp": dict(detector="wfc3/uvis", filters={"f606w": 2}, subarray=512),
    "wfc_full_2exp": dict(detector="acs/wfc", filters={"f814w": 2}),
    "ir_full_2exp": dict(detector="wfc3/ir", filters={"f160w": 2}),
}


def main():
    results = {"cpu_count": os.cpu_count()}
    for name, kwargs in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = simulate_visit(tmp, seed=1, **kwargs)
            wall = time.perf_counter() - start
            size = sum(p.stat().st_size for p in result.exposures)
        results[name] = {"wall_s": round(wall, 3), "exposures": len(result.exposures),
                         "bytes_written": size}
    results["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
