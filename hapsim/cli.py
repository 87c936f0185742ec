"""
Command-line interface of the simulator (``hapsvm simulate`` / ``python -m hapsim``).

`build_simulate_parser` adds the options to a given parser so that the
``hapsvm`` console command can mount them as a sub-command;
`run_simulate` executes a parsed namespace and returns an exit status.
"""

from __future__ import annotations

import argparse
import json
import logging

from .presets import PRESETS, simulate_preset
from .visit import DITHER_PATTERNS, POLLER_FORMS, parse_filters, simulate_visit

__all__ = ["build_simulate_parser", "run_simulate", "main"]

log = logging.getLogger(f"hapsvm.{__name__}")


def _pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected 'ARCSEC,DEG', got {text!r}")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers, got {text!r}") from None


#: Defaults of the layout options when no preset is given; with a preset,
#: only the options given on the command line override it.
_LAYOUT_DEFAULTS = {"detector": "wfc3/uvis", "filters": "f606w:2", "exptime": 500.0,
                    "dither": "box4"}


def _preset_names(text: str) -> str:
    names = [n.strip().lower() for n in text.split("+")]
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown preset {unknown[0] if unknown else text!r} (known: {', '.join(PRESETS)})")
    return "+".join(names)


def build_simulate_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """
    Add the simulate options to `parser`.

    Parameters
    ----------
    parser : argparse.ArgumentParser

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    parser.add_argument("--preset", type=_preset_names, default=None, metavar="NAME",
                        help=f"a harder scene, several joined by '+' (e.g. deep+cr2x); "
                             f"--detector/--filters/--exptime/--dither given too override "
                             f"it. Presets: {presets}")
    parser.add_argument("--detector", default=None,
                        help="wfc3/uvis, wfc3/ir, acs/wfc, acs/hrc, acs/sbc or wfpc2 "
                             "(default wfc3/uvis)")
    parser.add_argument("--filters", default=None,
                        help="exposures per filter, e.g. f606w:2,f814w:2 (default f606w:2)")
    parser.add_argument("--exptime", type=float, default=None,
                        help="exposure time of each exposure in seconds (default 500)")
    parser.add_argument("--dither", default=None, choices=sorted(DITHER_PATTERNS),
                        help="dither pattern (default box4)")
    parser.add_argument("--pointing-error", type=_pair, default=(1.0, 0.05),
                        metavar="ARCSEC,DEG",
                        help="header WCS shift (arcsec) and rotation (deg) vs truth (default 1.0,0.05)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--subarray", type=int, default=None, metavar="N",
                        help="write NxN single-chip subarrays instead of full frames "
                             "(not WFPC2)")
    parser.add_argument("--poller-form", default="full", choices=POLLER_FORMS,
                        help="poller lines: 8 fields, file names only, or filename,aperture "
                             "(default full)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow a non-empty output directory")
    return parser


def run_simulate(args: argparse.Namespace) -> int:
    """
    Run a simulation from parsed arguments.

    Returns
    -------
    int
        0 on success, 2 on invalid input (reported as one log line).
    """
    layout = {key: getattr(args, key, None) for key in _LAYOUT_DEFAULTS}
    preset = getattr(args, "preset", None)
    common = dict(pointing_error=args.pointing_error, overwrite=args.overwrite,
                  poller_form=getattr(args, "poller_form", "full"))
    try:
        if layout["filters"] is not None:
            layout["filters"] = parse_filters(layout["filters"])
        if preset:
            result = simulate_preset(args.out, preset, seed=args.seed, subarray=args.subarray,
                                     **{k: v for k, v in layout.items() if v is not None},
                                     **common)
        else:
            layout = {k: _LAYOUT_DEFAULTS[k] if v is None else v for k, v in layout.items()}
            result = simulate_visit(args.out, filters=parse_filters(layout["filters"]),
                                    detector=layout["detector"], exptime=layout["exptime"],
                                    dither=layout["dither"], seed=args.seed,
                                    subarray=args.subarray, **common)
    except ValueError as exc:
        log.error("hapsim: %s", exc)
        return 2
    print(json.dumps({"out_dir": str(result.out_dir), "poller": str(result.poller),
                      "exposures": [p.name for p in result.exposures],
                      "preset": result.summary.get("preset", {}).get("name"),
                      "wall_s": result.summary.get("wall_s")}))
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m hapsim``."""
    parser = build_simulate_parser(argparse.ArgumentParser(
        prog="python -m hapsim", description="Simulate an HST single-visit data set."))
    args = parser.parse_args(argv)
    if not logging.getLogger("hapsvm").handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_simulate(args)
