"""
drizzlepac's product keywords, derived from a real DRC header, and how hapsvm's compare.

Reads ``../shared/data/headers/acs_wfc_jbt122x8q_drc_header.fits`` (a drizzlepac DRC product
with its HDRTAB) and the FLC it was drizzled from, sorts every keyword of the product's PRIMARY,
SCI, WHT and CTX headers and every HDRTAB column into

* ``structural``: FITS structure (astropy writes it);
* ``drizzle_history``: the suffixes of the per-input ``D###`` group;
* ``product``: what hapsvm computes for every product, whatever the instrument;
* ``inherited``: copied or blended from the inputs' headers, so present in a product whenever
  its inputs have it (an ACS keyword is not expected in a WFC3 product);
* ``omitted``: deliberately not written by hapsvm, with the reason (also in the README's
  "Where hapsvm deliberately differs from drizzlepac");

adds the keywords issue #19 names from drizzlepac's SVM WFC3/UVIS total product that this
(standard-pipeline ACS) product lacks, and writes ``configs/any/drc_keywords.json``, which
``tests/drizzle/test_product_headers.py`` holds every hapsvm product against.

Then it builds hapsvm's headers for the real FLC (the pure builders of
`hapcore.drizzle.headers`) and reports, per extension, the keyword counts and anything of the
list that is missing. Exits 0 with a message when the shared folder is absent.

Run ``python validation/drc_keywords.py`` (check: exit 1 if the committed list is stale or a
keyword is missing) or ``python validation/drc_keywords.py --write`` (rewrite the list).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

ROOT = Path(__file__).resolve().parents[1]
HEADERS = ROOT.parent / "shared" / "data" / "headers"
DRC = HEADERS / "acs_wfc_jbt122x8q_drc_header.fits"
FLC = HEADERS / "acs_wfc_jbt122x8q_flc_header.fits"
LIST = ROOT / "configs" / "any" / "drc_keywords.json"
IGNORED = {"", "COMMENT", "HISTORY"}
EXTENSIONS = ("PRIMARY", "SCI", "WHT", "CTX")

STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
              "GCOUNT", "EXTNAME", "EXTVER"}

_WCS = {"INHERIT", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
        "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "RADESYS", "MJDREF", "ORIENTAT", "VAFACTOR",
        "LTM1_1", "LTM2_2", "WCSNAME", "WCSTYPE", "CRDER1", "CRDER2"}
#: Keywords hapsvm computes for every product (values of its own processing).
PRODUCT = {
    "PRIMARY": {"DATE", "FILENAME", "ROOTNAME", "EXPSTART", "EXPEND", "EXPTIME", "TEXPTIME",
                "NEXTEND", "PROD_VER", "DRIZPARS", "ASN_MTYP", "NDRIZIM"},
    "SCI": _WCS | {"BUNIT", "CCDCHIP", "S_REGION", "MDRIZSKY", "RMS_RA", "RMS_DEC", "NMATCHES",
                   "FITGEOM", "RELGEOM", "RELMATCH", "RELREFIM", "RELRMS_R", "RELRMS_D",
                   "ROOTNAME", "EXPNAME"},
    "WHT": _WCS | {"CCDCHIP"},
    "CTX": _WCS,
}

_RULES = ("hapsvm blends the inputs' headers with rules kept in its code "
          "(hapcore.drizzle.headers), not with a rules file")
_SVM_DELETED = ("deleted from SVM products by drizzlepac's own SVM header rules (spec 2.2); "
                "this DRC is a standard-pipeline product")
_RAW_LTV = ("the input chip's subarray offset; the product grid is no subarray of a detector")
#: Keywords hapsvm deliberately does not write, with the reason.
OMITTED = {
    "PRIMARY": {
        "RULESVER": _RULES + ": there is no rules-file version",
        "RULEFILE": _RULES + ": there is no rules file to name",
        "BLENDVER": "no separate blendheaders software: PROD_VER names what made the product",
        "SUNANGLE": _SVM_DELETED, "MOONANGL": _SVM_DELETED, "GYROMODE": _SVM_DELETED,
        "EXPFLAG": _SVM_DELETED,
    },
    "SCI": {
        "RAW_LTV1": _RAW_LTV, "RAW_LTV2": _RAW_LTV,
        "WCSTYPEO": "type of the input's archived OPUS WCS; a product has no alternate WCS",
        "HDRNAME": ("names the headerlet of one input's chip WCS; no headerlet describes the "
                    "product grid (each input's HDRNAME is in the HDRTAB)"),
        "SKYCELL": ("needs drizzlepac's sky-cell grid (pars/allsky_cells.fits), which hapsvm "
                    "does not have; the SVM copies do not get SKYCELL either"),
    },
    "WHT": {
        "RAW_LTV1": _RAW_LTV, "RAW_LTV2": _RAW_LTV,
        "GOODMIN": "statistics of the input ERR array, which describe neither the weight nor "
                   "the product", "GOODMAX": "as GOODMIN", "GOODMEAN": "as GOODMIN",
    },
    "CTX": {"RAW_LTV1": _RAW_LTV, "RAW_LTV2": _RAW_LTV},
}

#: Keywords of drizzlepac's SVM WFC3/UVIS total product (issue #19) absent from this DRC.
SVM_ADDITIONS = {
    "SCI": ["PA_APER", "RELGEOM", "RELMATCH", "RELREFIM", "RELRMS_R", "RELRMS_D", "D2IMFILE",
            "NPOLFILE", "PHTFLAM1", "PHTFLAM2", "PHTRATIO", "ROOTNAME", "EXPNAME", "SKYCELL",
            "SDQFLAGS", "SOFTERRS"],
}

_NOT_IN_INPUTS = ("listed by drizzlepac's rules file but in none of the input headers, so "
                  "drizzlepac writes a column of NaN/blank values; hapsvm writes a column for "
                  "every keyword the inputs have, and no column for those they lack")


def _keys(header) -> list[str]:
    return [k for k in header if k not in IGNORED]


def derive(drc_path: Path = DRC, flc_path: Path = FLC) -> dict:
    """The keyword list (the content of ``configs/any/drc_keywords.json``)."""
    with fits.open(drc_path) as drc, fits.open(flc_path) as flc:
        flc_keys = set(_keys(flc[0].header)) | {k for h in flc[1:] if h.name == "SCI"
                                                for k in _keys(h.header)}
        out = {"source": f"../shared/data/headers/{drc_path.name} (drizzlepac DRC with HDRTAB) "
                         f"and {flc_path.name} (its input)",
               "derived_by": "validation/drc_keywords.py",
               "extensions": {}}
        for name in EXTENSIONS:
            keys = _keys(drc[name].header)
            entry = {"structural": [], "drizzle_history": [], "product": [], "inherited": [],
                     "omitted": {}}
            for key in keys:
                if key in STRUCTURAL:
                    entry["structural"].append(key)
                elif len(key) >= 5 and key[0] == "D" and key[1:4].isdigit():
                    if key[4:] not in entry["drizzle_history"]:
                        entry["drizzle_history"].append(key[4:])
                elif key in OMITTED[name]:
                    entry["omitted"][key] = OMITTED[name][key]
                elif key in PRODUCT[name]:
                    entry["product"].append(key)
                elif key in flc_keys:
                    entry["inherited"].append(key)
                else:
                    raise ValueError(f"{name} {key}: neither in the input nor classified; "
                                     f"add it to PRODUCT or OMITTED")
            for key in SVM_ADDITIONS.get(name, []):
                if key in keys:
                    continue
                entry.setdefault("svm_additions", []).append(key)
                if key in OMITTED[name]:
                    entry["omitted"][key] = OMITTED[name][key]
                elif key in PRODUCT[name]:
                    entry["product"].append(key)
                else:
                    entry["inherited"].append(key)
            if not entry["drizzle_history"]:
                del entry["drizzle_history"]
            out["extensions"][name] = entry
        columns = list(drc["HDRTAB"].columns.names)
        out["hdrtab"] = {
            "columns": columns,
            "product": ["MDRIZSKY", "HAPEXPNAME"],
            "not_in_inputs": {"columns": sorted(c for c in columns if c not in flc_keys),
                              "reason": _NOT_IN_INPUTS},
        }
    out["counts"] = {name: len(set(_keys(fits.getheader(drc_path, name)))) for name in EXTENSIONS}
    out["counts"]["HDRTAB"] = len(columns)
    return out


def hapsvm_headers(flc_path: Path = FLC, drc_path: Path = DRC):
    """hapsvm's headers and HDRTAB for the real FLC drizzled alone (as the real DRC was)."""
    from hapcore.drizzle.headers import hdrtab, product_headers
    from hapcore.drizzle.provenance import product_provenance
    from hapcore.drizzle.inputs import exposure_keywords

    inputs = [exposure_keywords(flc_path)]
    with fits.open(drc_path) as drc:
        grid = WCS(drc["SCI"].header)
        scale = float(np.sqrt(abs(np.linalg.det(grid.wcs.cd))) * 3600.0)
    product = SimpleNamespace(drizzle_filename="jbt122x8q_drc.fits",
                              trl_filename="jbt122x8q_trl.txt", haplevel=1)
    pars = SimpleNamespace(final_kernel="square", final_pixfrac=1.0, final_fillval=None,
                           final_bits=336, final_wht_type="EXP")
    provenance = product_provenance(inputs, product, pars=pars, output_scale=scale,
                                    hap_names=["hst_12546_22_acs_wfc_f814w_jbt122x8"])
    shape = (8, 8)
    headers = product_headers(inputs, provenance, grid_wcs=grid, wht=np.ones(shape, np.float32),
                              ctx=np.ones(shape, np.int32), footprint=False)
    return headers, hdrtab(inputs, provenance.drizzle), inputs


def compare(listing: dict, headers, table, inputs) -> list[str]:
    """Keywords of ``listing`` missing from hapsvm's headers built for the real input."""
    ours = {"PRIMARY": headers.primary, "SCI": headers.sci, "WHT": headers.wht,
            "CTX": headers.ctx}
    input_keys = set(inputs[0]["primary"]) | {k for h in inputs[0]["chips"].values() for k in h}
    missing = []
    for name, entry in listing["extensions"].items():
        keys = set(ours[name])
        expect = set(entry["product"]) | {k for k in entry["inherited"] if k in input_keys}
        if name == "PRIMARY":
            expect |= {f"D{i:03d}{s}" for i in (1, 2) for s in entry["drizzle_history"]}
        missing += [f"{name} {k}" for k in sorted(expect - keys - STRUCTURAL)]
        missing += [f"{name} {k} (omitted, but written)" for k in entry["omitted"] if k in keys]
    columns = set(table.columns.names)
    for column in listing["hdrtab"]["columns"]:
        if column not in columns and column not in listing["hdrtab"]["not_in_inputs"]["columns"]:
            missing.append(f"HDRTAB {column}")
    return missing


def main(argv: list[str]) -> int:
    if not DRC.is_file() or not FLC.is_file():
        print(f"skipped: {DRC.parent} not found (real headers are not part of the project)")
        return 0
    listing = derive()
    text = json.dumps(listing, indent=1) + "\n"
    status = 0
    if "--write" in argv:
        LIST.write_text(text, encoding="utf-8")
        print(f"wrote {LIST.relative_to(ROOT)}")
    elif not LIST.is_file() or LIST.read_text(encoding="utf-8") != text:
        print(f"{LIST.relative_to(ROOT)} is stale: rerun with --write")
        status = 1
    headers, table, inputs = hapsvm_headers()
    ours = {"PRIMARY": headers.primary, "SCI": headers.sci, "WHT": headers.wht,
            "CTX": headers.ctx}
    print("keywords (without HISTORY/COMMENT)   drizzlepac   hapsvm")
    for name in EXTENSIONS:
        # astropy adds the structural keywords of an extension when it writes the file
        n = len(set(_keys(ours[name])) | ({"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2",
                                           "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER"}
                                          if name != "PRIMARY" else
                                          {"SIMPLE", "BITPIX", "NAXIS", "EXTEND"}))
        print(f"  {name:8s}                             {listing['counts'][name]:5d}   {n:6d}")
    print(f"  HDRTAB columns                       {listing['counts']['HDRTAB']:5d}   "
          f"{len(table.columns):6d}")
    for name, entry in listing["extensions"].items():
        if entry["omitted"]:
            print(f"  omitted in {name}: {', '.join(entry['omitted'])}")
    missing = compare(listing, headers, table, inputs)
    if missing:
        print("missing from hapsvm's headers:\n  " + "\n  ".join(missing))
        status = 1
    else:
        print("every keyword of the list is in hapsvm's headers (omissions aside)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
