"""Options of one per-visit run, shared by every entry point (typed, validated once)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["VisitOptions", "VisitResult", "LOG_LEVELS", "log_level_from_name"]

#: ``-l`` names accepted by ``runsinglehap`` (drizzlepac's), lower case.
LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


def log_level_from_name(name: str | int | None, default: int = logging.INFO) -> int:
    """Map a level name (any case) or number to a logging level; unknown names give ``default``."""
    if isinstance(name, int):
        return name
    if name is None:
        return default
    return LOG_LEVELS.get(str(name).strip().lower(), default)


class VisitOptions(BaseModel):
    """Everything a per-visit run depends on besides the poller file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output_dir: Path = Field(default_factory=Path.cwd)
    diagnostic_mode: bool = False
    use_defaults_configs: bool = True
    input_custom_pars_file: Path | None = None
    output_custom_pars_file: Path | None = None
    phot_mode: Literal["aperture", "segment", "both"] = "both"
    log_level: int = logging.INFO
    refcat: Path | None = Field(default=None, description="local astrometric reference catalog")
    online_catalog: bool = Field(default=False,
                                 description="without a local refcat, query Gaia DR3 online")
    quality: bool = Field(default=False, description="run the quality analysis (--quality)")
    force: bool = Field(default=False, description="recompute every stage, ignoring the cache")
    cache_dir: Path | None = Field(default=None,
                                   description="cache records (default <output_dir>/.hapsvm-cache)")
    fail_stage: str | None = Field(default=None, description="testing only: make this stage fail")
    n_workers: int = Field(default=2, ge=1, description="processes for the heavy stages")
    require_alignment: bool = Field(default=False, description="a detector that could not be "
                                    "aligned to a reference catalog ends the run with exit 66")
    engine: Literal["auto", "prefect", "direct"] = Field(
        default="auto", description="how the stages run: Prefect task runs, or direct calls "
        "without any Prefect API; auto: HAPSVM_ENGINE, else Prefect when PREFECT_API_URL is "
        "configured, direct otherwise (resolved by flows.options.read_environment)")
    # Read from the environment once, by the entry point that starts the run
    # (flows.options.read_environment); nothing below the flows ever reads the environment.
    environment_read: bool = Field(default=False,
                                   description="the fields below hold the run's environment")
    quality_enabled: bool = Field(default=False, description="resolved quality switch: quality "
                                                             "or SVM_QUALITY_TESTING=on")
    refcat_path: Path | None = Field(default=None, description="resolved local reference catalog: "
                                                               "refcat, else HAPSVM_REFCAT")
    hla_classic_basepath: Path | None = Field(default=None, description="HLA_CLASSIC_BASEPATH: "
                                              "root of the HLA-classic catalogs")
    hla_build_ver: str | None = Field(default=None, description="HLA_BUILD_VER: HLA-classic build "
                                                                "version (folder under the root)")
    hla_classic_dir: Path | None = Field(default=None, description="<output_dir>/hla_classic/ "
                                         "when it exists: the local HLA-classic catalogs")

    @field_validator("phot_mode", "engine", mode="before")
    @classmethod
    def _lower_phot_mode(cls, value):
        return str(value).strip().lower()


class VisitResult(BaseModel):
    """What a per-visit flow hands back: small, JSON-friendly (never arrays)."""

    poller_file: Path
    output_dir: Path
    manifest: Path | None = None
    products: list[str] = Field(default_factory=list, description="files listed in the manifest")
    detectors: list[str] = Field(default_factory=list)
    n_exposures: int = 0
    n_rejected: int = 0
    alignment: dict[str, str] = Field(default_factory=dict,
                                      description="per detector: AlignmentResult.status")
    unaligned: list[str] = Field(default_factory=list,
                                 description="detectors not aligned to a reference catalog")
    stage_states: dict[str, str] = Field(default_factory=dict,
                                         description="stage run name -> final state (Completed, Cached)")
