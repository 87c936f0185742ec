"""The stage sequences of one detector, written once for every caller.

Each function here runs the tasks of one stage in their order (spec §3.4) through a *runner*:

* in the Prefect engine the runner is :class:`flows.visit_flow._Stages`, which runs each task
  through Prefect with the visit's cache settings;
* in the direct engine (``--engine direct``, :mod:`flows.direct`) it is a :class:`DirectRunner`
  with a :class:`~tasks.cache_store.TaskCache`: each task's function is called in this process,
  unless a record of its cache key (the Prefect engine's key) says it is done;
* benchmarks and tests that want the real path without any cache pass a plain
  :class:`DirectRunner`.

So both engines, the benchmarks and the tests run the same sequence of the same stage entry
points. Importing this module imports neither Prefect nor the science modules.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from hap_models.stage import StageResult
from tasks.cache_store import COMPLETED, TaskCache
from tasks.catalogs import (
    detect_sources_task,
    measure_filter_catalogs_task,
    write_catalogs_task,
)
from tasks.drizzle import drizzle_filter_task, drizzle_total_task, remove_work_files
from tasks.quality import QUALITY_GROUPS, quality_group_task, quality_summary_task

__all__ = ["StageRunner", "DirectRunner", "drizzle_stage", "catalog_stage", "quality_stage",
           "finish_drizzle_work"]

logger = logging.getLogger(f"hapsvm.{__name__}")


class StageRunner(Protocol):
    """Runs one stage task: ``run(task, *args, label=..., **kwargs) -> StageResult``."""

    def __call__(self, stage_task: Any, *args: Any, label: str | None = None,
                 **kwargs: Any) -> StageResult: ...


class DirectRunner:
    """Run each task's function in this process, without Prefect.

    Parameters
    ----------
    cache : TaskCache, optional
        Cache records (the direct engine): a cached task whose key has a valid record is not
        run, and a task run is recorded. None (benchmarks, tests): every task runs, nothing is
        recorded.
    force : bool
        With a cache: recompute every task and overwrite its record (``--force``).

    Attributes
    ----------
    timings : dict
        Each task's wall time by label (its ``StageResult.wall_s``, as the Prefect runner).
    states : dict
        Each task's final state by label: ``Completed`` or ``Cached``.
    """

    def __init__(self, cache: TaskCache | None = None, *, force: bool = False) -> None:
        self.cache = cache
        self.force = force
        self.timings: dict[str, float] = {}
        self.states: dict[str, str] = {}

    def __call__(self, stage_task: Any, *args: Any, label: str | None = None,
                 **kwargs: Any) -> StageResult:
        fn: Callable[..., StageResult] = getattr(stage_task, "fn", stage_task)
        label = label or getattr(stage_task, "name", fn.__name__)
        result, state = self.execute(stage_task, args, kwargs)
        self.states[label] = state
        self.timings[label] = float(getattr(result, "wall_s", 0.0) or 0.0)
        return result

    def execute(self, stage_task: Any, args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        """Run one task (through the cache when there is one); returns ``(result, state)``."""
        fn = getattr(stage_task, "fn", stage_task)
        if self.cache is None or not getattr(stage_task, "cached", False):
            return fn(*args, **kwargs), COMPLETED
        return self.cache.run(stage_task.name, fn, args, kwargs, refresh=self.force)

    def call(self, stage_task: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an uncached helper task (the manifest) and return its value."""
        return getattr(stage_task, "fn", stage_task)(*args, **kwargs)


def drizzle_stage(run: StageRunner, total, output_dir: Path, aligned: StageResult,
                  n_workers: int) -> StageResult:
    """Every drizzled product of one detector: each filter product with its exposure products
    (one task per filter), then the total product (its own task).

    Returns one StageResult listing every product file, for the catalog stage's cache key.
    """
    det = total.detector
    filters = [run(drizzle_filter_task, fdp, total, output_dir, aligned, n_workers,
                   label=f"drizzle-{det}-{fdp.filters}")
               for fdp in total.fdp_list]
    made_total = run(drizzle_total_task, total, output_dir, filters, n_workers,
                     label=f"drizzle-{det}-total")
    # the stage is done: its workers end now (memory freed, usage counted as our children's);
    # the pools live in the workspace module: not loaded (every task a cache hit), no pools
    workspace = sys.modules.get("hapcore.drizzle.workspace")
    if workspace is not None:
        workspace.release_worker_pools()
    outputs: dict[str, str] = {}
    wall = 0.0
    for result in [*filters, made_total]:
        outputs.update(result.outputs)
        wall += result.wall_s
    return StageResult(stage="drizzle", outputs=outputs, wall_s=wall)


def catalog_stage(run: StageRunner, total, output_dir: Path, drizzled: StageResult,
                  options) -> StageResult:
    """Every catalog of one detector: the detection on the total product (its own task), one
    task per filter product (its measurements at the total's sources), then the total catalogs,
    which write every catalog file of the detector (trimming and rejection need all filters).

    ``options`` is the visit's :class:`~hap_models.run_options.VisitOptions` (``phot_mode``,
    ``diagnostic_mode``). Returns the last task's result, listing every catalog file.
    """
    det = total.detector
    detected = run(detect_sources_task, total, output_dir, drizzled, options.phot_mode,
                   label=f"catalogs-{det}-detect")
    measured = [run(measure_filter_catalogs_task, fdp, total, output_dir, drizzled, detected,
                    options.phot_mode, label=f"catalogs-{det}-{fdp.filters}")
                for fdp in total.fdp_list]
    return run(write_catalogs_task, total, output_dir, drizzled, detected, measured,
               options.phot_mode, options.diagnostic_mode, label=f"catalogs-{det}")


def finish_drizzle_work(output_dir: Path) -> None:
    """Remove the drizzle stage's scratch of a finished visit (see :func:`remove_work_files`)."""
    remove_work_files(output_dir)


def quality_stage(run: StageRunner, totals, output_dir: Path, refcat: Path | None,
                  aligned: list[StageResult], catalogs: list[StageResult], visit: str, *,
                  hla_basepath: Path | None = None, hla_build_ver: str | None = None,
                  hla_local_dir: Path | None = None,
                  timestamp=None):
    """The quality analysis of a visit: one task per check group, then the summary.

    A failing check never stops the run (each is isolated and recorded as ``error``).

    Parameters
    ----------
    run : StageRunner
    totals : list of TotalProduct
        The total products with direct exposures.
    output_dir : Path
    refcat : Path or None
        The local reference catalog alignment used (None skips the reference checks).
    aligned, catalogs : list of StageResult
        The alignment and catalog stage results of every detector (inputs of the cache keys).
    visit : str
        Summary name, ``<visit>_svm_quality.json``.
    hla_basepath, hla_build_ver : optional
        Where the HLA-classic catalogs are (``VisitOptions.hla_classic_basepath`` and
        ``hla_build_ver``); the files found are inputs of the HLA comparison task.
    hla_local_dir : Path, optional
        The local HLA-classic folder (``VisitOptions.hla_classic_dir``), used when the base path
        and build version name none.
    timestamp : QualityTimestamp, optional
        Generation time of every file (default: now).

    Returns
    -------
    QualityReport
    """
    from hapcore.quality.report import QualityTimestamp
    from hapcore.quality.stage import hla_catalog_inputs

    stamp = timestamp or QualityTimestamp.now()
    hla = {"hla_catalogs": hla_catalog_inputs(totals, local_dir=hla_local_dir,
                                              basepath=hla_basepath, build_ver=hla_build_ver),
           "hla_build_ver": hla_build_ver}
    groups = [run(quality_group_task, group, totals, output_dir, refcat, catalogs, stamp,
                  label=f"quality-{group}", **(hla if group == "hla" else {}))
              for group in QUALITY_GROUPS]
    peaks = getattr(run, "peaks", {})
    costs = {label: {"seconds": round(sec, 3), "peak_memory_mb": peaks.get(label)}
             for label, sec in getattr(run, "timings", {}).items()}
    report = run(quality_summary_task, totals, output_dir, refcat, groups, aligned, visit, costs,
                 stamp, label="quality-summary").payload
    counts: dict[str, int] = {}
    for check in report.checks:
        counts[check.status] = counts.get(check.status, 0) + 1
    logger.info("quality: %s, %s -> %s", report.overall_status,
                ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), report.summary_file)
    for check in (c for c in report.checks if c.status in ("failed", "error")):
        logger.warning("quality check %s of %s: %s %s", check.check, check.product, check.status,
                       check.message)
    return report
