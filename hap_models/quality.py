"""Schemas of the quality stage (spec §7, §8 and hapsvm's own pass/fail summary).

* :class:`QualityThresholds` - the limits our pass/fail summary judges the checks against. They
  belong in the parameter set (``QualityParameters``); until those fields exist there, the
  defaults here are used (see :func:`hapcore.quality.summary.thresholds_from_parameters`).
* :class:`CheckOutcome` - what one check did for one product (status, files, key figures).
* :class:`AlignmentFigures` - the alignment of one exposure as recorded in its SVM copy or
  in an :class:`~hap_models.alignment.AlignmentResult`.
* :class:`StageUsage` - run time and peak memory of one pipeline stage (passed in by the flow).
* :class:`QualitySummary` - the ``<visit>_svm_quality.json`` document.
* :class:`QualityReport` - what :func:`hapcore.quality.stage.finish_quality_report` returns
  (and :func:`flows.stages.quality_stage`, the sequence of the flow).

Check statuses
--------------
``passed`` / ``failed``
    The check ran and its figures are within / outside the thresholds.
``done``
    The check ran; it is descriptive only (no threshold applies, as in drizzlepac).
``skipped``
    The check could not apply (e.g. one filter only, no reference catalog, no HLA catalogs).
``error``
    The check raised; the message holds the exception. The run went on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CHECK_STATUSES",
    "CheckStatus",
    "HLA_MAX_DIFFERENCES",
    "QualityThresholds",
    "CheckOutcome",
    "AlignmentFigures",
    "StageUsage",
    "QualitySummary",
    "QualityReport",
]

CheckStatus = Literal["passed", "failed", "done", "skipped", "error"]

#: All check statuses, best first.
CHECK_STATUSES: tuple[str, ...] = ("passed", "done", "skipped", "failed", "error")

#: Largest allowed |sigma-clipped mean| of HAP - HLA differences per quantity (spec §8).
#: Positions in pixels, separation in arcsec, fluxes in e-/s, magnitudes in mag.
HLA_MAX_DIFFERENCES: dict[str, float] = {
    "X": 0.1, "Y": 0.1, "Separation": 0.1, "FLUX1": 1.0, "FLUX2": 1.0,
    "MAGNITUDE1": 0.1, "MAGNITUDE2": 0.1, "MERR1": 0.05, "MERR2": 0.05,
    "MSKY": 0.1, "STDEV": 0.05, "CI": 0.15,
}


class QualityThresholds(BaseModel):
    """Limits of hapsvm's pass/fail quality summary.

    Defaults follow the alignment acceptance of spec §4.6 and the HLA comparison of §8; the
    other limits are hapsvm's (drizzlepac's QA is descriptive only).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_total_sources: int = Field(
        1, ge=0, description="num_sources: point and segment total catalogs each have >= this")
    min_reference_sources: int = Field(
        4, ge=0, description="gaia_sources: reference sources on the total footprint (>= "
                             "alignment min_fit_matches)")
    min_point_segment_match_fraction: float = Field(
        0.5, ge=0, le=1, description="point_segment_crossmatch: matches / shorter catalog")
    max_point_segment_separation_arcsec: float = Field(
        0.05, gt=0, description="point_segment_crossmatch: |3-sigma-clipped mean separation|")
    max_point_segment_delta_mag: float = Field(
        0.1, gt=0, description="photometry: |median point - segment MagAp1/MagAp2|")
    min_interfilter_matches: int = Field(
        5, ge=1, description="interfilter_crossmatch: matched sources per comparison filter")
    max_interfilter_offset_px: float = Field(
        0.5, gt=0, description="interfilter_crossmatch: |3-sigma-clipped mean| offset per axis")
    interfilter_nsigma: float = Field(
        3.0, gt=0, description="interfilter_crossmatch: DAOStarFinder threshold in background "
                               "rms (alignment nsigma in drizzlepac)")
    max_alignment_rms_mas: float = Field(
        150.0, gt=0, description="alignment: RMS_RA and RMS_DEC limit (MAX_FIT_LIMIT, §4.6)")
    min_alignment_matches: int = Field(
        4, ge=0, description="alignment: NMATCHES limit (MIN_FIT_MATCHES, §4.6)")
    good_fit_qualities: tuple[int, ...] = Field(
        (1, 2, 3, 4), description="alignment: acceptable fit_quality values (§4.6)")
    hla_max_differences: dict[str, float] = Field(
        default_factory=lambda: dict(HLA_MAX_DIFFERENCES),
        description="hla_comparison: |clipped mean| limit per quantity (§8)")
    hla_min_fraction_within_3sigma: float = Field(
        0.95, ge=0, le=1, description="hla_comparison: fraction within 3 sigma of clipped mean")
    hla_max_flag_mismatch_fraction: float = Field(
        0.05, ge=0, le=1, description="hla_comparison: fraction of matches whose flags differ")
    hla_min_matches: int = Field(10, ge=1, description="hla_comparison: minimum matches")
    hla_judged_quantities: tuple[str, ...] | None = Field(
        None, description="hla_comparison: quantities (keys of hla_max_differences, plus "
                          "FLAGS) that decide pass/fail; None = every quantity present in both "
                          "catalogs (spec §8); the others are reported only")

    @field_validator("hla_max_differences", mode="before")
    @classmethod
    def _canonical_quantity_names(cls, value):
        # parameter files may lower-case keys (drizzlepac spellings are accepted case-blind)
        canonical = {name.lower(): name for name in HLA_MAX_DIFFERENCES}
        if isinstance(value, dict):
            return {canonical.get(str(k).lower(), k): v for k, v in value.items()}
        return value


class CheckOutcome(BaseModel):
    """What one check did for one product.

    Attributes
    ----------
    check : str
        Check name, e.g. ``num_sources``, ``gaia_sources``, ``point_segment_crossmatch``.
    product : str
        Product basename (or the visit name for visit-wide checks).
    status : {"passed", "failed", "done", "skipped", "error"}
    message : str
        Why (failed thresholds, skip reason, or ``ExceptionType: text`` for errors).
    files : list of str
        Files written by the check, relative to the output directory.
    metrics : dict
        Key figures (numbers or short strings) the summary shows.
    """

    check: str
    product: str
    status: CheckStatus
    message: str = ""
    files: list[str] = Field(default_factory=list)
    metrics: dict[str, float | int | str | bool | None] = Field(default_factory=dict)


class AlignmentFigures(BaseModel):
    """Alignment of one exposure (from its SVM copy header or an AlignmentResult)."""

    exposure: str = Field(description="SVM copy file name")
    wcsname: str = ""
    wcstype: str = ""
    catalog: str | None = None
    fitgeom: str | None = None
    nmatches: int | None = None
    rms_ra_mas: float | None = None
    rms_dec_mas: float | None = None
    fit_rms_mas: float | None = None
    fit_quality: int | None = Field(default=None, description="1 best ... 5 invalid (§4.6)")
    source: Literal["alignment_result", "header"] = "header"


class StageUsage(BaseModel):
    """Run time and peak memory of one stage, as measured by the flow."""

    seconds: float | None = None
    peak_memory_mb: float | None = None


class QualitySummary(BaseModel):
    """The ``<visit>_svm_quality.json`` document (hapsvm's pass/fail summary)."""

    visit: str
    generated: str = Field(description="ISO-8601 UTC time shared by every JSON file of the run")
    overall_status: Literal["passed", "failed"]
    counts: dict[str, int] = Field(description="number of checks per status")
    thresholds: QualityThresholds
    checks: list[CheckOutcome]
    alignment: list[AlignmentFigures] = Field(default_factory=list)
    alignment_status: dict[str, str] = Field(
        default_factory=dict, description="per detector: 'aligned to <catalog>, N matches, RMS x "
                                          "mas' or 'NOT aligned: <reason>'")
    stages: dict[str, StageUsage] = Field(default_factory=dict)
    previews: list[str] = Field(default_factory=list, description="PNG files, relative paths")
    plots: list[str] = Field(default_factory=list, description="QA PNG files, relative paths")


class QualityReport(BaseModel):
    """Result of a quality run (returned to the task layer).

    Attributes
    ----------
    visit : str
    output_dir : str
    summary_file : str or None
        ``<visit>_svm_quality.json`` relative to ``output_dir`` (None if it could not be written).
    files_written : list of str
        Every file written (JSON and PNG), relative to ``output_dir``.
    checks : list of CheckOutcome
    overall_status : {"passed", "failed"}
    """

    visit: str
    output_dir: str
    summary_file: str | None = None
    files_written: list[str] = Field(default_factory=list)
    checks: list[CheckOutcome] = Field(default_factory=list)
    overall_status: Literal["passed", "failed"] = "passed"

    def outcomes(self, check: str) -> list[CheckOutcome]:
        """The outcomes of one check (all products)."""
        return [c for c in self.checks if c.check == check]
