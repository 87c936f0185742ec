"""Pool the realism scores of several visits of one preset (different seeds).

A visit of the ``deep`` preset holds 60-100 isolated unsaturated stars of S/N >= 10 per filter:
the robust spread of their MagAp2 pulls is known to ~0.12 only (seed 15 F606W read 1.28, seed
16 0.89), and the 0.4" flux of an IR filter rests on 13-15 stars. Pooled over seeds the figures
mean what they say::

    python benchmarks/pool_realism.py VISIT1 PRODUCTS1 VISIT2 PRODUCTS2 ... [--out F.json]

Per filter: the pulls' robust std (1.4826 MAD, as bench_realism.py) and median, the 0.4"/0.2"
aperture-flux ratio's median and standard error; over the visit: the median position error of
stars of S/N >= 20, absolute and after each visit's own best similarity transform to the truth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_realism import (  # noqa: E402
    Scorer,
    _robust_std,
    similarity_residuals,
    write_report,
)


def pool(pairs) -> dict:
    """Score every (visit, products) pair and pool their per-star values."""
    per_filter: dict = {}
    absolute, registered, seeds = [], [], []
    for visit, products in pairs:
        scorer = Scorer(Path(visit), Path(products))
        scorer.run()
        seeds.append(scorer.summary.get("seed"))
        for filt, values in scorer.samples.items():
            if filt == "positions":
                continue
            for key, array in values.items():
                per_filter.setdefault(filt, {}).setdefault(key, []).append(np.asarray(array))
        pos = scorer.samples.get("positions")
        if pos is not None and len(pos["catalog_xy"]) >= 3:
            to_pix = 1.0 / pos["scale"]
            d = np.hypot(*(pos["catalog_xy"] - pos["true_xy"]).T) * to_pix
            absolute.append(d)
            _, left = similarity_residuals(pos["catalog_xy"], pos["true_xy"])
            registered.append(np.hypot(left[:, 0], left[:, 1]) * to_pix)
    out: dict = {"visits": [str(v) for v, _ in pairs], "seeds": seeds, "filters": {}}
    for filt, values in sorted(per_filter.items()):
        block = {}
        pulls = np.concatenate(values.get("pulls", [np.empty(0)]))
        if pulls.size:
            block["pulls"] = {"n": int(pulls.size),
                              "per_visit_n": [int(v.size) for v in values["pulls"]],
                              "per_visit_robust_std": [round(_robust_std(v), 4)
                                                       for v in values["pulls"]],
                              "robust_std": round(_robust_std(pulls), 4),
                              "median": round(float(np.median(pulls)), 4)}
        ratio = np.concatenate(values.get("aperture_ratio", [np.empty(0)]))
        if ratio.size:
            block["aperture_ratio"] = {
                "n": int(ratio.size),
                "per_visit_median": [round(float(np.median(v)), 5) if v.size else None
                                     for v in values["aperture_ratio"]],
                "median": round(float(np.median(ratio)), 5),
                "stderr": round(1.2533 * _robust_std(ratio) / np.sqrt(ratio.size), 5)}
        out["filters"][filt] = block
    if absolute:
        out["positions_sn20_pix"] = {
            "n": int(sum(d.size for d in absolute)),
            "per_visit_median": [round(float(np.median(d)), 4) for d in absolute],
            "median": round(float(np.median(np.concatenate(absolute))), 4),
            "per_visit_median_after_registration": [round(float(np.median(d)), 4)
                                                    for d in registered],
            "median_after_registration": round(float(np.median(np.concatenate(registered))), 4)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="VISIT PRODUCTS pairs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if len(args.dirs) % 2:
        parser.error("give VISIT PRODUCTS pairs")
    pairs = list(zip(args.dirs[::2], args.dirs[1::2]))
    result = pool(pairs)
    result["command"] = "python benchmarks/pool_realism.py " + " ".join(
        str(a) for a in (argv or sys.argv[1:]))
    write_report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
