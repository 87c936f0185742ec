"""``hapsvm``: the project's command (``simulate``, ``demo``, ``run``).

* ``hapsvm simulate ...`` writes a simulated visit (see :mod:`hapsim`);
* ``hapsvm demo [--out DIR]`` simulates a small visit into ``./hapsvm-demo``, processes it with
  the quality analysis on and prints the paths of the PNG previews;
* ``hapsvm run POLLER [options]`` is ``runsinglehap``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main", "run_demo", "demo_previews", "DEMO_VISIT"]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: The demo visit: two filters of WFC3/UVIS, small enough to run in well under a minute.
DEMO_VISIT = dict(detector="wfc3/uvis", filters={"f606w": 2, "f814w": 2}, exptime=400.0,
                  dither="box4", pointing_error=(0.5, 0.02), seed=1, subarray=1024,
                  star_density=600.0)


def demo_previews(products_dir: Path) -> list[Path]:
    """The PNG previews in ``products_dir``: total products first, then filter products."""
    return sorted(Path(products_dir).glob("*_preview.png"),
                  key=lambda p: ("_total_" not in p.name, p.name))


def run_demo(out_dir: Path, *, overwrite: bool = True, visit: dict | None = None,
             n_workers: int = 2, prog: str | None = None) -> int:
    """Simulate the demo visit into ``out_dir/visit`` and run the per-visit flow into
    ``out_dir/products``, with the quality analysis on; print where the previews are.

    Parameters
    ----------
    out_dir : pathlib.Path
        Demo folder.
    overwrite : bool, optional
        Replace a visit simulated before.
    visit : dict, optional
        :func:`hapsim.simulate_visit` arguments (default :data:`DEMO_VISIT`; tests pass a
        smaller visit).
    n_workers : int, optional
        Processes for the heavy stages.

    Returns
    -------
    int
        The exit code of :func:`flows.runsinglehap.perform`.
    """
    from hapsim import simulate_visit
    from flows.runsinglehap import perform

    out_dir = Path(out_dir)
    visit_dir = out_dir / "visit"
    products = out_dir / "products"
    sim = simulate_visit(visit_dir, overwrite=overwrite, **(DEMO_VISIT if visit is None else visit))
    logger.info("demo visit simulated in %s (poller %s)", visit_dir, sim.poller.name)
    # quality on: it writes the previews, the part of the demo a person looks at
    code = perform(sim.poller, output_dir=products, refcat=sim.refcat, log_level="info",
                   quality=True, n_workers=n_workers, prog=prog)
    previews = demo_previews(products)
    # the user-facing end of the demo: the pictures to open (after the flow's own summary)
    if previews:
        print(f"\nPreviews ({len(previews)} PNG):")
        for path in previews:
            print(f"  {path}")
    else:
        print(f"\nNo previews were written in {products} (see the log above).")
    return code


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
    # the console handler is the engine's: Prefect's, or a plain one for the direct engine
    logging.getLogger("hapsvm").setLevel(logging.INFO)
    return run_demo(Path(args.out).resolve(), prog="hapsvm demo")


if __name__ == "__main__":
    sys.exit(main())
