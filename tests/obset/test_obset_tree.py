"""Viability (§1.3), sort (§1.5), tree and products (§1.6) from header-only exposures."""

from __future__ import annotations

import pytest

from fitsfactory import poller_line, write_exposure
from hap_models.errors import NoViableDataError
from hapcore.obset.tree import interpret_obset_input, parse_obset_tree
from hapcore.obset.viability import rejection_reason


def _poller(tmp_path, names, eight_field=None):
    lines = eight_field or names
    path = tmp_path / "wfc3_b46_06_input.out"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("keywords, instrument, detector, reason", [
    (dict(OBSTYPE="SPECTROSCOPIC"), "wfc3", "uvis", "OBSTYPE is SPECTROSCOPIC"),
    (dict(DRIZCORR="OMIT"), "wfc3", "uvis", "DRIZCORR is OMIT"),
    (dict(MTFLAG="T"), "wfc3", "uvis", "moving target"),
    (dict(SCAN_TYP="C"), "wfc3", "ir", "spatial scan"),
    (dict(TARGNAME="TUNGSTEN"), "acs", "wfc", "calibration target"),
    (dict(EXPTIME=0.0), "wfc3", "uvis", "zero exposure time"),
    (dict(CHINJECT="LINE10"), "wfc3", "uvis", "charge injection"),
    (dict(FILTER1="BLOCK1", FILTER2="CLEAR2L"), "acs", "sbc", "internal BLOCK filter"),
])
def test_rejection_reasons(keywords, instrument, detector, reason):
    header = dict(OBSTYPE="IMAGING", DRIZCORR="PERFORM", MTFLAG="", SCAN_TYP="N", TARGNAME="M31",
                  EXPTIME=100.0, CHINJECT="NONE", FILTER="F606W", FILTER1="F606W", FILTER2="CLEAR2L")
    header.update(keywords)
    assert reason in rejection_reason(header, instrument=instrument, detector=detector)


def test_grism_with_exposure_time_is_accepted_even_if_spectroscopic():
    header = dict(OBSTYPE="SPECTROSCOPIC", EXPTIME=45.0, FILTER1="G800L", FILTER2="CLEAR2L")
    assert rejection_reason(header, instrument="acs", detector="wfc") is None
    header["EXPTIME"] = 0.0
    assert rejection_reason(header, instrument="acs", detector="wfc") is not None


def test_all_zero_sci_is_rejected(tmp_path):
    write_exposure(tmp_path, "ib4606c5q_flc.fits", zero_data=True, nsci=2)
    write_exposure(tmp_path, "ib4606c6q_flc.fits", nsci=2)
    tree = interpret_obset_input(_poller(tmp_path, ["ib4606c5q_flc.fits", "ib4606c6q_flc.fits"]))
    assert [r.reason for r in tree.rejected] == ["SCI data all zeros"]
    assert [e.filename for e in tree.tree["uvis"]["f606w"]] == ["ib4606c6q_flc.fits"]


def test_sort_is_exptime_then_photflam_descending(tmp_path):
    specs = [("ib4606c1q_flc.fits", 300.0, 1e-19), ("ib4606c2q_flc.fits", 100.0, 1e-19),
             ("ib4606c3q_flc.fits", 100.0, 5e-19), ("ib4606c4q_flc.fits", 200.0, 1e-19)]
    for name, exptime, photflam in specs:
        write_exposure(tmp_path, name, exptime=exptime, photflam=photflam)
    tree = interpret_obset_input(_poller(tmp_path, [s[0] for s in specs]))
    assert [e.filename for e in tree.tree["uvis"]["f606w"]] == [
        "ib4606c3q_flc.fits", "ib4606c2q_flc.fits", "ib4606c4q_flc.fits", "ib4606c1q_flc.fits"]


def test_two_detectors_flc_selection_singletons_and_crclean(tmp_path):
    write_exposure(tmp_path, "ib4606c1q_flc.fits", filters="F606W", exptime=500)
    write_exposure(tmp_path, "ib4606c2q_flc.fits", filters="F606W", exptime=500)
    write_exposure(tmp_path, "ib4606c3q_flt.fits", filters="F606W", exptime=500)   # beside FLCs
    write_exposure(tmp_path, "ib4606c4q_flc.fits", filters="F814W", exptime=400)   # singleton
    write_exposure(tmp_path, "ib4606c5q_flt.fits", detector="ir", filters="F160W", exptime=250,
                   SCAN_TYP="N")                                                   # IR singleton
    names = ["ib4606c1q_flc.fits", "ib4606c2q_flc.fits", "ib4606c3q_flt.fits",
             "ib4606c4q_flc.fits", "ib4606c5q_flt.fits"]
    tree = interpret_obset_input(_poller(tmp_path, names))
    assert tree.detectors == ["ir", "uvis"]             # sorted by exposure time first
    assert tree.group_filetypes == {"ir": {"f160w": "drz"}, "uvis": {"f814w": "drc", "f606w": "drc"}}
    assert any("ib4606c3q_flt.fits: FLT file ignored" in w for w in tree.warnings)

    totals = parse_obset_tree(tree)
    by_det = {t.detector: t for t in totals}
    uvis, ir = by_det["uvis"], by_det["ir"]
    assert uvis.drizzle_filename == "hst_11665_06_wfc3_uvis_total_ib4606_drc.fits"
    assert [f.filters for f in uvis.fdp_list] == ["f814w", "f606w"]
    f814w, f606w = uvis.fdp_list
    assert [e.filename for e in f606w.edp_list] == ["ib4606c1q_flc.fits", "ib4606c2q_flc.fits"]
    assert f814w.edp_list[0].is_singleton and f814w.edp_list[0].crclean
    assert not f606w.edp_list[0].is_singleton and not f606w.edp_list[0].crclean
    assert ir.edp_list[0].is_singleton and not ir.edp_list[0].crclean   # never crclean on IR
    assert len(uvis.edp_list) == 3 and ir.drizzle_filename.endswith("_total_ib4606_drz.fits")


def test_grism_exposures_go_to_the_total_grism_list(tmp_path):
    write_exposure(tmp_path, "j97e06j1q_flt.fits", detector="wfc", filters="CLEAR1L;F814W", exptime=1.5)
    write_exposure(tmp_path, "j97e06j3q_flt.fits", detector="wfc", filters="G800L;CLEAR2L",
                   exptime=45.0, OBSTYPE="SPECTROSCOPIC")
    lines = [poller_line("j97e06j1q_flt.fits", proposal="10374", exptime=1.5,
                         filters="CLEAR1L;F814W", detector="WFC"),
             poller_line("j97e06j3q_flt.fits", proposal="10374", exptime=45.0,
                         filters="G800L;CLEAR2L", detector="WFC")]
    tree = interpret_obset_input(_poller(tmp_path, None, lines))
    (total,) = parse_obset_tree(tree)
    assert [f.filters for f in total.fdp_list] == ["f814w"]
    assert [g.filters for g in total.grism_edp_list] == ["g800l"]
    assert total.grism_edp_list[0].full_filename == "hst_10374_06_acs_wfc_g800l_j97e06j3_flt.fits"
    assert tree.manifest_name == "acs_97e_06_manifest.txt"


def test_grism_only_visit_is_no_viable_data(tmp_path):
    write_exposure(tmp_path, "j97e06j3q_flt.fits", detector="wfc", filters="G800L;CLEAR2L", exptime=45.0)
    tree = interpret_obset_input(_poller(tmp_path, ["j97e06j3q_flt.fits"]))
    with pytest.raises(NoViableDataError, match="only grism/prism exposures"):
        parse_obset_tree(tree)


def test_one_field_fields_come_from_headers(tmp_path):
    write_exposure(tmp_path, "j8ep07v3q_flt.fits", detector="sbc", filters="F140LP;N/A",
                   proposid=9999, exptime=600.0)
    tree = interpret_obset_input(_poller(tmp_path, ["j8ep07v3q_flt.fits"]))
    rec = tree.tree["sbc"]["f140lp"][0].record
    assert (rec.proposal_id, rec.program_id, rec.obset_id, rec.exptime) == ("9999", "8EP", "07", 600.0)
    assert tree.tree["sbc"]["f140lp"][0].info == "9999 07 acs sbc empty_aperture j8ep07v3q f140lp drz"
