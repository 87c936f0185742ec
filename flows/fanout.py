"""Many visits in parallel (issues #8, #16): ``python -m flows.fanout``.

Command::

    python -m flows.fanout POLLER... | DIR | LIST [-o OUTDIR] [--refcat FILE] [--workers N]
                           [--engine {auto,prefect,direct}] [--dask-address tcp://host:port]
                           [--force] [--cache-dir DIR]

* ``POLLER`` is a poller file; ``DIR`` means every ``*_input.out`` in that directory; ``LIST`` is a
  text file naming one poller path per line (``#`` comments and blank lines are ignored; relative
  paths are relative to the list file).
* Each visit writes to ``OUTDIR/<poller stem>/`` (its log, products and cache), and at most
  ``--workers`` visits run at once, each in a process of its own.
* Two engines, as for one visit (:func:`flows.options.resolve_engine`): ``direct`` runs each
  visit with :func:`flows.direct.run_visit` in a pool of ``--workers`` plain processes
  (:mod:`flows.fanout_direct`; no Prefect, no API); ``prefect`` runs the ``svm-fanout`` flow
  (:mod:`flows.fanout_flow`): each visit a ``svm-visit`` subflow of a ``process-visit`` task on
  a local Dask cluster of ``--workers`` single-threaded processes, or on the cluster at
  ``--dask-address`` (an address that does not answer within :data:`DASK_CONNECT_TIMEOUT_S` is a
  one-line error before anything starts). ``auto`` (the default): Prefect when a Prefect API is
  configured (``PREFECT_API_URL``), direct otherwise; ``--dask-address`` implies Prefect.
* One failing visit never stops the others. The command prints a summary table (visit, state,
  products, wall time) and exits 1 if any visit failed, 0 otherwise (the ``svm-fanout`` run
  ends **Failed** then, and can be retried: completed visits come from the cache).

Inside the fan-out, each visit uses one process for its heavy stages (``n_workers=1``): the
parallelism is across visits (and Dask worker processes are daemonic: no child processes).

The environment (``SVM_QUALITY_TESTING``, ``HAPSVM_REFCAT``, ``HLA_CLASSIC_BASEPATH``,
``HLA_BUILD_VER``, ``HAPSVM_ENGINE``) is read once, by :func:`run_fanout` before any visit starts
(or by ``svm_fanout`` when a deployment starts it), into the options every visit shares
(:func:`flows.options.read_environment`); the workers' environment is never read.

Importing this module imports no Prefect: ``svm_fanout``, ``process_visit_task``,
``make_task_runner`` and ``outcomes_from_states`` are handed out from
:mod:`flows.fanout_flow` on first use (the deployment's entrypoint is
``flows/fanout.py:svm_fanout``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from hap_models.errors import HapInputError
from hap_models.run_options import VisitOptions

__all__ = [
    "DASK_CONNECT_TIMEOUT_S",
    "FanoutError",
    "FanoutEnd",
    "VisitFailedError",
    "VisitOutcome",
    "expand_poller_sources",
    "check_output_dir",
    "check_dask_address",
    "make_task_runner",
    "visit_options_for",
    "process_visit_task",
    "svm_fanout",
    "outcomes_from_states",
    "format_summary",
    "run_fanout",
    "build_parser",
    "main",
]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: Names of the Prefect engine, defined in flows.fanout_flow (imported on first use).
_PREFECT_NAMES = ("svm_fanout", "process_visit_task", "make_task_runner", "outcomes_from_states")


def __getattr__(name: str):
    if name in _PREFECT_NAMES:
        import flows.fanout_flow

        return getattr(flows.fanout_flow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Seconds to wait for an existing Dask scheduler to answer before giving up.
DASK_CONNECT_TIMEOUT_S = 10.0

#: Poller files found in a directory.
POLLER_GLOB = "*_input.out"


class FanoutError(Exception):
    """A problem with the fan-out's own inputs (sources, output directory, Dask address)."""


class VisitOutcome(BaseModel):
    """How one visit of a fan-out ended (a row of the summary table)."""

    visit: str = Field(description="poller file stem")
    poller_file: Path
    output_dir: Path
    state: str = Field(description="final state of the visit: Completed, Failed, Crashed, ...")
    n_products: int = 0
    wall_s: float = 0.0
    message: str = ""
    stage_states: dict[str, str] = Field(default_factory=dict)


class VisitFailedError(Exception):
    """Raised by :func:`process_visit_task` when its visit did not complete; carries the outcome."""

    def __init__(self, outcome: VisitOutcome | dict):
        self.outcome = outcome if isinstance(outcome, VisitOutcome) else VisitOutcome(**outcome)
        super().__init__(f"visit {self.outcome.visit} {self.outcome.state}: {self.outcome.message}")

    def __reduce__(self):  # pickles through Dask with its outcome
        return (type(self), (self.outcome.model_dump(mode="json"),))



# --------------------------------------------------------------------------------------------
# inputs


def _read_poller_list(list_file: Path) -> list[Path]:
    pollers = []
    for raw in list_file.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            path = Path(line).expanduser()
            pollers.append(path if path.is_absolute() else list_file.parent / path)
    return pollers


def _looks_like_poller(path: Path) -> bool:
    """A poller names exposures (``.fits``); a list file names poller files."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return True
    return ".fits" in head.lower() or path.name.endswith("_input.out")


def expand_poller_sources(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Turn command-line sources into poller files.

    Parameters
    ----------
    sources : iterable of str or path
        Poller files, directories (every ``*_input.out`` inside, sorted) or list files (one
        poller path per line).

    Returns
    -------
    list of Path
        Absolute poller paths, duplicates removed, in the order given. A named poller that does
        not exist is kept: its visit then fails with a clear message while the others run.

    Raises
    ------
    FanoutError
        If a directory holds no poller file, or nothing at all was named.
    """
    pollers: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            found = sorted(path.glob(POLLER_GLOB))
            if not found:
                raise FanoutError(f"{path}: no poller files ({POLLER_GLOB}) in this directory")
            pollers += found
        elif path.is_file() and not _looks_like_poller(path):
            pollers += _read_poller_list(path)
        else:
            pollers.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in pollers))
    if not unique:
        raise FanoutError("no poller files given")
    stems = [p.stem for p in unique]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise FanoutError(f"several poller files share the name {clashes[0]!r}: their output "
                          "directories would collide")
    return unique


def check_output_dir(output_dir: Path) -> Path:
    """Create ``output_dir`` if needed and prove it is writable.

    Raises
    ------
    FanoutError
        With a one-line reason when it cannot be created or written.
    """
    output_dir = Path(output_dir).expanduser().resolve()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".hapsvm-write-test-"):
            pass
    except OSError as exc:
        raise FanoutError(f"output directory {output_dir} is not writable "
                          f"({exc.__class__.__name__}: {exc.strerror or exc})") from None
    return output_dir


def check_dask_address(address: str, timeout: float = DASK_CONNECT_TIMEOUT_S) -> None:
    """Fail fast when no Dask scheduler answers at ``address``.

    Raises
    ------
    FanoutError
        If the scheduler does not answer within ``timeout`` seconds.
    """
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:  # OSError / TimeoutError / ValueError for a malformed address
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise FanoutError(f"no Dask scheduler answers at {address} within {timeout:g} s "
                          f"({reason})") from None
    client.close()


def visit_options_for(poller_file: Path, output_dir: Path,
                      template: VisitOptions | None = None) -> VisitOptions:
    """The options of one visit: the template with ``output_dir`` = ``OUTDIR/<poller stem>``.

    Unless the template sets ``n_workers`` explicitly, a visit uses one process (the fan-out's
    parallelism is across visits).
    """
    template = template or VisitOptions(output_dir=output_dir)
    update: dict = {"output_dir": Path(output_dir) / Path(poller_file).stem}
    if "n_workers" not in template.model_fields_set:
        update["n_workers"] = 1
    return template.model_copy(update=update)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def format_summary(outcomes: Sequence[VisitOutcome]) -> str:
    """The summary table printed by the command: visit, state, products, wall time, message."""
    header = ("visit", "state", "products", "wall_s", "message")
    rows = [(o.visit, o.state, str(o.n_products), f"{o.wall_s:.1f}", o.message[:80])
            for o in outcomes]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header, tuple("-" * w for w in widths), *rows]]
    n_failed = sum(o.state != "Completed" for o in outcomes)
    lines.append(f"{len(outcomes) - n_failed}/{len(outcomes)} visit(s) completed"
                 + (f", {n_failed} failed" if n_failed else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class FanoutEnd:
    """How a fan-out of the direct engine ended (the Prefect engine returns the ``svm-fanout``
    run's final state, which answers the same two questions)."""

    name: str
    message: str = ""

    def is_completed(self) -> bool:
        return self.name == "Completed"

    def is_failed(self) -> bool:
        return self.name == "Failed"


def run_fanout(sources: Sequence[str | os.PathLike], output_dir: Path, *,
               visit_options: VisitOptions | None = None, workers: int = 2,
               dask_address: str | None = None,
               dask_timeout: float = DASK_CONNECT_TIMEOUT_S,
               engine: str | None = None) -> tuple[object, list[VisitOutcome]]:
    """Check the inputs, process the visits, and return how the fan-out ended and the outcomes.

    Parameters
    ----------
    sources : sequence of str or path
        Poller files, directories of ``*_input.out`` files, or text files listing pollers.
    output_dir : Path
        Parent of the per-visit output directories.
    visit_options : VisitOptions, optional
        Options shared by every visit (:func:`visit_options_for`).
    workers : int
        Visits processed at once.
    dask_address, dask_timeout : optional
        An existing Dask scheduler (the Prefect engine).
    engine : str, optional
        ``prefect``, ``direct`` or ``auto``; None: ``visit_options.engine``, resolved as for one
        visit (``HAPSVM_ENGINE``, then Prefect when an API is configured); ``dask_address``
        makes ``auto`` Prefect.

    Returns
    -------
    (state, outcomes)
        The ``svm-fanout`` run's final state (Prefect) or a :class:`FanoutEnd` (direct): both
        have ``is_completed()``, ``is_failed()``, ``name`` and ``message``; one
        :class:`VisitOutcome` per visit, in input order.

    Raises
    ------
    FanoutError
        On bad sources, an unwritable output directory, a Dask address that does not answer, or
        a bad environment variable (checked before any visit starts).
    """
    from flows.options import read_environment

    poller_files = expand_poller_sources(sources)
    output_dir = check_output_dir(output_dir)
    if dask_address:
        check_dask_address(dask_address, timeout=dask_timeout)
    template = visit_options or VisitOptions(output_dir=output_dir)
    if engine is not None or dask_address:
        wanted = engine if engine not in (None, "auto") else ("prefect" if dask_address
                                                             else "auto")
        template = template.model_copy(update={"engine": wanted})
    try:
        visit_options = read_environment(template, os.environ)
    except HapInputError as exc:
        raise FanoutError(str(exc)) from None
    if visit_options.engine == "prefect":
        from flows.fanout_flow import run_fanout_prefect

        return run_fanout_prefect(poller_files, output_dir, visit_options, workers,
                                  dask_address)
    from flows.fanout_direct import run_fanout_direct

    outcomes = run_fanout_direct(poller_files, output_dir, visit_options, workers)
    failed = [o for o in outcomes if o.state != "Completed"]
    end = FanoutEnd("Failed", f"{len(failed)}/{len(outcomes)} visit(s) failed") if failed \
        else FanoutEnd("Completed")
    return end, outcomes


# --------------------------------------------------------------------------------------------
# command line


def build_parser(prog: str = "python -m flows.fanout") -> argparse.ArgumentParser:
    """Options of ``python -m flows.fanout``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Process many HST visits in parallel (hapsvm; direct "
                                "worker processes, or the svm-fanout flow on Dask).",
        epilog="Exit codes: 0 every visit completed, 1 a visit failed or bad input.")
    parser.add_argument("sources", nargs="+", metavar="POLLER|DIR|LIST",
                        help="poller files, directories of *_input.out, or files listing pollers")
    parser.add_argument("-o", "--output-dir", dest="output_dir", default=".",
                        help="parent of the per-visit output directories (default: .)")
    parser.add_argument("--refcat", default=None,
                        help="local astrometric reference catalog shared by the visits")
    parser.add_argument("--workers", type=int, default=2,
                        help="visits processed at once (default 2)")
    parser.add_argument("--engine", default=None, type=str.lower,
                        choices=["auto", "prefect", "direct"],
                        help="direct: a pool of worker processes, no Prefect; prefect: the "
                             "svm-fanout flow on Dask; auto: prefect when PREFECT_API_URL is "
                             "configured, else direct (default HAPSVM_ENGINE, else auto)")
    parser.add_argument("--dask-address", dest="dask_address", default=None,
                        help="existing Dask scheduler, e.g. tcp://host:8786 (default: local cluster)")
    parser.add_argument("--dask-timeout", dest="dask_timeout", type=float,
                        default=DASK_CONNECT_TIMEOUT_S,
                        help=f"seconds to wait for --dask-address (default {DASK_CONNECT_TIMEOUT_S:g})")
    parser.add_argument("--force", action="store_true", help="recompute every stage of every visit")
    parser.add_argument("--cache-dir", dest="cache_dir", default=None,
                        help="cache records shared by the visits (default OUTDIR/<visit>/.hapsvm-cache)")
    parser.add_argument("-l", "--log_level", default="info", type=str.lower,
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="log level of the visits (default info)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.fanout``: returns 0 if every visit completed, else 1."""
    from hap_models.run_options import log_level_from_name

    args = build_parser().parse_args(argv)
    # Dask's INFO chatter (scheduler, nannies) would drown the visits' logs
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 1
    level = log_level_from_name(args.log_level)
    logging.getLogger("hapsvm").setLevel(level)
    try:
        template = VisitOptions(
            output_dir=Path(args.output_dir).resolve(), log_level=level,
            refcat=Path(args.refcat).resolve() if args.refcat else None, force=args.force,
            cache_dir=Path(args.cache_dir).resolve() if args.cache_dir else None)
        state, outcomes = run_fanout(args.sources, Path(args.output_dir), visit_options=template,
                                     workers=args.workers, dask_address=args.dask_address,
                                     dask_timeout=args.dask_timeout, engine=args.engine)
    except FanoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(outcomes))
    ok = state.is_completed() and all(o.state == "Completed" for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    # run under the importable name so workers can unpickle what they run (not ``__main__``)
    from flows import fanout as _fanout

    sys.exit(_fanout.main())
