"""The product tree of one visit: total, filter, exposure and grism-exposure products (spec §2.1).

Every output file name is a derived property, so a product knows its names before any file exists.
The constructors accept drizzlepac's positional arguments::

    TotalProduct(prop_id, obset_id, instrument, detector, filename, filetype, log_level)
    FilterProduct(prop_id, obset_id, instrument, detector, filename, filters, filetype, log_level)
    ExposureProduct(prop_id, obset_id, instrument, detector, filename, filters, filetype, log_level)

``prop_id`` is used in file names exactly as given (``9029`` stays ``9029``); the zero-padded form
is :attr:`HAPProduct.prop_id_padded`. ``filename`` is an input exposure name (``ipppssoot_fl?.fits``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hap_models.poller import EMPTY_APERTURE, manifest_name_for

__all__ = [
    "HAPProduct",
    "TotalProduct",
    "FilterProduct",
    "ExposureProduct",
    "GrismExposureProduct",
]


class HAPProduct(BaseModel):
    """Attributes and names common to every product of a visit."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    #: Classification level written as HAPLEVEL (1 exposure, 2 filter/total).
    haplevel: ClassVar[int] = 2

    prop_id: str = Field(description="proposal number as given in the poller (not padded)")
    obset_id: str
    instrument: str
    detector: str
    filename: str = Field(description="an input exposure name, e.g. ib4606c5q_flc.fits")
    filetype: str = Field(description="drz (FLT inputs) or drc (FLC inputs)")
    log_level: int = logging.INFO
    aperture_from_poller: str = EMPTY_APERTURE
    parameters: Any = Field(default=None, description="the product's ProductParameters")

    def __init__(self, prop_id, obset_id, instrument, detector, filename, filetype,
                 log_level=logging.INFO, **data):
        super().__init__(prop_id=str(prop_id), obset_id=str(obset_id), instrument=instrument,
                         detector=detector, filename=filename, filetype=filetype,
                         log_level=log_level, **data)

    @field_validator("obset_id", "instrument", "detector", "filename", "filetype")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("filetype")
    @classmethod
    def _known_filetype(cls, value: str) -> str:
        if value not in ("drz", "drc"):
            raise ValueError(f"filetype must be 'drz' or 'drc', not '{value}'")
        return value

    @property
    def prop_id_padded(self) -> str:
        """Proposal number zero-padded to 5 digits (stored by drizzlepac, never in file names)."""
        return self.prop_id.zfill(5)

    @property
    def rootname(self) -> str:
        return self.filename.split("_")[0]

    @property
    def basename(self) -> str:
        """``hst_<proposal>_<obset>_<instrument>_<detector>_``."""
        return f"hst_{self.prop_id}_{self.obset_id}_{self.instrument}_{self.detector}_"

    @property
    def exposure_name(self) -> str:
        """``ipppss`` for total and filter products."""
        return self.filename[:6]

    @property
    def product_basename(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def drizzle_filename(self) -> str:
        """The drizzled product, ``<product_basename>_<drz|drc>.fits``."""
        return f"{self.product_basename}_{self.filetype}.fits"

    @property
    def trl_filename(self) -> str:
        """The trailer (processing log) file, ``<product_basename>_trl.txt``."""
        return f"{self.product_basename}_trl.txt"

    @property
    def manifest_name(self) -> str:
        """``<instrument>_<ppp>_<obset>_manifest.txt`` of the visit the product belongs to."""
        return manifest_name_for(self.instrument, self.filename)


class _CatalogNames:
    """Catalog names shared by total and filter products."""

    @property
    def point_cat_filename(self) -> str:
        return f"{self.product_basename}_point-cat.ecsv"

    @property
    def segment_cat_filename(self) -> str:
        return f"{self.product_basename}_segment-cat.ecsv"


class ExposureProduct(HAPProduct):
    """A single exposure drizzled onto the visit grid (HAPLEVEL 1), and the names of its SVM copy."""

    haplevel: ClassVar[int] = 1

    filters: str = Field(description="normalised filter name, e.g. f606w")
    input_path: Path | None = Field(default=None, description="the original FLT/FLC (read only)")
    exptime: float = 0.0
    expstart: float | None = None
    is_singleton: bool = False
    crclean: bool = False

    def __init__(self, prop_id, obset_id, instrument, detector, filename, filters, filetype,
                 log_level=logging.INFO, **data):
        super().__init__(prop_id, obset_id, instrument, detector, filename, filetype,
                         log_level, filters=filters, **data)

    @property
    def exposure_name(self) -> str:
        """``ipppssoo``."""
        return self.filename[:8]

    @property
    def product_basename(self) -> str:
        return f"{self.basename}{self.filters}_{self.exposure_name}"

    @property
    def input_suffix(self) -> str:
        """``flt`` or ``flc``, from the input file name."""
        return self.filename.rsplit("_", 1)[1].split(".")[0]

    @property
    def full_filename(self) -> str:
        """The SVM copy of the input, ``<product_basename>_<flt|flc>.fits``."""
        return f"{self.product_basename}_{self.input_suffix}.fits"

    @property
    def headerlet_filename(self) -> str:
        return f"{self.product_basename}_hlet.fits"


class GrismExposureProduct(ExposureProduct):
    """A grism/prism exposure: never drizzled, only its SVM copy and trailer are named."""

    @property
    def drizzle_filename(self) -> str:  # never written
        raise AttributeError("grism/prism exposures are not drizzled")


class FilterProduct(_CatalogNames, HAPProduct):
    """All exposures of one filter on one detector (HAPLEVEL 2)."""

    filters: str
    edp_list: list[ExposureProduct] = Field(default_factory=list)

    def __init__(self, prop_id, obset_id, instrument, detector, filename, filters, filetype,
                 log_level=logging.INFO, **data):
        super().__init__(prop_id, obset_id, instrument, detector, filename, filetype,
                         log_level, filters=filters, **data)

    @property
    def product_basename(self) -> str:
        return f"{self.basename}{self.filters}_{self.exposure_name}"

    @property
    def refname(self) -> str:
        """Astrometric reference catalog kept for this filter product."""
        return f"{self.product_basename}_ref_cat.ecsv"

    def add_member(self, edp: ExposureProduct) -> None:
        self.edp_list.append(edp)


class TotalProduct(_CatalogNames, HAPProduct):
    """The detection ("white light") product of one detector (HAPLEVEL 2)."""

    filters: str = "total"
    edp_list: list[ExposureProduct] = Field(default_factory=list)
    fdp_list: list[FilterProduct] = Field(default_factory=list)
    grism_edp_list: list[GrismExposureProduct] = Field(default_factory=list)

    @property
    def product_basename(self) -> str:
        return f"{self.basename}total_{self.exposure_name}"

    @property
    def refname(self) -> str:
        return f"{self.product_basename}_ref_cat.ecsv"

    def add_member(self, edp: ExposureProduct) -> None:
        self.edp_list.append(edp)

    def add_product(self, fdp: FilterProduct) -> None:
        self.fdp_list.append(fdp)

    @property
    def has_direct_exposures(self) -> bool:
        return bool(self.edp_list)

    def all_products(self) -> list[HAPProduct]:
        """Filter products, each followed by its exposures, then the total (drizzle order, §3.4)."""
        ordered: list[HAPProduct] = []
        for fdp in self.fdp_list:
            ordered.append(fdp)
            ordered.extend(fdp.edp_list)
        ordered.append(self)
        return ordered
