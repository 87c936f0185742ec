"""Tasks of the drizzle stage: one per unit of work, each cached.

* :func:`drizzle_filter_task` -- one filter product with its exposure products (its
  compressed CR masks are outputs a re-made total product needs);
* :func:`drizzle_total_task` -- the total product, combined from its filter products.

Each task opens the detector's :class:`~hapcore.drizzle.workspace.DrizzleWorkspace` (its worker
pool and its scratch -- per-chip partial drizzles and medians, on a tmpfs where there is room --
are the task's own, deleted when it returns); only the CR masks persist, under
``<output_dir>/.hapsvm-work/``, so a killed run resumes with only the unfinished tasks.
"""

from __future__ import annotations

from pathlib import Path

from hap_models.products import FilterProduct, TotalProduct
from hap_models.stage import StageResult
from tasks.caching import run_stage
from tasks.stage_task import stage_task

__all__ = ["remove_work_files", "drizzle_filter_task", "drizzle_total_task"]

#: Scratch directory of a visit (:func:`hapcore.drizzle.workspace.remove_work_files`).
WORK_DIR = ".hapsvm-work"


def remove_work_files(output_dir: Path) -> None:
    """Remove the drizzle stage's scratch of a finished visit
    (:func:`hapcore.drizzle.workspace.remove_work_files`).

    The drizzle modules are imported only when there is something to remove: after a run
    whose every task was a cache hit the scratch holds the CR masks alone, which stay, and the
    import (~1 s) would be most of that run's time. If the rule of what stays ever changes,
    this check only decides whether hapcore's function is called; that function decides.
    """
    work = Path(output_dir) / WORK_DIR
    if not work.is_dir():
        return
    removable = any((item.is_file() and not item.name.startswith("crmask-"))
                    or (item.is_dir() and not any(item.iterdir()))
                    for item in work.rglob("*"))
    if not removable:
        return
    from hapcore.drizzle.workspace import remove_work_files as remove

    remove(output_dir)


@stage_task(name="drizzle-filter", task_run_name="drizzle-{fdp.filters}")
def drizzle_filter_task(fdp: FilterProduct, total: TotalProduct, output_dir: Path,
                        aligned: StageResult, n_workers: int = 2) -> StageResult:
    """A filter product with cosmic-ray rejection, and its exposure products (HAPLEVEL 1),
    with their trailers; its CR masks are outputs too (the total product needs them).

    ``aligned`` (the alignment stage's result, with the SVM copies' digests) is an input so
    that a new alignment invalidates it.
    """
    from hapcore.drizzle import (
        drizzle_filter_with_exposures,
        filter_cr_mask_files,
        open_detector_workspace,
    )

    def drizzle():
        with open_detector_workspace(total, output_dir=output_dir, n_workers=n_workers) as ws:
            filter_product, *exposures = drizzle_filter_with_exposures(fdp, workspace=ws,
                                                                        total=total)
            return [filter_product, output_dir / fdp.trl_filename,
                    *filter_cr_mask_files(fdp, workspace=ws),
                    *[f for edp, product in zip(fdp.edp_list, exposures)
                      for f in (product, output_dir / edp.trl_filename)]]

    return run_stage("drizzle-filter", drizzle, outputs=lambda files: files)


@stage_task(name="drizzle-total", task_run_name="drizzle-total-{total.detector}")
def drizzle_total_task(total: TotalProduct, output_dir: Path, filters: list[StageResult],
                       n_workers: int = 2) -> StageResult:
    """The total (detection) product, excluding the CR pixels the filter products found.

    Its trailer is not an output digest: the flow appends the run log to it afterwards.
    """
    from hapcore.drizzle import drizzle_total_product, open_detector_workspace

    def drizzle():
        with open_detector_workspace(total, output_dir=output_dir, n_workers=n_workers) as ws:
            return [drizzle_total_product(total, workspace=ws)]

    return run_stage("drizzle-total", drizzle, outputs=lambda files: files)
