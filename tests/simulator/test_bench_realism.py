"""benchmarks/bench_realism.py: the drizzled-star model and the scorer's plumbing (fast, subarray)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
br = pytest.importorskip("bench_realism")

RADII = {"aperture_2": 0.15, "sky_in": 0.25, "sky_out": 0.5, "r6": 0.2, "bg6": (1.0, 1.5)}


@pytest.fixture(autouse=True)
def _few_phases(monkeypatch):
    monkeypatch.setattr(br, "N_REALISATIONS", 16)


def _uvis():
    from hapsim.detectors import get_detector

    return get_detector("wfc3/uvis")


def test_drizzle_star_conserves_flux_and_rotation_does_not_matter():
    spec = _uvis()
    provider = br.MixturePSF(spec)
    native = provider.stamp(0.2, -0.3, "bright")
    turn = np.radians(33.0)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) * 0.99
    out = br.drizzle_star(native, 0.2, -0.3, np.linalg.inv(rot), abs(np.linalg.det(rot)), 1.0,
                          45, 0.1, 0.4)
    assert out.sum() == pytest.approx(native.sum(), rel=1e-3)
    ee = [br.build_star_model(provider, "bright", m, 1.0, 0.04, RADII, "mode").ee_ap2_raw
          for m in (np.eye(2) * 0.99, rot)]
    assert ee[0] == pytest.approx(ee[1], abs=2e-3)
    # the drizzle broadens the star: less light in aperture 2 than on native pixels
    assert 0.7 < ee[0] < 0.83


def test_truth_psf_file_matches_the_mixture(tmp_path):
    """A visit's truth PSF file (the untruncated mixture) gives the bright-star model."""
    psfio = pytest.importorskip("hapsim.psfio")
    spec = _uvis()
    provider = br.MixturePSF(spec)
    psfs = psfio.visit_psfs(spec, ["F606W"], [spec.idcscale], "gaussian")
    path = psfio.write_truth_psfs(tmp_path, psfs, detector="wfc3/uvis")[0]
    m = np.eye(2) * spec.idcscale / 0.04
    from_file = br.build_star_model(br.FilePSF(path, spec, "f606w"), "file", m, 1.0, 0.04, RADII,
                                    "mode")
    mixture = br.build_star_model(provider, "bright", m, 1.0, 0.04, RADII, "mode")
    assert from_file.ee_ap2_raw == pytest.approx(mixture.ee_ap2_raw, abs=1.5e-3)
    assert from_file.ee6 == pytest.approx(mixture.ee6, abs=1.5e-3)


def test_catalog_sky_response():
    """Faint stars: the annulus takes its mean PSF light; bright ones: the clipped mode's."""
    spec = _uvis()
    model = br.build_star_model(br.MixturePSF(spec), "small", np.eye(2) * 0.99, 1.0, 0.04,
                                RADII, "mode")
    linear = model.area2 * model._linear
    assert 0.005 < linear < 0.02
    assert model.ee_ap2(3.0) == pytest.approx(model.ee_ap2_raw - linear, abs=1e-3)
    assert model.ee_ap2(1e6) > model.ee_ap2(10.0)


def test_popcount_of_context():
    ctx = np.array([[0, 1, 3], [7, 2 ** 31 - 1, 5]], dtype=np.int32)
    assert br._popcount(ctx).tolist() == [[0, 1, 2], [3, 31, 2]]


def _write_product(path, wcs, shape, rng, with_ctx=True):
    header = wcs.to_header()
    sci = rng.normal(0.0, 0.01, shape).astype(np.float32)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(sci, header=header, name="SCI"),
            fits.ImageHDU(np.full(shape, 1000.0, np.float32), header=header, name="WHT")]
    if with_ctx:
        hdus.append(fits.ImageHDU(np.full(shape, 3, np.int32), header=header, name="CTX"))
    hdus[0].header["D001PIXF"] = 1.0
    fits.HDUList(hdus).writeto(path)


def test_scorer_counts_spurious_rows_and_completeness(tmp_path):
    """A fake product directory whose catalogs are the truth plus 2 rows far from any source."""
    from hapsim import simulate_visit

    visit = tmp_path / "visit"
    simulate_visit(visit, detector="wfc3/uvis", filters={"f606w": 2}, subarray=256, seed=3,
                   pointing_error=(0.0, 0.0), dither="line2", star_density=400.0,
                   galaxy_density=0.0)
    truth = Table.read(visit / "truth_sources.ecsv")
    root = min(visit.glob("*_fl[tc].fits")).name.split("_")[0]
    chip = WCS(fits.Header.fromtextfile(str(visit / "truth_wcs" / f"{root}_sci1.hdr")))
    out = WCS(naxis=2)
    out.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    out.wcs.crval = [float(v) for v in chip.all_pix2world([[127.5, 127.5]], 0)[0]]
    out.wcs.crpix = [150.0, 150.0]
    out.wcs.cd = np.array([[-1.0, 0.0], [0.0, 1.0]]) * 0.04 / 3600
    shape = (300, 300)
    prod = tmp_path / "products"
    prod.mkdir()
    rng = np.random.default_rng(1)
    base = "hst_15003_01_wfc3_uvis"
    _write_product(prod / f"{base}_total_ix0301_drc.fits", out, shape, rng)
    _write_product(prod / f"{base}_f606w_ix0301_drc.fits", out, shape, rng, with_ctx=False)

    # truth sources on the grid, and two positions covered by both exposures far from any star
    x, y = out.all_world2pix(truth["ra"], truth["dec"], 0)
    on = (x > 20) & (y > 20) & (x < 280) & (y < 280)
    sources = truth[on]
    gy, gx = np.mgrid[20:280:4, 20:280:4]
    gra, gdec = out.all_pix2world(gx.ravel(), gy.ravel(), 0)
    import json

    exposures = br.load_exposures(visit, json.loads((visit / "visit_truth.json").read_text()))
    covered = br.coverage(exposures, gra, gdec, 10.0).sum(axis=0) >= 2
    far = np.array([np.min(np.hypot((truth["ra"] - a) * np.cos(np.radians(d)), truth["dec"] - d))
                    * 3600 for a, d in zip(gra, gdec)])
    far[~covered] = 0.0
    pick = np.argsort(far)[::-1][:2]
    assert min(far[pick]) > 0.5
    ra = np.concatenate([sources["ra"], gra[pick]])
    dec = np.concatenate([sources["dec"], gdec[pick]])
    n = ra.size
    total = Table({"RA": ra, "DEC": dec, "ID": np.arange(1, n + 1),
                   "Flags_f606w": np.zeros(n, int)})
    for kind in ("point", "segment"):
        total.write(prod / f"{base}_total_ix0301_{kind}-cat.ecsv", format="ascii.ecsv")
    rate = np.concatenate([sources["countrate_f606w"], [0.0, 0.0]])
    flux = rate * 0.79
    filt = Table({"RA": ra, "DEC": dec, "ID": np.arange(1, n + 1), "FluxAp2": flux,
                  "FluxErrAp2": np.full(n, 0.05), "MagAp2": np.full(n, 25.0),
                  "FluxSegment": rate, "Flags": np.zeros(n, int)})
    for kind in ("point", "segment"):
        filt.write(prod / f"{base}_f606w_ix0301_{kind}-cat.ecsv", format="ascii.ecsv")

    res = br.evaluate(visit, prod, label="fake")
    point = res["spurious"]["point"]
    assert point["rows_in_ge2_area"] >= 2
    assert point["spurious"] == 2
    comp = res["completeness_sn10"]["f606w"]
    assert comp["n_stars"] > 0 and comp["fraction"] == 1.0
    assert res["positions_sn20"]["all"]["median_error_mas"] < 1.0
    assert res["photometry"]["f606w"]["ee_ap2"]["source"] == "hapsim_gaussian_mixture"
    assert res["visit"]["n_exposures"] == 2
