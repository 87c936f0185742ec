"""Tests of the alignment records: WCS names/types, the SVM copy, headerlets (spec §2.2, §4.6).

The inputs are synthetic 2-chip WFC3/UVIS-like exposures (64x32 pixels per chip) with a TAN-SIP
primary WCS named ``IDC_2731450pi-GSC240``, NPOL lookup tables, two alternate WCSs (``O`` = OPUS,
``A`` = ``IDC_2731450pi``), a WCSCORR table and one attached HDRLET extension.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from hap_models.alignment import ChipWCS, ExposureAlignment, WCSFitRecord
from hapcore.wcs.header import orientat_from_cd
from hapcore.wcs.records import (
    attach_headerlet,
    headerlet_name,
    read_chip_wcs,
    solution_kind,
    wcsname_after_fit,
    wcstype_from_wcsname,
    write_headerlet,
    write_svm_copy,
)

ROOTNAME = "ib4606c6q"
INPUT_NAME = f"{ROOTNAME}_flc.fits"
PRODUCT_BASENAME = "hst_11665_06_wfc3_uvis_f555w_ib4606c6"
COPY_NAME = f"{PRODUCT_BASENAME}_flc.fits"
HLET_NAME = f"{PRODUCT_BASENAME}_hlet.fits"
INPUT_WCSNAME = "IDC_2731450pi-GSC240"
NX, NY = 64, 32

# SIP coefficients (detector -> undistorted, px) large enough to matter on a 64x32 chip.
SIP_A = {"A_2_0": 2.9e-4, "A_1_1": -3.0e-4, "A_0_2": 9.7e-6}
SIP_B = {"B_2_0": -5.8e-6, "B_1_1": 2.8e-4, "B_0_2": -3.1e-4}


# --------------------------------------------------------------------------------------------------
# synthetic inputs


def _cd_matrix(scale_deg: float, orientat_deg: float) -> np.ndarray:
    """CD of an image with square pixels whose +Y axis points ``orientat`` deg E of N (x flipped)."""
    theta = np.radians(orientat_deg)
    return scale_deg * np.array([[-np.cos(theta), np.sin(theta)],
                                 [np.sin(theta), np.cos(theta)]])


def _sci_header(chip: int, crval: tuple[float, float], cd: np.ndarray) -> fits.Header:
    header = fits.Header()
    header["ROOTNAME"] = (ROOTNAME, "rootname of the observation set")
    header["EXPNAME"] = (ROOTNAME, "exposure identifier")
    header["BUNIT"] = ("ELECTRONS", "brightness units")
    header["CCDCHIP"] = (chip, "CCD chip (1 or 2)")
    header["ORIENTAT"] = orientat_from_cd(cd)
    header["WCSAXES"] = (2, "Number of coordinate axes")
    header["CRPIX1"] = (NX / 2 + 0.5, "Pixel coordinate of reference point")
    header["CRPIX2"] = (NY / 2 + 0.5, "Pixel coordinate of reference point")
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    header["CTYPE1"] = ("RA---TAN-SIP", "TAN (gnomonic) projection + SIP distortions")
    header["CTYPE2"] = ("DEC--TAN-SIP", "TAN (gnomonic) projection + SIP distortions")
    header["CRVAL1"] = (crval[0], "[deg] Coordinate value at reference point")
    header["CRVAL2"] = (crval[1], "[deg] Coordinate value at reference point")
    header["CRDER1"] = (9.02, "[deg] Random error in coordinate")
    header["CRDER2"] = (7.71, "[deg] Random error in coordinate")
    header["WCSNAME"] = (INPUT_WCSNAME, "Coordinate system title")
    header["RADESYS"] = "ICRS"
    header["A_ORDER"] = 2
    for key, value in SIP_A.items():
        header[key] = value
    header["B_ORDER"] = 2
    for key, value in SIP_B.items():
        header[key] = value
    for axis in (1, 2):
        header[f"CPDIS{axis}"] = ("LOOKUP", "Prior distortion function type")
        for text in (f"EXTVER: {2 * chip - 2 + axis}", "NAXES: 2", "AXIS.1: 1", "AXIS.2: 2"):
            header.append(fits.Card.fromstring(f"DP{axis}     = '{text}'"), end=True)
    header["CD1_1"] = (cd[0, 0], "partial of first axis coordinate w.r.t. x")
    header["CD1_2"] = (cd[0, 1], "partial of first axis coordinate w.r.t. y")
    header["CD2_1"] = (cd[1, 0], "partial of second axis coordinate w.r.t. x")
    header["CD2_2"] = (cd[1, 1], "partial of second axis coordinate w.r.t. y")
    header["IDCSCALE"] = (0.0396, "pixel scale from the IDCTAB reference file")
    header["WCSTYPE"] = wcstype_from_wcsname(INPUT_WCSNAME)
    header["NPOLEXT"] = "iref$y7b1516qi_npl.fits"
    # Alternates already present: the OPUS WCS (no SIP) and the distortion-only IDC WCS.
    for key, name, ctype_suffix, offset in (("O", "OPUS", "", 3e-5),
                                            ("A", "IDC_2731450pi", "-SIP", 2e-5)):
        header[f"WCSNAME{key}"] = (name, "Coordinate system title")
        header[f"WCSAXES{key}"] = 2
        header[f"CRPIX1{key}"] = header["CRPIX1"]
        header[f"CRPIX2{key}"] = header["CRPIX2"]
        header[f"CTYPE1{key}"] = "RA---TAN" + ctype_suffix
        header[f"CTYPE2{key}"] = "DEC--TAN" + ctype_suffix
        header[f"CRVAL1{key}"] = crval[0] + offset
        header[f"CRVAL2{key}"] = crval[1] - offset
        for cd_key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            header[f"{cd_key}{key}"] = header[cd_key]
        header[f"WCSTYPE{key}"] = wcstype_from_wcsname(name)
    return header


def _lookup_hdu(extver: int, rng: np.random.Generator) -> fits.ImageHDU:
    header = fits.Header()
    header["EXTNAME"] = "WCSDVARR"
    header["EXTVER"] = extver
    for axis in (1, 2):
        header[f"CRPIX{axis}"] = 0.0
        header[f"CRVAL{axis}"] = 0.0
        header[f"CDELT{axis}"] = 8.0
    data = rng.normal(0.0, 0.05, (NY // 8 + 1, NX // 8 + 1)).astype(np.float32)
    return fits.ImageHDU(data=data, header=header)


def _tiny_headerlet_bytes(name: str) -> bytes:
    primary = fits.PrimaryHDU()
    primary.header["HDRNAME"] = name
    primary.header["WCSNAME"] = "IDC_2731450pi"
    sipwcs = fits.ImageHDU(name="SIPWCS")
    sipwcs.header["CRVAL1"] = 137.86
    stream = io.BytesIO()
    fits.HDUList([primary, sipwcs]).writeto(stream)
    return stream.getvalue()


def _raw_hdrlet_extension(payload: bytes, extver: int, name: str) -> bytes:
    """An HDRLET extension built independently of the code under test."""
    header = fits.Header([("XTENSION", "HDRLET"), ("BITPIX", 8), ("NAXIS", 1),
                          ("NAXIS1", len(payload)), ("PCOUNT", 0), ("GCOUNT", 1),
                          ("HDRNAME", name), ("WCSNAME", "IDC_2731450pi"),
                          ("EXTNAME", "HDRLET"), ("EXTVER", extver)])
    return header.tostring(padding=True).encode() + payload + b"\0" * ((-len(payload)) % 2880)


def make_exposure(directory: Path, *, with_hdrlet: bool = True, sci_overrides=None) -> Path:
    """Write the synthetic 2-chip input exposure and return its path (read-only, like archives)."""
    rng = np.random.default_rng(42)
    primary = fits.Header()
    for key, value in (("NEXTEND", 0), ("FILENAME", INPUT_NAME), ("TELESCOP", "HST"),
                       ("INSTRUME", "WFC3"), ("DETECTOR", "UVIS"), ("ROOTNAME", ROOTNAME),
                       ("FILTER", "F555W"), ("EXPTIME", 170.0), ("UPWCSVER", "1.7.2"),
                       ("PYWCSVER", "5.3.4"), ("SIPNAME", f"{ROOTNAME}_2731450pi"),
                       ("DISTNAME", f"{ROOTNAME}_2731450pi-y7b1516qi-NOMODEL"),
                       ("NPOLFILE", "iref$y7b1516qi_npl.fits"), ("IDCTAB", "iref$2731450pi_idc.fits")):
        primary[key] = value
    hdus = [fits.PrimaryHDU(header=primary)]
    scale = 0.0396 / 3600.0
    for chip, extver in ((2, 1), (1, 2)):
        crval = (137.8644413309 + 0.0008 * (extver - 1), -64.90411819877 + 0.0005 * (extver - 1))
        header = _sci_header(chip, crval, _cd_matrix(scale, -120.3156))
        for key, value in (sci_overrides or {}).get(extver, {}).items():
            header[key] = value
        sci = rng.normal(20.0, 3.0, (NY, NX)).astype(np.float32)
        hdus.append(fits.ImageHDU(data=sci, header=header, name="SCI", ver=extver))
        hdus.append(fits.ImageHDU(data=np.sqrt(np.abs(sci)), name="ERR", ver=extver))
        dq = rng.integers(0, 2, (NY, NX)).astype(np.int16) * 4096
        hdus.append(fits.ImageHDU(data=dq, name="DQ", ver=extver))
    hdus.extend(_lookup_hdu(extver, rng) for extver in range(1, 5))
    hdus.append(fits.BinTableHDU.from_columns(
        [fits.Column(name="WCS_ID", format="40A", array=np.array(["OPUS", INPUT_WCSNAME])),
         fits.Column(name="CRVAL1", format="D", array=np.array([137.86, 137.87]))], name="WCSCORR"))
    hdus[0].header["NEXTEND"] = len(hdus) - 1 + int(with_hdrlet)
    path = Path(directory) / INPUT_NAME
    fits.HDUList(hdus).writeto(path)
    if with_hdrlet:
        payload = _tiny_headerlet_bytes(f"{ROOTNAME}_flt_OPUS")
        with open(path, "ab") as stream:
            stream.write(_raw_hdrlet_extension(payload, 1, f"{ROOTNAME}_flt_OPUS"))
    path.chmod(0o444)
    return path


def _input_chips(path: Path) -> dict[int, fits.Header]:
    with fits.open(path) as hdul:
        return {hdu.ver: hdu.header.copy() for hdu in hdul if hdu.name == "SCI"}


def fitted_chips(path: Path, *, shift_deg: float = 3e-5, rotation_deg: float = 0.01,
                 scale: float = 1.00001) -> list[ChipWCS]:
    """A plausible fit: every chip shifted, rotated and scaled (full-precision floats)."""
    chips = []
    theta = np.radians(rotation_deg)
    rotation = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    for extver, header in _input_chips(path).items():
        cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
        new_cd = rotation @ cd
        chips.append(ChipWCS(extver=extver,
                             crval=(header["CRVAL1"] + shift_deg, header["CRVAL2"] - shift_deg / 3),
                             crpix=(header["CRPIX1"], header["CRPIX2"]),
                             cd=(tuple(new_cd[0]), tuple(new_cd[1]))))
    return chips


SVM_RECORD = WCSFitRecord(fit_label="SVM", catalog="GAIAeDR3", fitgeom="rscale", nmatches=494,
                          rms_ra_mas=6.158036739936753, rms_dec_mas=5.190018012290563,
                          fit_rms_mas=5.45, x_shift_px=2.515, y_shift_px=-3.366,
                          rotation_deg=-0.0007, scale=0.9999, skew_deg=0.0, fit_quality=1)
REL_RECORD = WCSFitRecord(fit_label="REL", catalog=None, fitgeom="rscale", nmatches=0,
                          relgeom="rscale", relmatch=57, relrms_ra_mas=3.2, relrms_dec_mas=2.9,
                          relrefim="ib4606c5q", fit_quality=4)


def alignment_for(path: Path, record: WCSFitRecord | None, chips=None) -> ExposureAlignment:
    return ExposureAlignment(input_path=path, svm_copy_filename=COPY_NAME,
                             headerlet_filename=HLET_NAME,
                             chips=list(chips) if chips is not None else [],
                             record=record or WCSFitRecord())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _full_wcs(path: Path, extver: int, key: str = " ") -> WCS:
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(hdul["SCI", extver].header, fobj=hdul, key=key)


PIXELS = np.array([[1.0, 1.0], [NX, 1.0], [NX, NY], [1.0, NY], [17.3, 9.8],
                   [NX / 2 + 0.5, NY / 2 + 0.5]])


@pytest.fixture
def exposure(tmp_path):
    """The input exposure in its own directory, and a separate, empty output directory."""
    input_dir = tmp_path / "archive"
    input_dir.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = make_exposure(input_dir)
    before = (_sha256(path), path.stat().st_mtime_ns)
    yield path, out_dir
    assert (_sha256(path), path.stat().st_mtime_ns) == before, "the original input was changed"


@pytest.fixture
def fitted_copy(exposure):
    path, out_dir = exposure
    alignment = alignment_for(path, SVM_RECORD, fitted_chips(path))
    copy = write_svm_copy(path, out_dir / COPY_NAME, alignment)
    return path, copy, alignment


# --------------------------------------------------------------------------------------------------
# names and types


@pytest.mark.parametrize(("current", "label", "catalog", "expected"), [
    ("IDC_0461802ej-GSC240", "SVM", "GAIADR3", "IDC_0461802ej-FIT_SVM_GAIADR3"),
    ("IDC_2731450pi-FIT_REL_GAIAeDR3", "SVM", "GAIAeDR3", "IDC_2731450pi-FIT_SVM_GAIAeDR3"),
    ("IDC_4bb1536oj", "SVM", "GSC242", "IDC_4bb1536oj-FIT_SVM_GSC242"),
    ("IDC_2731450pi-HSC30", "SVM", "2MASS", "IDC_2731450pi-FIT_SVM_2MASS"),
    ("OPUS", "SVM", "GAIAeDR3", "OPUS-FIT_SVM_GAIAeDR3"),
    ("", "SVM", "GAIADR3", "FIT_SVM_GAIADR3"),
    ("   ", "SVM", "GAIADR3", "FIT_SVM_GAIADR3"),
    ("IDC_2731450pi-GSC240", "REL", None, "IDC_2731450pi-FIT_REL_NONE"),
    ("IDC_2731450pi-GSC240", "REL", "GAIAeDR3", "IDC_2731450pi-FIT_REL_GAIAeDR3"),
    ("IDC_2731450pi-GSC240", None, "GAIAeDR3", "IDC_2731450pi-GSC240"),
    ("IDC_2731450pi-GSC240", None, None, "IDC_2731450pi-GSC240"),
    ("IDC_2731450pi-GSC240", "SVM", None, "IDC_2731450pi-GSC240"),
    ("IDC_2731450pi-GSC240", "SVM", "", "IDC_2731450pi-GSC240"),
])
def test_wcsname_after_fit(current, label, catalog, expected):
    assert wcsname_after_fit(current, label, catalog) == expected


def test_wcsname_after_fit_rejects_unknown_label():
    with pytest.raises(ValueError, match="unknown fit label"):
        wcsname_after_fit("IDC_2731450pi", "XYZ", "GAIADR3")


@pytest.mark.parametrize(("wcsname", "expected"), [
    ("IDC_2731450pi-FIT_SVM_GAIAeDR3",
     "undistorted a posteriori solution aligned by visit to GAIAEDR3"),
    ("IDC_2731450pi-FIT_REL_GAIAeDR3",
     "undistorted a posteriori solution relatively aligned to GAIAEDR3"),
    ("IDC_0461802ej-FIT_IMG_GAIADR2",
     "undistorted a posteriori solution aligned image-by-image to GAIADR2"),
    ("IDC_0461802ej-FIT_EVM_GSC242",
     "undistorted a posteriori solution aligned by visit-exposures to GSC242"),
    ("IDC_2731450pi-HSC30", "undistorted a priori solution based on HSC30"),
    ("IDC_2731450pi-GSC240", "undistorted a priori solution based on GSC240"),
    ("IDC_2731450pi", "undistorted not aligned"),
    ("idc_2731450pi", "undistorted not aligned"),
    ("OPUS", "pipeline default not aligned"),
    ("OPUS-GSC240", "pipeline default a priori solution based on GSC240"),
    ("IDC_2731450pi-FIT_REL_NONE",
     "undistorted a posteriori solution relatively aligned, no reference catalog"),
    ("FIT_SVM_GAIADR3", "user-defined"),
    ("TWEAK", "user-defined"),
    ("", "user-defined"),
    ("IDC_2731450pi-FIT_XYZ_GAIADR3", "user-defined"),
    (None, "not aligned"),
])
def test_wcstype_from_wcsname(wcsname, expected):
    assert wcstype_from_wcsname(wcsname) == expected


@pytest.mark.parametrize("label", ["SVM", "REL"])
@pytest.mark.parametrize("catalog", ["GAIAeDR3", "GSC242", None])
def test_every_fitted_name_has_a_posteriori_type(label, catalog):
    name = wcsname_after_fit("IDC_2731450pi-GSC240", label, catalog)
    if label == "SVM" and catalog is None:
        assert name == "IDC_2731450pi-GSC240"
    else:
        assert wcstype_from_wcsname(name).startswith("undistorted a posteriori solution ")


def test_headerlet_name_matches_spec_example():
    name = headerlet_name("hst_9029_01_acs_wfc_f775w_j8ca01at_flc.fits",
                          "IDC_0461802ej-FIT_SVM_GAIAeDR3")
    assert name == "hst_9029_01_acs_wfc_f775w_j8ca01at_flc_IDC_0461802ej-FIT_SVM_GAIAeDR3-hlet.fits"


# --------------------------------------------------------------------------------------------------
# the fitted SVM copy


def test_fitted_copy_primary_wcs_is_the_fit(fitted_copy):
    source, copy, alignment = fitted_copy
    with fits.open(copy) as hdul:
        for chip in alignment.chips:
            header = hdul["SCI", chip.extver].header
            assert (header["CRVAL1"], header["CRVAL2"]) == chip.crval
            assert ((header["CD1_1"], header["CD1_2"]), (header["CD2_1"], header["CD2_2"])) == chip.cd
            assert (header["CRPIX1"], header["CRPIX2"]) == chip.crpix
            assert header["WCSNAME"] == "IDC_2731450pi-FIT_SVM_GAIAeDR3"
            assert header["WCSTYPE"] == ("undistorted a posteriori solution aligned by visit to "
                                         "GAIAEDR3")
            assert header["ORIENTAT"] == pytest.approx(orientat_from_cd(chip.cd), abs=1e-12)
            # ORIENTAT is the position angle of +Y: a step along +Y moves by (CD1_2, CD2_2).
            dra, ddec = header["CD1_2"], header["CD2_2"]
            assert np.degrees(np.arctan2(dra, ddec)) == pytest.approx(header["ORIENTAT"])


def test_fitted_copy_keeps_sip_and_lookup_tables(fitted_copy):
    source, copy, alignment = fitted_copy
    inputs = _input_chips(source)
    with fits.open(copy) as hdul:
        for extver, original in inputs.items():
            header = hdul["SCI", extver].header
            for key in [*SIP_A, *SIP_B, "A_ORDER", "B_ORDER", "CTYPE1", "CTYPE2",
                        "DP1.EXTVER", "DP2.EXTVER", "CPDIS1", "CPDIS2"]:
                assert header[key] == original[key], key
    # pixel -> focal plane (SIP + lookup tables about CRPIX) is the same; only the linear part moved
    for extver in inputs:
        new, old = _full_wcs(copy, extver), _full_wcs(source, extver)
        np.testing.assert_array_equal(new.pix2foc(PIXELS, 1), old.pix2foc(PIXELS, 1))
        np.testing.assert_array_equal(new.sip.a, old.sip.a)
        np.testing.assert_array_equal(new.cpdis1.data, old.cpdis1.data)
        shift = new.all_pix2world(PIXELS, 1) - old.all_pix2world(PIXELS, 1)
        assert np.all(np.abs(shift[:, 0]) > 1e-5)  # the fit moved every pixel


def test_old_wcs_archived_as_next_free_alternate(fitted_copy):
    source, copy, _ = fitted_copy
    inputs = _input_chips(source)
    with fits.open(copy) as hdul:
        for extver, original in inputs.items():
            header = hdul["SCI", extver].header
            # O (OPUS) and A existed: the next free letter is B.
            assert header["WCSNAMEB"] == INPUT_WCSNAME
            assert header["WCSTYPEB"] == "undistorted a priori solution based on GSC240"
            for key in ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
                        "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRDER1", "CRDER2", "RADESYS"):
                assert header[f"{key}B"] == original[key], key
            # pre-existing alternates are untouched, nothing else was added
            for key in ("WCSNAMEO", "CRVAL1O", "CTYPE1O", "WCSNAMEA", "CRVAL1A", "CD2_2A"):
                assert header[key] == original[key]
            assert "WCSNAMEC" not in header
    for extver in inputs:
        expected = _full_wcs(source, extver).all_pix2world(PIXELS, 1)
        archived = _full_wcs(copy, extver, key="B").all_pix2world(PIXELS, 1)
        np.testing.assert_array_equal(archived, expected)
        # and the other alternates still reproduce themselves
        for key in ("A", "O"):
            np.testing.assert_array_equal(_full_wcs(copy, extver, key=key).wcs_pix2world(PIXELS, 1),
                                          _full_wcs(source, extver, key=key).wcs_pix2world(PIXELS, 1))


def test_fit_record_keywords(fitted_copy):
    _, copy, _ = fitted_copy
    with fits.open(copy) as hdul:
        for extver in (1, 2):
            header = hdul["SCI", extver].header
            assert header["RMS_RA"] == SVM_RECORD.rms_ra_mas
            assert header["RMS_DEC"] == SVM_RECORD.rms_dec_mas
            assert header.comments["RMS_RA"] == "RMS in RA of WCS fit(mas)"
            assert header.comments["RMS_DEC"] == "RMS in Dec of WCS fit(mas)"
            assert header["CRDER1"] == pytest.approx(SVM_RECORD.rms_ra_mas / 3.6e6, rel=1e-15)
            assert header["CRDER2"] == pytest.approx(SVM_RECORD.rms_dec_mas / 3.6e6, rel=1e-15)
            assert header["NMATCHES"] == 494
            assert header["FITGEOM"] == "rscale"
            keys = list(header.keys())
            rel = ["RELGEOM", "RELMATCH", "RELRMS_R", "RELRMS_D", "RELREFIM"]
            assert keys[keys.index("FITGEOM") + 1: keys.index("FITGEOM") + 6] == rel
            assert [header[k] for k in rel] == ["N/A", 0, 0.0, 0.0, "N/A"]
            assert header["HDRNAME"] == (
                "hst_11665_06_wfc3_uvis_f555w_ib4606c6_flc_IDC_2731450pi-FIT_SVM_GAIAeDR3-hlet.fits")


def test_primary_keywords(fitted_copy):
    _, copy, _ = fitted_copy
    header = fits.getheader(copy, 0)
    assert header["HAPLEVEL"] == 1
    assert header.comments["HAPLEVEL"] == "Classification level of this product"
    assert header["IPPPSSOO"] == ROOTNAME
    assert header["FILENAME"] == COPY_NAME
    assert header["UPWCSVER"].startswith("hapsvm ")
    import astropy
    assert header["PYWCSVER"] == astropy.__version__


def test_s_region_is_the_closed_footprint(fitted_copy):
    _, copy, _ = fitted_copy
    wcs_by_chip = read_chip_wcs(copy)
    with fits.open(copy) as hdul:
        for extver, wcs in wcs_by_chip.items():
            text = hdul["SCI", extver].header["S_REGION"]
            assert text.startswith("POLYGON ICRS ")
            values = np.array(text.split()[2:], dtype=float).reshape(-1, 2)
            assert len(values) == 5
            np.testing.assert_array_equal(values[0], values[-1])
            corners = np.array([[1, 1], [1, NY], [NX, NY], [NX, 1]], dtype=float)
            np.testing.assert_allclose(values[:4], wcs.all_pix2world(corners, 1), rtol=0, atol=1e-12)
            np.testing.assert_allclose(values[:4], wcs.calc_footprint(), rtol=0, atol=1e-12)


def test_everything_else_is_unchanged(fitted_copy):
    source, copy, _ = fitted_copy
    changed_primary = {"HAPLEVEL", "IPPPSSOO", "FILENAME", "UPWCSVER", "PYWCSVER"}
    with fits.open(source) as old, fits.open(copy) as new:
        assert [(h.name, h.ver) for h in old] == [(h.name, h.ver) for h in new]
        for old_hdu, new_hdu in zip(old, new):
            if old_hdu.name == "HDRLET":
                assert new_hdu.data.tobytes() == old_hdu.data.tobytes()
            elif old_hdu.data is not None:
                assert new_hdu.data.dtype == old_hdu.data.dtype
                assert new_hdu.data.tobytes() == old_hdu.data.tobytes()
            for card in old_hdu.header.cards:
                if old_hdu.name == "PRIMARY" and card.keyword in changed_primary:
                    continue
                if old_hdu.name == "SCI" and card.keyword in {
                        "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "WCSNAME", "WCSTYPE",
                        "ORIENTAT", "CRDER1", "CRDER2"}:
                    continue
                assert new_hdu.header[card.keyword] == card.value, (old_hdu.name, card.keyword)
        assert new["WCSCORR"].data.tobytes() == old["WCSCORR"].data.tobytes()


def test_only_the_copy_appears_in_the_output_directory(fitted_copy):
    _, copy, _ = fitted_copy
    assert sorted(p.name for p in copy.parent.iterdir()) == [COPY_NAME]


def test_rewriting_the_copy_replaces_it(exposure):
    path, out_dir = exposure
    alignment = alignment_for(path, SVM_RECORD, fitted_chips(path))
    write_svm_copy(path, out_dir / COPY_NAME, alignment)
    write_svm_copy(path, out_dir / COPY_NAME, alignment)
    assert sorted(p.name for p in out_dir.iterdir()) == [COPY_NAME]


# --------------------------------------------------------------------------------------------------
# failures leave nothing behind


@pytest.mark.parametrize("break_chips", [
    lambda chips: [chips[0], chips[1].model_copy(update={"extver": 3})],
    lambda chips: chips[:1],
    lambda chips: [chips[0], chips[0]],
    lambda chips: [chips[0], chips[1].model_copy(update={"crpix": (10.0, 10.0)})],
], ids=["unknown-extver", "missing-chip", "duplicate-chip", "crpix-mismatch"])
def test_bad_chips_raise_and_leave_no_file(exposure, break_chips):
    path, out_dir = exposure
    alignment = alignment_for(path, SVM_RECORD, break_chips(fitted_chips(path)))
    with pytest.raises(ValueError):
        write_svm_copy(path, out_dir / COPY_NAME, alignment)
    assert list(out_dir.iterdir()) == []


def test_failure_while_writing_leaves_no_partial_file(exposure, monkeypatch):
    path, out_dir = exposure
    real_writeto = fits.HDUList.writeto

    def writeto_then_fail(self, fileobj, *args, **kwargs):
        real_writeto(self, fileobj, *args, **kwargs)
        assert os.path.getsize(fileobj) > 0
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", writeto_then_fail)
    alignment = alignment_for(path, SVM_RECORD, fitted_chips(path))
    with pytest.raises(OSError, match="disk full"):
        write_svm_copy(path, out_dir / COPY_NAME, alignment)
    assert list(out_dir.iterdir()) == []


def test_refuses_to_write_over_the_input(exposure):
    path, _ = exposure
    with pytest.raises(ValueError, match="original input"):
        write_svm_copy(path, path, alignment_for(path, SVM_RECORD, fitted_chips(path)))


# --------------------------------------------------------------------------------------------------
# kept, relative-only and no-reference records


def _wcs_cards(header: fits.Header) -> dict:
    skip = {"S_REGION"}
    return {k: v for k, v in header.items() if k not in skip}


@pytest.mark.parametrize("alignment_args", [
    dict(record=None, chips=None),
    dict(record=WCSFitRecord(fit_label=None, reason="no catalog gave a good fit"), chips="fit"),
    dict(record=SVM_RECORD, chips=None),
], ids=["default-record", "label-none-with-chips", "svm-without-chips"])
def test_kept_wcs(exposure, alignment_args):
    path, out_dir = exposure
    chips = fitted_chips(path) if alignment_args["chips"] == "fit" else None
    alignment = alignment_for(path, alignment_args["record"], chips)
    assert solution_kind(alignment) == "kept"
    copy = write_svm_copy(path, out_dir / COPY_NAME, alignment)
    inputs = _input_chips(path)
    with fits.open(copy) as hdul:
        for extver, original in inputs.items():
            header = hdul["SCI", extver].header
            assert _wcs_cards(header) == _wcs_cards(original)
            assert header["S_REGION"].startswith("POLYGON ICRS ")
        assert hdul[0].header["HAPLEVEL"] == 1
        assert hdul[0].header["FILENAME"] == COPY_NAME
        # the WCS was not updated by us: its provenance keywords stay
        assert hdul[0].header["UPWCSVER"] == "1.7.2"
    with pytest.raises(ValueError, match="no fitted solution"):
        write_headerlet(copy, out_dir / HLET_NAME, alignment)
    assert sorted(p.name for p in out_dir.iterdir()) == [COPY_NAME]


def test_relative_only_solution(exposure):
    path, out_dir = exposure
    chips = fitted_chips(path)
    alignment = alignment_for(path, REL_RECORD, chips)
    assert solution_kind(alignment) == "relative"
    copy = write_svm_copy(path, out_dir / COPY_NAME, alignment)
    with fits.open(copy) as hdul:
        for chip in chips:
            header = hdul["SCI", chip.extver].header
            assert header["WCSNAME"] == "IDC_2731450pi-FIT_REL_NONE"
            assert header["WCSTYPE"] == ("undistorted a posteriori solution relatively aligned, "
                                         "no reference catalog")
            assert (header["CRVAL1"], header["CRVAL2"]) == chip.crval
            assert header["WCSNAMEB"] == INPUT_WCSNAME
            assert [header[k] for k in ("RELGEOM", "RELMATCH", "RELRMS_R", "RELRMS_D", "RELREFIM")] == \
                ["rscale", 57, 3.2, 2.9, "ib4606c5q"]
            assert header["RMS_RA"] == -1.0 and header["RMS_DEC"] == -1.0
            # no absolute RMS: no coordinate error is claimed (the old one went with the archive)
            assert "CRDER1" not in header and "CRDER2" not in header
            assert header["CRDER1B"] == 9.02
            assert header["HDRNAME"].endswith("_IDC_2731450pi-FIT_REL_NONE-hlet.fits")
    hlet = write_headerlet(copy, out_dir / HLET_NAME, alignment)
    assert fits.getval(hlet, "WCSNAME") == "IDC_2731450pi-FIT_REL_NONE"
    assert fits.getval(hlet, "CATALOG") == "N/A"
    assert fits.getval(hlet, "FITMETH") == "REL"


def test_svm_record_without_catalog_keeps_the_wcs(exposure):
    path, out_dir = exposure
    record = WCSFitRecord(fit_label="SVM", catalog=None, nmatches=12, rms_ra_mas=4.0)
    alignment = alignment_for(path, record, fitted_chips(path))
    assert solution_kind(alignment) == "no_reference"
    copy = write_svm_copy(path, out_dir / COPY_NAME, alignment)
    inputs = _input_chips(path)
    with fits.open(copy) as hdul:
        for extver, original in inputs.items():
            header = hdul["SCI", extver].header
            for key in ("CRVAL1", "CRVAL2", "CD1_1", "CD2_2", "WCSNAME", "WCSTYPE", "CRDER1"):
                assert header[key] == original[key]
            assert "WCSNAMEB" not in header
            assert (header["RMS_RA"], header["RMS_DEC"], header["NMATCHES"], header["FITGEOM"]) == \
                (-1.0, -1.0, 0, "N/A")
            assert header["RELGEOM"] == "N/A" and header["RELMATCH"] == 0


def test_primary_already_archived_is_not_duplicated(tmp_path):
    # An input whose primary WCS already sits, identical, in alternate A under the same name.
    path = make_exposure(tmp_path, with_hdrlet=False)
    out = tmp_path / "out"
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.name == "SCI":
                for key in ("CRVAL1", "CRVAL2"):
                    hdu.header[f"{key}A"] = hdu.header[key]
                hdu.header["WCSNAME"] = "IDC_2731450pi"
        staged = tmp_path / "staged"
        staged.mkdir()
        hdul.writeto(staged / INPUT_NAME)
    source = staged / INPUT_NAME
    alignment = alignment_for(source, SVM_RECORD, fitted_chips(source))
    copy = write_svm_copy(source, out / COPY_NAME, alignment)
    with fits.open(copy) as hdul:
        header = hdul["SCI", 1].header
        assert header["WCSNAME"] == "IDC_2731450pi-FIT_SVM_GAIAeDR3"
        assert "WCSNAMEB" not in header
        assert header["WCSNAMEA"] == "IDC_2731450pi"


def test_same_name_different_wcs_is_archived_under_a_unique_name(tmp_path):
    path = make_exposure(tmp_path, with_hdrlet=False)
    staged = tmp_path / "staged"
    staged.mkdir()
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.name == "SCI":
                hdu.header["WCSNAME"] = "IDC_2731450pi"  # name of alternate A, different CRVAL
        hdul.writeto(staged / INPUT_NAME)
    source = staged / INPUT_NAME
    copy = write_svm_copy(source, tmp_path / "out" / COPY_NAME,
                          alignment_for(source, SVM_RECORD, fitted_chips(source)))
    header = fits.getheader(copy, ("SCI", 1))
    assert header["WCSNAMEA"] == "IDC_2731450pi"
    assert header["WCSNAMEB"] == "IDC_2731450pi_1"


# --------------------------------------------------------------------------------------------------
# headerlets and the reader


def test_headerlet_file(fitted_copy):
    source, copy, alignment = fitted_copy
    out_dir = copy.parent
    hlet = write_headerlet(copy, out_dir / HLET_NAME, alignment)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([COPY_NAME, HLET_NAME])
    copy_wcs = read_chip_wcs(copy)
    with fits.open(hlet) as headerlet:
        primary = headerlet[0].header
        hdrname = fits.getval(copy, "HDRNAME", ("SCI", 1))
        assert primary["HDRNAME"] == hdrname
        assert primary["DESTIM"] == ROOTNAME
        assert primary["WCSNAME"] == "IDC_2731450pi-FIT_SVM_GAIAeDR3"
        assert primary["SIPNAME"] == f"{ROOTNAME}_2731450pi"
        assert primary["DISTNAME"].startswith(f"{ROOTNAME}_2731450pi")
        assert (primary["RMS_RA"], primary["RMS_DEC"], primary["NMATCH"], primary["CATALOG"],
                primary["FITMETH"], primary["FIT_RMS"]) == (
            SVM_RECORD.rms_ra_mas, SVM_RECORD.rms_dec_mas, 494, "GAIAeDR3", "SVM", 5.45)
        history = [str(line) for line in primary["HISTORY"]]
        assert history[0] == "~~~~~ FIT PARAMETERS ~~~~~"
        assert history[1] == '     platescale :    0.0396 "/pixels'
        assert history[2] == "        x_shift :    2.5150 pixels"
        assert history[3] == "        y_shift :   -3.3660 pixels"
        assert history[4] == "       rotation :   -0.0007 degrees"
        assert history[5] == "          scale :    0.9999"
        assert history[6] == "           skew :    0.0000"
        sipwcs = [hdu for hdu in headerlet if hdu.name == "SIPWCS"]
        assert [hdu.ver for hdu in sipwcs] == [1, 2]
        assert sorted((h.name, h.ver) for h in headerlet if h.name == "WCSDVARR") == \
            [("WCSDVARR", v) for v in (1, 2, 3, 4)]
        for hdu in sipwcs:
            assert hdu.data is None
            assert (hdu.header["TG_ENAME"], hdu.header["TG_EVER"]) == ("SCI", hdu.ver)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(hdu.header, fobj=headerlet)
            np.testing.assert_array_equal(wcs.all_pix2world(PIXELS, 1),
                                          copy_wcs[hdu.ver].all_pix2world(PIXELS, 1))


def test_headerlet_is_attached_once(fitted_copy):
    _, copy, alignment = fitted_copy
    hlet = write_headerlet(copy, copy.parent / HLET_NAME, alignment)
    with fits.open(copy) as hdul:
        hdrlets = [hdu for hdu in hdul if hdu.name == "HDRLET"]
        assert [h.header["HDRNAME"] for h in hdrlets] == [
            f"{ROOTNAME}_flt_OPUS", fits.getval(hlet, "HDRNAME")]
        assert hdrlets[-1].ver == 2
        assert hdrlets[-1].data.tobytes() == hlet.read_bytes()
        assert hdul[0].header["NEXTEND"] == len(hdul) - 1
        embedded = fits.open(io.BytesIO(hdrlets[-1].data.tobytes()))
        assert embedded[0].header["WCSNAME"] == "IDC_2731450pi-FIT_SVM_GAIAeDR3"
        for key in ("XIND1", "XIND2"):
            assert embedded.fileinfo(int(key[-1]))["hdrLoc"] == hdrlets[-1].header[key]
    assert attach_headerlet(copy, hlet) is False
    with fits.open(copy) as hdul:
        assert sum(hdu.name == "HDRLET" for hdu in hdul) == 2
    # attaching did not disturb the solution the copy carries
    np.testing.assert_array_equal(read_chip_wcs(copy)[2].all_pix2world(PIXELS, 1),
                                  _full_wcs(copy, 2).all_pix2world(PIXELS, 1))


def test_read_chip_wcs(fitted_copy):
    source, copy, alignment = fitted_copy
    wcs_by_chip = read_chip_wcs(copy)
    assert sorted(wcs_by_chip) == [1, 2]
    for chip in alignment.chips:
        wcs = wcs_by_chip[chip.extver]
        assert wcs.pixel_shape == (NX, NY)
        assert wcs.sip is not None and wcs.cpdis1 is not None
        np.testing.assert_array_equal(wcs.wcs.crval, chip.crval)
        np.testing.assert_array_equal(wcs.wcs.cd, np.array(chip.cd))


def _without_date(data: bytes) -> bytes:
    """File bytes with the headerlet's creation time (DATE, to the second) blanked."""
    return re.sub(rb"DATE    = '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d'", b"DATE", data)


def test_copy_written_with_its_headerlet_in_one_go(exposure):
    """``write_svm_copy(headerlet_path=...)`` writes the files of write_svm_copy followed by
    write_headerlet (copy, headerlet, attached HDRLET), byte for byte; an already attached
    headerlet is not attached twice."""
    path, out_dir = exposure
    alignment = alignment_for(path, SVM_RECORD, fitted_chips(path))
    two_step, one_go = out_dir / "two", out_dir / "one"
    copy = write_svm_copy(path, two_step / COPY_NAME, alignment)
    write_headerlet(copy, two_step / HLET_NAME, alignment)
    write_svm_copy(path, one_go / COPY_NAME, alignment, headerlet_path=one_go / HLET_NAME)
    for name in (COPY_NAME, HLET_NAME):
        assert _without_date((one_go / name).read_bytes()) == \
            _without_date((two_step / name).read_bytes())
    # the copy of a copy: the same solution's headerlet is attached already
    again = out_dir / "again"
    write_svm_copy(one_go / COPY_NAME, again / COPY_NAME,
                   alignment_for(one_go / COPY_NAME, SVM_RECORD, fitted_chips(path)),
                   headerlet_path=again / HLET_NAME)
    with fits.open(again / COPY_NAME) as hdul:
        assert sum(hdu.name == "HDRLET" for hdu in hdul) == 2
        assert hdul[0].header["NEXTEND"] == len(hdul) - 1
    assert (again / HLET_NAME).is_file()


def test_copy_with_headerlet_needs_a_solution(exposure):
    path, out_dir = exposure
    with pytest.raises(ValueError, match="no fitted solution"):
        write_svm_copy(path, out_dir / COPY_NAME, alignment_for(path, None),
                       headerlet_path=out_dir / HLET_NAME)
    assert not (out_dir / COPY_NAME).exists() and not (out_dir / HLET_NAME).exists()
