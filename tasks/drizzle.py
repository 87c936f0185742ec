"""Task of the drizzle stage: every drizzled product of one detector on its shared grid."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from hap_models.products import TotalProduct
from hap_models.stage import StageResult
from hapcore.drizzle_products import drizzle_detector
from tasks.caching import FILE_STAGE, run_stage

__all__ = ["drizzle_detector_task"]


@task(name="drizzle-detector", task_run_name="drizzle-{total.detector}", cache_policy=FILE_STAGE)
def drizzle_detector_task(total: TotalProduct, output_dir: Path, aligned: StageResult,
                          n_workers: int = 2) -> StageResult:
    """Filter, exposure and total products of one detector
    (:func:`hapcore.drizzle_products.drizzle_detector`).

    ``aligned`` (the alignment result with the digests of the SVM copies) is an input so that a
    new alignment invalidates the cached products.
    """
    return run_stage("drizzle", drizzle_detector, total, output_dir=output_dir,
                     n_workers=n_workers, outputs=lambda paths: list(paths))
