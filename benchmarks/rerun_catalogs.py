"""Re-run the catalog stage alone on the drizzled products of an earlier run.

A change to the catalog code changes the code version, so a full run of the flow would
drizzle the visit again (minutes on a full-frame visit). This script links the earlier run's
FITS products into a new output directory and runs only the catalog stage of
:mod:`hapcore.catalogs` there -- the detection on each total product, the filter
measurements and the catalog files -- with the current code. Score the result with
``benchmarks/bench_realism.py VISIT OUT_DIR``.

Usage::

    python benchmarks/rerun_catalogs.py VISIT/poller.out PRODUCTS_DIR OUT_DIR [--phot-mode both]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("hapsvm.benchmarks.rerun_catalogs")


def link_products(products_dir: Path, out_dir: Path) -> int:
    """Symbolic links in ``out_dir`` to every FITS file of ``products_dir`` (the products the
    catalog stage reads); nothing else is linked, so no catalog of the earlier run is reused."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in sorted(products_dir.glob("*.fits")):
        link = out_dir / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve())
        n += 1
    return n


def rerun_catalogs(poller: Path, products_dir: Path, out_dir: Path, *,
                   phot_mode: str = "both") -> list[Path]:
    """Write the catalogs of every detector of ``poller`` into ``out_dir``; return their paths."""
    from hapcore.catalogs.detection import load_total_detection
    from hapcore.catalogs.filter_product import measure_filter_product
    from hapcore.catalogs.stage import write_detector_catalogs
    from hapcore.obset.product_parameters import assign_product_parameters
    from hapcore.obset.tree import interpret_obset_input, parse_obset_tree

    n = link_products(products_dir, out_dir)
    logger.info("%d products of %s linked into %s", n, products_dir, out_dir)
    totals = assign_product_parameters(parse_obset_tree(interpret_obset_input(poller)))
    written: list[Path] = []
    for total in totals:
        if not total.has_direct_exposures:
            continue
        clock = time.perf_counter()
        detection = load_total_detection(total, output_dir=out_dir, phot_mode=phot_mode)
        filters = [measure_filter_product(fdp, detection, output_dir=out_dir)
                   for fdp in total.fdp_list]
        paths = write_detector_catalogs(total, detection, filters, output_dir=out_dir)
        written.extend(Path(p) for p in paths)
        logger.info("%s: catalogs in %.1f s", total.product_basename,
                    time.perf_counter() - clock)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("poller", type=Path)
    parser.add_argument("products_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--phot-mode", default="both", choices=("both", "aperture", "segment"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for path in rerun_catalogs(args.poller.resolve(), args.products_dir.resolve(),
                               args.out_dir.resolve(), phot_mode=args.phot_mode):
        logger.info("wrote %s", path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
