"""Damaged exposures on a shared archive host (issue #18, item 4).

Every damage is either a rejection with its reason (the visit goes on with the other exposures;
exit 65 when none is left, as one line on stderr) or a chip left out with a WARNING -- never a
traceback, and the inputs are never changed:

* rejected by the input stage (:mod:`hapcore.obset.integrity`, :mod:`hapcore.obset.viability`):
  a file cut short (in its data, in a header, empty), an unreadable header card, a header card
  that is not FITS text, a broken extension header, no SCI extension, an ERR/DQ without its SCI,
  a chip without DQ, a DQ of another shape, every chip all NaN, all zeros, or flagged in DQ;
* processed, with a WARNING: a chip without ERR (ERR weighting falls back to the noise model),
  a chip all NaN or flagged in DQ beside a usable one (left out by the alignment and the
  drizzling, where its pixels are read).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from hapcore.obset.integrity import NotFitsError, check_exposure_file
from hapcore.obset.tree import interpret_obset_input
from hapsim import simulate_visit

RUNSINGLEHAP = str(Path(sys.executable).with_name("runsinglehap"))


def _rewrite(path: Path, edit) -> None:
    with fits.open(path) as hdul:
        hdus = [hdu.copy() for hdu in hdul]
    fits.HDUList(edit(hdus)).writeto(path, overwrite=True)


def _set_card(path: Path, keyword: bytes, value: bytes, *, after: int = 0) -> None:
    """Overwrite the value field of the first ``keyword`` card after byte ``after``."""
    raw = bytearray(path.read_bytes())
    at = raw.index(keyword.ljust(8) + b"=", after)
    raw[at + 10:at + 10 + len(value)] = value
    path.write_bytes(bytes(raw))


def _chip(hdus, name, ver=1):
    return next(h for h in hdus if h.name == name and h.ver == ver)


def _with_chips(hdus, damaged: dict[int, str]):
    """Copies of chip 1 as chips 2, 3, ...: ``nan`` (SCI all NaN), ``dq`` (every pixel flagged)."""
    for ver, what in damaged.items():
        for name in ("SCI", "ERR", "DQ"):
            hdu = _chip(hdus, name).copy()
            hdu.ver = ver
            if name == "SCI" and what == "nan":
                hdu.data = np.full_like(hdu.data, np.nan)
            if name == "DQ" and what == "dq":
                hdu.data = np.full_like(hdu.data, 4)
            hdus.append(hdu)
    return hdus


def _damage(path: Path, case: str) -> None:
    size = path.stat().st_size
    if case == "truncated":                   # an interrupted copy: cut inside ERR's data
        path.write_bytes(path.read_bytes()[: size // 2])
    elif case == "truncated-last":            # cut inside the last extension's data
        path.write_bytes(path.read_bytes()[: size - 50_000])
    elif case == "truncated-header":
        raw = path.read_bytes()
        path.write_bytes(raw[: raw.index(b"XTENSION", 2880) + 1000])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "bad-card":
        _set_card(path, b"EXPTIME", b"          3#0.0xx   ")
    elif case == "non-ascii-card":
        raw = path.read_bytes()
        _set_card(path, b"CRVAL1", b"  \x00\xff\xfe 150.1 ", after=raw.index(b"XTENSION"))
    elif case == "broken-extension-header":
        raw = bytearray(path.read_bytes())
        at = raw.index(b"XTENSION", raw.index(b"XTENSION") + 1)
        raw[at:at + 8] = b"XTENSI0N"
        path.write_bytes(bytes(raw))
    elif case == "no-sci":
        _rewrite(path, lambda hdus: [h for h in hdus if h.name != "SCI"])
    elif case == "sci-missing":
        _rewrite(path, lambda hdus: [h for h in _with_chips(hdus, {2: "ok"})
                                     if not (h.name == "SCI" and h.ver == 2)])
    elif case == "no-dq":
        _rewrite(path, lambda hdus: [h for h in hdus if h.name != "DQ"])
    elif case == "dq-shape":
        def crop(hdus):
            _chip(hdus, "DQ").data = _chip(hdus, "DQ").data[:128]
            return hdus
        _rewrite(path, crop)
    elif case in ("all-nan", "all-zero", "dq-all-bad"):
        def fill(hdus):
            sci, dq = _chip(hdus, "SCI"), _chip(hdus, "DQ")
            if case == "all-nan":
                sci.data = np.full_like(sci.data, np.nan)
            elif case == "all-zero":
                sci.data = np.zeros_like(sci.data)
            else:
                dq.data = np.full_like(dq.data, 16)
            return hdus
        _rewrite(path, fill)
    else:
        raise ValueError(case)


#: case -> the rejection reason (``{size}``: the damaged file's size, ``{full}``: the original's)
REJECTED = {
    "truncated": "truncated: {size} bytes of at least 552960 expected (data of ERR,1 cut short)",
    "truncated-last": "truncated: {size} bytes of {full} expected (data of DQ,1 cut short)",
    "truncated-header": "truncated: {size} bytes of at least 11520 expected (header of SCI,1 "
                        "cut short)",
    "empty": "truncated: 0 bytes of at least 2880 expected (header of PRIMARY cut short)",
    "bad-card": "header of PRIMARY damaged: card EXPTIME cannot be read",
    "non-ascii-card": "header of SCI,1 damaged: card",
    "broken-extension-header": "damaged: bytes 285120-688320 after SCI,1 are not a FITS "
                               "extension (a broken extension header)",
    "no-sci": "no SCI extension",
    "sci-missing": "SCI,2 missing (its ERR or DQ is present)",
    "no-dq": "no DQ extension for SCI,1 (its bad pixels could not be masked)",
    "dq-shape": "DQ,1 is 256x128, SCI,1 is 256x256",
    "all-nan": "no usable chip (SCI,1 all NaN)",
    "all-zero": "SCI data all zeros",
    "dq-all-bad": "no usable chip (SCI,1 every pixel flagged in DQ)",
}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A 3-exposure WFC3/UVIS visit (256-px subarrays), never damaged itself."""
    base = tmp_path_factory.mktemp("damaged")
    sim = simulate_visit(base / "visit", detector="wfc3/uvis", filters={"f606w": 3},
                         subarray=256, seed=41, exptime=300.0, pointing_error=(0.5, 0.02),
                         star_density=2000.0, star_mag_range=(17.0, 24.0),
                         # the byte offsets below are those of a file without lookup tables
                         distortion_tables=False)
    return sim


def _copy_visit(pristine, folder: Path) -> tuple[Path, list[str]]:
    """A copy of the visit's exposures and reference catalog, with a poller listing them."""
    folder.mkdir()
    names = [p.name for p in pristine.exposures]
    for name in names:
        shutil.copy(Path(pristine.poller).parent / name, folder / name)
    shutil.copy(pristine.refcat, folder / "refcat.ecsv")
    return _poller(folder, names), names


def _poller(folder: Path, names: list[str]) -> Path:
    """A poller of file names (1-field lines: the files are found beside it)."""
    poller = folder / "wfc3_x15_01_input.out"
    poller.write_text("".join(f"{n}\n" for n in names))
    return poller


@pytest.mark.parametrize("case", list(REJECTED))
def test_damaged_exposure_is_rejected_with_its_reason(pristine, tmp_path, case):
    _, names = _copy_visit(pristine, tmp_path / "v")
    bad = tmp_path / "v" / names[0]
    full = bad.stat().st_size
    _damage(bad, case)
    poller = _poller(tmp_path / "v", names[:2])
    before = _digests(tmp_path / "v")
    tree = interpret_obset_input(poller)
    expected = REJECTED[case].format(size=bad.stat().st_size, full=full)
    assert [r.filename for r in tree.rejected] == [names[0]]
    assert tree.rejected[0].reason.startswith(expected), tree.rejected[0].reason
    assert [e.filename for e in tree.tree["uvis"]["f606w"]] == [names[1]]  # the visit goes on
    assert _digests(tmp_path / "v") == before


def test_only_the_first_card_of_a_file_tells_fits_from_not_fits(tmp_path):
    (tmp_path / "text.fits").write_text("SIMPLE? no, a text file" * 200)
    with pytest.raises(NotFitsError):
        check_exposure_file(tmp_path / "text.fits")
    (tmp_path / "cut.fits").write_bytes(b"SIMPLE")     # a FITS file cut in its first card
    assert check_exposure_file(tmp_path / "cut.fits").damage.startswith("truncated: 6 bytes")


def test_every_exposure_damaged_is_exit_65_in_one_line(pristine, tmp_path):
    """One exposure per damage, one poller: exit 65 before Prefect starts, one line naming each
    exposure with its reason, no traceback, the inputs unchanged."""
    folder = tmp_path / "v"
    folder.mkdir()
    source = pristine.exposures[0]
    names, expected = [], []
    for number, case in enumerate(REJECTED):
        name = f"ix1501{'bcdefghijklmnopq'[number]}0q_flc.fits"
        shutil.copy(source, folder / name)
        _damage(folder / name, case)
        names.append(name)
        expected.append((name, REJECTED[case].format(size=(folder / name).stat().st_size,
                                                     full=source.stat().st_size)))
    poller = _poller(folder, names)
    before = _digests(folder)
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)        # a Prefect start-up would show: none must happen
    done = subprocess.run([RUNSINGLEHAP, "-o", str(tmp_path / "out"), str(poller)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 65, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runsinglehap: error: "), done.stderr
    assert f"no viable exposures: all {len(REJECTED)} were rejected" in lines[0]
    for name, reason in expected:
        assert f"{name}: {reason}" in lines[0], (name, reason, lines[0])
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert _digests(folder) == before


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_backend")
def test_visit_with_damaged_parts_is_processed_without_them(pristine, tmp_path, prefect_backend):
    """Exposure 1 has two more chips, one all NaN and one flagged all bad in DQ; exposure 2 has
    no ERR; exposure 3 is truncated. The visit is made from exposures 1 (its first chip) and 2,
    each problem a WARNING in the log, no traceback, the inputs unchanged."""
    poller, names = _copy_visit(pristine, tmp_path / "v")
    folder = tmp_path / "v"
    _rewrite(folder / names[0], lambda hdus: _with_chips(hdus, {2: "nan", 3: "dq"}))
    _rewrite(folder / names[1], lambda hdus: [h for h in hdus if h.name != "ERR"])
    _damage(folder / names[2], "truncated")
    before = _digests(folder)
    out = tmp_path / "out"
    env = dict(os.environ, PREFECT_API_URL=prefect_backend)
    done = subprocess.run([RUNSINGLEHAP, "-l", "warning", "--workers", "1", "-o", str(out),
                           "--refcat", str(folder / "refcat.ecsv"), str(poller)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    log = (out / (poller.stem + ".log")).read_text()
    assert "Traceback" not in log
    root0, root1, root2 = (n.split("_")[0] for n in names)
    for expected in (
            f"{names[2]} not processed: truncated: ",
            f"{names[1]}: no ERR extension for SCI,1: processed; ERR weighting falls back",
            f"{names[0]} SCI,2: no data (all zero or NaN); chip skipped for alignment",
            f"{names[0]} SCI,3: every pixel flagged in DQ; chip skipped for alignment",
            f"{root0[:-1]}_flc.fits[SCI,2]: no valid pixels (all zero or NaN); chip skipped",
            f"{root0[:-1]}_flc.fits[SCI,3]: every pixel flagged in DQ (none among the good bits"):
        assert expected in log, expected
    assert "WARNING" in done.stderr and "truncated: " in done.stderr     # shown at -l warning
    manifest = (out / f"{poller.stem.removesuffix('_input')}_manifest.txt").read_text()
    assert f"{root0[:-1]}_flc.fits" in manifest and f"{root1[:-1]}_flc.fits" in manifest
    assert root2[:-1] not in manifest
    total = next(out.glob("hst_*_total_*_drc.fits"))
    assert np.isfinite(fits.getdata(total, "SCI")).all()
    assert _digests(folder) == before
