"""HLA-classic comparison (spec §8) with hapsim-written HLA-format catalogs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from photutils.aperture import CircularAnnulus, CircularAperture
from scipy.spatial import cKDTree

from hap_models.quality import QualityThresholds
from hapcore.quality.hla import hla_catalog_directory, hla_catalog_files, read_hla_catalog
from hapcore.catalogs.photometry import iraf_style_photometry
from hapcore.quality.stage import hla_catalog_inputs, make_quality_context, run_hla_comparison
from hapsim.hla_catalogs import write_hla_catalogs
from test_quality import SCALE, build_visit

FILTERS = (("f606w", 400.0, 2), ("f814w", 400.0, 2))


def measured_fraction(psf, radius_px):
    """Fraction of a star's flux the pipeline measures in an aperture (annulus sky removed)."""
    half = 40
    stamp = psf.stamps([0.0], [0.0], half)[0]
    pos = (half, half)
    phot = iraf_style_photometry([CircularAperture(pos, radius_px)],
                                 CircularAnnulus(pos, 0.25 / SCALE, 0.5 / SCALE), stamp)
    return float(phot["flux_1"][0])


@pytest.fixture(scope="module")
def hla_visit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hla")
    visit, total, _ = build_visit(tmp, filters=FILTERS, n_stars=300, n_galaxies=0, seed=11,
                                 star_mags=(20.0, 22.0))
    truth = visit.truth
    sky = {}
    for name, image in visit.filters.items():
        _, _, std = sigma_clipped_stats(image.data[:, :300], sigma=3)
        sky[name] = float(std)
    # HLA catalogs list the well-measured, isolated stars away from the single-exposure edge
    # strip (crowding and the faint/extended flag thresholds make independent measurements
    # disagree beyond the 5% the criteria allow)
    xy = np.column_stack([truth["x"], truth["y"]])
    n_near = cKDTree(xy).query_ball_point(xy, r=0.3 / SCALE, return_length=True)
    select = ((truth["x"] > 30) & (truth["x"] < 330) & (truth["y"] > 30) & (truth["y"] < 370)
              & (n_near == 1))
    kwargs = dict(wcs=visit.total.wcs, filters=[f[0] for f in FILTERS],
                  basename=total.basename, plate_scale=SCALE,
                  exptime={f[0]: f[1] * f[2] for f in FILTERS},
                  encircled_energy=lambda r: measured_fraction(visit.psf, r),
                  sky_sigma=sky, select=select, seed=3)
    return tmp, visit, total, kwargs


def _compare(tmp, visit, total, kwargs, **changes):
    hla_dir = tmp / "hla_classic"
    for old in hla_dir.glob("*"):
        old.unlink()
    write_hla_catalogs(visit.truth, output_dir=hla_dir, **{**kwargs, **changes})
    # sky, error and flux-1 differences are heteroscedastic (heavy-tailed) even for
    # independent measurements of the same truth; positions, magnitudes, CI and flags decide
    thresholds = QualityThresholds(hla_judged_quantities=(
        "X", "Y", "Separation", "MAGNITUDE1", "MAGNITUDE2", "CI", "FLAGS"))
    ctx = make_quality_context([total], output_dir=tmp, make_plots=True, thresholds=thresholds)
    return run_hla_comparison([total], ctx,
                              catalogs=hla_catalog_inputs([total], local_dir=tmp / "hla_classic"))


def test_hla_catalog_layout(hla_visit):
    tmp, visit, total, kwargs = hla_visit
    paths = write_hla_catalogs(visit.truth, output_dir=tmp / "layout", **kwargs)
    names = sorted(p.name for p in paths)
    assert names == [f"{total.basename}{f}_{k}.txt" for f in ("f606w", "f814w")
                     for k in ("daophot", "sexphot")]
    header = next(line for line in paths[0].read_text().splitlines() if not line.startswith("#"))
    assert header.split() == ["X-Center", "Y-Center", "RA", "DEC", "ID", "MagAp(0.05)",
                              "MagErr(0.05)", "MagAp(0.15)", "MagErr(0.15)", "MSky(0.15)",
                              "Stdev(0.15)", "Flux(0.15)", "CI", "Flags"]
    table = read_hla_catalog(paths[0])
    assert {"X", "Y", "RA", "DEC", "MAGNITUDE1", "MAGNITUDE2", "FLAGS", "CI"} <= set(table.colnames)
    sex = read_hla_catalog(paths[1])
    assert {"X", "Y", "FLUX1", "FLUX2", "MAGNITUDE1"} <= set(sex.colnames)


def test_hla_directory_lookup(tmp_path, hla_visit):
    _, _, total, _ = hla_visit
    fdp = total.fdp_list[0]
    assert hla_catalog_directory(fdp, local_dir=tmp_path / "hla_classic") is None
    assert hla_catalog_files(fdp, local_dir=tmp_path / "hla_classic") is None
    (tmp_path / "hla_classic").mkdir()
    assert hla_catalog_directory(fdp, local_dir=tmp_path / "hla_classic") == tmp_path / "hla_classic"
    base = tmp_path / "hla"
    # a build version without a base path (or a missing base path) falls back to hla_classic/
    assert hla_catalog_directory(fdp, local_dir=tmp_path / "hla_classic", build_ver="v3") == \
        tmp_path / "hla_classic"
    assert hla_catalog_directory(fdp, local_dir=tmp_path / "hla_classic", basepath=base,
                                 build_ver="v3") == \
        tmp_path / "hla_classic"
    base.mkdir()
    logs = base / "wfc3" / "v3" / "12345" / "12345_01" / "logs"
    assert hla_catalog_directory(fdp, local_dir=tmp_path / "hla_classic", basepath=base, build_ver="v3") == logs
    assert hla_catalog_files(fdp, local_dir=tmp_path / "hla_classic", basepath=base, build_ver="v3") == {
        "point": logs / f"{fdp.basename}{fdp.filters}_daophot.txt",
        "segment": logs / f"{fdp.basename}{fdp.filters}_sexphot.txt"}


def test_hla_comparison_passes_when_catalogs_agree(hla_visit):
    tmp, visit, total, kwargs = hla_visit
    outcomes = _compare(tmp, visit, total, kwargs)
    assert len(outcomes) == 4
    for outcome in outcomes:
        assert outcome.status == "passed", (outcome.product, outcome.metrics, outcome.message)
        assert outcome.metrics["n_matches"] >= 30
    fdp = total.fdp_list[0]
    path = tmp / (fdp.point_cat_filename.removesuffix(".ecsv") + "_svm_compare_sourcelists.json")
    doc = json.loads(path.read_text())
    assert set(doc) == {"header", "general information", "data"}
    stats = doc["data"]["Difference statistics"]["data"]
    assert {"X", "Y", "Separation", "MAGNITUDE1", "MAGNITUDE2", "CI"} <= set(stats)
    for key in ("3x3 sigma-clipped mean", "Fraction within 3 sigma", "Non-clipped median"):
        assert key in stats["X"]
    assert doc["data"]["Overall result"]["data"]["Status"] == "passed"
    assert path.with_suffix(".png").exists()


def test_hla_comparison_fails_on_shift(hla_visit):
    tmp, visit, total, kwargs = hla_visit
    outcomes = _compare(tmp, visit, total, kwargs, shift_px=(0.3, 0.0))
    assert all(o.status == "failed" for o in outcomes), [o.message for o in outcomes]
    assert all("X:" in o.message for o in outcomes)


def test_hla_comparison_fails_on_magnitude_offset(hla_visit):
    tmp, visit, total, kwargs = hla_visit
    outcomes = _compare(tmp, visit, total, kwargs, mag_offset=0.2)
    assert all(o.status == "failed" for o in outcomes), [o.message for o in outcomes]
    assert all("MAGNITUDE2" in o.message for o in outcomes)
