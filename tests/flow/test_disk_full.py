"""A full disk in the middle of writing products (issue #18, item 1).

The output directory is a small tmpfs (skipped, with the reason, where this machine cannot mount
one): the run ends with one line naming the directory and exit code 74, nothing exists under a
final name that differs from a completed run's, no temporary file is left, the inputs are
unchanged; once there is space the same command completes, and its products equal an
uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from hapsim import simulate_visit

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.slow]

RUNSINGLEHAP = str(Path(sys.executable).with_name("runsinglehap"))


def _mount_tmpfs(path: Path, megabytes: int) -> str | None:
    """Mount a tmpfs of ``megabytes`` at ``path``; the reason when it cannot be done."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs",
                               str(path)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run mount: {exc}"
    if done.returncode != 0:
        return f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
    return None


def _run(sim, out: Path, prefect_backend) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_API_URL=prefect_backend)
    return subprocess.run([RUNSINGLEHAP, "-o", str(out), "--refcat", str(sim.refcat),
                           "--workers", "1", str(sim.poller)], capture_output=True, text=True,
                          env=env, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_product(a: Path, b: Path) -> bool:
    """Data equal (FITS: every HDU's data; catalogs: the rows); headers may carry dates."""
    if a.suffix == ".fits":
        with fits.open(a) as ha, fits.open(b) as hb:
            return len(ha) == len(hb) and all(_same_hdu(x, y) for x, y in zip(ha, hb))
    if a.name.endswith(".ecsv"):
        ta, tb = Table.read(a), Table.read(b)
        return len(ta) == len(tb) and all(np.array_equal(np.asarray(ta[c]), np.asarray(tb[c]))
                                          for c in ta.colnames if ta[c].dtype.kind in "fi")
    return True      # trailers and the manifest: checked by the rerun's completeness


def _same_hdu(x, y) -> bool:
    if x.data is None or y.data is None:
        return x.data is None and y.data is None
    if x.name == "HDRLET":            # an embedded headerlet file: its DATE card is the run's
        return True
    if isinstance(x, fits.BinTableHDU):
        return x.data.tobytes() == y.data.tobytes()
    return np.array_equal(np.asarray(x.data), np.asarray(y.data), equal_nan=True)


@pytest.fixture(scope="module")
def visit(tmp_path_factory):
    base = tmp_path_factory.mktemp("diskfull")
    sim = simulate_visit(base / "visit", detector="wfc3/uvis", filters={"f606w": 2},
                         subarray=384, seed=33, exptime=400.0, star_density=2000.0,
                         star_mag_range=(17.0, 25.0), pointing_error=(0.5, 0.02))
    return sim, base


def test_full_disk_ends_cleanly_and_the_rerun_completes(visit, prefect_backend):
    sim, base = visit
    inputs = {p: _sha(p) for p in sim.poller.parent.iterdir() if p.is_file()}
    reference = base / "reference"
    done = _run(sim, reference, prefect_backend)
    assert done.returncode == 0, done.stderr[-2000:]
    used = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())

    mount_point = base / f"small-{uuid.uuid4().hex[:6]}"
    why = _mount_tmpfs(mount_point, max(2, int(used * 0.45 / 1e6)))
    if why:
        pytest.skip(why)
    try:
        out = mount_point / "out"
        failed = _run(sim, out, prefect_backend)
        assert failed.returncode == 74, failed.stderr[-3000:]
        lines = failed.stderr.strip().splitlines()
        assert lines[-1].startswith(f"runsinglehap: error: {out}: no space left on the device")
        assert "Traceback" not in failed.stderr
        assert not list(out.glob(".*.tmp"))
        for product in out.iterdir():
            if product.is_file() and not product.name.endswith(".log"):
                assert _same_product(product, reference / product.name), product.name
        assert not (out / f"{sim.poller.stem.replace('_input', '')}_manifest.txt").exists()

        # space freed: the same command completes
        subprocess.run(["mount", "-o", "remount,size=512m", str(mount_point)], check=True,
                       timeout=30)
        again = _run(sim, out, prefect_backend)
        assert again.returncode == 0, again.stderr[-3000:]
        names = sorted(p.name for p in reference.iterdir() if p.is_file()
                       and not p.name.endswith(".log"))
        assert names == sorted(p.name for p in out.iterdir() if p.is_file()
                               and not p.name.endswith(".log"))
        for name in names:
            assert _same_product(out / name, reference / name), name
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)
    assert {p: _sha(p) for p in inputs} == inputs


def test_read_only_output_dir_is_one_line(visit, prefect_backend):
    sim, base = visit
    mount_point = base / f"ro-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                           str(mount_point)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        failed = _run(sim, mount_point, prefect_backend)
        assert failed.returncode == 1
        assert failed.stderr.strip() == (f"runsinglehap: error: {mount_point}: the output "
                                         "directory is not writable")
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def test_cache_on_another_file_system(visit, prefect_backend):
    sim, base = visit
    reference = base / "reference"
    if not (reference / f"{sim.poller.stem}.log").exists():
        assert _run(sim, reference, prefect_backend).returncode == 0
    mount_point = base / f"other-{uuid.uuid4().hex[:6]}"
    why = _mount_tmpfs(mount_point, 256)
    if why:
        pytest.skip(why)
    try:
        out = mount_point / "out"
        env = dict(os.environ, PREFECT_API_URL=prefect_backend)
        done = subprocess.run([RUNSINGLEHAP, "-o", str(out), "--cache-dir", str(base / "cache"),
                               "--refcat", str(sim.refcat), "--workers", "1", str(sim.poller)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert list((base / "cache").iterdir())           # the records are on the other one
        for product in reference.iterdir():
            if product.is_file() and not product.name.endswith(".log"):
                assert _same_product(out / product.name, product), product.name
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)
