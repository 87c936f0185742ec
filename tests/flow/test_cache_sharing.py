"""A cache directory shared by two visits, or copied from elsewhere (issue #18, item 6).

Records of another visit, of another output directory or of another code version are never
reused wrongly: every run below makes the products an uninterrupted run with its own, empty
cache makes (the FITS files equal but for the DATE of writing, the catalogs and the manifest
byte for byte), and the inputs are never changed.

The two visits have the *same* file names (same proposal, program and visit ids) and different
pixels, so a record reused for the wrong visit would give products of the right names and the
wrong content -- exactly what the comparisons catch.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from astropy.io import fits

import tasks.caching
from flows.svm import svm_visit
from hap_models.run_options import VisitOptions
from hapcore.digests import clear_digest_memo
from hapsim import simulate_visit

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.slow]

_IDS = dict(proposal_id=15041, program_id="x15", obset_id="01")


def _simulate(folder: Path, seed: int):
    return simulate_visit(folder, detector="wfc3/uvis", filters={"f606w": 2}, subarray=256,
                          seed=seed, exptime=300.0, pointing_error=(0.5, 0.02),
                          star_density=2000.0, star_mag_range=(17.0, 24.0), **_IDS)


def _run(sim, output_dir: Path, cache_dir: Path, poller: Path | None = None) -> dict[str, str]:
    clear_digest_memo()
    options = VisitOptions(output_dir=output_dir, cache_dir=cache_dir, refcat=sim.refcat,
                           n_workers=1)
    return svm_visit(Path(poller or sim.poller), options).stage_states


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_same_products(reference: Path, other: Path) -> None:
    """Same product files; FITS equal but for DATE (the headerlet copies in HDRLET extensions
    carry it too, and are compared as the headerlet files), the rest byte for byte. Trailers
    and logs hold the times of the run and are not compared."""
    def products(folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir()
                      if p.is_file() and p.suffix != ".log" and not p.name.startswith("."))

    names = products(reference)
    assert names == products(other)
    for name in names:
        if name.endswith(".fits"):
            diff = fits.FITSDiff(str(reference / name), str(other / name),
                                 ignore_keywords=["DATE"], ignore_hdus=["HDRLET"])
            assert diff.identical, diff.report()
        elif not name.endswith("_trl.txt"):
            assert (reference / name).read_bytes() == (other / name).read_bytes(), name


def test_one_cache_dir_for_two_visits_and_two_working_directories(tmp_path, monkeypatch):
    """Visit A run twice into ``out`` with one shared cache from two working directories (the
    output directory given relative, as a deployment may); visit B into the same cache, and
    into a cache of its own as its reference. A's first run, into the empty cache, is A's."""
    a, b = _simulate(tmp_path / "visit-a", 41), _simulate(tmp_path / "visit-b", 42)
    assert [p.name for p in a.exposures] == [p.name for p in b.exposures]
    inputs = {"a": _digests(tmp_path / "visit-a"), "b": _digests(tmp_path / "visit-b")}
    cache = tmp_path / "shared-cache"
    states = {}
    for where in ("w1", "w2"):
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        states[where] = _run(a, Path("out"), cache)
    monkeypatch.chdir(tmp_path)
    # the same relative name is another directory: every stage that writes files runs again
    # (a record of w1/out lists products that are not in w2/out); the input stage is reused
    assert states["w2"]["interpret-obset-input"] == "Cached", states["w2"]
    assert {k: v for k, v in states["w2"].items() if k.startswith(("align", "drizzle", "catalogs"))
            and v != "Completed"} == {}, states["w2"]
    _assert_same_products(tmp_path / "w1" / "out", tmp_path / "w2" / "out")

    # B has A's file names but other pixels: nothing of A's may serve it
    states = _run(b, tmp_path / "out-b", cache)
    assert set(states.values()) == {"Completed"}, states
    _run(b, tmp_path / "out-b-own", tmp_path / "cache-b-own")
    _assert_same_products(tmp_path / "out-b-own", tmp_path / "out-b")
    # sharing does not stop a visit from reusing its own records
    assert set(_run(b, tmp_path / "out-b", cache).values()) == {"Cached"}
    _assert_same_products(tmp_path / "out-b-own", tmp_path / "out-b")
    assert inputs == {"a": _digests(tmp_path / "visit-a"), "b": _digests(tmp_path / "visit-b")}


def test_copied_cache_moved_inputs_other_code_version_damaged_records(tmp_path, monkeypatch,
                                                                      caplog):
    """A cache copied to another output directory, inputs moved to another directory, records
    of another code version, truncated records: each reused correctly or ignored."""
    import logging

    a = _simulate(tmp_path / "visit-a", 43)
    inputs = _digests(tmp_path / "visit-a")
    cache, reference = tmp_path / "cache", tmp_path / "reference"
    _run(a, reference, cache)

    # copied with its output directory's records: what depends only on the inputs is reused,
    # what wrote files into the first output directory is made again in this one
    shutil.copytree(cache, tmp_path / "copied-cache")
    states = _run(a, tmp_path / "out-copied", tmp_path / "copied-cache")
    assert states["interpret-obset-input"] == "Cached" and states["build-product-tree"] == "Cached"
    assert states["align-uvis"] == "Completed" and states["drizzle-uvis-total"] == "Completed"
    _assert_same_products(reference, tmp_path / "out-copied")

    # the inputs moved (the poller's path field names the old place; the files beside the
    # poller come first): the same output directory and cache, nothing taken for the old files
    moved = tmp_path / "visit-a-moved"
    shutil.copytree(tmp_path / "visit-a", moved)
    out = reference
    reference = tmp_path / "reference-products"
    shutil.copytree(out, reference, ignore=shutil.ignore_patterns(".hapsvm-*"))
    states = _run(a, out, cache, poller=moved / Path(a.poller).name)
    assert set(states.values()) == {"Completed"}, states
    _assert_same_products(reference, out)

    # records of another code version (the key holds it): none is reused
    with monkeypatch.context() as patch:
        patch.setattr(tasks.caching, "code_version", lambda: "0123456789abcdef")
        states = _run(a, out, cache)
    assert set(states.values()) == {"Completed"}, states
    _assert_same_products(reference, out)

    # truncated records (a copy cut short): logged misses
    for record in (p for p in cache.iterdir() if p.is_file()):
        data = record.read_bytes()
        record.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="hapsvm"):
        states = _run(a, out, cache)
    assert set(states.values()) == {"Completed"}, states
    assert "cache record unreadable" in caplog.text
    _assert_same_products(reference, out)
    assert _digests(tmp_path / "visit-a") == inputs
    assert _digests(moved) == inputs


def test_record_under_another_key_is_a_miss(tmp_path):
    """A record file renamed (or copied over another's name) is not served for that name."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    from hap_models.stage import StageResult
    from hapcore.digests import file_digest

    product = tmp_path / "product.fits"
    product.write_bytes(b"a product of visit B")
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "cache")),
                        cache_result_in_memory=False)
    result = StageResult(stage="align", outputs={str(product): file_digest(product)})
    store.write(key="key-of-visit-b", obj=result)
    assert store.exists("key-of-visit-b")
    shutil.copy(tmp_path / "cache" / "key-of-visit-b", tmp_path / "cache" / "key-of-visit-a")
    tasks.caching.FileStagePolicy._drop_if_stale(store, "key-of-visit-a", "align")
    assert not (tmp_path / "cache" / "key-of-visit-a").exists()
    tasks.caching.FileStagePolicy._drop_if_stale(store, "key-of-visit-b", "align")
    assert (tmp_path / "cache" / "key-of-visit-b").exists()
