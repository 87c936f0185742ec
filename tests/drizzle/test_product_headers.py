"""Product headers that HST tools read (issue #19): drizzlepac's keyword set, WCS, provenance.

A small simulated WFC3/UVIS visit is aligned to its reference catalog (the real alignment stage,
so the SVM copies carry the fit records) and drizzled; its total, filter and exposure products
are held against ``configs/any/drc_keywords.json``, the keyword list derived from a real
drizzlepac DRC by ``validation/drc_keywords.py``. The comparison with the real header itself
runs only where ``../shared/data/headers`` exists.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import configs
import hapsim
from hap_models.product_headers import MAS_PER_DEG, ProductProvenance
from hapcore.align.stage import run_alignment
from hapcore.drizzle import (
    DrizzleWorkspace,
    drizzle_filter_with_exposures,
    drizzle_total_product,
)
from hapcore.drizzle.grid import build_detector_grid
from hapcore.drizzle.headers import grid_wcs_cards, product_headers
from hapcore.drizzle.provenance import alignment_provenance, product_provenance
from hapcore.drizzle.inputs import exposure_keywords
from hapcore.drizzle.stage import total_inputs
from hapcore.obset.product_parameters import assign_product_parameters
from hapcore.obset.tree import interpret_obset_input, parse_obset_tree

ROOT = Path(__file__).resolve().parents[2]
LISTING = json.loads((Path(configs.__file__).parent / "any" / "drc_keywords.json")
                     .read_text(encoding="utf-8"))
EXTENSIONS = ("PRIMARY", "SCI", "WHT", "CTX")
REAL_HEADERS = ROOT.parent / "shared" / "data" / "headers"


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    base = tmp_path_factory.mktemp("header_visit")
    sim = hapsim.simulate_visit(base / "in", detector="wfc3/uvis",
                                filters={"f606w": 2, "f814w": 1}, subarray=512, seed=11,
                                exptime=600.0, star_density=800.0, galaxy_density=10.0,
                                star_mag_range=(17.0, 21.0), pointing_error=(1.0, 0.05))
    (total,) = assign_product_parameters(parse_obset_tree(interpret_obset_input(sim.poller)))
    out = base / "out"
    alignment = run_alignment(total, output_dir=out, params=total.parameters.alignment,
                              refcat_path=sim.refcat, n_workers=2)
    grid = build_detector_grid(total, out)
    products = {}
    with DrizzleWorkspace(grid, output_dir=out, n_workers=2) as ws:
        for fdp in total.fdp_list:
            made = drizzle_filter_with_exposures(fdp, workspace=ws)
            products[fdp.filters] = (fdp, list(fdp.edp_list), made[0])
            for edp, path in zip(fdp.edp_list, made[1:]):
                products[edp.exposure_name] = (edp, [edp], path)
        products["total"] = (total, total_inputs(total), drizzle_total_product(total,
                                                                                workspace=ws))
    records = {Path(e.svm_copy_filename).name: e.record for e in alignment.exposures}
    return SimpleNamespace(sim=sim, total=total, out=out, grid=grid, products=products,
                           records=records, alignment=alignment)


def _kind(key):
    return "total" if key == "total" else ("filter" if key in ("f606w", "f814w") else "exposure")


def _headers(path):
    with fits.open(path) as hdul:
        return {h.name: h.header.copy() for h in hdul}, fits.getdata(path, "HDRTAB")


def _keys(header):
    return {k for k in header if k not in ("", "COMMENT", "HISTORY")}


def test_fit_was_accepted(visit):
    # the provenance tests below need a real fit in the SVM copies
    assert visit.alignment.aligned
    assert all(r.fit_label == "SVM" and r.nmatches > 0 for r in visit.records.values())


@pytest.mark.parametrize("kind", ["total", "filter", "exposure"])
def test_keyword_set_matches_drizzlepac_list(visit, kind):
    """Every keyword of the committed drizzlepac list: written (product), carried whenever the
    inputs have it (inherited), one D### group per chip; the documented omissions absent."""
    checked = 0
    for key, (product, edps, path) in visit.products.items():
        if _kind(key) != kind:
            continue
        headers, table = _headers(path)
        first = exposure_keywords(visit.out / edps[0].full_filename)
        input_keys = _keys(first["primary"]) | _keys(first["sci"])
        ndrizim = headers["PRIMARY"]["NDRIZIM"]
        assert ndrizim == sum(len(exposure_keywords(visit.out / e.full_filename)["chips"])
                              for e in edps)
        for name in EXTENSIONS:
            entry = LISTING["extensions"][name]
            expect = set(entry["structural"]) | set(entry["product"])
            expect |= {k for k in entry["inherited"] if k in input_keys}
            expect |= {f"D{i:03d}{suffix}" for i in range(1, ndrizim + 1)
                       for suffix in entry.get("drizzle_history", [])}
            missing = expect - _keys(headers[name])
            assert not missing, f"{path.name}[{name}] lacks {sorted(missing)}"
            written = set(entry["omitted"]) & _keys(headers[name])
            assert not written, f"{path.name}[{name}]: omitted keywords written: {written}"
        # HDRTAB: one row per chip; a column for every listed keyword the inputs have
        chip_keys = set(input_keys)
        for e in edps:
            kw = exposure_keywords(visit.out / e.full_filename)
            chip_keys |= _keys(kw["primary"]) | {k for h in kw["chips"].values() for k in h}
        columns = set(table.columns.names)
        expect = {c for c in LISTING["hdrtab"]["columns"] if c in chip_keys}
        expect |= set(LISTING["hdrtab"]["product"])
        assert not expect - columns, sorted(expect - columns)
        assert len(table) == ndrizim
        assert set(table["HAPEXPNAME"]) == {e.product_basename for e in edps}
        checked += 1
    assert checked


def test_omissions_documented_in_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Where hapsvm deliberately differs from drizzlepac", 1)[1]
    section = section.split("\n## ", 1)[0]
    for name, entry in LISTING["extensions"].items():
        for keyword, reason in entry["omitted"].items():
            assert reason, (name, keyword)
            assert f"`{keyword}`" in section or f"`{keyword}/" in section \
                or f"/`{keyword}`" in section, f"{keyword} not in the README's deviations"


def test_sci_wcs_is_cd_and_maps_as_the_grid(visit):
    grid = visit.grid.wcs
    ny, nx = visit.grid.shape
    y, x = np.mgrid[0:ny:37, 0:nx:41]
    x = np.r_[x.ravel(), 0, nx - 1, 0, nx - 1]
    y = np.r_[y.ravel(), 0, 0, ny - 1, ny - 1]
    ra0, dec0 = grid.all_pix2world(x, y, 0)
    for key, (_, _, path) in visit.products.items():
        headers, _ = _headers(path)
        for name in ("SCI", "WHT", "CTX"):
            h = headers[name]
            assert {"CD1_1", "CD1_2", "CD2_1", "CD2_2"} <= set(h)
            assert not [k for k in h if re.match(r"^(PC\d_\d|CDELT\d)$", k)], (key, name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(h)
            ra, dec = wcs.all_pix2world(x, y, 0)
            assert np.max(np.abs(ra - ra0) * np.cos(np.radians(dec0))) < 1e-9
            assert np.max(np.abs(dec - dec0)) < 1e-9
            assert h["ORIENTAT"] == pytest.approx(
                math.degrees(math.atan2(h["CD1_2"], h["CD2_2"])), abs=1e-9)


@pytest.mark.parametrize("rotation", [0.0, 30.0, -135.0])
def test_orientat_agrees_with_cd_of_a_rotated_grid(rotation):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [100.5, 80.5]
    t = math.radians(rotation)
    s = 0.04 / 3600.0
    # +Y axis at position angle `rotation` east of north, east to the left
    wcs.wcs.pc = [[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]]
    wcs.wcs.cdelt = [s, s]
    header = fits.Header(grid_wcs_cards(wcs))
    assert header["ORIENTAT"] == pytest.approx(rotation, abs=1e-9)
    assert header["ORIENTAT"] == pytest.approx(
        math.degrees(math.atan2(header["CD1_2"], header["CD2_2"])), abs=1e-12)
    x, y = np.mgrid[0:200:7, 0:160:9]
    a = np.array(wcs.all_pix2world(x.ravel(), y.ravel(), 0))
    b = np.array(WCS(header).all_pix2world(x.ravel(), y.ravel(), 0))
    assert np.max(np.abs(a - b)) < 1e-12


def test_drizzle_history_is_the_parameters_used(visit):
    scale = visit.grid.pixel_scale_arcsec
    for key, (product, edps, path) in visit.products.items():
        headers, _ = _headers(path)
        p = headers["PRIMARY"]
        pars = product.parameters.drizzle
        chips = [(e.full_filename, extver) for e in edps
                 for extver in sorted(exposure_keywords(visit.out / e.full_filename)["chips"])]
        assert p["NDRIZIM"] == len(chips)
        for i, (svm_copy, extver) in enumerate(chips, start=1):
            d = f"D{i:03d}"
            assert p[d + "KERN"] == pars.final_kernel
            assert p[d + "PIXF"] == pars.final_pixfrac
            assert p[d + "SCAL"] == scale
            if pars.final_scale is not None:
                assert p[d + "SCAL"] == pytest.approx(pars.final_scale, rel=1e-6)
            assert p[d + "DATA"] == f"{svm_copy}[sci,{extver}]"
            assert p[d + "DEXP"] == fits.getval(visit.out / svm_copy, "EXPTIME")
            assert p[d + "OUDA"] == path.name
            assert p[d + "FVAL"] == ("INDEF" if pars.final_fillval is None
                                     else pars.final_fillval)
            assert p[d + "ISCL"] == fits.getval(visit.out / svm_copy, "IDCSCALE", ("SCI", extver))
            # hapsim's UVIS files carry NPOL/D2IM lookup tables, as real FLCs
            assert p[d + "COEF"] == "SIP+D2IM+NPOL" and p[d + "GEOM"] == "wcs"
            assert p[d + "OUUN"] == "cps"
            assert p[d + "MASK"].startswith(f"DQ,{extver} bits {pars.final_bits} good")
            # the filters and the total exclude the CR masks found (the single-exposure f814w:
            # by L.A.Cosmic on its own chips); exposure products none
            assert ("CR mask" in p[d + "MASK"]) == (_kind(key) in ("total", "filter"))
        assert p["PROD_VER"].startswith("hapsvm ")
        assert p["NEXTEND"] == 4 and p["ASN_MTYP"] == "PROD-DTH"
        history = "\n".join(str(h) for h in p["HISTORY"])
        assert "hapsvm processing performed using" in history
        assert f"kernel = {pars.final_kernel}" in history


def test_alignment_figures_are_the_accepted_fit(visit):
    for product, edps, path in visit.products.values():
        headers, table = _headers(path)
        sci = headers["SCI"]
        record = visit.records[edps[0].full_filename]  # drizzlepac's rule: the first input
        assert sci["RMS_RA"] == record.rms_ra_mas
        assert sci["RMS_DEC"] == record.rms_dec_mas
        assert sci["NMATCHES"] == record.nmatches
        assert sci["FITGEOM"] == record.fitgeom
        assert sci["RELGEOM"] == record.relgeom and sci["RELMATCH"] == record.relmatch
        assert sci["RELRMS_R"] == record.relrms_ra_mas
        assert sci["RELRMS_D"] == record.relrms_dec_mas
        assert sci["RELREFIM"] == record.relrefim
        assert sci["CRDER1"] == pytest.approx(record.rms_ra_mas / MAS_PER_DEG, rel=1e-15)
        assert sci["CRDER2"] == pytest.approx(record.rms_dec_mas / MAS_PER_DEG, rel=1e-15)
        assert "FIT_SVM" in sci["WCSNAME"] and "aligned by visit" in sci["WCSTYPE"]
        # every input's own figures stay readable from the HDRTAB
        for row in table:
            own = visit.records[f"{row['HAPEXPNAME']}_flc.fits"]
            assert row["RMS_RA"] == own.rms_ra_mas and row["NMATCHES"] == own.nmatches
            assert row["RELRMS_R"] == own.relrms_ra_mas


def test_sci_and_hdrtab_values(visit):
    for product, edps, path in visit.products.values():
        headers, table = _headers(path)
        p, sci = headers["PRIMARY"], headers["SCI"]
        assert sci["ROOTNAME"] == p["ROOTNAME"] and sci["S_REGION"] == p["S_REGION"]
        assert sci["VAFACTOR"] == 1.0 and sci["CCDCHIP"] == -999
        assert sci["MDRIZSKY"] == pytest.approx(np.mean(table["MDRIZSKY"]))
        inputs = [exposure_keywords(visit.out / e.full_filename) for e in edps]
        assert sci["PHOTFLAM"] == inputs[0]["sci"]["PHOTFLAM"]
        assert sci["PHTFLAM1"] == inputs[0]["sci"]["PHTFLAM1"]
        assert sci["PA_APER"] == inputs[0]["sci"]["PA_APER"]
        assert sci["SDQFLAGS"] == inputs[0]["sci"]["SDQFLAGS"]
        assert sci["IDCTAB"] == inputs[0]["primary"]["IDCTAB"]
        assert sci["NCOMBINE"] == sum(i["sci"]["NCOMBINE"] for i in inputs)
        if product.haplevel == 1:
            assert sci["EXPNAME"] == inputs[0]["sci"]["EXPNAME"]
        by_name = {i["filename"]: i for i in inputs}
        for row in table:
            source = by_name[f"{row['HAPEXPNAME']}_flc.fits"]
            chip = source["chips"][int(row["EXTVER"])]
            for keyword in ("EXPSTART", "EXPTIME", "CCDGAIN", "READNSEA", "ATODGNB"):
                assert row[keyword] == source["primary"][keyword], keyword
            for keyword in ("PHOTFLAM", "CD1_1", "CRVAL1", "WCSNAME"):
                assert row[keyword] == chip[keyword], keyword
            assert row["ROOTNAME"] == source["primary"]["ROOTNAME"]


def test_primary_blending_rules(visit):
    fdp, edps, _ = visit.products["f606w"]
    inputs = [exposure_keywords(visit.out / e.full_filename) for e in edps]
    inputs[1]["primary"]["APERTURE"] = "UVIS1-FIX"
    inputs[1]["sci"]["PHOTFLAM"] = 2 * inputs[0]["sci"]["PHOTFLAM"]
    pars = fdp.parameters.drizzle
    provenance = product_provenance(inputs, fdp, pars=pars,
                                    output_scale=visit.grid.pixel_scale_arcsec,
                                    hap_names=[e.product_basename for e in edps])
    shape = visit.grid.shape
    headers = product_headers(inputs, provenance, grid_wcs=visit.grid.wcs,
                              wht=np.ones(shape, np.float32), ctx=np.ones(shape, np.int32),
                              footprint=True)
    assert headers.primary["APERTURE"] == "MULTIPLE"
    assert headers.primary["DETECTOR"] == inputs[0]["primary"]["DETECTOR"]
    assert headers.sci["PHOTFLAM"] == pytest.approx(1.5 * inputs[0]["sci"]["PHOTFLAM"])
    assert headers.primary["EXPTIME"] == sum(i["primary"]["EXPTIME"] for i in inputs)
    assert headers.primary["EXPSTART"] == min(i["primary"]["EXPSTART"] for i in inputs)
    assert "SUNANGLE" not in headers.primary and "CHECKSUM" not in headers.primary
    # the provenance travels to worker processes
    again = pickle.loads(pickle.dumps(provenance))
    assert isinstance(again, ProductProvenance) and again == provenance


def test_no_fit_gives_drizzlepac_defaults():
    sci = fits.Header({"WCSNAME": "IDC_2731450pi"})
    a = alignment_provenance([{"primary": fits.Header(), "sci": sci, "chips": {1: sci},
                               "filename": "x_flc.fits"}])
    assert (a.rms_ra_mas, a.rms_dec_mas, a.nmatches, a.fitgeom) == (-1.0, -1.0, 0, "N/A")
    assert a.wcstype == "undistorted not aligned"
    keys = [k for k, _, _ in a.keywords()]
    assert "RMS_RA" in keys and "CRDER1" not in keys  # an unknown error is not written


def _validation_module():
    spec = importlib.util.spec_from_file_location("drc_keywords",
                                                  ROOT / "validation" / "drc_keywords.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (REAL_HEADERS / "acs_wfc_jbt122x8q_drc_header.fits").is_file(),
                    reason="real drizzlepac headers (../shared/data/headers) not present")
def test_against_the_real_drizzlepac_drc_header():
    """The committed list is the one derived from the real DRC, and hapsvm's headers built
    for the real input FLC carry every keyword of it (omissions aside), with its values."""
    module = _validation_module()
    assert module.derive() == LISTING, "configs/any/drc_keywords.json is stale"
    headers, table, inputs = module.hapsvm_headers()
    assert module.compare(LISTING, headers, table, inputs) == []
    with fits.open(module.DRC) as real:
        rp, rsci, rtab = real[0].header, real["SCI"].header, real["HDRTAB"].data
        assert headers.primary["NDRIZIM"] == rp["NDRIZIM"] == len(rtab) == len(table.data)
        for i in (1, 2):
            d = f"D{i:03d}"
            for suffix in ("DEXP", "ISCL", "KERN", "PIXF", "GEOM", "OUUN", "FVAL", "WKEY"):
                assert headers.primary[d + suffix] == rp[d + suffix], d + suffix
            assert headers.primary[d + "DATA"].endswith(rp[d + "DATA"][-7:])  # '[sci,i]'
        for keyword in ("PHOTFLAM", "PHOTPLAM", "RA_APER", "DEC_APER", "RMS_RA", "RMS_DEC",
                        "NMATCHES", "FITGEOM", "WCSNAME", "WCSTYPE", "NCOMBINE", "IDCTAB"):
            assert headers.sci[keyword] == rsci[keyword], keyword
        assert headers.sci["BUNIT"] == rsci["BUNIT"]
        ours = table.data
        for column in ("EXPSTART", "EXPTIME", "PHOTFLAM", "CCDGAIN", "READNSEA", "CCDCHIP",
                       "CD1_1", "CRVAL2", "ROOTNAME", "EXTVER"):
            assert list(ours[column]) == list(rtab[column]), column
