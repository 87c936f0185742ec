"""Task of the alignment stage: one detector's exposures aligned, SVM copies written."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from hap_models.alignment import AlignmentResult
from hap_models.products import TotalProduct
from hapcore.align_stage import run_alignment

__all__ = ["align_detector_task"]


@task(name="align-detector", task_run_name="align-{total.detector}")
def align_detector_task(total: TotalProduct, output_dir: Path, refcat_path: Path | None = None,
                        n_workers: int = 2) -> AlignmentResult:
    """Align the direct exposures of one detector (see :func:`hapcore.align_stage.run_alignment`)."""
    return run_alignment(total, output_dir=output_dir, params=total.parameters.alignment,
                         refcat_path=refcat_path, n_workers=n_workers)
