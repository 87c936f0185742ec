"""Header keywords and the HDRTAB table of drizzled products (spec §2.2, issue #19).

Pure functions from the inputs' headers, the product's `~hap_models.product_headers.
ProductProvenance` and its output arrays to `astropy.io.fits.Header` objects; the file is
written by `hapcore.drizzle.products`.

What a product carries, as drizzlepac's products do (``configs/any/drc_keywords.json`` lists
drizzlepac's keywords and the few hapsvm leaves out, with the reason):

* primary: the first input's primary keywords blended over all inputs with drizzlepac's rules
  (EXPTIME sum, EXPSTART min, EXPEND max, configuration and reference-file keywords ``MULTIPLE``
  when the inputs differ, the rest first), the product's own keywords (FILENAME, ROOTNAME,
  NEXTEND, PROD_VER, DRIZPARS, ASN_MTYP, NDRIZIM), the drizzle history of every input chip
  (``D###VER`` ... ``D###ISCL``) and HISTORY lines (the first input's, then hapsvm's);
* SCI: the grid WCS as a CD matrix with ORIENTAT, the photometry (mean over the inputs), the
  inputs' aperture, distortion-file and data-quality keywords, and the alignment's provenance
  (WCSNAME, WCSTYPE, RMS_RA/RMS_DEC, CRDER1/2, NMATCHES, FITGEOM, REL*);
* WHT and CTX: the same WCS and its provenance;
* HDRTAB: one row per input chip drizzled, with every keyword of the input's primary and that
  chip's SCI header (alternate WCSs and lookup-table records aside), the sky subtracted
  (MDRIZSKY) and HAPEXPNAME.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn
from astropy.time import Time
from astropy.wcs import WCS

from hap_models.product_headers import (
    AlignmentProvenance,
    DrizzleRecord,
    ProductProvenance,
)
from hapcore.drizzle.fits_table import binary_table_bytes
from hapcore.drizzle.footprint import footprint_keywords, s_region_from_weight
from hapcore.wcs.header import make_card, orientat_from_cd, set_exact

__all__ = [
    "DELETED_KEYWORDS",
    "PHOT_KEYWORDS",
    "ProductHeaders",
    "grid_wcs_cards",
    "hdrtab",
    "hdrtab_bytes",
    "hdrtab_columns",
    "product_headers",
]

#: Removed from product headers by drizzlepac's header rules.
DELETED_KEYWORDS = ("IPPPSSOO", "ASN_ID", "ASN_MTYP", "ASN_TAB", "GYROMODE", "SUNANGLE",
                    "MOONANGL", "EXPFLAG", "LINENUM", "QUALCOM1", "QUALCOM2", "QUALCOM3")
#: Moved from the primary header to SCI,1.
PHOT_KEYWORDS = ("PHOTMODE", "PHOTFLAM", "PHOTFNU", "PHOTZPT", "PHOTPLAM", "PHOTBW")

#: Product extensions after the primary: SCI, WHT, CTX, HDRTAB (NEXTEND).
PRODUCT_EXTENSIONS = 4

#: drizzlepac's ASN_MTYP of every drizzled product ("product of a dither association").
PRODUCT_ASN_MTYP = "PROD-DTH"

#: Keywords of the first input's primary header never copied into a product's primary: FITS
#: structure, the inputs' checksums (they would be wrong for the product) and commentary.
_NOT_COPIED = frozenset({"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "NEXTEND", "COMMENT", "HISTORY",
                         "", "CHECKSUM", "DATASUM"})

#: Configuration keywords drizzlepac's rules blend with ``multi``: the common value, or
#: ``MULTIPLE`` when the inputs differ. Calibration switches (``*CORR``) and reference files
#: (``*TAB``, ``*FILE``) follow the same rule.
_MULTI_KEYWORDS = frozenset({"APERTURE", "PROPAPER", "OBSMODE", "FILTER1", "FILTER2", "FILTNAM1",
                             "FILTNAM2", "DIRIMAGE", "SCLAMP", "PRIMESI", "FGSLOCK"})
_MULTI_SUFFIXES = ("CORR", "TAB", "FILE")
_MULTIPLE = "MULTIPLE"

#: D###OUUN: products are always count rates (inputs are read as e-/s whatever final_units).
_OUTPUT_UNITS = "cps"

#: SCI keywords blended from the inputs' SCI,1 headers (primary when absent there), with
#: drizzlepac's rule; ``first`` is the first input that has the keyword.
_SCI_BLENDED = (
    ("PA_APER", "first"), ("RA_APER", "first"), ("DEC_APER", "first"),
    ("PHOTMODE", "first"), ("PHOTFLAM", "mean"), ("PHOTFNU", "mean"), ("PHOTZPT", "mean"),
    ("PHOTPLAM", "mean"), ("PHOTBW", "mean"), ("PHTFLAM1", "first"), ("PHTFLAM2", "first"),
    ("PHTRATIO", "first"), ("NCOMBINE", "sum"),
    ("GOODMIN", "min"), ("GOODMAX", "max"), ("GOODMEAN", "mean"),
    ("SNRMIN", "min"), ("SNRMAX", "max"), ("SNRMEAN", "mean"),
    ("SDQFLAGS", "first"), ("SOFTERRS", "sum"),
    ("IDCTAB", "multi"), ("D2IMFILE", "multi"), ("NPOLFILE", "multi"),
)
#: Of `_SCI_BLENDED`, those summed over every input chip rather than per exposure.
_PER_CHIP = frozenset({"GOODMIN", "GOODMAX", "GOODMEAN", "SNRMIN", "SNRMAX", "SNRMEAN",
                       "SOFTERRS"})

#: WCS keywords that, followed by one letter, name an alternate WCS (``CRVAL1A``, ``WCSNAMEO``);
#: the HDRTAB keeps the inputs' primary WCS only, as drizzlepac's does.
_WCS_BASES = ("WCSNAME", "WCSAXES", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CTYPE1", "CTYPE2",
              "CUNIT1", "CUNIT2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "PC1_1", "PC1_2", "PC2_1",
              "PC2_2", "CDELT1", "CDELT2", "CRDER1", "CRDER2", "CSYER1", "CSYER2", "LONPOLE",
              "LATPOLE", "RADESYS", "EQUINOX", "MJDREF", "WCSTYPE", "RMS_RA", "RMS_DEC",
              "HDRNAME")
_ALTERNATE_WCS = re.compile(rf"^(?:{'|'.join(map(re.escape, _WCS_BASES))})[A-Z]$")
_HDRTAB_FIRST = ("ROOTNAME", "EXTNAME", "EXTVER")

#: Comments of the keywords hapsvm writes into every product.
_COMMENTS = {
    "DATE": "date this file was written (yyyy-mm-dd)",
    "ORIGIN": "FITS file originator",
    "NEXTEND": "Number of standard extensions",
    "PROD_VER": "software that made this product",
    "DRIZPARS": "trailer file with the drizzle parameters",
    "ASN_MTYP": "Role of the Member in the Association",
    "NDRIZIM": "Drizzle, No. images drizzled onto output",
    "INHERIT": "inherit the primary header",
    "BUNIT": "Units of science product",
    "ORIENTAT": "position angle of image y axis (deg. e of n)",
    "VAFACTOR": "velocity aberration plate scale factor",
    "CCDCHIP": "CCD chip: -999, the product combines chips",
    "LTM1_1": "reciprocal of sampling rate in X",
    "LTM2_2": "reciprocal of sampling rate in Y",
    "MDRIZSKY": "Sky value subtracted (mean of the inputs)",
    "WCSNAME": "WCS solution(s) of the inputs",
    "S_REGION": "spatial footprint (illuminated pixels)",
    "ROOTNAME": "rootname of the observation set",
    "EXPNAME": "exposure identifier",
}


class ProductHeaders(NamedTuple):
    """The four image headers of a product, built together by `product_headers`."""

    primary: fits.Header
    sci: fits.Header
    wht: fits.Header
    ctx: fits.Header


def _iso(mjd: float | None) -> str:
    return Time(mjd, format="mjd").isot if mjd else ""


def _defined(value) -> bool:
    return not isinstance(value, fits.card.Undefined) and value is not None


def _all_equal(values: Sequence) -> bool:
    return all(v == values[0] for v in values[1:])


def _blend(values: Sequence, rule: str):
    """drizzlepac's header rule over the inputs' values (None when no input has the keyword).

    ``mean`` of equal values is that value exactly (a float mean of three equal numbers may
    differ from them in the last bit, which would change the magnitudes computed from it).
    """
    values = [v for v in values if _defined(v)]
    if not values:
        return None
    if rule == "first" or (rule != "sum" and _all_equal(values)):
        return values[0]
    if rule == "multi":
        return _MULTIPLE
    numbers = [v for v in values if isinstance(v, (int, float, np.number))
               and not isinstance(v, bool)]
    if len(numbers) != len(values):
        return values[0]
    if rule == "sum":
        return sum(numbers)
    if rule == "min":
        return min(numbers)
    if rule == "max":
        return max(numbers)
    if rule == "mean":
        return float(np.mean(numbers))
    raise ValueError(f"unknown blend rule {rule!r}")


def _is_multi(keyword: str) -> bool:
    return keyword in _MULTI_KEYWORDS or keyword.endswith(_MULTI_SUFFIXES)


def _set(header: fits.Header, keyword: str, value, comment: str | None = None) -> None:
    """Set ``keyword`` in place (appended when new), floats to full precision."""
    if comment is None:
        comment = header.comments[keyword] if keyword in header else _COMMENTS.get(keyword, "")
    set_exact(header, keyword, value, comment)


def grid_wcs_cards(grid_wcs: WCS) -> list[fits.Card]:
    """The grid's WCS as cards with a CD matrix (HST tools read ``CD1_1`` ... directly).

    ``CD = diag(CDELT) @ PC``: multiplying by the grid's CDELT of 1.0 is exact, so the mapping
    is the grid's bit for bit. Values keep all 17 digits; ORIENTAT follows the WCS.
    """
    cd = grid_wcs.pixel_scale_matrix  # CDELT * PC (or a CD given as such)
    cards = []
    for card in grid_wcs.to_header().cards:
        if re.fullmatch(r"PC\d_\d|CDELT\d", card.keyword):
            continue
        value = float(card.value) if isinstance(card.value, float) else card.value
        cards.append(make_card(card.keyword, value, card.comment))
        if card.keyword == "CRVAL2":  # the CD matrix after CRVAL, as drizzlepac writes it
            for (i, j), axis, pixel in (((0, 0), "first", "x"), ((0, 1), "first", "y"),
                                        ((1, 0), "second", "x"), ((1, 1), "second", "y")):
                cards.append(make_card(f"CD{i + 1}_{j + 1}", float(cd[i, j]),
                                       f"partial of {axis} axis coordinate w.r.t. {pixel}"))
    cards.append(make_card("ORIENTAT", orientat_from_cd(cd), _COMMENTS["ORIENTAT"]))
    return cards


def _primary_header(inputs: Sequence[Mapping], provenance: ProductProvenance, *,
                    grid_wcs: WCS, wht: np.ndarray | None, ctx: np.ndarray | None,
                    footprint: bool, s_region: str | None = None,
                    footprint_values: Mapping | None = None) -> fits.Header:
    first = inputs[0]["primary"]
    primaries = [entry["primary"] for entry in inputs]
    primary = fits.Header()
    for card in first.cards:
        key = card.keyword
        if key in _NOT_COPIED or key in DELETED_KEYWORDS or key in PHOT_KEYWORDS:
            continue
        if _is_multi(key):
            value = _blend([h.get(key) for h in primaries], "multi")
            card = fits.Card(key, value, card.comment) if value != card.value else card
        primary.append(card, end=True)
    exptimes = [float(h.get("EXPTIME", 0.0)) for h in primaries]
    starts = [h.get("EXPSTART") for h in primaries if h.get("EXPSTART")]
    ends = [h.get("EXPEND") for h in primaries if h.get("EXPEND")]
    rootnames = [str(h.get("ROOTNAME", "")).strip().lower() for h in primaries]
    expstart = float(min(starts)) if starts else None
    expend = float(max(ends)) if ends else None
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    _set(primary, "DATE", today, _COMMENTS["DATE"])
    if "ORIGIN" in primary:
        _set(primary, "ORIGIN", "hapsvm", _COMMENTS["ORIGIN"])
    _set(primary, "ROOTNAME", provenance.rootname, "rootname of the observation set")
    _set(primary, "FILENAME", provenance.filename, "name of file")
    _set(primary, "HAPLEVEL", provenance.haplevel, "Classification level of this product")
    _set(primary, "EXPTIME", float(sum(exptimes)), "total exposure time (s) of the inputs")
    _set(primary, "TEXPTIME", float(sum(exptimes)), "total exposure time (s) of the inputs")
    if expstart is not None:
        _set(primary, "EXPSTART", expstart, "exposure start time (MJD), earliest input")
        _set(primary, "DATE-BEG", _iso(expstart), "start of the earliest input (ISO)")
    if expend is not None:
        _set(primary, "EXPEND", expend, "exposure end time (MJD), latest input")
        _set(primary, "DATE-END", _iso(expend), "end of the latest input (ISO)")
    _set(primary, "NUMEXP", len(set(rootnames)), "number of input exposures")
    if provenance.haplevel == 1:
        _set(primary, "IPPPSSOO", ";".join(rootnames), "rootnames of the inputs")
    if provenance.is_total:
        _set(primary, "FILTER", "detection", "total (detection) product")
    equinox = first.get("EQUINOX", inputs[0]["sci"].get("EQUINOX", 2000.0))
    _set(primary, "EQUINOX", float(equinox), "")
    if first.get("PR_INV_L") is not None:
        _set(primary, "PINAME", first["PR_INV_L"], "last name of principal investigator")
    if s_region is None:
        s_region = s_region_from_weight(wht, grid_wcs)
    _set(primary, "S_REGION", s_region, "")
    if footprint:
        if footprint_values is None:
            footprint_values = footprint_keywords(ctx, wht, exptimes)
        for key, value in footprint_values.items():
            _set(primary, key, value, "")
    # the product's own keywords, in drizzlepac's order, then the drizzle history per chip
    _set(primary, "NEXTEND", PRODUCT_EXTENSIONS)
    _set(primary, "PROD_VER", provenance.software)
    _set(primary, "DRIZPARS", provenance.drizpars)
    _set(primary, "ASN_MTYP", PRODUCT_ASN_MTYP)
    _set(primary, "NDRIZIM", provenance.ndrizim)
    for index, record in enumerate(provenance.drizzle, start=1):
        for keyword, value, comment in record.keywords(index):
            primary.append(make_card(keyword, value, comment), end=True)
    for line in first.get("HISTORY", []):
        primary.add_history(str(line))
    for line in provenance.history():
        primary.add_history(line)
    return primary


def _sci_value(inputs: Sequence[Mapping], keyword: str, rule: str):
    """Blend ``keyword`` of the inputs' SCI headers (the primary where the SCI has none)."""
    values = []
    for entry in inputs:
        headers = entry["chips"].values() if keyword in _PER_CHIP else [entry["sci"]]
        for sci in headers:
            source = sci if keyword in sci else entry["primary"]
            values.append(source.get(keyword))
    return _blend(values, rule)


def _comment_of(inputs: Sequence[Mapping], keyword: str) -> str:
    for entry in inputs:
        for source in (entry["sci"], entry["primary"]):
            if keyword in source:
                return source.comments[keyword]
    return _COMMENTS.get(keyword, "")


def _wcs_block(inputs, provenance: ProductProvenance, grid_wcs: WCS, *,
               ccdchip: bool) -> fits.Header:
    """The WCS and its provenance, common to SCI, WHT and CTX (as drizzlepac writes them)."""
    header = fits.Header()
    header.append(fits.Card("INHERIT", True, _COMMENTS["INHERIT"]), end=True)
    for card in grid_wcs_cards(grid_wcs):
        header.append(card, end=True)
    # the grid has no velocity aberration and samples the sky 1:1
    _set(header, "VAFACTOR", 1.0)
    if ccdchip:
        _set(header, "CCDCHIP", -999)
    _set(header, "LTM1_1", 1.0)
    _set(header, "LTM2_2", 1.0)
    for keyword in ("RA_APER", "DEC_APER"):
        value = _sci_value(inputs, keyword, "first")
        if value is not None:
            _set(header, keyword, value, _comment_of(inputs, keyword))
    _set(header, "WCSNAME", provenance.alignment.wcsname)
    _set(header, "WCSTYPE", provenance.alignment.wcstype,
         AlignmentProvenance.KEYWORDS["wcstype"][1])
    for keyword in ("CRDER1", "CRDER2"):
        value = getattr(provenance.alignment, keyword.lower())
        if value is not None:
            _set(header, keyword, value, AlignmentProvenance.KEYWORDS[keyword.lower()][1])
    return header


def product_headers(inputs: Sequence[Mapping], provenance: ProductProvenance, *,
                    grid_wcs: WCS, wht: np.ndarray | None, ctx: np.ndarray | None,
                    footprint: bool, s_region: str | None = None,
                    footprint_values: Mapping | None = None) -> ProductHeaders:
    """Primary, SCI, WHT and CTX headers of a product.

    Parameters
    ----------
    inputs : sequence of dict
        ``{"primary", "sci" (SCI,1), "chips" ({extver: SCI header}), "filename"}`` of each
        input exposure (SVM copy), in product order.
    provenance : `~hap_models.product_headers.ProductProvenance`
        From `product_provenance`.
    grid_wcs : `~astropy.wcs.WCS`
        The product's grid.
    wht, ctx : ndarray or None
        Output weight and context (S_REGION and the footprint keywords); None with
        ``s_region`` and ``footprint_values`` (or without ``footprint``).
    footprint : bool
        Add NPIXFRAC/MEAN*/MED* (filter and total products).
    s_region : str, optional
        S_REGION computed already (`hapcore.drizzle.footprint.s_region_from_bins`).
    footprint_values : mapping, optional
        The footprint keywords computed already (`hapcore.drizzle.footprint.footprint_keywords`
        of the same images).

    Returns
    -------
    ProductHeaders
    """
    primary = _primary_header(inputs, provenance, grid_wcs=grid_wcs, wht=wht, ctx=ctx,
                              footprint=footprint, s_region=s_region,
                              footprint_values=footprint_values)
    sci = fits.Header()
    sci.append(fits.Card("INHERIT", True, _COMMENTS["INHERIT"]), end=True)
    # every input is drizzled as a count rate (`hapcore.drizzle.inputs.read_chip`)
    _set(sci, "BUNIT", "ELECTRONS/S", _COMMENTS["BUNIT"])
    block = _wcs_block(inputs, provenance, grid_wcs, ccdchip=True)
    for card in block.cards[1:]:
        sci.append(card, end=True)
    for keyword, rule in _SCI_BLENDED:
        value = _sci_value(inputs, keyword, rule)
        if value is not None:
            _set(sci, keyword, value, _comment_of(inputs, keyword))
    skies = [r.sky for r in provenance.drizzle]
    _set(sci, "MDRIZSKY", float(np.mean(skies)) if skies else 0.0)
    _set(sci, "S_REGION", primary["S_REGION"])
    for keyword, value, comment in provenance.alignment.keywords():
        if keyword not in ("WCSTYPE", "CRDER1", "CRDER2"):
            _set(sci, keyword, value, comment)
    _set(sci, "ROOTNAME", provenance.rootname)
    if provenance.haplevel == 1 and inputs:
        expname = str(inputs[0]["sci"].get("EXPNAME", inputs[0]["primary"].get("ROOTNAME", "")))
        _set(sci, "EXPNAME", expname.strip() or provenance.rootname)
    else:
        _set(sci, "EXPNAME", provenance.rootname)
    wht_header = _wcs_block(inputs, provenance, grid_wcs, ccdchip=True)
    ctx_header = _wcs_block(inputs, provenance, grid_wcs, ccdchip=False)
    return ProductHeaders(primary, sci, wht_header, ctx_header)


def _hdrtab_keyword(keyword: str) -> bool:
    """True for a keyword of an input header that becomes an HDRTAB column."""
    if keyword in ("", "COMMENT", "HISTORY", "CHECKSUM", "DATASUM"):
        return False
    # record-valued lookup-table keywords (D2IM1.EXTVER) and alternate WCSs stay out
    return "." not in keyword and " " not in keyword and not _ALTERNATE_WCS.match(keyword)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _column(name: str, values: list):
    """A table column of one keyword's values, missing ones NaN / masked / blank."""
    present = [v for v in values if v is not None]
    missing = len(present) != len(values)
    if not present:  # a keyword no input gives a value: NaN, as drizzlepac's table has it
        return np.full(len(values), np.nan)
    if present and all(isinstance(v, (bool, np.bool_)) for v in present) and not missing:
        return np.asarray(values, bool)
    if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                       for v in present):
        data = np.asarray([v if v is not None else 0 for v in values], np.int64)
        return MaskedColumn(data, mask=[v is None for v in values], name=name) if missing \
            else data
    if all(_is_number(v) for v in present):
        return np.asarray([float(v) if v is not None else np.nan for v in values], np.float64)

    def text(v):
        if v is None:
            return ""
        if isinstance(v, (bool, np.bool_)):
            return "T" if v else "F"
        return str(v).strip()

    strings = [text(v) for v in values]
    width = max([1] + [len(s) for s in strings])
    return np.asarray(strings, dtype=f"U{width}")


def hdrtab_columns(inputs: Sequence[Mapping], records: Sequence[DrizzleRecord]) -> list:
    """The HDRTAB extension's columns, ``[(name, values), ...]``: one row per input chip
    drizzled (``records``).

    Each row holds every keyword of the input's primary header and of that chip's SCI header
    (the chip's value where both have one), as drizzlepac's blendheaders writes them, but with
    the inputs' alternate WCSs and lookup-table records left out; MDRIZSKY is the sky this
    product subtracted (input units) and HAPEXPNAME the exposure's product basename (spec
    §2.2). ``ROOTNAME``, ``EXTNAME``, ``EXTVER`` come first, then the keywords in alphabetical
    order, HAPEXPNAME last.
    """
    by_file = {entry["filename"]: entry for entry in inputs}
    rows = []
    for record in records:
        entry = by_file[record.filename]
        row = {}
        for header in (entry["primary"], entry["chips"][record.extver]):
            for card in header.cards:
                # a keyword without a value still gets its column (NaN / blank), as in
                # drizzlepac's table; the chip's value wins over the primary's
                if _hdrtab_keyword(card.keyword) and (_defined(card.value)
                                                      or card.keyword not in row):
                    row[card.keyword] = card.value if _defined(card.value) else None
        row["MDRIZSKY"] = record.sky
        rows.append(row)
    keys = sorted({k for row in rows for k in row} - set(_HDRTAB_FIRST))
    keys = [k for k in _HDRTAB_FIRST if any(k in row for row in rows)] + keys
    columns = [(key, _column(key, [row.get(key) for row in rows])) for key in keys]
    names = [r.hap_exposure for r in records]
    width = max([51] + [len(n) for n in names])
    columns.append(("HAPEXPNAME", np.asarray(names, dtype=f"U{width}")))
    return columns


def hdrtab_bytes(inputs: Sequence[Mapping], records: Sequence[DrizzleRecord]) -> bytes:
    """The HDRTAB extension (`hdrtab_columns`) as FITS bytes, written straight from the
    columns (`hapcore.drizzle.fits_table`: astropy's table machinery cost 0.2-0.3 s a product)."""
    return binary_table_bytes(hdrtab_columns(inputs, records), extname="HDRTAB")


def hdrtab(inputs: Sequence[Mapping], records: Sequence[DrizzleRecord]) -> fits.BinTableHDU:
    """The HDRTAB extension (`hdrtab_columns`) as an HDU."""
    return fits.BinTableHDU.fromstring(hdrtab_bytes(inputs, records))
