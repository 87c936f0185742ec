"""hapsvm's own quality summary: ``<visit>_svm_quality.json`` with pass/fail per check.

Visit name
----------
``hst_<prop_id>_<obset_id>_<instrument>`` of the first total product (instruments joined with
``-`` if a visit mixes them), e.g. ``hst_12345_01_wfc3``; the caller may pass another name
(e.g. the manifest stem ``wfc3_b46_06``). One summary covers all detectors of the visit.

Contents (:class:`~hap_models.quality.QualitySummary`)
------------------------------------------------------
``visit, generated, overall_status, counts, thresholds, checks, alignment, stages, previews,
plots``. ``overall_status`` is ``failed`` if any check is ``failed`` or ``error``, else
``passed``. The alignment figures come from an
:class:`~hap_models.alignment.AlignmentResult` when given, else from the SVM copies' SCI,1
headers (WCSNAME, WCSTYPE, RMS_RA, RMS_DEC, NMATCHES, FITGEOM; opened read-only); they are
judged by the ``alignment`` check (RMS and matches within limits, fit quality acceptable,
a posteriori solution).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from astropy.io import fits

from hap_models.quality import (
    CHECK_STATUSES,
    AlignmentFigures,
    CheckOutcome,
    QualitySummary,
    QualityThresholds,
    StageUsage,
)
from hapcore.atomic import write_text_atomic
from hapcore.quality.report import jsonable

__all__ = [
    "visit_name",
    "thresholds_from_parameters",
    "alignment_figures",
    "check_alignment",
    "build_summary",
    "write_summary",
]

log = logging.getLogger(f"hapsvm.{__name__}")


def visit_name(totals: Sequence) -> str:
    """``hst_<prop_id>_<obset_id>_<instrument>`` of the total products (see module docstring)."""
    if not totals:
        raise ValueError("no total products")
    first = totals[0]
    instruments = "-".join(dict.fromkeys(t.instrument for t in totals))
    return f"hst_{first.prop_id}_{first.obset_id}_{instruments}"


def thresholds_from_parameters(parameters=None) -> QualityThresholds:
    """Summary thresholds of a product's parameter set.

    Uses ``parameters.quality.summary_thresholds`` (a mapping or QualityThresholds) when the
    parameter set has it; missing fields take the :class:`QualityThresholds` defaults. The
    alignment limits default to ``parameters.alignment`` (``general.min_fit_matches``,
    ``run_align.max_fit_limit``, ``determine_fit_quality.good_fit_quality_values`` where
    present).
    """
    values: dict = {}
    if parameters is None:
        return QualityThresholds()
    alignment = getattr(parameters, "alignment", None)
    try:
        values["min_alignment_matches"] = int(alignment.general.min_fit_matches)
        values["min_reference_sources"] = int(alignment.general.min_fit_matches)
    except AttributeError:
        pass
    try:
        values["max_alignment_rms_mas"] = float(alignment.run_align.max_fit_limit)
    except AttributeError:
        pass
    try:
        values["good_fit_qualities"] = tuple(alignment.determine_fit_quality
                                             .good_fit_quality_values)
    except AttributeError:
        pass
    configured = getattr(getattr(parameters, "quality", None), "summary_thresholds", None)
    if configured is not None:
        if hasattr(configured, "model_dump"):
            configured = configured.model_dump()
        values.update(dict(configured))
    return QualityThresholds(**values)


def _catalog_from_wcsname(wcsname: str) -> str | None:
    for marker in ("FIT_SVM_", "FIT_REL_", "FIT_IMG_", "FIT_EVM_"):
        if marker in wcsname:
            return wcsname.split(marker, 1)[1] or None
    return None


def alignment_figures(totals: Sequence, *, output_dir, alignment_results=None
                      ) -> list[AlignmentFigures]:
    """Alignment figures of every direct exposure of the visit.

    Parameters
    ----------
    totals : sequence of TotalProduct
    output_dir : path-like
        Where the SVM copies are (read only when no AlignmentResult covers an exposure).
    alignment_results : AlignmentResult or sequence of them, optional
    """
    by_name: dict[str, AlignmentFigures] = {}
    results = alignment_results
    if results is not None and not isinstance(results, (list, tuple)):
        results = [results]
    for result in results or []:
        for exp in result.exposures:
            rec = exp.record
            by_name[exp.svm_copy_filename] = AlignmentFigures(
                exposure=exp.svm_copy_filename,
                wcsname=str(getattr(rec, "wcsname", "") or ""),
                catalog=rec.catalog, fitgeom=rec.fitgeom, nmatches=rec.nmatches,
                rms_ra_mas=rec.rms_ra_mas, rms_dec_mas=rec.rms_dec_mas,
                fit_rms_mas=rec.fit_rms_mas, fit_quality=rec.fit_quality,
                wcstype=f"a posteriori ({rec.fit_label})" if rec.fit_label else "not aligned",
                source="alignment_result")
    out = []
    for total in totals:
        for edp in total.edp_list:
            name = edp.full_filename
            if name in by_name:
                out.append(by_name[name])
                continue
            path = Path(output_dir) / name
            if not path.exists():
                continue
            with fits.open(path, mode="readonly", memmap=False) as hdul:
                sci = hdul["SCI", 1].header if ("SCI", 1) in hdul else hdul[0].header
                wcsname = str(sci.get("WCSNAME", "")).strip()

                def number(key, kind=float):
                    value = sci.get(key)
                    try:
                        return None if value is None else kind(value)
                    except (TypeError, ValueError):
                        return None

                out.append(AlignmentFigures(
                    exposure=name, wcsname=wcsname, wcstype=str(sci.get("WCSTYPE", "")),
                    catalog=_catalog_from_wcsname(wcsname),
                    fitgeom=(str(sci["FITGEOM"]) if "FITGEOM" in sci else None),
                    nmatches=number("NMATCHES", int), rms_ra_mas=number("RMS_RA"),
                    rms_dec_mas=number("RMS_DEC"), source="header"))
    return out


def check_alignment(figures: Sequence[AlignmentFigures], thresholds: QualityThresholds, *,
                    visit: str) -> CheckOutcome:
    """Judge the alignment figures of a visit (one outcome for the whole visit)."""
    if not figures:
        return CheckOutcome(check="alignment", product=visit, status="skipped",
                            message="no alignment record and no SVM copies found")
    problems = []
    for f in figures:
        label = f.exposure
        if f.fit_quality is not None and f.fit_quality not in thresholds.good_fit_qualities:
            problems.append(f"{label}: fit quality {f.fit_quality}")
        elif f.fit_quality is None and "FIT" not in f.wcsname.upper():
            problems.append(f"{label}: not aligned a posteriori ({f.wcsname or 'no WCSNAME'})")
            continue
        rms = [v for v in (f.rms_ra_mas, f.rms_dec_mas) if v is not None and v >= 0]
        if rms and max(rms) > thresholds.max_alignment_rms_mas:
            problems.append(f"{label}: RMS {max(rms):.1f} mas > {thresholds.max_alignment_rms_mas}")
        if f.nmatches is not None and f.nmatches < thresholds.min_alignment_matches:
            problems.append(f"{label}: {f.nmatches} matches < {thresholds.min_alignment_matches}")
    rms_all = [max(v for v in (f.rms_ra_mas, f.rms_dec_mas) if v is not None)
               for f in figures if f.rms_ra_mas is not None or f.rms_dec_mas is not None]
    metrics = {"n_exposures": len(figures),
               "catalog": ",".join(sorted({f.catalog for f in figures if f.catalog})) or None,
               "max_rms_mas": max(rms_all) if rms_all else None,
               "min_matches": min((f.nmatches for f in figures if f.nmatches is not None),
                                  default=None)}
    return CheckOutcome(check="alignment", product=visit,
                        status="failed" if problems else "passed",
                        message="; ".join(problems), metrics=metrics)


def build_summary(visit: str, checks: Iterable[CheckOutcome], *, generated: str,
                  thresholds: QualityThresholds, alignment: Sequence[AlignmentFigures] = (),
                  stage_timings: Mapping | None = None, previews: Sequence[str] = (),
                  plots: Sequence[str] = (),
                  alignment_status: Mapping[str, str] | None = None) -> QualitySummary:
    """Assemble the :class:`QualitySummary` (counts and overall status from ``checks``).

    ``stage_timings`` maps stage name to a StageUsage, a dict with ``seconds`` and
    ``peak_memory_mb``, or a number of seconds.
    """
    checks = list(checks)
    counts = {status: sum(c.status == status for c in checks) for status in CHECK_STATUSES}
    stages = {}
    for name, value in (stage_timings or {}).items():
        if isinstance(value, StageUsage):
            stages[name] = value
        elif isinstance(value, Mapping):
            stages[name] = StageUsage(**value)
        else:
            stages[name] = StageUsage(seconds=float(value))
    failed = counts["failed"] + counts["error"] > 0
    return QualitySummary(visit=visit, generated=generated,
                          overall_status="failed" if failed else "passed", counts=counts,
                          thresholds=thresholds, checks=checks, alignment=list(alignment),
                          alignment_status=dict(alignment_status or {}),
                          stages=stages, previews=list(previews), plots=list(plots))


def write_summary(summary: QualitySummary, output_dir) -> Path:
    """Write ``<visit>_svm_quality.json`` atomically into ``output_dir``."""
    path = Path(output_dir) / f"{summary.visit}_svm_quality.json"
    text = json.dumps(jsonable(summary.model_dump()), indent=2, allow_nan=False) + "\n"
    write_text_atomic(path, text)
    log.info("Wrote %s (%s)", path.name, summary.overall_status)
    return path
