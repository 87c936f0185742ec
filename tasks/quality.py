"""Tasks of the quality stage: one per check group, then the summary (spec §7, §8, issue #7)."""

from __future__ import annotations

from pathlib import Path

from hap_models.products import TotalProduct
from hap_models.stage import StageResult
from tasks.caching import run_stage
from tasks.stage_task import stage_task

__all__ = ["QUALITY_GROUPS", "quality_group_task", "quality_summary_task"]

#: Check groups, each one task (names as in the run's stage list), with the function of
#: :mod:`hapcore.quality.stage` that runs it (by name: the module is imported when a task runs).
QUALITY_GROUPS = {
    "num-sources": "run_num_sources",
    "reference": "run_reference_checks",
    "catalogs": "run_catalog_checks",
    "interfilter": "run_interfilter_checks",
    "wcs": "run_wcs_reports",
    "hla": "run_hla_comparison",
    "previews": "run_previews",
}


def _files(output_dir: Path):
    return lambda outcomes: [output_dir / f for o in outcomes for f in o.files]


@stage_task(name="quality-check", task_run_name="quality-{group}")
def quality_group_task(group: str, totals: list[TotalProduct], output_dir: Path,
                       refcat_path: Path | None, catalogs: list[StageResult],
                       timestamp=None,
                       hla_catalogs: dict[str, dict[str, Path] | None] | None = None,
                       hla_build_ver: str | None = None) -> StageResult:
    """One check group of the quality analysis (:mod:`hapcore.quality.stage`); every check isolated.

    ``catalogs`` (the catalog stage results) is an input so that new catalogs invalidate it;
    ``timestamp`` (shared by every file of the run) is not part of the cache key.

    The ``"hla"`` group compares with the HLA-classic catalog files ``hla_catalogs``
    (:func:`hapcore.quality.stage.hla_catalog_inputs`: per filter product, the files or None)
    of build ``hla_build_ver``: both are inputs, so the content of those files and the build are
    in its cache key. The other groups leave them None.
    """
    import hapcore.quality.stage as qa

    def run_group():
        ctx = qa.make_quality_context(totals, output_dir=output_dir, refcat=refcat_path,
                                      timestamp=timestamp)
        if group == "hla":
            return qa.run_hla_comparison(totals, ctx, catalogs=hla_catalogs or {})
        return getattr(qa, QUALITY_GROUPS[group])(totals, ctx)

    return run_stage(f"quality-{group}", run_group, outputs=_files(output_dir))


@stage_task(name="quality-summary")
def quality_summary_task(totals: list[TotalProduct], output_dir: Path, refcat_path: Path | None,
                         groups: list[StageResult], alignment: list[StageResult],
                         visit: str, stage_timings: dict | None = None,
                         timestamp=None) -> StageResult:
    """``<visit>_svm_quality.json``: pass/fail per check, alignment figures, stage costs."""
    import hapcore.quality.stage as qa

    def summarise():
        ctx = qa.make_quality_context(totals, output_dir=output_dir, refcat=refcat_path,
                                      timestamp=timestamp)
        outcomes = [o for g in groups for o in g.payload]
        return qa.finish_quality_report(
            totals, ctx, outcomes, alignment_results=[a.payload for a in alignment],
            stage_timings=stage_timings, visit=visit)

    return run_stage("quality-summary", summarise,
                     outputs=lambda report: [output_dir / f for f in report.files_written])
