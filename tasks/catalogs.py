"""Task of the catalog stage: point and segment catalogs of one detector's total and filters."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from hap_models.products import TotalProduct
from hap_models.stage import StageResult
from hapcore.catalog_stage import create_catalog_products
from tasks.caching import FILE_STAGE, run_stage

__all__ = ["create_catalogs_task"]


@task(name="create-catalogs", task_run_name="catalogs-{total.detector}", cache_policy=FILE_STAGE)
def create_catalogs_task(total: TotalProduct, output_dir: Path, drizzled: StageResult,
                         phot_mode: str = "both", diagnostic_mode: bool = False) -> StageResult:
    """Catalogs of one detector (:func:`hapcore.catalog_stage.create_catalog_products`).

    ``drizzled`` (the drizzle stage's result, with the digests of the products) is an input so
    that new drizzled products invalidate the cached catalogs.
    """
    return run_stage("catalogs", create_catalog_products, total, output_dir=output_dir,
                     phot_mode=phot_mode, diagnostic_mode=diagnostic_mode,
                     outputs=lambda paths: list(paths))
