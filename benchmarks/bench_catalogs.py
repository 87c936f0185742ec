"""Benchmark: point + segment catalogs of a full-frame UVIS-sized synthetic product.

Renders a 5000 x 5000 px (0.04"/px) total product with one filter product (F606W, 2 x 400 s,
hapsim PSF and Sersic galaxies), runs :func:`hapcore.catalogs.stage.build_catalogs` and prints
one JSON object with the timings per step and the source counts. Target: < 60 s on 2 cores.

Usage: ``python benchmarks/bench_catalogs.py [--size 5000] [--stars 10000] [--galaxies 1500]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--stars", type=int, default=10000)
    parser.add_argument("--galaxies", type=int, default=1500)
    args = parser.parse_args(argv)

    from hapcore.catalogs.stage import build_catalogs
    from hapcore.obset.parameters import build_product_parameters
    from test_catalog_scene import make_visit

    start = time.perf_counter()
    visit = make_visit((args.size, args.size), filters=(("f606w", 400.0, 2),),
                       n_stars=args.stars, n_galaxies=args.galaxies, seed=42)
    render_s = time.perf_counter() - start
    kw = dict(first_expstart_mjd=58604.5)
    total_p = build_product_parameters("wfc3", "uvis", "total", n_exposures=2,
                                       product_basename="hst_1_01_wfc3_uvis_total_i00001", **kw)
    filt_p = build_product_parameters("wfc3", "uvis", "filter", filter_name="f606w", n_exposures=2,
                                      product_basename="hst_1_01_wfc3_uvis_f606w_i00001", **kw)
    start = time.perf_counter()
    cats = build_catalogs(visit.total, visit.filters, total_parameters=total_p,
                          filter_parameters={"f606w": filt_p})
    catalogs_s = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "catalogs_full_frame",
        "shape": [args.size, args.size],
        "n_truth_sources": len(visit.truth),
        "render_s": round(render_s, 2),
        "catalogs_s": round(catalogs_s, 2),
        "steps_s": {k: round(v, 2) for k, v in cats.timings.items()},
        "n_point": len(cats.point),
        "n_segment": len(cats.segment),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "target_s": 60,
        "within_target": catalogs_s < 60,
    }, indent=1))


if __name__ == "__main__":
    main()
