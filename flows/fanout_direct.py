"""The direct engine of the fan-out: one visit per worker process, no Prefect (issue #16).

:func:`run_fanout_direct` hands each visit to a pool of ``workers`` plain processes
(:func:`hapcore.processes.worker_context`: spawned, never re-importing the caller's main
module, SIGINT left to this process); a worker runs one visit at a time with
:func:`flows.direct.run_visit` -- the visit's own lock, log file, cache and products, as the
Prefect engine's ``svm-visit`` subflow -- and returns its :class:`~flows.fanout.VisitOutcome`.
A worker keeps its imports from one visit to the next, so a fan-out pays Python's and the
science libraries' start-up once per worker, not once per visit, and there is no per-visit
orchestration cost at all.

A visit that fails is one failed outcome (its message the error's first line); the others go
on. A fan-out stopped by SIGINT/SIGTERM stops its workers (their unfinished writes are
temporary files; the finished stages are cached) and re-raises.

Importing this module imports no Prefect.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from flows.fanout import VisitOutcome, _first_line, visit_options_for
from hap_models.run_options import VisitOptions

__all__ = ["run_one_visit", "run_fanout_direct"]

logger = logging.getLogger(f"hapsvm.{__name__}")


#: Thread pools of the numerical libraries, one thread each in a worker (set before the worker
#: imports numpy): a worker runs one visit on one core, and the others' visits use the rest.
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(level: int) -> None:
    """A worker's set-up: one thread per numerical library (:data:`_ONE_THREAD`, unless the
    environment says otherwise) and the package's log level (its lines go to each visit's log
    file; the parent prints the summary)."""
    for name in _ONE_THREAD:
        os.environ.setdefault(name, "1")
    logging.getLogger("hapsvm").setLevel(level)


def run_one_visit(poller_file: Path, options: VisitOptions) -> VisitOutcome:
    """Process one visit with the direct engine; never raises (a failure is an outcome).

    Parameters
    ----------
    poller_file : Path
    options : VisitOptions
        The visit's options (its own output directory).

    Returns
    -------
    VisitOutcome
        ``Completed`` with the number of products and the stage states, or ``Failed`` with
        the first line of the error.
    """
    from flows.direct import run_visit

    poller_file = Path(poller_file)
    start = time.perf_counter()
    outcome = VisitOutcome(visit=poller_file.stem, poller_file=poller_file,
                           output_dir=options.output_dir, state="Completed")
    try:
        result = run_visit(poller_file, options)
    except Exception as exc:  # one visit's failure is its outcome; the fan-out goes on
        outcome.state = "Failed"
        outcome.message = _first_line(str(exc)) or exc.__class__.__name__
    else:
        outcome.n_products = len(result.products)
        outcome.stage_states = dict(result.stage_states)
    outcome.wall_s = time.perf_counter() - start
    return outcome


def run_fanout_direct(poller_files: list[Path], output_dir: Path, visit_options: VisitOptions,
                      workers: int) -> list[VisitOutcome]:
    """Process the visits on ``workers`` worker processes (see the module docstring).

    Parameters
    ----------
    poller_files : list of Path
        Checked poller files (:func:`flows.fanout.expand_poller_sources`).
    output_dir : Path
        Parent of the per-visit output directories.
    visit_options : VisitOptions
        Options every visit shares, the environment read (:func:`flows.fanout.visit_options_for`
        gives each visit its own output directory).
    workers : int
        Processes, i.e. visits at once.

    Returns
    -------
    list of VisitOutcome
        In input order.
    """
    from hapcore.processes import stop_pool, worker_context

    n_workers = max(1, min(int(workers), len(poller_files)))
    logger.info("fan-out of %d visit(s) into %s on %d worker process(es) (direct engine)",
                len(poller_files), output_dir, n_workers)
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=worker_context(),
                               initializer=_init_worker, initargs=(visit_options.log_level,))
    outcomes: list[VisitOutcome] = []
    try:
        futures = [pool.submit(run_one_visit, poller,
                               visit_options_for(poller, output_dir, visit_options))
                   for poller in poller_files]
        for poller, future in zip(poller_files, futures):
            try:
                outcomes.append(future.result())
            except Exception as exc:  # the worker died (killed, out of memory)
                outcomes.append(VisitOutcome(
                    visit=poller.stem, poller_file=poller, output_dir=Path(output_dir) / poller.stem,
                    state="Crashed", message=_first_line(str(exc)) or exc.__class__.__name__))
    except BaseException:
        # stopped (SIGINT/SIGTERM): end the workers now rather than wait for their visits
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)
    n_failed = sum(o.state != "Completed" for o in outcomes)
    logger.info("fan-out done: %d visit(s) completed, %d failed", len(outcomes) - n_failed,
                n_failed)
    return outcomes
