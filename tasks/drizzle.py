"""Tasks of the drizzle stage: one per product (filter, exposure, total), each cached.

The products of a detector share one output grid, its pixel maps and the filter products'
cosmic-ray masks; they live in a :class:`~hapcore.drizzle.stage.DrizzleWorkspace` whose maps
and masks persist under ``<output_dir>/.hapsvm-work/`` (so a killed run resumes with only the
unfinished products), kept open across this process's tasks by :func:`detector_workspace`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from hap_models.products import ExposureProduct, FilterProduct, TotalProduct
from hap_models.stage import StageResult
from hapcore.drizzle.stage import (
    DrizzleWorkspace,
    drizzle_exposure_product,
    drizzle_filter_product,
    drizzle_total_product,
    filter_cr_mask_files,
    open_detector_workspace,
    prepare_pixel_maps,
    start_exposure_products,
)
from tasks.caching import FILE_STAGE, run_stage
from tasks.registry import ProcessRegistry

__all__ = ["detector_workspace", "close_workspaces", "remove_work_files",
           "drizzle_filter_task", "drizzle_exposure_task", "drizzle_total_task"]

_WORKSPACES = ProcessRegistry()


def detector_workspace(total: TotalProduct, output_dir: Path, n_workers: int) -> DrizzleWorkspace:
    """The open workspace of a detector (created on first use in this process)."""
    return _WORKSPACES.get((ProcessRegistry.root(output_dir), total.detector),
                           lambda: open_detector_workspace(total, output_dir=output_dir,
                                                           n_workers=n_workers))


def close_workspaces(output_dir: Path) -> None:
    """Close this process's workspaces of an output directory (worker pools, scratch files)."""
    _WORKSPACES.release(output_dir, close=lambda ws: ws.close())


def remove_work_files(output_dir: Path) -> None:
    """Delete the pixel maps of ``.hapsvm-work`` once a visit has finished (~1 GB for a
    full-frame UVIS visit; they only speed up a resumed run). The compressed cosmic-ray masks
    stay: they are outputs of the cached filter products that a re-made total product needs."""
    close_workspaces(output_dir)
    work = Path(output_dir) / ".hapsvm-work"
    if not work.is_dir():
        return
    for item in work.rglob("*"):
        if item.is_file() and not item.name.startswith("crmask-"):
            item.unlink(missing_ok=True)
    for folder in sorted((p for p in work.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


@task(name="drizzle-filter", task_run_name="drizzle-{fdp.filters}", cache_policy=FILE_STAGE)
def drizzle_filter_task(fdp: FilterProduct, total: TotalProduct, output_dir: Path,
                        aligned: StageResult, n_workers: int = 2) -> StageResult:
    """A filter product with cosmic-ray rejection; its CR masks are outputs too (the total
    product needs them)."""
    def drizzle():
        ws = detector_workspace(total, output_dir, n_workers)
        prepare_pixel_maps(total.edp_list, workspace=ws)
        # Exposure products need nothing from the filter products: workers make them in the
        # gaps of this task (medians, writing), and their tasks collect them. Only products
        # whose file is missing are started -- those tasks cannot be cache hits, so nothing
        # cached is ever recomputed.
        start_exposure_products([e for f in total.fdp_list for e in f.edp_list
                                 if not (Path(output_dir) / e.drizzle_filename).exists()],
                                workspace=ws)
        product = drizzle_filter_product(fdp, workspace=ws)
        return [product, output_dir / fdp.trl_filename, *filter_cr_mask_files(fdp, workspace=ws)]

    return run_stage("drizzle-filter", drizzle, outputs=lambda files: files)


@task(name="drizzle-exposure", task_run_name="drizzle-{edp.exposure_name}", cache_policy=FILE_STAGE)
def drizzle_exposure_task(edp: ExposureProduct, total: TotalProduct, output_dir: Path,
                          aligned: StageResult, n_workers: int = 2) -> StageResult:
    """A single-exposure product (HAPLEVEL 1)."""
    def drizzle():
        ws = detector_workspace(total, output_dir, n_workers)
        return [drizzle_exposure_product(edp, workspace=ws), output_dir / edp.trl_filename]

    return run_stage("drizzle-exposure", drizzle, outputs=lambda files: files)


@task(name="drizzle-total", task_run_name="drizzle-total-{total.detector}",
      cache_policy=FILE_STAGE)
def drizzle_total_task(total: TotalProduct, output_dir: Path, filters: list[StageResult],
                       n_workers: int = 2) -> StageResult:
    """The total (detection) product, excluding the CR pixels the filter products found.

    Its trailer is not an output digest: the flow appends the run log to it afterwards.
    """
    def drizzle():
        ws = detector_workspace(total, output_dir, n_workers)
        return [drizzle_total_product(total, workspace=ws)]

    return run_stage("drizzle-total", drizzle, outputs=lambda files: files)
