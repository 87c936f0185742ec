"""``hapsvm``: the project's command (``simulate``, ``demo``, ``run``).

* ``hapsvm simulate ...`` writes a simulated visit (see :mod:`hapsim`);
* ``hapsvm demo [--out DIR]`` simulates a small visit into ``./hapsvm-demo`` and processes it;
* ``hapsvm run POLLER [options]`` is ``runsinglehap``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main", "run_demo"]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: The demo visit: two filters of WFC3/UVIS, small enough to run in well under a minute.
DEMO_VISIT = dict(detector="wfc3/uvis", filters={"f606w": 2, "f814w": 2}, exptime=400.0,
                  dither="box4", pointing_error=(0.5, 0.02), seed=1, subarray=1024,
                  star_density=600.0)


def run_demo(out_dir: Path, *, overwrite: bool = True) -> int:
    """Simulate the demo visit into ``out_dir/visit`` and run the per-visit flow into ``out_dir/products``."""
    from hapsim import simulate_visit
    from flows.runsinglehap import perform

    visit_dir = out_dir / "visit"
    sim = simulate_visit(visit_dir, overwrite=overwrite, **DEMO_VISIT)
    logger.info("demo visit simulated in %s (poller %s)", visit_dir, sim.poller.name)
    return perform(sim.poller, output_dir=out_dir / "products", refcat=sim.refcat,
                   log_level="info")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="hapsvm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    from hapsim.cli import build_simulate_parser, run_simulate

    build_simulate_parser(sub.add_parser("simulate", help="write a simulated HST visit with truth"))
    demo = sub.add_parser("demo", help="simulate a small visit and process it")
    demo.add_argument("--out", default="hapsvm-demo", help="demo folder (default ./hapsvm-demo)")
    sub.add_parser("run", help="process a poller file (same options as runsinglehap)",
                   add_help=False)

    if argv and argv[0] == "run":
        from flows.runsinglehap import main as runsinglehap_main

        return runsinglehap_main(argv[1:], prog="hapsvm run")
    args = parser.parse_args(argv)
    if args.command == "simulate":
        return run_simulate(args)
    logging.getLogger("hapsvm").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(message)s")
    return run_demo(Path(args.out).resolve())


if __name__ == "__main__":
    sys.exit(main())
