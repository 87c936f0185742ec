"""``runsinglehap``: the command and Python API compatible with drizzlepac's.

Command::

    runsinglehap [-d] [-c CUSTOM_PARS] [-l LEVEL] [-o OUTDIR] [--refcat FILE]
                 [--engine {auto,prefect,direct}] POLLER

Python::

    from flows.runsinglehap import perform
    code = perform("wfc3_b46_06_input.out", debug=False, log_level="info", output_dir="out")
    code = perform("wfc3_b46_06_input.out", output_dir="out", engine="direct")   # no Prefect

Exit codes (also the return value of :func:`perform`): 0 success, 1 error, 65 no viable data;
see :class:`hap_models.errors.ExitCode`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from hap_models.run_options import LOG_LEVELS, log_level_from_name

__all__ = ["perform", "build_parser", "main"]


def perform(input_filename, debug=False, **kw) -> int:
    """Process one visit; drizzlepac's ``runsinglehap.perform``.

    Parameters
    ----------
    input_filename : str or path
        Poller file.
    debug : bool
        Diagnostic mode (keeps intermediate files).
    **kw
        Passed to :func:`flows.svm.run_hap_processing`; ``log_level`` may be a name
        (``"debug"``, ``"info"``, ...; unknown names mean INFO) or a number.
    """
    from flows.svm import run_hap_processing

    kw["log_level"] = log_level_from_name(kw.get("log_level"))
    return run_hap_processing(input_filename, diagnostic_mode=debug, **kw)


def build_parser(prog: str = "runsinglehap") -> argparse.ArgumentParser:
    """The option parser shared by ``runsinglehap``, ``python -m flows.svm`` and ``hapsvm run``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="HST single-visit mosaic processing of one poller file (hapsvm).",
        epilog="Exit codes: 0 success, 1 error (bad input or failure), 65 no viable data, "
               "66 not aligned (with --require-alignment), 75 another run is writing to the "
               "output directory, 130/143 stopped by SIGINT/SIGTERM (rerun to resume).")
    parser.add_argument("input_filename", metavar="POLLER", help="poller file of one visit")
    parser.add_argument("-d", "--diagnostic_mode", action="store_true",
                        help="diagnostic mode: keep intermediate files")
    parser.add_argument("-c", "--input_custom_pars_file", metavar="CUSTOM_PARS", default=None,
                        help="JSON file of custom parameters per product")
    parser.add_argument("-l", "--log_level", default="info", type=str.lower,
                        choices=list(LOG_LEVELS), help="log level (default info)")
    parser.add_argument("-o", "--output-dir", dest="output_dir", default=None,
                        help="output directory (default: the current directory)")
    parser.add_argument("--refcat", default=None,
                        help="local astrometric reference catalog (ECSV/FITS/CSV/Parquet)")
    parser.add_argument("--output-custom-pars-file", dest="output_custom_pars_file", default=None,
                        help="write every parameter value used to this JSON file")
    parser.add_argument("--online-catalog", dest="online_catalog", action="store_true",
                        help="without --refcat/HAPSVM_REFCAT, query Gaia DR3 online "
                             "(extra 'online'; timeout, one retry, cached in the cache dir)")
    parser.add_argument("--quality", action="store_true",
                        help="run the quality analysis (same as SVM_QUALITY_TESTING=on)")
    parser.add_argument("--force", action="store_true",
                        help="recompute every stage, ignoring cached results")
    parser.add_argument("--cache-dir", dest="cache_dir", default=None,
                        help="where cached stage results live (default OUTDIR/.hapsvm-cache)")
    parser.add_argument("--workers", dest="n_workers", type=int, default=2,
                        help="processes for the heavy stages (default 2)")
    parser.add_argument("--require-alignment", dest="require_alignment", action="store_true",
                        help="exit 66 when a detector could not be aligned to a reference "
                             "catalog (its products are still written)")
    parser.add_argument("--phot-mode", dest="phot_mode", default="both",
                        choices=["aperture", "segment", "both"], help="catalog types to produce")
    parser.add_argument("--engine", default=None, type=str.lower,
                        choices=["auto", "prefect", "direct"],
                        help="how the stages run: 'prefect' (task runs reported to the Prefect "
                             "API: PREFECT_API_URL, else a temporary local server), 'direct' "
                             "(no Prefect, no API; same products and cache) or 'auto' "
                             "(prefect when PREFECT_API_URL is configured, else direct); "
                             "default HAPSVM_ENGINE, else auto")
    return parser


def _console_logging(level: int) -> None:
    """The console shows the package's lines from ``level`` up.

    No handler is added here: a bad input is answered (one line, printed) before Prefect is
    imported, and importing the flow installs Prefect's console handler on the root logger,
    which shows the package's lines and Prefect's alike (:func:`flows.svm.run_hap_processing`
    adds a plain one if Prefect's logging is switched off, and one for the direct engine).
    """
    logging.getLogger("hapsvm").setLevel(level)    # astropy's notes: flows.visit_log.VisitLog


def main(argv: list[str] | None = None, prog: str = "runsinglehap") -> int:
    """Console entry point; returns the exit code."""
    args = build_parser(prog).parse_args(argv)
    level = log_level_from_name(args.log_level)
    _console_logging(level)
    return perform(args.input_filename, debug=args.diagnostic_mode,
                   input_custom_pars_file=args.input_custom_pars_file,
                   output_custom_pars_file=args.output_custom_pars_file,
                   phot_mode=args.phot_mode, log_level=level, output_dir=args.output_dir,
                   refcat=args.refcat, force=args.force, cache_dir=args.cache_dir,
                   n_workers=args.n_workers, online_catalog=args.online_catalog,
                   quality=args.quality, require_alignment=args.require_alignment,
                   engine=args.engine, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
