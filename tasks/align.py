"""Task of the alignment stage: one detector's exposures aligned, SVM copies written."""

from __future__ import annotations

from pathlib import Path

from hap_models.products import TotalProduct
from hap_models.stage import StageResult
from tasks.caching import run_stage
from tasks.stage_task import stage_task

__all__ = ["align_detector_task"]


def _written(output_dir: Path):
    def files(result) -> list[Path]:
        names = []
        for exposure in result.exposures:
            names.append(exposure.svm_copy_filename)
            if exposure.chips:
                names.append(exposure.headerlet_filename)
        return [output_dir / n for n in names]
    return files


@stage_task(name="align-detector", task_run_name="align-{total.detector}")
def align_detector_task(total: TotalProduct, output_dir: Path, refcat_path: Path | None = None,
                        n_workers: int = 2, online_cache_dir: Path | None = None) -> StageResult:
    """Align the direct exposures of one detector (:func:`hapcore.align.stage.run_alignment`)."""
    # imported when the task runs: a cache hit never loads the alignment's science modules
    from hapcore.align.stage import run_alignment

    return run_stage("align", run_alignment, total, output_dir=output_dir,
                     params=total.parameters.alignment, refcat_path=refcat_path,
                     n_workers=n_workers, online_cache_dir=online_cache_dir,
                     outputs=_written(output_dir))
