"""The two engines (issue #16): ``direct`` (no Prefect, no API) and ``prefect``.

* both make the same products from the same visit -- every FITS HDU's data, the catalogs'
  text but for date/time lines, the manifest -- and each reuses the other's cache records;
* a direct rerun in a new process recomputes nothing, hashes no file again (the digests are
  kept in the cache directory) and imports neither Prefect nor the stages' science modules;
* a change of an input or an option reruns exactly the tasks that depend on it, the same ones
  in both engines;
* ``auto`` is Prefect when a Prefect API is configured, direct otherwise; ``HAPSVM_ENGINE``;
* a bad poller line is answered before anything imports Prefect, whatever the engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from flows.options import resolve_engine
from flows.prefect_env import prefect_api_configured
from flows.svm import run_hap_processing
from hap_models.errors import HapInputError
from hapcore.digests import clear_digest_memo
from hapsim import simulate_visit

from test_runsinglehap import _bad

RUNSINGLEHAP = str(Path(sys.executable).with_name("runsinglehap"))
# catalog header lines that hold the time of the run
_TIME_LINE = re.compile(r"date|time|generated", re.IGNORECASE)


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    base = tmp_path_factory.mktemp("engines")
    return simulate_visit(base / "visit", detector="wfc3/uvis", filters={"f606w": 2},
                          subarray=256, seed=16, exptime=300.0, pointing_error=(0.5, 0.02),
                          star_density=2000.0, star_mag_range=(17.0, 24.0))


def _states(out: Path, poller: Path) -> dict[str, str]:
    line = [ln for ln in (out / (poller.stem + ".log")).read_text().splitlines()
            if "stages: " in ln][-1]
    return dict(p.rsplit(" ", 1) for p in line.split("stages: ", 1)[1].split(", "))


def _run(sim, out: Path, engine: str, **options) -> dict[str, str]:
    clear_digest_memo()
    code = run_hap_processing(sim.poller, output_dir=out, refcat=sim.refcat, n_workers=1,
                              engine=engine, **options)
    assert code == 0, (out / (sim.poller.stem + ".log")).read_text()[-3000:]
    return _states(out, sim.poller)


def _assert_same_hdu_data(one, two, name: str) -> None:
    """Every HDU's data equal; a headerlet (HDRLET: a FITS file inside an extension, whose
    headers carry the DATE of writing) compared the same way, HDU by HDU."""
    assert [h.name for h in one] == [h.name for h in two], name
    for x, y in zip(one, two):
        if x.data is None:
            assert y.data is None, (name, x.name)
        elif x.name == "HDRLET":
            with fits.HDUList.fromstring(bytes(x.data)) as inner_x, \
                    fits.HDUList.fromstring(bytes(y.data)) as inner_y:
                _assert_same_hdu_data(inner_x, inner_y, f"{name}[HDRLET]")
        elif x.is_image:
            assert np.array_equal(x.data, y.data, equal_nan=True), (name, x.name)
        else:
            assert x.data.tobytes() == y.data.tobytes(), (name, x.name)


def _assert_same_products(a: Path, b: Path) -> None:
    def products(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.is_file()
                      and not p.name.startswith(".") and not p.name.endswith(".log"))

    names = products(a)
    assert names == products(b)
    assert any(n.endswith(".fits") for n in names) and any(n.endswith(".ecsv") for n in names)
    for name in names:
        if name.endswith(".fits"):
            with fits.open(a / name) as one, fits.open(b / name) as two:
                _assert_same_hdu_data(one, two, name)
        elif name.endswith((".ecsv", "_manifest.txt")):
            lines = [[ln for ln in (f / name).read_text().splitlines()
                      if not _TIME_LINE.search(ln)] for f in (a, b)]
            assert lines[0] == lines[1], name


@pytest.mark.slow
def test_direct_and_prefect_make_the_same_products_and_share_the_cache(visit, tmp_path,
                                                                       prefect_backend):
    direct, prefect = tmp_path / "direct", tmp_path / "prefect"
    first_direct = _run(visit, direct, "direct")
    first_prefect = _run(visit, prefect, "prefect")
    assert set(first_direct.values()) == set(first_prefect.values()) == {"Completed"}
    assert first_direct.keys() == first_prefect.keys()
    _assert_same_products(direct, prefect)
    direct_log = (direct / (visit.poller.stem + ".log")).read_text()
    prefect_log = (prefect / (visit.poller.stem + ".log")).read_text()
    assert "Flow run" not in direct_log and "Finished in state Completed" in prefect_log
    for log in (direct_log, prefect_log):
        assert "UVIS: aligned to" in log and "time per stage:" in log
        assert "8 stage task(s) computed, 0 from the cache" in log and "return value: 0" in log

    # each engine's records serve the other: same keys, same record format
    assert set(_run(visit, prefect, "direct").values()) == {"Cached"}
    assert set(_run(visit, direct, "prefect").values()) == {"Cached"}

    # one change, the same tasks rerun by either engine
    with open(visit.poller, "a") as handle:
        handle.write("# reprocessed\n")
    try:
        changed = {engine: _run(visit, out, engine)
                   for engine, out in (("direct", direct), ("prefect", prefect))}
    finally:
        text = visit.poller.read_text()
        visit.poller.write_text(text.replace("# reprocessed\n", ""))
    assert changed["direct"] == changed["prefect"]
    assert {k for k, v in changed["direct"].items() if v == "Completed"} == {
        "interpret-obset-input"}


_RERUN = """
import json, sys
import hapcore.digests as digests

hashed = []
class _Counting:
    def sha256(self, *args):
        hashed.append(1)
        import hashlib
        return hashlib.sha256(*args)
digests.hashlib = _Counting()
from flows.svm import run_hap_processing
code = run_hap_processing({poller!r}, output_dir={out!r}, refcat={refcat!r}, n_workers=1,
                          engine="direct")
loaded = [m for m in sys.modules if m.split(".")[0] == "prefect"
          or m in ("hapcore.align.stage", "hapcore.drizzle.stage", "hapcore.catalogs.stage",
                   "hapcore.drizzle.workspace")]
print(json.dumps({{"code": code, "hashed": len(hashed), "loaded": loaded}}))
"""


def test_direct_rerun_in_a_new_process_recomputes_and_rehashes_nothing(visit, tmp_path):
    out = tmp_path / "out"
    assert set(_run(visit, out, "direct").values()) == {"Completed"}
    assert (out / ".hapsvm-cache" / "file-digests.json").is_file()
    script = textwrap.dedent(_RERUN.format(poller=str(visit.poller), out=str(out),
                                           refcat=str(visit.refcat)))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    states = _states(out, visit.poller)
    assert len(states) == 8 and set(states.values()) == {"Cached"}, states
    assert report["hashed"] == 0, "an unchanged file was hashed again"
    assert report["loaded"] == [], "a cached rerun imported " + ", ".join(report["loaded"])
    log = (out / (visit.poller.stem + ".log")).read_text()
    assert "0 stage task(s) computed, 8 from the cache" in log


def test_a_change_reruns_exactly_the_tasks_that_depend_on_it(visit, tmp_path, caplog):
    out = tmp_path / "out"
    _run(visit, out, "direct")
    # the photometry mode is an input of the catalog tasks only
    states = _run(visit, out, "direct", phot_mode="aperture")
    recomputed = {k for k, v in states.items() if v == "Completed"}
    assert recomputed == {"catalogs-uvis-detect", "catalogs-uvis-f606w", "catalogs-uvis"}
    # a deleted product: the task that made it, and what depends on its result
    copy = sorted(out.glob("hst_*_flc.fits"))[0]
    copy.unlink()
    with caplog.at_level("INFO", logger="hapsvm"):
        states = _run(visit, out, "direct", phot_mode="aperture")
    assert f"{copy.name} is missing" in caplog.text and copy.exists()
    assert states["align-uvis"] == "Completed"
    assert states["interpret-obset-input"] == states["build-product-tree"] == "Cached"
    # a corrupted record is a logged miss, recomputed
    records = [p for p in (out / ".hapsvm-cache").iterdir() if p.is_file()]
    for record in records:
        record.write_bytes(record.read_bytes()[:40])
    with caplog.at_level("INFO", logger="hapsvm"):
        states = _run(visit, out, "direct", phot_mode="aperture")
    assert set(states.values()) == {"Completed"} and "cache record unreadable" in caplog.text
    # --force recomputes everything
    states = _run(visit, out, "direct", phot_mode="aperture", force=True)
    assert set(states.values()) == {"Completed"}


def test_auto_engine_and_hapsvm_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    # Prefect's own settings count only when Prefect is loaded; here it may be (other tests)
    monkeypatch.delitem(sys.modules, "prefect.settings", raising=False)
    home = {"PREFECT_HOME": str(tmp_path / "home")}
    assert resolve_engine("auto", home) == "direct"
    assert resolve_engine("auto", {**home, "PREFECT_API_URL": "http://h:4200/api"}) == "prefect"
    assert resolve_engine("prefect", home) == "prefect"
    assert resolve_engine("direct", {**home, "PREFECT_API_URL": "http://h:4200/api"}) == "direct"
    assert resolve_engine("auto", {**home, "HAPSVM_ENGINE": " Prefect "}) == "prefect"
    assert resolve_engine("direct", {**home, "HAPSVM_ENGINE": "prefect"}) == "direct"
    with pytest.raises(HapInputError, match="HAPSVM_ENGINE='dask' is not valid"):
        resolve_engine("auto", {**home, "HAPSVM_ENGINE": "dask"})
    # `prefect config set PREFECT_API_URL=...` writes it into the active profile
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "profiles.toml").write_text(
        'active = "work"\n[profiles.work]\nPREFECT_API_URL = "http://server:4200/api"\n')
    assert prefect_api_configured(home) == "http://server:4200/api"
    assert resolve_engine("auto", home) == "prefect"
    assert resolve_engine("auto", {**home, "PREFECT_PROFILE": "other"}) == "direct"


@pytest.mark.parametrize("api", [None, "http://127.0.0.1:9/api"], ids=["direct", "prefect"])
def test_bad_poller_line_is_answered_before_any_prefect_import(tmp_path, api):
    poller = _bad(tmp_path, "three-fields")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "HAPSVM_ENGINE")}
    if api:
        env["PREFECT_API_URL"] = api          # the Prefect engine: still nothing of it loaded
    done = subprocess.run([sys.executable, "-X", "importtime", RUNSINGLEHAP, "-o",
                           str(tmp_path / "out"), str(poller)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    imports = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:")]
    said = [ln for ln in done.stderr.splitlines() if not ln.startswith("import time:")]
    assert imports and not [ln for ln in imports if re.search(r"\|\s*prefect\b", ln)]
    assert len(said) == 1 and said[0].startswith("runsinglehap: error: ")
    assert "expected 1, 2 or 8 comma-separated fields, found 3" in said[0]


def test_temporary_api_starts_in_the_background_and_reports_its_failure(monkeypatch):
    """The Prefect engine without an API: the server's start runs in a thread while the caller
    goes on; ``wait`` joins it and raises what the start raised. With an API: nothing starts."""
    import threading
    import time

    import prefect.server.api.server as server
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.prefect_env import start_temporary_api

    calls: list[str] = []
    gate = threading.Event()

    def fake_start(self, timeout=None):
        calls.append(threading.current_thread().name)
        gate.wait(10)
        raise RuntimeError("the server did not start")

    monkeypatch.setattr(server.SubprocessASGIServer, "start", fake_start)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        api = start_temporary_api()
        assert api is not None
        deadline = time.time() + 10
        while not calls and time.time() < deadline:
            time.sleep(0.01)
        assert calls == ["hapsvm-temporary-api"]          # started, and the caller is free
        gate.set()
        with pytest.raises(RuntimeError, match="did not start"):
            api.wait()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert start_temporary_api() is None
