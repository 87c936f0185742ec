"""Entry points end to end on the per-visit Prefect flow: exit codes, messages, log, manifest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fitsfactory import poller_line, write_exposure
from flows.runsinglehap import perform
from flows.svm import run_hap_processing
from hapcore.manifest import read_manifest

pytestmark = pytest.mark.usefixtures("prefect_backend")

POLLER = "wfc3_b46_06_input.out"


def _visit(tmp_path, n=2):
    visit = tmp_path / "visit"
    visit.mkdir()
    names = []
    for i in range(n):
        name = f"ib4606c{i}q_flc.fits"
        write_exposure(visit, name, exptime=300.0, expstart=58000.0 + i * 0.01)
        names.append(name)
    poller = visit / POLLER
    poller.write_text("\n".join(poller_line(n, exptime=300.0) for n in names) + "\n")
    return poller


def test_successful_run_writes_log_manifest_and_trailer(tmp_path):
    poller = _visit(tmp_path)
    out = tmp_path / "out"
    code = run_hap_processing(str(poller), output_dir=out)
    assert code == 0
    log = (out / "wfc3_b46_06_input.log").read_text()
    assert "2 exposure(s) of visit ib4606 accepted, 0 rejected" in log
    assert "return value: 0" in log
    assert "Finished in state Completed" in log            # Prefect's own lines are in the file too
    manifest = read_manifest(out / "wfc3_b46_06_manifest.txt")
    base = "hst_11665_06_wfc3_uvis_"
    expected_in_order = [
        f"{base}f606w_ib4606_drc.fits",
        f"{base}f606w_ib4606c0_drc.fits", f"{base}f606w_ib4606c0_flc.fits",
        f"{base}f606w_ib4606c1_drc.fits", f"{base}f606w_ib4606c1_flc.fits",
        f"{base}total_ib4606_drc.fits",
        f"{base}f606w_ib4606_point-cat.ecsv", f"{base}f606w_ib4606_segment-cat.ecsv",
        f"{base}total_ib4606_point-cat.ecsv", f"{base}total_ib4606_segment-cat.ecsv",
        f"{base}total_ib4606_trl.txt",
    ]
    assert [m for m in manifest if m in expected_in_order] == expected_in_order
    assert all((out / name).exists() for name in manifest)
    trailer = (out / manifest[-1]).read_text()
    assert "accepted" in trailer
    assert not list(out.glob("*.part")) and not list(out.glob(".*.tmp"))
    assert (out / ".hapsvm-cache").is_dir()
    # inputs untouched, nothing written beside them
    assert sorted(p.name for p in poller.parent.iterdir()) == sorted(
        [POLLER, "ib4606c0q_flc.fits", "ib4606c1q_flc.fits"])


def _bad(tmp_path, case):
    visit = tmp_path / "visit"
    visit.mkdir()
    poller = visit / POLLER
    good = "ib4606c1q_flc.fits"
    if case == "empty":
        poller.write_text("")
    elif case == "three-fields":
        poller.write_text("ib4606c1q_flc.fits,11665,B46\n")
    elif case == "nine-fields":
        poller.write_text(poller_line(good) + ",extra\n")
    elif case == "missing-file":
        poller.write_text(poller_line(good) + "\n")
    elif case == "not-fits":
        (visit / good).write_bytes(b"\x00garbage" * 500)
        poller.write_text(good + "\n")
    elif case == "no-detector":
        write_exposure(visit, good, drop=("DETECTOR",))
        poller.write_text(good + "\n")
    elif case == "unknown-detector":
        write_exposure(visit, good, DETECTOR="NUV")
        poller.write_text(good + "\n")
    elif case == "twice":
        write_exposure(visit, good)
        poller.write_text(f"{good}\n{good}\n")
    elif case == "two-visits":
        write_exposure(visit, good)
        write_exposure(visit, "ib4699c1q_flc.fits")
        poller.write_text(f"{good}\nib4699c1q_flc.fits\n")
    elif case == "all-rejected":
        write_exposure(visit, good, TARGNAME="BIAS")
        poller.write_text(good + "\n")
    return poller


BAD_CASES = [
    ("empty", 1, "poller file lists no exposures"),
    ("three-fields", 1, ":1: expected 1, 2 or 8 comma-separated fields, found 3"),
    ("nine-fields", 1, ":1: expected 1, 2 or 8 comma-separated fields, found 9"),
    ("missing-file", 1, ":1: exposure 'ib4606c1q_flc.fits' not found"),
    ("not-fits", 1, "ib4606c1q_flc.fits is not a readable FITS file"),
    ("no-detector", 1, "ib4606c1q_flc.fits: primary header lacks keyword DETECTOR"),
    ("unknown-detector", 1, "unknown detector 'NUV' for WFC3"),
    ("twice", 1, ":2: exposure ib4606c1q is listed twice (first at line 1)"),
    ("two-visits", 1, ":2: exposure ib4699c1q belongs to visit ib4699"),
    ("all-rejected", 65, "no viable exposures: all 1 were rejected"),
]


@pytest.mark.parametrize("case, code, message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_gives_one_line_error_and_exit_code(tmp_path, case, code, message):
    poller = _bad(tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    (out / "wfc3_b46_06_manifest.txt").write_text("earlier-run-product.fits\n")
    assert run_hap_processing(poller, output_dir=out) == code
    log = (out / "wfc3_b46_06_input.log").read_text()
    error_lines = [ln for ln in log.splitlines() if " ERROR " in ln and message in ln]
    assert error_lines, log
    assert "Traceback" not in log
    assert f"return value: {code}" in log
    # a failed run leaves an earlier manifest as it was, and no temporary files
    assert (out / "wfc3_b46_06_manifest.txt").read_text() == "earlier-run-product.fits\n"
    visible = sorted(p.name for p in out.iterdir() if p.name != ".hapsvm-cache")
    assert visible == ["wfc3_b46_06_input.log", "wfc3_b46_06_manifest.txt"]


def test_missing_refcat_is_an_input_error(tmp_path):
    poller = _visit(tmp_path, n=1)
    code = run_hap_processing(poller, output_dir=tmp_path / "o", refcat=tmp_path / "nope.ecsv")
    assert code == 1
    assert "nope.ecsv (from --refcat): file not found" in (tmp_path / "o" / "wfc3_b46_06_input.log").read_text()


def test_perform_accepts_level_names_and_debug(tmp_path):
    poller = _visit(tmp_path, n=1)
    out = tmp_path / "o"
    assert perform(str(poller), debug=True, log_level="DEBUG", output_dir=out) == 0
    log = (out / "wfc3_b46_06_input.log").read_text()
    assert " DEBUG " in log and "product hst_11665_06_wfc3_uvis_f606w_ib4606c0" in log
    assert perform(str(poller), log_level="nonsense", output_dir=out) == 0   # unknown -> INFO
    assert " DEBUG " not in (out / "wfc3_b46_06_input.log").read_text()


def _cli_env(prefect_backend):
    env = dict(os.environ)
    env["PREFECT_API_URL"] = prefect_backend     # reuse the test server: no 10 s temporary server
    return env


@pytest.mark.parametrize("command", [["runsinglehap"], [sys.executable, "-m", "flows.svm"]],
                         ids=["runsinglehap", "python-m-flows.svm"])
def test_command_line_exit_codes(tmp_path, prefect_backend, command):
    if command == ["runsinglehap"]:
        command = [str(Path(sys.executable).with_name("runsinglehap"))]
    bad = _bad(tmp_path, "three-fields")
    run = subprocess.run(command + ["-o", str(tmp_path / "o1"), str(bad)], capture_output=True,
                         text=True, env=_cli_env(prefect_backend), timeout=300)
    assert run.returncode == 1, run.stderr
    assert "expected 1, 2 or 8 comma-separated fields, found 3" in run.stderr
    assert "Traceback" not in run.stderr
    good = _visit(tmp_path / "g", n=1) if (tmp_path / "g").mkdir() is None else None
    run = subprocess.run(command + ["-l", "info", "-o", str(tmp_path / "o2"), str(good)],
                         capture_output=True, text=True, env=_cli_env(prefect_backend), timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o2" / "wfc3_b46_06_manifest.txt").exists()


def test_output_custom_pars_file_fed_back_reproduces_the_run(tmp_path):
    import json

    poller = _visit(tmp_path, n=2)
    first = tmp_path / "used_pars.json"
    assert run_hap_processing(poller, output_dir=tmp_path / "a", output_custom_pars_file=first) == 0
    recorded = json.loads(first.read_text())
    assert "hst_11665_06_wfc3_uvis_f606w_ib4606" in recorded
    assert "hst_11665_06_wfc3_uvis_total_ib4606" in recorded
    second = tmp_path / "used_again.json"
    assert run_hap_processing(poller, output_dir=tmp_path / "b", input_custom_pars_file=first,
                              output_custom_pars_file=second) == 0
    assert json.loads(second.read_text()) == recorded


def test_bad_custom_pars_value_names_file_and_key(tmp_path):
    import json

    poller = _visit(tmp_path, n=2)
    pars = tmp_path / "pars.json"
    assert run_hap_processing(poller, output_dir=tmp_path / "a", output_custom_pars_file=pars) == 0
    data = json.loads(pars.read_text())
    data["hst_11665_06_wfc3_uvis_f606w_ib4606"]["default_values"]["drizzle"]["final_pixfrac"] = 7.0
    pars.write_text(json.dumps(data))
    assert run_hap_processing(poller, output_dir=tmp_path / "b", input_custom_pars_file=pars) == 1
    log = (tmp_path / "b" / "wfc3_b46_06_input.log").read_text()
    assert "pars.json" in log and "final_pixfrac" in log and "Traceback" not in log
    assert run_hap_processing(poller, output_dir=tmp_path / "c", input_custom_pars_file=pars,
                              output_custom_pars_file=pars) == 1
    assert "must differ" in (tmp_path / "c" / "wfc3_b46_06_input.log").read_text()


def test_bad_quality_switch_is_an_input_error(tmp_path, monkeypatch):
    poller = _visit(tmp_path, n=1)
    monkeypatch.setenv("SVM_QUALITY_TESTING", "maybe")
    assert run_hap_processing(poller, output_dir=tmp_path / "o") == 1
    log = (tmp_path / "o" / "wfc3_b46_06_input.log").read_text()
    assert "SVM_QUALITY_TESTING" in log and "maybe" in log and "Traceback" not in log


def test_invalid_option_is_a_one_line_error(tmp_path, caplog):
    poller = _visit(tmp_path, n=1)
    assert run_hap_processing(poller, output_dir=tmp_path / "o", phot_mode="psf") == 1
    assert "invalid option phot_mode" in caplog.text
