"""Product names (spec §2.1) for the spec's own examples, and HAPLEVEL."""

from __future__ import annotations

import pytest

from hap_models.products import ExposureProduct, FilterProduct, GrismExposureProduct, TotalProduct
from hapcore.obset.filters import determine_filter_name, is_grism_filter

# (prop, obset, instrument, detector, filename, filter, filetype) -> expected names
CASES = [
    (("10374", "06", "acs", "wfc", "j97e06j1q_flt.fits", "f814w", "drz"), {
        "exposure_drz": "hst_10374_06_acs_wfc_f814w_j97e06j1_drz.fits",
        "exposure_copy": "hst_10374_06_acs_wfc_f814w_j97e06j1_flt.fits",
        "filter_drz": "hst_10374_06_acs_wfc_f814w_j97e06_drz.fits",
        "total_drz": "hst_10374_06_acs_wfc_total_j97e06_drz.fits",
        "total_point": "hst_10374_06_acs_wfc_total_j97e06_point-cat.ecsv",
        "manifest": "acs_97e_06_manifest.txt",
    }),
    (("12557", "07", "wfc3", "uvis", "ibqk07clq_flc.fits", "f555w", "drc"), {
        "total_segment": "hst_12557_07_wfc3_uvis_total_ibqk07_segment-cat.ecsv",
        "exposure_copy": "hst_12557_07_wfc3_uvis_f555w_ibqk07cl_flc.fits",
        "exposure_hlet": "hst_12557_07_wfc3_uvis_f555w_ibqk07cl_hlet.fits",
        "filter_drz": "hst_12557_07_wfc3_uvis_f555w_ibqk07_drc.fits",
        "manifest": "wfc3_bqk_07_manifest.txt",
    }),
    (("12557", "07", "wfc3", "ir", "ibqk07chq_flt.fits", "f160w", "drz"), {
        "total_drz": "hst_12557_07_wfc3_ir_total_ibqk07_drz.fits",
        "exposure_trl": "hst_12557_07_wfc3_ir_f160w_ibqk07ch_trl.txt",
    }),
    (("15843", "1U", "ACS", "WFC", "je281usgq_flc.fits", "f606w", "drc"), {
        "total_drz": "hst_15843_1u_acs_wfc_total_je281u_drc.fits",
        "filter_point": "hst_15843_1u_acs_wfc_f606w_je281u_point-cat.ecsv",
        "exposure_copy": "hst_15843_1u_acs_wfc_f606w_je281usg_flc.fits",
        "manifest": "acs_e28_1u_manifest.txt",
    }),
    (("11665", "06", "wfc3", "uvis", "ib4606c5q_flc.fits", "f555w", "drc"), {
        "manifest": "wfc3_b46_06_manifest.txt",
        "total_trl": "hst_11665_06_wfc3_uvis_total_ib4606_trl.txt",
        "filter_ref": "hst_11665_06_wfc3_uvis_f555w_ib4606_ref_cat.ecsv",
    }),
    (("9029", "01", "acs", "wfc", "j8ca01atq_flc.fits", "f775w", "drc"), {
        "exposure_copy": "hst_9029_01_acs_wfc_f775w_j8ca01at_flc.fits",
        "total_drz": "hst_9029_01_acs_wfc_total_j8ca01_drc.fits",
    }),
    (("10370", "02", "acs", "hrc", "j8ep02a1q_flt.fits", "f606w-pol60v", "drz"), {
        "filter_drz": "hst_10370_02_acs_hrc_f606w-pol60v_j8ep02_drz.fits",
        "exposure_drz": "hst_10370_02_acs_hrc_f606w-pol60v_j8ep02a1_drz.fits",
    }),
    (("10370", "07", "acs", "sbc", "j8ep07v3q_flt.fits", "f140lp", "drz"), {
        "filter_segment": "hst_10370_07_acs_sbc_f140lp_j8ep07_segment-cat.ecsv",
        "manifest": "acs_8ep_07_manifest.txt",
    }),
]


def _names(args):
    prop, obset, instr, det, filename, filt, ftype = args
    total = TotalProduct(prop, obset, instr, det, filename, ftype, 20)
    fdp = FilterProduct(prop, obset, instr, det, filename, filt, ftype, 20)
    edp = ExposureProduct(prop, obset, instr, det, filename, filt, ftype, 20)
    return {
        "exposure_drz": edp.drizzle_filename, "exposure_copy": edp.full_filename,
        "exposure_hlet": edp.headerlet_filename, "exposure_trl": edp.trl_filename,
        "filter_drz": fdp.drizzle_filename, "filter_point": fdp.point_cat_filename,
        "filter_segment": fdp.segment_cat_filename, "filter_ref": fdp.refname,
        "total_drz": total.drizzle_filename, "total_point": total.point_cat_filename,
        "total_segment": total.segment_cat_filename, "total_trl": total.trl_filename,
        "manifest": total.manifest_name,
    }


@pytest.mark.parametrize("args, expected", CASES, ids=[c[0][4][:6] + "-" + c[0][5] for c in CASES])
def test_product_names_match_drizzlepac(args, expected):
    names = _names(args)
    for key, value in expected.items():
        assert names[key] == value, key


def test_haplevel_and_padding():
    edp = ExposureProduct("9029", "01", "acs", "wfc", "j8ca01atq_flc.fits", "f775w", "drc", 20)
    total = TotalProduct("9029", "01", "acs", "wfc", "j8ca01atq_flc.fits", "drc", 20)
    assert (edp.haplevel, total.haplevel) == (1, 2)
    assert total.prop_id_padded == "09029" and total.prop_id == "9029"
    assert edp.exposure_name == "j8ca01at" and total.exposure_name == "j8ca01"


def test_grism_exposure_is_never_drizzled():
    g = GrismExposureProduct("10374", "06", "acs", "wfc", "j97e06j3q_flt.fits", "g800l", "drz", 20)
    assert g.full_filename == "hst_10374_06_acs_wfc_g800l_j97e06j3_flt.fits"
    with pytest.raises(AttributeError):
        _ = g.drizzle_filename


def test_products_round_trip_through_json():
    total = TotalProduct("10374", "06", "acs", "wfc", "j97e06j1q_flt.fits", "drz", 20)
    fdp = FilterProduct("10374", "06", "acs", "wfc", "j97e06j1q_flt.fits", "f814w", "drz", 20)
    fdp.add_member(ExposureProduct("10374", "06", "acs", "wfc", "j97e06j1q_flt.fits", "f814w", "drz", 20))
    total.add_product(fdp)
    again = TotalProduct.model_validate_json(total.model_dump_json())
    assert again.fdp_list[0].edp_list[0].drizzle_filename == fdp.edp_list[0].drizzle_filename


def test_bad_filetype_is_rejected():
    with pytest.raises(ValueError, match="filetype must be 'drz' or 'drc'"):
        TotalProduct("10374", "06", "acs", "wfc", "j97e06j1q_flt.fits", "fits", 20)


@pytest.mark.parametrize("raw, expected", [
    ("CLEAR1L;F814W", "f814w"), ("F606W;POL60V", "f606w-pol60v"), ("POL0UV;F435W", "f435w-pol0uv"),
    ("G800L;F814W", "g800l-f814w"), ("F140LP;N/A;F140LP", "f140lp"), ("CLEAR1L;CLEAR2L", "clear"),
    ("F160W", "f160w"), ("F814W;CLEAR2L", "f814w"),
])
def test_filter_name_normalisation(raw, expected):
    assert determine_filter_name(raw) == expected


@pytest.mark.parametrize("name, grism", [
    ("g800l", True), ("g800l-f814w", True), ("pr110l", True), ("g141", True),
    ("f814w", False), ("f658n", False), ("f606w-pol60v", False), ("fr656n", False),
])
def test_grism_classification(name, grism):
    assert is_grism_filter(name) is grism
