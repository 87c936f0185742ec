"""Many visits in parallel: the ``svm-fanout`` flow on Dask (issue #8).

Command::

    python -m flows.fanout POLLER... | DIR | LIST [-o OUTDIR] [--refcat FILE]
                           [--workers N] [--dask-address tcp://host:port] [--force] [--cache-dir DIR]

* ``POLLER`` is a poller file; ``DIR`` means every ``*_input.out`` in that directory; ``LIST`` is a
  text file naming one poller path per line (``#`` comments and blank lines are ignored; relative
  paths are relative to the list file).
* Each visit is processed by the per-visit flow :func:`flows.visit_flow.svm_visit`, run as a subflow of
  a ``process-visit`` task, and writes to ``OUTDIR/<poller stem>/`` (its log, products and cache).
* Visits run on prefect-dask's :class:`~prefect_dask.DaskTaskRunner`: by default a
  ``LocalCluster`` of ``--workers`` *processes* with one thread each (``astropy.wcs`` is not
  thread-safe), so at most ``--workers`` visits run at once. ``--dask-address`` uses an existing
  cluster instead (its worker threads bound the concurrency); an address that does not answer
  within :data:`DASK_CONNECT_TIMEOUT_S` is a one-line error before anything starts.
* One failing visit never stops the others. The flow returns the visits' final states, so the
  ``svm-fanout`` run ends **Failed** if any visit failed (prefect_notes §5.3) and can be retried
  (completed visits then come from the cache). The command prints a summary table (visit, state,
  products, wall time) and exits 1 if any visit failed, 0 otherwise.

Inside the fan-out, each visit uses one process for its heavy stages (``n_workers=1``): the
parallelism is across visits, and Dask worker processes are daemonic (no child processes).

The environment (``SVM_QUALITY_TESTING``, ``HAPSVM_REFCAT``, ``HLA_CLASSIC_BASEPATH``,
``HLA_BUILD_VER``) is read once, by :func:`run_fanout` before the flow starts (or by
:func:`svm_fanout` when a deployment starts it), into the options every visit shares
(:func:`flows.options.read_environment`); the Dask workers' environment is never read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State
from pydantic import BaseModel, Field

from hap_models.errors import HapInputError
from hap_models.run_options import VisitOptions

__all__ = [
    "DASK_CONNECT_TIMEOUT_S",
    "FanoutError",
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


def make_task_runner(workers: int = 2, dask_address: str | None = None):
    """The :class:`~prefect_dask.DaskTaskRunner` of a fan-out.

    Parameters
    ----------
    workers : int
        Worker processes of the local cluster (one thread each); ignored with ``dask_address``.
    dask_address : str, optional
        Address of an existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
    """
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": max(1, int(workers)), "threads_per_worker": 1, "processes": True,
        "dashboard_address": None,
        # a worker that wanders above this is restarted by its nanny; visits are small-to-medium
        "memory_limit": "auto",
    })


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


# --------------------------------------------------------------------------------------------
# the flow


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


@task(name="process-visit", task_run_name="process-{poller_file.stem}", cache_policy=NO_CACHE)
def process_visit_task(poller_file: Path, options: VisitOptions) -> VisitOutcome:
    """Run the per-visit flow as a subflow; raise :class:`VisitFailedError` if it did not complete."""
    from flows.visit_flow import svm_visit

    start = time.perf_counter()
    state = svm_visit(Path(poller_file), options, return_state=True)
    wall_s = time.perf_counter() - start
    outcome = VisitOutcome(visit=Path(poller_file).stem, poller_file=poller_file,
                           output_dir=options.output_dir, state=state.name, wall_s=wall_s)
    if state.is_completed():
        result = state.result()
        outcome.n_products = len(result.products)
        outcome.stage_states = dict(result.stage_states)
        return outcome
    try:
        error = state.result(raise_on_failure=False)
        outcome.message = _first_line(str(error)) if isinstance(error, BaseException) else ""
    except Exception:  # the state holds no readable exception
        pass
    outcome.message = outcome.message or _first_line(state.message)
    raise VisitFailedError(outcome)


def _fanout_run_name() -> str:
    from prefect.runtime import flow_run

    pollers = flow_run.parameters.get("pollers") or []
    return f"fanout-{len(pollers)}-source(s)"


@flow(name="svm-fanout", flow_run_name=_fanout_run_name, validate_parameters=True)
def svm_fanout(pollers: list[Path], output_dir: Path, visit_options: VisitOptions | None = None,
               workers: int = 2, dask_address: str | None = None) -> list[State]:
    """Process many visits in parallel on Dask; each visit writes to ``output_dir/<poller stem>``.

    Parameters
    ----------
    pollers : list of Path
        Poller files, directories of ``*_input.out`` files, or text files listing pollers.
    output_dir : Path
        Parent of the per-visit output directories.
    visit_options : VisitOptions, optional
        Options shared by every visit (refcat, force, cache_dir, ...); ``output_dir`` is replaced
        per visit (:func:`visit_options_for`).
    workers : int
        Visits processed at once on the local Dask cluster.
    dask_address : str, optional
        Use the Dask scheduler at this address instead of a local cluster.

    Returns
    -------
    list of State
        One final state per visit, in input order. Any failed visit makes this run Failed.
    """
    from prefect.futures import wait

    from flows.options import read_environment

    poller_files = expand_poller_sources(pollers)
    output_dir = check_output_dir(output_dir)
    if dask_address:
        check_dask_address(dask_address)
    # read by run_fanout; a deployment starts this flow directly: then it is read here, once
    visit_options = read_environment(visit_options or VisitOptions(output_dir=output_dir),
                                     os.environ)
    logger.info("fan-out of %d visit(s) into %s on %s", len(poller_files), output_dir,
                dask_address or f"a local Dask cluster of {workers} worker process(es)")
    with _api_for_workers(), make_task_runner(workers, dask_address) as runner:
        futures = [runner.submit(process_visit_task,
                                 {"poller_file": poller,
                                  "options": visit_options_for(poller, output_dir, visit_options)})
                   for poller in poller_files]
        wait(futures)
        states = [future.state for future in futures]
    outcomes = outcomes_from_states(states, poller_files, output_dir)
    _publish_fanout_summary(outcomes)
    n_failed = sum(o.state != "Completed" for o in outcomes)
    logger.info("fan-out done: %d visit(s) completed, %d failed", len(outcomes) - n_failed, n_failed)
    return states


@contextmanager
def _api_for_workers():
    """Make the Dask workers report to this run's API, also when it is a temporary server.

    Settings travel to the workers with each task; without an explicit ``PREFECT_API_URL``
    (ephemeral mode) every worker process would start a temporary server of its own.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url).rstrip("/")
    with temporary_settings({PREFECT_API_URL: api_url}):
        yield


def _publish_fanout_summary(outcomes: Sequence[VisitOutcome]) -> None:
    try:
        from flows.artifacts import publish_table

        publish_table("svm-fanout-summary", [
            {"visit": o.visit, "state": o.state, "products": o.n_products,
             "wall_s": round(o.wall_s, 1), "message": o.message} for o in outcomes],
            description="Visits of this fan-out run")
    except Exception:  # artifacts are a convenience, never a failure
        logger.debug("fan-out summary artifact not published", exc_info=True)


def outcomes_from_states(states: Sequence[State], poller_files: Sequence[Path],
                         output_dir: Path) -> list[VisitOutcome]:
    """The :class:`VisitOutcome` of each visit from the final states of its ``process-visit`` task."""
    outcomes = []
    for state, poller in zip(states, poller_files):
        fallback = VisitOutcome(visit=poller.stem, poller_file=poller,
                                output_dir=Path(output_dir) / poller.stem,
                                state=state.name if state is not None else "Unknown",
                                message=_first_line(getattr(state, "message", "")))
        outcome = fallback
        try:
            value = state.result(raise_on_failure=False)
            if isinstance(value, VisitOutcome):
                outcome = value
            elif isinstance(value, VisitFailedError):
                outcome = value.outcome
            elif isinstance(value, BaseException):
                fallback.message = _first_line(str(value)) or fallback.message
        except Exception:  # a crashed task may hold no result at all
            pass
        if state is not None and not state.is_completed() and outcome.state == "Completed":
            outcome = outcome.model_copy(update={"state": state.name})
        outcomes.append(outcome)
    return outcomes


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


def run_fanout(sources: Sequence[str | os.PathLike], output_dir: Path, *,
               visit_options: VisitOptions | None = None, workers: int = 2,
               dask_address: str | None = None,
               dask_timeout: float = DASK_CONNECT_TIMEOUT_S) -> tuple[State, list[VisitOutcome]]:
    """Check the inputs, run :func:`svm_fanout`, and return its final state and the outcomes.

    Raises
    ------
    FanoutError
        On bad sources, an unwritable output directory, a Dask address that does not answer, or
        a bad environment variable (checked before any flow run is created).
    """
    from flows.options import read_environment

    poller_files = expand_poller_sources(sources)
    output_dir = check_output_dir(output_dir)
    if dask_address:
        check_dask_address(dask_address, timeout=dask_timeout)
    try:
        visit_options = read_environment(visit_options or VisitOptions(output_dir=output_dir),
                                         os.environ)
    except HapInputError as exc:
        raise FanoutError(str(exc)) from None
    state = svm_fanout(poller_files, output_dir, visit_options, workers, dask_address,
                       return_state=True)
    try:
        states = state.result(raise_on_failure=False)
    except Exception:
        states = None
    if not isinstance(states, list) or len(states) != len(poller_files):
        # the fan-out itself failed before any visit ran
        message = _first_line(state.message) or state.name
        return state, [VisitOutcome(visit=p.stem, poller_file=p, output_dir=output_dir / p.stem,
                                    state="NotRun", message=message) for p in poller_files]
    return state, outcomes_from_states(states, poller_files, output_dir)


# --------------------------------------------------------------------------------------------
# command line


def build_parser(prog: str = "python -m flows.fanout") -> argparse.ArgumentParser:
    """Options of ``python -m flows.fanout``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Process many HST visits in parallel (hapsvm svm-fanout on Dask).",
        epilog="Exit codes: 0 every visit completed, 1 a visit failed or bad input.")
    parser.add_argument("sources", nargs="+", metavar="POLLER|DIR|LIST",
                        help="poller files, directories of *_input.out, or files listing pollers")
    parser.add_argument("-o", "--output-dir", dest="output_dir", default=".",
                        help="parent of the per-visit output directories (default: .)")
    parser.add_argument("--refcat", default=None,
                        help="local astrometric reference catalog shared by the visits")
    parser.add_argument("--workers", type=int, default=2,
                        help="visits processed at once on the local Dask cluster (default 2)")
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
                                     dask_timeout=args.dask_timeout)
    except FanoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(outcomes))
    ok = state.is_completed() and all(o.state == "Completed" for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    # run under the importable name so Dask workers can unpickle the task (not ``__main__``)
    from flows import fanout as _fanout

    sys.exit(_fanout.main())
