"""The per-visit Prefect flow ``svm-visit``: every stage of one visit as cached Prefect tasks.

:func:`svm_visit` is started by :func:`flows.svm.run_hap_processing` (``runsinglehap``,
``python -m flows.svm``, ``hapsvm run``) with the Prefect engine once the inputs have passed
:mod:`flows.preflight`, by the fan-out flow, and by deployments (``deployment.yaml``). It runs
:func:`flows.visit.process_visit` -- the same stages the direct engine runs -- with
:class:`_Stages`, which runs each task through Prefect. Without ``PREFECT_API_URL`` the tasks
report to Prefect's temporary local server (started in the background as early as possible by
:func:`flows.prefect_env.start_temporary_api`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow

from flows.artifacts import StageProgress
from flows.run_lock import OutputDirLock
from flows.visit import VisitRunner, process_visit
from flows.visit_log import VisitLog
from hap_models.run_options import VisitOptions, VisitResult

__all__ = ["svm_visit"]

logger = logging.getLogger(f"hapsvm.{__name__}")


class _Stages(VisitRunner):
    """Runs stage tasks as Prefect task runs with this visit's cache settings."""

    def __init__(self, options: VisitOptions, progress: StageProgress | None = None):
        self._init_visit(options, progress)

    def execute(self, stage_task, args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        configured = stage_task.with_options(result_storage=self.storage,
                                             refresh_cache=self.options.force)
        state = configured(*args, return_state=True, **kwargs)
        return state.result(), state.name

    def call(self, stage_task, *args: Any, **kwargs: Any) -> Any:
        """Run an uncached helper task (the manifest) as a Prefect task run."""
        return stage_task.prefect(*args, **kwargs)


@flow(name="svm-visit", flow_run_name="visit-{poller_file.stem}", log_prints=False)
def svm_visit(poller_file: Path, options: VisitOptions, log_part: Path | None = None) -> VisitResult:
    """Process one visit: parse, product tree and parameters, alignment, drizzle, catalogs,
    quality; write the manifest.

    Every stage is a cached task (:mod:`tasks.caching`): a rerun recomputes only what changed.
    """
    if log_part is None:
        # called directly (a deployment, the fan-out flow): this run keeps its own .log file,
        # and takes the output directory's lock first, as run_hap_processing does
        with OutputDirLock(options.output_dir), VisitLog(
                options.output_dir / (Path(poller_file).stem + ".log"),
                level=options.log_level) as visit_log:
            return process_visit(Path(poller_file), options, visit_log.part_path, _Stages)
    return process_visit(Path(poller_file), options, log_part, _Stages)
