"""The provenance of a drizzled product as typed models: the drizzle history of every input
chip (drizzlepac's ``D###*`` keywords), the alignment figures of its inputs and the software that
made it (`hap_models.product_headers`); `hapcore.drizzle.headers` turns them into keywords."""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping, Sequence

import astropy
import numpy as np
from astropy.io import fits

from hap_models.product_headers import AlignmentProvenance, DrizzleRecord, ProductProvenance
from hap_models.products import TotalProduct
from hapcore.wcs.names import wcstype_from_wcsname


#: drizzlepac's output units keyword value (counts per second)
_OUTPUT_UNITS = "cps"


def _defined(value) -> bool:
    return not isinstance(value, fits.card.Undefined) and value is not None

__all__ = ["drizzle_records", "alignment_provenance", "product_provenance"]


def _distortion_terms(sci: Mapping) -> str:
    """COEF: the distortion of the chip's WCS that its pixel map went through."""
    terms = []
    if str(sci.get("CTYPE1", "")).strip().upper().endswith("-SIP"):
        terms.append("SIP")
    if "D2IMDIS1" in sci or "D2IMDIS2" in sci:
        terms.append("D2IM")
    if "CPDIS1" in sci or "CPDIS2" in sci:
        terms.append("NPOL")
    return "+".join(terms) or "none"


def _chip_scale(sci: Mapping) -> float:
    """ISCL: IDCSCALE of the chip, else the plate scale of its CD matrix (arcsec/px)."""
    value = sci.get("IDCSCALE")
    if _defined(value) and isinstance(value, (int, float)) and value > 0:
        return float(value)
    try:
        det = float(sci["CD1_1"]) * float(sci["CD2_2"]) - float(sci["CD1_2"]) * float(sci["CD2_1"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return math.sqrt(abs(det)) * 3600.0


def _mask_description(extver: int, bits: int, masks: Sequence[str] | None) -> str:
    """MASK: the chip's in-memory weighting mask (no mask file is written)."""
    text = f"DQ,{extver} bits {int(bits)} good"
    if masks is None:
        return text + "; other masks not recorded"
    names = {"static": "static mask", "cr": "CR mask"}
    return " + ".join([text] + [names.get(m, m) for m in masks])


def _input_units_sky(sky_rate: float, primary: Mapping, sci: Mapping) -> float:
    """The sky subtracted (e-/s) in the input's units, as drizzlepac's MDRIZSKY is."""
    bunit = str(sci.get("BUNIT", primary.get("BUNIT", "ELECTRONS"))).strip().upper()
    if bunit.endswith("/S"):
        return float(sky_rate)
    return float(sky_rate) * float(primary.get("EXPTIME", 0.0) or 0.0)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def _software() -> dict[str, str]:
    return {"hapsvm": _version("hapsvm"), "drizzle": _version("drizzle"),
            "Astropy": astropy.__version__, "Numpy": np.__version__}


def drizzle_records(inputs: Sequence[Mapping], *, product_filename: str, pars,
                    output_scale: float, hap_names: Sequence[str],
                    used: Sequence[Sequence[int] | None] | None = None,
                    masks: Sequence[Mapping | None] | None = None,
                    skies: Mapping[str, float] | None = None) -> list[DrizzleRecord]:
    """The drizzle history of a product: one `DrizzleRecord` per input chip drizzled.

    Parameters
    ----------
    inputs : sequence of dict
        Per input exposure (product order): ``primary``, ``chips`` (``{extver: SCI header}``)
        and ``filename`` (the SVM copy), as `hapcore.drizzle.inputs.exposure_keywords` gives.
    product_filename : str
        The product file.
    pars : DrizzleParameters
        The product's drizzle parameters (``final_*`` are used).
    output_scale : float
        Pixel scale of the grid (arcsec/px).
    hap_names : sequence of str
        Product basename of each input exposure.
    used : sequence of (sequence of int or None), optional
        EXTVERs drizzled per input (a partial's ``used``); None: every SCI chip.
    masks : sequence of (mapping or None), optional
        Per input, ``{str(extver): ["static", "cr"]}`` of the masks applied (a partial's
        ``masks``); None: not recorded.
    skies : mapping, optional
        Sky subtracted per input file name (e-/s).
    """
    version = f"drizzle {_version('drizzle')} via hapsvm {_version('hapsvm')}"
    fillval = "INDEF" if pars.final_fillval is None else float(pars.final_fillval)
    records = []
    for k, entry in enumerate(inputs):
        chips = entry["chips"]
        extvers = sorted(chips) if used is None or used[k] is None else list(used[k])
        chip_masks = None if masks is None else masks[k]
        for extver in extvers:
            sci = chips[extver]
            primary = entry["primary"]
            applied = None if chip_masks is None else chip_masks.get(str(extver), [])
            records.append(DrizzleRecord(
                filename=entry["filename"], extver=int(extver), hap_exposure=hap_names[k],
                sky=_input_units_sky((skies or {}).get(entry["filename"], 0.0), primary, sci),
                version=version, data=f"{entry['filename']}[sci,{int(extver)}]",
                exptime=float(primary.get("EXPTIME", 0.0) or 0.0),
                output_data=product_filename, output_weight=f"{product_filename}[WHT]",
                output_context=f"{product_filename}[CTX]",
                mask=_mask_description(int(extver), pars.final_bits, applied),
                weight_scale=1.0, kernel=str(pars.final_kernel),
                pixfrac=float(pars.final_pixfrac), coefficients=_distortion_terms(sci),
                units=_OUTPUT_UNITS, fillval=fillval, wcskey="",
                output_scale=float(output_scale), input_scale=_chip_scale(sci)))
    return records


def alignment_provenance(inputs: Sequence[Mapping]) -> AlignmentProvenance:
    """The alignment records of the first input's SCI,1 header (see `AlignmentProvenance`)."""
    sci = inputs[0]["sci"] if inputs else fits.Header()
    names = []
    for entry in inputs:
        name = str(entry["sci"].get("WCSNAME", "")).strip()
        if name and name not in names:
            names.append(name)
    wcsname = ";".join(names) if names else "DRZWCS"
    wcstype = str(sci.get("WCSTYPE", "") or "").strip() or wcstype_from_wcsname(
        names[0] if names else None)
    values = {}
    for field, (keyword, _) in AlignmentProvenance.KEYWORDS.items():
        if field in ("wcstype", "crder1", "crder2") or keyword not in sci:
            continue
        value = sci[keyword]
        if _defined(value):
            values[field] = value.strip() if isinstance(value, str) else value
    return AlignmentProvenance(wcsname=wcsname, wcstype=wcstype, **values)


def product_provenance(inputs: Sequence[Mapping], product, *, pars, output_scale: float,
                       hap_names: Sequence[str], used=None, masks=None,
                       skies: Mapping[str, float] | None = None) -> ProductProvenance:
    """Everything the headers of ``product`` record about its making, built once.

    ``product`` is the HAPProduct (``drizzle_filename``, ``trl_filename``, ``haplevel``); the
    other arguments are those of `drizzle_records`.
    """
    filename = product.drizzle_filename
    records = drizzle_records(inputs, product_filename=filename, pars=pars,
                              output_scale=output_scale, hap_names=hap_names, used=used,
                              masks=masks, skies=skies)
    versions = _software()
    settings = {"kernel": pars.final_kernel, "pixfrac": pars.final_pixfrac,
                "scale": round(float(output_scale), 6), "wht_type": pars.final_wht_type,
                "bits": pars.final_bits, "units": _OUTPUT_UNITS,
                "fillval": "INDEF" if pars.final_fillval is None else pars.final_fillval}
    return ProductProvenance(
        filename=filename, rootname=filename.rsplit("_", 1)[0], haplevel=int(product.haplevel),
        is_total=isinstance(product, TotalProduct), drizpars=product.trl_filename,
        software=f"hapsvm {versions['hapsvm']}", versions=versions, drizzle=records,
        alignment=alignment_provenance(inputs), settings=settings)


