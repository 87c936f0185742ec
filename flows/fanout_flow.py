"""The ``svm-fanout`` Prefect flow: many visits in parallel on Dask (issue #8; the Prefect
engine of :mod:`flows.fanout`).

* Each visit is processed by the per-visit flow :func:`flows.visit_flow.svm_visit`, run as a
  subflow of a ``process-visit`` task, and writes to ``OUTDIR/<poller stem>/`` (its log,
  products and cache).
* Visits run on prefect-dask's :class:`~prefect_dask.DaskTaskRunner`: by default a
  ``LocalCluster`` of ``workers`` *processes* with one thread each (``astropy.wcs`` is not
  thread-safe), so at most ``workers`` visits run at once; ``dask_address`` uses an existing
  cluster instead (its worker threads bound the concurrency).
* One failing visit never stops the others. The flow returns the visits' final states, so the
  ``svm-fanout`` run ends **Failed** if any visit failed (prefect_notes §5.3) and can be retried
  (completed visits then come from the cache).

The deployment's entrypoint is ``flows/fanout.py:svm_fanout`` (that module hands this flow out).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from flows.fanout import (
    VisitFailedError,
    VisitOutcome,
    _first_line,
    check_dask_address,
    check_output_dir,
    expand_poller_sources,
    visit_options_for,
)
from hap_models.run_options import VisitOptions

__all__ = ["make_task_runner", "process_visit_task", "svm_fanout", "outcomes_from_states",
           "run_fanout_prefect"]

logger = logging.getLogger(f"hapsvm.{__name__}")


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




def run_fanout_prefect(poller_files: list[Path], output_dir: Path, visit_options: VisitOptions,
                       workers: int, dask_address: str | None) -> tuple[State, list[VisitOutcome]]:
    """Run :func:`svm_fanout` on checked inputs; its final state and the visits' outcomes."""
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
