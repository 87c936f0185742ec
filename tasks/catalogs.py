"""Tasks of the catalog stage: one per catalog product, each cached.

* :func:`measure_filter_catalogs_task` -- one per filter product: forced photometry and flags at
  the total product's sources (its point and segment measurements);
* :func:`write_catalogs_task` -- the total catalogs: joins the filter measurements, trims, runs
  the cosmic-ray-dominance test and writes every catalog file of the detector (the filter
  catalogs can only be written once every filter has been measured: the trimming and the
  rejection depend on all of them).

The detection on the total image is shared by these tasks through a process-local registry
(:func:`total_detection`); a task that finds no detection (a resumed run whose earlier tasks were
cached) recomputes it from the total product.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from hap_models.products import FilterProduct, TotalProduct
from hap_models.stage import StageResult
from hapcore.catalogs.stage import (
    SourceDetection,
    load_total_detection,
    measure_filter_product,
    write_detector_catalogs,
)
from hapcore.digests import file_digest
from tasks.caching import FILE_STAGE, run_stage
from tasks.registry import ProcessRegistry

__all__ = ["total_detection", "release_detections", "measure_filter_catalogs_task",
           "write_catalogs_task"]

_DETECTIONS = ProcessRegistry()


def total_detection(total: TotalProduct, output_dir: Path, phot_mode: str) -> SourceDetection:
    """The detection of ``total`` in this process, computed on first use (keyed by the total
    product's content, so a re-made total product is detected again)."""
    product = Path(output_dir) / total.drizzle_filename
    key = (ProcessRegistry.root(output_dir), total.detector, phot_mode, file_digest(product))
    return _DETECTIONS.get(key, lambda: load_total_detection(total, output_dir=output_dir,
                                                             phot_mode=phot_mode))


def release_detections(output_dir: Path) -> None:
    """Forget this process's detections of an output directory (they hold full-size arrays)."""
    _DETECTIONS.release(output_dir)


@task(name="measure-filter-catalogs", task_run_name="catalogs-{fdp.filters}",
      cache_policy=FILE_STAGE)
def measure_filter_catalogs_task(fdp: FilterProduct, total: TotalProduct, output_dir: Path,
                                 drizzled: StageResult, phot_mode: str = "both") -> StageResult:
    """Point and segment measurements of one filter product (payload: its FilterCatalogs
    tables, untrimmed; the files are written by :func:`write_catalogs_task`).

    ``drizzled`` (the drizzle stage's result, with the digests of the products) is an input so
    that new drizzled products invalidate the cached measurements.
    """
    def measure():
        detection = total_detection(total, output_dir, phot_mode)
        entry = measure_filter_product(fdp, detection, output_dir=output_dir)
        # the image arrays are re-read when needed; the cached result keeps the tables only
        return {"point": entry.point, "segment": entry.segment, "timings": entry.timings}

    return run_stage("measure-filter-catalogs", measure, outputs=lambda payload: [])


@task(name="write-catalogs", task_run_name="catalogs-total-{total.detector}",
      cache_policy=FILE_STAGE)
def write_catalogs_task(total: TotalProduct, output_dir: Path, drizzled: StageResult,
                        measured: list[StageResult], phot_mode: str = "both",
                        diagnostic_mode: bool = False) -> StageResult:
    """The total catalogs, and every catalog file of the detector (payload: the paths)."""
    from hapcore.catalogs.image import ProductHeaders
    from hapcore.catalogs.stage import FilterCatalogs

    def write():
        detection = total_detection(total, output_dir, phot_mode)
        filters = []
        for fdp, result in zip(total.fdp_list, measured):
            # metadata and the CR-dominance test read the headers only: no pixels re-read
            image = ProductHeaders.from_fits(Path(output_dir) / fdp.drizzle_filename)
            payload = result.payload
            filters.append(FilterCatalogs(fdp.filters, image, fdp.parameters,
                                          point=payload["point"], segment=payload["segment"],
                                          timings=payload["timings"]))
        try:
            return write_detector_catalogs(total, detection, filters, output_dir=output_dir,
                                           diagnostic_mode=diagnostic_mode)
        finally:
            release_detections(output_dir)

    return run_stage("catalogs", write, outputs=lambda paths: list(paths))
