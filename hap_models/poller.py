"""Poller records and the observation-set tree (spec §1.2–§1.6).

A poller file lists the calibrated exposures of one visit, one per line, in one of three forms:

* 8 fields: ``filename, proposal_id, program_id, obset_id, exptime, filters, detector, pathname``;
* 1 field: ``filename`` (every other field is read from the FITS headers);
* 2 fields: ``filename, aperture`` (WFPC2; the aperture may not contain blanks).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ROOTNAME_PATTERN",
    "EMPTY_APERTURE",
    "PollerLine",
    "ExposureRecord",
    "RejectedExposure",
    "ObsetTreeEntry",
    "ObsetTree",
]

#: An ipppssoot rootname followed by the calibrated-file suffix, e.g. ``ib4606c5q_flc.fits``.
ROOTNAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{8}_(flt|flc)\.fits$", re.IGNORECASE)

#: Aperture recorded for poller forms that carry none (drizzlepac's literal value).
EMPTY_APERTURE = "empty_aperture"


class PollerLine(BaseModel):
    """One non-blank, non-comment line of a poller file, validated field by field.

    Only the fields the line carries are set; the rest are filled from FITS headers later.
    """

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="poller file the line came from")
    line_number: int = Field(ge=1, description="1-based line number in the poller file")
    filename: str
    proposal_id: str | None = None
    program_id: str | None = None
    obset_id: str | None = None
    exptime: float | None = None
    filters: str | None = None
    detector: str | None = None
    pathname: str | None = None
    aperture: str = EMPTY_APERTURE

    @field_validator("filename")
    @classmethod
    def _filename_is_calibrated_exposure(cls, value: str) -> str:
        name = value.strip()
        if not ROOTNAME_PATTERN.match(Path(name).name):
            raise ValueError(
                f"'{name}' is not an ipppssoot_flt.fits or ipppssoot_flc.fits exposure name"
            )
        return name

    @field_validator("proposal_id")
    @classmethod
    def _proposal_is_integer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit() or not 1 <= len(value) <= 5:
            raise ValueError(f"'{value}' is not a proposal number of 1 to 5 digits")
        return value

    @field_validator("program_id")
    @classmethod
    def _program_is_three_chars(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not re.fullmatch(r"[A-Z0-9]{3}", value):
            raise ValueError(f"'{value}' is not a 3-character program id (the 'ppp' of ipppssoot)")
        return value

    @field_validator("obset_id")
    @classmethod
    def _obset_is_two_chars(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().upper()
        if not re.fullmatch(r"[A-Z0-9]{2}", value):
            raise ValueError(f"'{value}' is not a 2-character visit id (the 'ss' of ipppssoot)")
        return value

    @field_validator("exptime")
    @classmethod
    def _exptime_not_negative(cls, value: float | None) -> float | None:
        if value is not None and not value >= 0.0:
            raise ValueError(f"exposure time {value} is negative or not a number")
        return value

    @field_validator("aperture")
    @classmethod
    def _aperture_without_blanks(cls, value: str) -> str:
        value = value.strip()
        if not value or " " in value:
            raise ValueError(f"aperture '{value}' is empty or contains blanks")
        return value


class ExposureRecord(BaseModel):
    """A poller entry completed from its FITS headers: everything the tree and the stages need."""

    model_config = ConfigDict(frozen=True)

    source: str
    line_number: int
    filename: str = Field(description="file name as listed, lower case, e.g. ib4606c5q_flc.fits")
    input_path: Path = Field(description="absolute path of the original exposure (never written)")
    rootname: str
    instrument: str = Field(description="acs, wfc3 or wfpc2")
    detector: str = Field(description="lower case detector name used in product names")
    proposal_id: str = Field(description="proposal number as given (not zero-padded)")
    program_id: str
    obset_id: str
    exptime: float
    expstart: float | None = Field(default=None, description="EXPSTART (MJD)")
    photflam: float = 0.0
    filters: str = Field(description="raw filter names separated by ';', e.g. CLEAR1L;F814W")
    filter_name: str = Field(description="normalised filter name, e.g. f814w or f606w-pol60v")
    aperture: str = EMPTY_APERTURE
    filetype: str = Field(description="flt or flc (input suffix)")

    @property
    def ipppss(self) -> str:
        """Visit part of the rootname (instrument, program, visit)."""
        return self.rootname[:6]

    @property
    def is_grism(self) -> bool:
        """Whether the exposure is a grism or prism exposure (any filter token G* or PR*)."""
        return any(
            tok.startswith("g") or tok.startswith("pr") for tok in self.filter_name.split("-")
        )


class RejectedExposure(BaseModel):
    """An exposure the viability filter (spec §1.3) removed, with the reason logged."""

    model_config = ConfigDict(frozen=True)

    filename: str
    line_number: int
    reason: str


class ObsetTreeEntry(BaseModel):
    """One exposure placed in the tree, with drizzlepac's ``info`` string for compatibility."""

    model_config = ConfigDict(frozen=True)

    record: ExposureRecord
    info: str = Field(
        description="'proposal_id obset_id instrument detector aperture rootname filter filetype'"
    )

    @property
    def filename(self) -> str:
        return self.record.filename


class ObsetTree(BaseModel):
    """Viable exposures of one visit: detector -> normalised filter -> exposures, in sorted order.

    ``filetype`` per (detector, filter) group is ``drc`` when any member is an FLC file, else
    ``drz``; only the files of that type are members of the group.
    """

    # a string, not a Path: where the tree came from is a record, not an input whose content
    # belongs in cache keys (the exposures are)
    poller_file: str
    instrument: str
    proposal_id: str
    program_id: str
    obset_id: str
    ipppss: str
    tree: dict[str, dict[str, list[ObsetTreeEntry]]] = Field(default_factory=dict)
    group_filetypes: dict[str, dict[str, str]] = Field(default_factory=dict)
    rejected: list[RejectedExposure] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    @property
    def manifest_name(self) -> str:
        """``<instrument>_<ppp>_<obset>_manifest.txt`` (ppp = rootname[1:4]), lower case."""
        return manifest_name_for(self.instrument, self.ipppss)

    @property
    def detectors(self) -> list[str]:
        return list(self.tree)


def manifest_name_for(instrument: str, rootname: str) -> str:
    """Manifest name from an instrument and any rootname of the visit, e.g. ``acs_97e_06_manifest.txt``."""
    root = rootname.lower()
    return f"{instrument.lower()}_{root[1:4]}_{root[4:6]}_manifest.txt"


__all__.append("manifest_name_for")
