"""Records of the alignment stage (spec §4.6): what was fitted, and what goes into the headers."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChipWCS", "WCSFitRecord", "ExposureAlignment", "AlignmentResult"]


class ChipWCS(BaseModel):
    """The linear part of one chip's corrected WCS (SIP distortion is unchanged by a fit)."""

    model_config = ConfigDict(frozen=True)

    extver: int = Field(ge=1, description="EXTVER of the SCI extension")
    crval: tuple[float, float] = Field(description="CRVAL1, CRVAL2 (deg)")
    crpix: tuple[float, float] = Field(description="CRPIX1, CRPIX2 (1-based px), unchanged")
    cd: tuple[tuple[float, float], tuple[float, float]] = Field(description="CD matrix (deg/px)")


class WCSFitRecord(BaseModel):
    """Everything the header records of §4.6 need for one exposure.

    ``fit_label`` is ``SVM`` for an a posteriori fit of the whole visit to a reference catalog,
    ``REL`` for a relative-only solution (exposures aligned to each other, no reference), and
    ``None`` when the input WCS was kept.
    """

    model_config = ConfigDict(frozen=True)

    fit_label: Literal["SVM", "REL"] | None = None
    catalog: str | None = Field(default=None, description="e.g. GAIADR3, or the file's declared name")
    fitgeom: Literal["shift", "rshift", "rscale", "general"] | None = None
    nmatches: int = 0
    rms_ra_mas: float = -1.0
    rms_dec_mas: float = -1.0
    fit_rms_mas: float = -1.0
    x_shift_px: float = 0.0
    y_shift_px: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0
    skew_deg: float = 0.0
    relgeom: str = "N/A"
    relmatch: int = 0
    relrms_ra_mas: float = 0.0
    relrms_dec_mas: float = 0.0
    relrefim: str = "N/A"
    fit_quality: int = Field(default=5, ge=1, le=5, description="1 best ... 5 invalid (§4.6)")
    reason: str = Field(default="", description="why this solution (or fallback) was chosen")


class ExposureAlignment(BaseModel):
    """The alignment outcome of one exposure: its corrected chips and the record to write."""

    input_path: Path
    svm_copy_filename: str = Field(description="<product_basename>_<flt|flc>.fits")
    headerlet_filename: str = Field(description="<product_basename>_hlet.fits")
    chips: list[ChipWCS] = Field(default_factory=list, description="empty when the WCS is kept")
    record: WCSFitRecord = Field(default_factory=WCSFitRecord)


class AlignmentResult(BaseModel):
    """The alignment of one detector of a visit (all its direct exposures as one group)."""

    detector: str
    exposures: list[ExposureAlignment] = Field(default_factory=list)
    catalogs_tried: list[str] = Field(default_factory=list)
    summary: str = ""

    def _fit_record(self) -> WCSFitRecord | None:
        records = [e.record for e in self.exposures if e.chips]
        return records[0] if records else None

    @property
    def aligned(self) -> bool:
        """True when the visit was fitted to a reference catalog (an a posteriori solution)."""
        record = self._fit_record()
        return record is not None and record.fit_label == "SVM"

    @property
    def status(self) -> str:
        """One line for people: ``aligned to <catalog>, N matches, RMS x mas`` or
        ``NOT aligned: <reason>``."""
        record = self._fit_record()
        if record is not None and record.fit_label == "SVM":
            rms = record.fit_rms_mas if record.fit_rms_mas >= 0 else max(record.rms_ra_mas,
                                                                           record.rms_dec_mas)
            return (f"aligned to {record.catalog}, {record.nmatches} matches, "
                    f"RMS {rms:.1f} mas")
        reason = self.summary or (record.reason if record is not None else "") or "no fit"
        if record is not None and record.fit_label == "REL":
            return f"NOT aligned: {reason} (exposures aligned to each other only)"
        return f"NOT aligned: {reason} (input WCS kept)"
