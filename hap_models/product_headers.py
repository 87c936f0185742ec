"""What a drizzled product's headers record about how it was made (spec §2.2, issue #19).

`hapcore.drizzle.headers` builds every product's headers from one `ProductProvenance`: the
drizzle history of each input chip (drizzlepac's ``D###*`` keywords, `DrizzleRecord`), the
alignment that produced the inputs' WCS (`AlignmentProvenance`) and the software that made the
file. The models hold values only; keyword names and comments are in ``KEYWORDS`` so that the
headers are written the same way everywhere (and the models pickle into worker processes).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DrizzleRecord", "AlignmentProvenance", "ProductProvenance", "MAS_PER_DEG"]

#: Milliarcseconds per degree (RMS_RA in mas -> CRDER1 in deg).
MAS_PER_DEG = 3.6e6


class DrizzleRecord(BaseModel):
    """The drizzle history of one input chip in one product: one ``D###`` keyword group.

    ``D001`` is the first chip drizzled, in the order of the product's inputs and, within an
    exposure, of EXTVER (drizzlepac's order). The fields that are not keywords (``filename``,
    ``extver``, ``hap_exposure``, ``sky``) identify the chip's row of the HDRTAB.
    """

    model_config = ConfigDict(frozen=True)

    #: ``field -> (keyword suffix, comment)``, in drizzlepac's order of the group.
    KEYWORDS: ClassVar[dict[str, tuple[str, str]]] = {
        "version": ("VER", "Drizzle, task version"),
        "geometry": ("GEOM", "Drizzle, source of geometric information"),
        "data": ("DATA", "Drizzle, input data image"),
        "exptime": ("DEXP", "Drizzle, input image exposure time (s)"),
        "output_data": ("OUDA", "Drizzle, output data image"),
        "output_weight": ("OUWE", "Drizzle, output weighting image"),
        "output_context": ("OUCO", "Drizzle, output context image"),
        "mask": ("MASK", "Drizzle, input weighting image"),
        "weight_scale": ("WTSC", "Drizzle, weighting factor for input image"),
        "kernel": ("KERN", "Drizzle, form of weight distribution kernel"),
        "pixfrac": ("PIXF", "Drizzle, linear size of drop"),
        "coefficients": ("COEF", "Drizzle, source of coefficients"),
        "units": ("OUUN", "Drizzle, units of output image - counts or cps"),
        "fillval": ("FVAL", "Drizzle, fill value for zero weight output pix"),
        "wcskey": ("WKEY", "Input image WCS Version used"),
        "output_scale": ("SCAL", "Drizzle, pixel size (arcsec) of output image"),
        "input_scale": ("ISCL", "Drizzle, default IDCTAB pixel size(arcsec)"),
    }

    filename: str = Field(description="the SVM copy the chip was read from")
    extver: int = Field(ge=1, description="EXTVER of the SCI extension")
    hap_exposure: str = Field(description="product basename of the exposure (HAPEXPNAME)")
    sky: float = Field(default=0.0, description="sky subtracted, in the input's units "
                                                "(MDRIZSKY of the chip's HDRTAB row)")
    version: str = Field(description="the drizzle kernel's software and version")
    geometry: str = Field(default="wcs", description="geometry from the chip's WCS")
    data: str = Field(description="'<file>[sci,<extver>]'")
    exptime: float = Field(description="EXPTIME of the exposure (s)")
    output_data: str
    output_weight: str
    output_context: str
    mask: str = Field(description="the input weighting mask: DQ bits kept, static and CR masks")
    weight_scale: float = Field(default=1.0, description="factor on the chip's weight map")
    kernel: str
    pixfrac: float
    coefficients: str = Field(description="distortion used for the pixel map: SIP, D2IM, NPOL "
                                          "of the chip's WCS, or 'none'")
    units: str = Field(description="'cps' or 'counts'")
    fillval: str | float = Field(description="'INDEF' (no-weight pixels stay 0) or the value")
    wcskey: str = Field(default="", description="'' = the primary WCS of the chip")
    output_scale: float = Field(description="output pixel scale (arcsec/px)")
    input_scale: float = Field(description="IDCSCALE of the chip (arcsec/px)")

    def keywords(self, index: int) -> list[tuple[str, str | float, str]]:
        """``(keyword, value, comment)`` of the group ``D<index:03d>*``."""
        prefix = f"D{index:03d}"
        return [(prefix + suffix, getattr(self, name), comment)
                for name, (suffix, comment) in self.KEYWORDS.items()]


class AlignmentProvenance(BaseModel):
    """The astrometric solution of a product's inputs, as the SCI header records it (§4.6).

    Read from the SCI,1 header of the product's first input (drizzlepac's rule ``first``): the
    figures of a fit of the whole visit are the same for all its exposures; each input's own
    values stay in the HDRTAB. Without a fit the defaults are drizzlepac's "no catalog" values
    (RMS -1, NMATCHES 0, FITGEOM N/A) and CRDER1/2, an error that is not known, are not written.
    """

    model_config = ConfigDict(frozen=True)

    KEYWORDS: ClassVar[dict[str, tuple[str, str]]] = {
        "wcstype": ("WCSTYPE", "type of the WCS solution of the inputs"),
        "rms_ra_mas": ("RMS_RA", "RMS in RA of WCS fit(mas)"),
        "rms_dec_mas": ("RMS_DEC", "RMS in Dec of WCS fit(mas)"),
        "crder1": ("CRDER1", "RMS in RA of WCS fit(deg)"),
        "crder2": ("CRDER2", "RMS in Dec of WCS fit(deg)"),
        "nmatches": ("NMATCHES", "number of sources used in the fit"),
        "fitgeom": ("FITGEOM", "geometry of the fit"),
        "relgeom": ("RELGEOM", "geometry of the relative fit"),
        "relmatch": ("RELMATCH", "number of sources used in the relative fit"),
        "relrms_ra_mas": ("RELRMS_R", "RMS in RA of relative fit(mas)"),
        "relrms_dec_mas": ("RELRMS_D", "RMS in Dec of relative fit(mas)"),
        "relrefim": ("RELREFIM", "reference image of the relative fit"),
    }

    wcsname: str = Field(description="WCSNAME of the inputs (';'-joined if they differ)")
    wcstype: str
    fitgeom: str = "N/A"
    nmatches: int = 0
    rms_ra_mas: float = -1.0
    rms_dec_mas: float = -1.0
    relgeom: str = "N/A"
    relmatch: int = 0
    relrms_ra_mas: float = 0.0
    relrms_dec_mas: float = 0.0
    relrefim: str = "N/A"

    @property
    def crder1(self) -> float | None:
        """RMS_RA in degrees, None when the RMS is unknown (negative)."""
        return self.rms_ra_mas / MAS_PER_DEG if self.rms_ra_mas >= 0 else None

    @property
    def crder2(self) -> float | None:
        return self.rms_dec_mas / MAS_PER_DEG if self.rms_dec_mas >= 0 else None

    def keywords(self) -> list[tuple[str, str | float | int, str]]:
        """``(keyword, value, comment)`` of the solution's records; unknown CRDER left out."""
        out = []
        for name, (keyword, comment) in self.KEYWORDS.items():
            value = getattr(self, name)
            if value is not None:
                out.append((keyword, value, comment))
        return out


class ProductProvenance(BaseModel):
    """Everything a product's headers say about how it was made, built once per product."""

    model_config = ConfigDict(frozen=True)

    filename: str = Field(description="the product file (FILENAME)")
    rootname: str = Field(description="FILENAME minus its last '_' token (ROOTNAME)")
    haplevel: int = Field(ge=1, le=2)
    is_total: bool = False
    drizpars: str = Field(description="the product's trailer file (DRIZPARS)")
    software: str = Field(description="PROD_VER: the software that made the product")
    versions: dict[str, str] = Field(default_factory=dict,
                                     description="software -> version, for the HISTORY")
    drizzle: list[DrizzleRecord] = Field(default_factory=list,
                                         description="one record per input chip drizzled")
    alignment: AlignmentProvenance
    settings: dict[str, str | float | int | None] = Field(
        default_factory=dict, description="final drizzle parameters, for the HISTORY")

    @property
    def ndrizim(self) -> int:
        """Number of input chips drizzled onto the product (NDRIZIM, drizzlepac's count)."""
        return len(self.drizzle)

    def history(self) -> list[str]:
        """HISTORY lines hapsvm adds after the inputs' own (drizzlepac: its versions).

        One fact per line, each shorter than a HISTORY card (72 characters), so none wraps.
        """
        lines = ["=" * 60, "hapsvm processing performed using:"]
        lines += [f"    {name} Version {version}" for name, version in self.versions.items()]
        if self.settings:
            lines.append("final drizzle parameters:")
            lines += [f"    {key} = {value}" for key, value in self.settings.items()]
        a = self.alignment
        lines.append("WCS of the inputs: " + a.wcsname.split(";")[0][:50])
        if a.fitgeom != "N/A":
            lines.append(f"    {a.fitgeom} fit, {a.nmatches} matches, RMS RA "
                         f"{a.rms_ra_mas:.2f} mas, Dec {a.rms_dec_mas:.2f} mas")
        else:
            lines.append("    not fitted to a reference catalog")
        return [line[:72] for line in lines]
