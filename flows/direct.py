"""The direct engine: a visit processed without Prefect (``--engine direct``, issue #16).

:func:`run_visit` is :func:`flows.visit_flow.svm_visit` without Prefect: the same stage
sequences (:func:`flows.visit.process_visit`, :mod:`flows.stages`), each task's function called
in this process by :class:`DirectVisitRunner` -- a :class:`~flows.stages.DirectRunner` with the
visit's :class:`~tasks.cache_store.TaskCache`. Its cache keys and records are the Prefect
engine's (:mod:`tasks.caching`): the same products, the same log and summary, the same exit
codes, and a visit run by one engine is a cache hit for the other. No API server is started
and Prefect is never imported, so a run whose every task is a cache hit costs little more
than Python's start-up, the input checks and reading the records.

Importing this module imports no Prefect.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flows.artifacts import StageProgress
from flows.run_lock import OutputDirLock
from flows.stages import DirectRunner
from flows.visit import VisitRunner, process_visit
from flows.visit_log import VisitLog
from hap_models.errors import HapError
from hap_models.run_options import VisitOptions, VisitResult
from hap_models.stage import StageResult
from tasks.cache_store import CACHED, TaskCache
from tasks.caching import cache_storage

__all__ = ["DirectVisitRunner", "run_visit"]

logger = logging.getLogger(f"hapsvm.{__name__}")


class DirectVisitRunner(VisitRunner, DirectRunner):
    """The direct engine's visit runner: tasks through the visit's cache, in this process.

    Each task's end is logged at INFO, as the Prefect engine's task runs log theirs
    ("Finished in state ...").
    """

    def __init__(self, options: VisitOptions, progress: StageProgress | None = None):
        DirectRunner.__init__(self, TaskCache(cache_storage(options.output_dir,
                                                            options.cache_dir)),
                              force=options.force)
        self._init_visit(options, progress)

    def execute(self, stage_task: Any, args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        return DirectRunner.execute(self, stage_task, args, kwargs)

    def __call__(self, stage_task: Any, *args: Any, label: str | None = None,
                 **kwargs: Any) -> StageResult:
        result = VisitRunner.__call__(self, stage_task, *args, label=label, **kwargs)
        _release_memory()
        label = label or stage_task.name
        state = self.states[label]
        if state == CACHED:
            logger.info("task %s: %s", label, state)
        else:
            logger.info("task %s: %s in %.1f s", label, state, self.timings[label])
        return result


def _release_memory() -> None:
    """Give the memory a finished stage freed back to the system.

    Every stage runs in this process; what one frees stays in glibc's heap (fragmented by its
    many chip-sized arrays) and is counted in the process's RSS through the next stage, whose
    peak adds to it: the drizzle and catalog peaks of a 3 x UVIS visit carried ~0.3 GB left
    by the stage before.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def run_visit(poller_file: Path, options: VisitOptions, log_part: Path | None = None
              ) -> VisitResult:
    """Process one visit with the direct engine (:func:`~flows.visit_flow.svm_visit`'s twin).

    Parameters
    ----------
    poller_file : Path
        The visit's poller file.
    options : VisitOptions
        The run's options.
    log_part : Path, optional
        The visit log being written (the entry point's :class:`~flows.visit_log.VisitLog`).
        None (the fan-out): this run takes the output directory's lock and keeps its own
        ``<poller stem>.log``, as the flow does when a deployment starts it.

    Returns
    -------
    VisitResult

    Raises
    ------
    HapError
        A user error (bad input, no viable data, not aligned with ``require_alignment``).
    """
    if log_part is None:
        with OutputDirLock(options.output_dir), VisitLog(
                options.output_dir / (Path(poller_file).stem + ".log"),
                level=options.log_level) as visit_log:
            try:
                return process_visit(Path(poller_file), options, visit_log.part_path,
                                     DirectVisitRunner)
            except Exception as exc:
                # no entry point logs it here (the Prefect engine's flow run does): the log
                # says why the visit failed (a user error in one line, anything else with
                # its traceback)
                logger.error("visit %s failed: %s", Path(poller_file).stem, exc,
                             exc_info=not isinstance(exc, HapError))
                raise
    return process_visit(Path(poller_file), options, log_part, DirectVisitRunner)
