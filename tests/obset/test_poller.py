"""Poller parsing (spec §1.2): the three line forms, lookup order, and one-line errors."""

from __future__ import annotations

import logging

import pytest

from fitsfactory import poller_line, write_exposure
from hap_models.errors import HapInputError, NoViableDataError
from hapcore.obset.tree import interpret_obset_input
from hapcore.obset.poller import locate_exposure, read_poller_lines


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_eight_field_line_is_read_field_by_field(tmp_path):
    poller = _write(tmp_path / "p.out", [
        "# a comment", "",
        "j97e06j1q_flt.fits,10374,97E,06,1.5,CLEAR1L;F814W,WFC,/ifs/x/j97e06j1q_flt.fits",
    ])
    (line,) = read_poller_lines(poller)
    assert line.line_number == 3
    assert (line.filename, line.proposal_id, line.program_id, line.obset_id) == (
        "j97e06j1q_flt.fits", "10374", "97E", "06")
    assert line.exptime == 1.5 and line.filters == "CLEAR1L;F814W" and line.detector == "WFC"
    assert line.pathname == "/ifs/x/j97e06j1q_flt.fits" and line.aperture == "empty_aperture"


def test_one_and_two_field_lines(tmp_path):
    poller = _write(tmp_path / "p.out", ["u2as0101t_flt.fits,PC1-FIX;F160BN15", "ib6807z1q_flt.fits"])
    two, one = read_poller_lines(poller)
    assert two.aperture == "PC1-FIX;F160BN15" and two.proposal_id is None
    assert one.filename == "ib6807z1q_flt.fits" and one.aperture == "empty_aperture"


@pytest.mark.parametrize("line, message", [
    ("a,b,c", r"p\.out:1: expected 1, 2 or 8 comma-separated fields, found 3"),
    ("a,b,c,d,e,f,g,h,i", r"p\.out:1: expected 1, 2 or 8 comma-separated fields, found 9"),
    ("ib4606c5q_flc.fits,11665,B46,06,fast,F606W,UVIS,/x", r"p\.out:1: field 'exptime': 'fast' is not a number"),
    ("ib4606c5q_flc.fits,11A65,B46,06,1.0,F606W,UVIS,/x", r"p\.out:1: field 'proposal_id'"),
    ("ib4606c5q_flc.fits,11665,B46,006,1.0,F606W,UVIS,/x", r"p\.out:1: field 'obset_id'"),
    ("ib4606c5q_raw.fits,11665,B46,06,1.0,F606W,UVIS,/x", r"p\.out:1: field 'filename'"),
    ("ib4606c5q_flc.fits,11665,B46,06,-3,F606W,UVIS,/x", r"p\.out:1: field 'exptime'"),
    ("ib4606c5q_flc.fits,has blank", r"p\.out:1: field 'aperture'"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    poller = _write(tmp_path / "p.out", [line])
    with pytest.raises(HapInputError, match=message):
        read_poller_lines(poller)


def test_empty_poller_is_an_input_error(tmp_path):
    poller = tmp_path / "p.out"
    poller.write_text("")
    with pytest.raises(HapInputError, match=r"p\.out: poller file lists no exposures"):
        read_poller_lines(poller)


def test_lookup_order_beside_poller_then_cwd_then_pathname(tmp_path, monkeypatch):
    beside, cwd, archive = (tmp_path / d for d in ("beside", "cwd", "archive"))
    for d in (beside, cwd, archive):
        d.mkdir()
    name = "ib4606c5q_flc.fits"
    poller = _write(beside / "p.out", [poller_line(name, pathname=str(archive))])
    (line,) = read_poller_lines(poller)
    write_exposure(archive, name)
    assert locate_exposure(line, cwd=cwd) == (archive / name).resolve()
    write_exposure(cwd, name)
    assert locate_exposure(line, cwd=cwd) == (cwd / name).resolve()
    write_exposure(beside, name)
    assert locate_exposure(line, cwd=cwd) == (beside / name).resolve()


def test_missing_file_lists_where_it_looked(tmp_path):
    poller = _write(tmp_path / "p.out", [poller_line("ib4606c5q_flc.fits")])
    with pytest.raises(HapInputError, match=r"p\.out:1: exposure 'ib4606c5q_flc.fits' not found \(looked in"):
        interpret_obset_input(poller, cwd=tmp_path)


def test_not_fits(tmp_path):
    (tmp_path / "ib4606c5q_flc.fits").write_text("this is not FITS\n" * 200)
    poller = _write(tmp_path / "p.out", [poller_line("ib4606c5q_flc.fits")])
    with pytest.raises(HapInputError, match=r"p\.out:1: ib4606c5q_flc.fits is not a readable FITS file"):
        interpret_obset_input(poller)


@pytest.mark.parametrize("keyword", ["INSTRUME", "DETECTOR", "EXPTIME"])
def test_missing_required_keyword(tmp_path, keyword):
    write_exposure(tmp_path, "ib4606c5q_flc.fits", drop=(keyword,))
    poller = _write(tmp_path / "p.out", ["ib4606c5q_flc.fits"])
    with pytest.raises(HapInputError, match=rf"ib4606c5q_flc.fits: primary header lacks keyword {keyword}"):
        interpret_obset_input(poller)


def test_unknown_detector_and_instrument(tmp_path):
    write_exposure(tmp_path, "ib4606c5q_flc.fits", DETECTOR="XYZ")
    poller = _write(tmp_path / "p.out", ["ib4606c5q_flc.fits"])
    with pytest.raises(HapInputError, match=r"p\.out:1: .*unknown detector 'XYZ' for WFC3"):
        interpret_obset_input(poller)
    write_exposure(tmp_path, "ob4606c5q_flt.fits")
    poller = _write(tmp_path / "p.out", ["ob4606c5q_flt.fits"])
    with pytest.raises(HapInputError, match=r"instrument STIS .* is not supported"):
        interpret_obset_input(poller)
    write_exposure(tmp_path, "ib4606c7q_flc.fits", INSTRUME="NICMOS")
    poller = _write(tmp_path / "p.out", ["ib4606c7q_flc.fits"])
    with pytest.raises(HapInputError, match=r"INSTRUME = 'NICMOS' is not a supported instrument"):
        interpret_obset_input(poller)


def test_same_exposure_twice(tmp_path):
    write_exposure(tmp_path, "ib4606c5q_flc.fits")
    poller = _write(tmp_path / "p.out", ["ib4606c5q_flc.fits", "# again", "ib4606c5q_flc.fits"])
    with pytest.raises(HapInputError, match=r"p\.out:3: exposure ib4606c5q is listed twice \(first at line 1\)"):
        interpret_obset_input(poller)


def test_two_visits_in_one_poller(tmp_path):
    write_exposure(tmp_path, "ib4606c5q_flc.fits")
    write_exposure(tmp_path, "ib4607c6q_flc.fits")
    poller = _write(tmp_path / "p.out", ["ib4606c5q_flc.fits", "ib4607c6q_flc.fits"])
    with pytest.raises(HapInputError, match=r"p\.out:2: exposure ib4607c6q belongs to visit ib4607"):
        interpret_obset_input(poller)


def test_poller_field_must_match_rootname(tmp_path):
    write_exposure(tmp_path, "ib4606c5q_flc.fits")
    line = "ib4606c5q_flc.fits,11665,B47,06,100.0,F606W,UVIS,/x"
    poller = _write(tmp_path / "p.out", [line])
    with pytest.raises(HapInputError, match=r"field 'program_id': 'B47' does not match"):
        interpret_obset_input(poller)


def test_every_exposure_rejected_is_no_viable_data(tmp_path, caplog):
    write_exposure(tmp_path, "ib4606c5q_flc.fits", TARGNAME="DARK")
    write_exposure(tmp_path, "ib4606c6q_flc.fits", exptime=0.0)
    poller = _write(tmp_path / "p.out", ["ib4606c5q_flc.fits", "ib4606c6q_flc.fits"])
    with caplog.at_level(logging.WARNING, logger="hapsvm"):
        with pytest.raises(NoViableDataError, match="no viable exposures: all 2 were rejected"):
            interpret_obset_input(poller)
    assert "calibration target (TARGNAME = DARK)" in caplog.text
    assert "zero exposure time" in caplog.text


def test_inputs_are_never_modified(tmp_path):
    import hashlib

    paths = [write_exposure(tmp_path, f"ib4606c{i}q_flc.fits") for i in range(3)]
    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}
    poller = _write(tmp_path / "p.out", [p.name for p in paths])
    interpret_obset_input(poller)
    after = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}
    assert before == after
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([p.name for p in paths] + ["p.out"])
