"""How hapsvm behaves at a terminal, in a script and in an archive (issue #17).

* a user error is one line on stderr (``runsinglehap: error: ...``), no traceback, the README's
  exit code, answered before Prefect starts;
* ``-l warning`` prints no INFO line, ``-l info`` about 40 lines for a 2-filter visit, ending
  with the alignment per detector, catalog rows and time per stage;
* products follow the umask; a second run changes no byte of any product, trailers included;
* ``perform()`` works from a script without a main guard and from ``python -``;
* ``--require-alignment`` turns "NOT aligned" into exit 66.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hapsim import simulate_visit

from test_runsinglehap import BAD_CASES, _bad

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.slow]

RUNSINGLEHAP = str(Path(sys.executable).with_name("runsinglehap"))


def _env(prefect_backend) -> dict[str, str]:
    return dict(os.environ, PREFECT_API_URL=prefect_backend)


def _run(args, prefect_backend, *, umask: int | None = None, stdin: str | None = None):
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(args, capture_output=True, text=True, env=_env(prefect_backend),
                          timeout=600, preexec_fn=preexec, input=stdin)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.endswith(".log")}


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    base = tmp_path_factory.mktemp("ux")
    sim = simulate_visit(base / "visit", detector="wfc3/uvis", filters={"f606w": 2, "f814w": 2},
                         subarray=512, seed=21, exptime=400.0, star_density=2000.0,
                         star_mag_range=(17.0, 25.0), pointing_error=(0.5, 0.02))
    return sim, base


@pytest.fixture(scope="module")
def first_run(visit, prefect_backend):
    sim, base = visit
    out = base / "out"
    done = _run([RUNSINGLEHAP, "-l", "info", "-o", str(out), "--refcat", str(sim.refcat),
                 str(sim.poller)], prefect_backend, umask=0o027)
    return done, out


def test_info_run_is_short_and_ends_with_a_summary(first_run):
    done, out = first_run
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert len(lines) <= 40, "\n".join(lines)
    assert not any(len(ln) > 1000 for ln in lines), "a parameter set is dumped at INFO"
    text = "\n".join(lines)
    assert "UVIS: aligned to" in text and "matches, RMS" in text
    assert "UVIS catalogs: point" in text and "time per stage:" in text
    assert "Traceback" not in text


def test_products_follow_the_umask(first_run):
    _, out = first_run
    files = [p for p in out.iterdir() if p.is_file()]
    assert len(files) > 20
    modes = {p.name: p.stat().st_mode & 0o777 for p in files}
    assert set(modes.values()) == {0o640}, modes           # umask 027 in the first run


def test_quiet_second_run_changes_no_byte(first_run, visit, prefect_backend):
    done, out = first_run
    sim, _ = visit
    before = _digests(out)
    again = _run([RUNSINGLEHAP, "-l", "warning", "-o", str(out), "--refcat", str(sim.refcat),
                  str(sim.poller)], prefect_backend)
    assert again.returncode == 0, again.stderr[-3000:]
    printed = [ln for ln in (again.stdout + again.stderr).splitlines() if ln.strip()]
    assert not [ln for ln in printed if "INFO" in ln], printed
    assert _digests(out) == before                         # trailers included


def test_umask_022_gives_0644(visit, prefect_backend, tmp_path):
    from hapcore.atomic import atomic_output

    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("case, code, message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_one_line_before_prefect(tmp_path, prefect_backend, case, code, message):
    poller = _bad(tmp_path, case)
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)       # a Prefect start-up would show: none must happen
    done = subprocess.run([RUNSINGLEHAP, "-o", str(tmp_path / "out"), str(poller)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == code
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runsinglehap: error: "), done.stderr
    assert message in lines[0]
    assert done.stdout == ""


def test_output_dir_that_is_a_file(tmp_path, prefect_backend):
    poller = _bad(tmp_path, "three-fields")
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    done = subprocess.run([RUNSINGLEHAP, "-o", str(target), str(poller)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"runsinglehap: error: {target}: the output directory is a "
                                   "file; give a directory with -o")
    assert target.read_text() == "x"


_SCRIPT = """
from flows.runsinglehap import perform
code = perform({poller!r}, output_dir={out!r}, refcat={refcat!r}, log_level="warning")
print("CODE", code)
"""


@pytest.mark.parametrize("how", ["script-without-main-guard", "python-stdin"])
def test_perform_from_any_caller(visit, prefect_backend, tmp_path, how):
    sim, _ = visit
    out = tmp_path / "out"
    code = textwrap.dedent(_SCRIPT.format(poller=str(sim.poller), out=str(out),
                                          refcat=str(sim.refcat)))
    if how == "python-stdin":
        done = _run([sys.executable, "-"], prefect_backend, stdin=code)
    else:
        script = tmp_path / "unguarded.py"
        script.write_text(code)
        done = _run([sys.executable, str(script)], prefect_backend)
    assert "CODE 0" in done.stdout, done.stderr[-3000:]
    assert list(out.glob("*_manifest.txt"))
    assert list(out.glob("*_total_*_drc.fits"))


def test_require_alignment_exit_code(visit, prefect_backend, tmp_path):
    from astropy.table import Table

    sim, _ = visit
    few = Table.read(sim.refcat)[:2]        # two reference stars: no fit can be accepted
    refcat = tmp_path / "two_stars.ecsv"
    few.write(refcat)
    out = tmp_path / "out"
    done = _run([RUNSINGLEHAP, "--require-alignment", "-o", str(out), "--refcat", str(refcat),
                 str(sim.poller)], prefect_backend)
    assert done.returncode == 66, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    assert "UVIS: NOT aligned:" in printed
    assert printed.strip().splitlines()[-1].startswith("runsinglehap: error: UVIS: NOT aligned")
    assert list(out.glob("*_total_*_drc.fits"))              # the products are still written
    summary = next(out.glob("*.log")).read_text()
    assert "NOT aligned" in summary
