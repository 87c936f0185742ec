"""Quality stage (spec §7 + hapsvm summary) on a synthetic 2-filter visit."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from flows.options import QUALITY_ENV_VAR, quality_switch, read_environment
from flows.stages import DirectRunner, quality_stage
from hap_models.errors import HapInputError
from hap_models.products import ExposureProduct, FilterProduct, TotalProduct
from hap_models.quality import QualityReport
from hap_models.run_options import VisitOptions
from hapcore.obset.parameters import build_product_parameters
from hapcore.quality.summary import visit_name
from test_catalog_products import write_catalog_products
from test_catalog_scene import RA0, DEC0, make_visit, make_wcs, write_product

MJD = 58604.5
FILTERS = (("f606w", 400.0, 2), ("f814w", 400.0, 2))
SHAPE = (400, 400)
SCALE = 0.04


def _params(kind, name, n):
    base = "hst_12345_01_wfc3_uvis_" + ("total" if kind == "total" else name) + "_i00001"
    return build_product_parameters("wfc3", "uvis", kind, product_basename=base,
                                    filter_name=None if kind == "total" else name,
                                    n_exposures=n, first_expstart_mjd=MJD)


def write_svm_copy(path, rootname, *, wcsname="IDC_xyz-FIT_SVM_GAIADR3"):
    """A tiny SVM FLT copy with an a posteriori primary WCS and two alternate WCSs."""
    primary = fits.Header()
    primary.update(INSTRUME="WFC3", DETECTOR="UVIS", ROOTNAME=rootname, EXPTIME=400.0,
                   FILENAME=path.name, PROPOSID=12345, TELESCOP="HST")
    wcs = make_wcs((200, 200), SCALE)
    sci = fits.Header()
    sci["EXTNAME"], sci["EXTVER"] = "SCI", 1
    sci.update(wcs.to_header())
    sci["WCSNAME"], sci["WCSTYPE"] = wcsname, "undistorted a posteriori solution"
    sci.update(RMS_RA=5.0, RMS_DEC=6.0, NMATCHES=40, FITGEOM="rscale")
    for key, name, dra in (("A", "IDC_xyz", 0.3), ("B", "IDC_xyz-GSC240", 0.1)):
        alt = make_wcs((200, 200), SCALE)
        alt.wcs.crval = [RA0 + dra / 3600.0, DEC0]
        sci.update(alt.to_header(key=key))
        sci[f"WCSNAME{key}"] = name
    data = np.ones((200, 200), np.float32)
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(data, header=sci)]).writeto(path)
    return path


def build_visit(tmp_path, *, filters=FILTERS, seed=2, n_stars=150, n_galaxies=10,
                star_mags=(19.0, 27.5)):
    """Drizzled products, catalogs, SVM copies and a reference catalog in ``tmp_path``."""
    visit = make_visit(SHAPE, filters=filters, n_stars=n_stars, n_galaxies=n_galaxies, seed=seed,
                       star_mags=star_mags)
    total = TotalProduct("12345", "01", "wfc3", "uvis", "i00001a1q_flc.fits", "drc",
                         parameters=_params("total", None, 4))
    for k, (name, _, n_exp) in enumerate(filters):
        fdp = FilterProduct("12345", "01", "wfc3", "uvis", "i00001a1q_flc.fits", name, "drc",
                            parameters=_params("filter", name, n_exp))
        for j in range(n_exp):
            root = f"i00001{chr(97 + k)}{j + 1}q"
            edp = ExposureProduct("12345", "01", "wfc3", "uvis", f"{root}_flc.fits", name, "drc",
                                  exptime=400.0)
            fdp.add_member(edp)
            total.add_member(edp)
            write_svm_copy(tmp_path / edp.full_filename, root)
        total.add_product(fdp)
        write_product(visit.filters[name], tmp_path / fdp.drizzle_filename)
    write_product(visit.total, tmp_path / total.drizzle_filename)
    write_catalog_products(total, tmp_path)
    stars = visit.truth[visit.truth["type"] == "star"]
    ref = Table({"ra": stars["ra"], "dec": stars["dec"], "mag": stars["abmag_f606w"]})
    ref.meta["catalog_name"] = "GAIADR3"
    refcat_path = tmp_path / "refcat.ecsv"
    ref.write(refcat_path, format="ascii.ecsv")
    return visit, total, refcat_path


def run_quality(total, output_dir, refcat, runner=None):
    """The quality sequence of the flow (group tasks, then the summary), without Prefect."""
    return quality_stage(runner or DirectRunner(), [total], output_dir, refcat, [], [],
                         visit_name([total]))


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    visit, total, refcat = build_visit(tmp)
    hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp.glob("*.fits")}
    # stage costs measured by the flow's runner before the quality stage
    runner = DirectRunner()
    runner.timings.update({"drizzle": 12.5, "catalogs": 3.25})
    runner.peaks = {"drizzle": 812.0}
    report = run_quality(total, tmp, refcat, runner)
    return tmp, total, report, hashes


# ------------------------------------------------------------------------------ switch
@pytest.mark.parametrize("value,expected", [
    ("on", True), ("YES", True), ("True", True), (" true ", True),
    ("off", False), ("No", False), ("FALSE", False), ("", False),
])
def test_quality_switch_values(value, expected):
    assert quality_switch(value) is expected
    assert read_environment(VisitOptions(), {QUALITY_ENV_VAR: value}).quality_enabled is expected


def test_quality_switch_unset_flag_and_invalid():
    assert read_environment(VisitOptions(), {}).quality_enabled is False
    assert read_environment(VisitOptions(quality=True), {}).quality_enabled is True
    on = read_environment(VisitOptions(quality=True), {QUALITY_ENV_VAR: "off"})
    assert on.quality_enabled is True
    with pytest.raises(HapInputError) as err:
        read_environment(VisitOptions(quality=True), {QUALITY_ENV_VAR: "maybe"})
    message = str(err.value)
    assert QUALITY_ENV_VAR in message and "maybe" in message and "\n" not in message


# ------------------------------------------------------------------------------ full run
def _load(path):
    doc = json.loads(path.read_text())
    assert set(doc) == {"header", "general information", "data"}
    gi = doc["general information"]
    for key in ("telescope", "proposal_id", "instrument", "detector", "visit", "filter",
                "dataset", "dataframe_index", "imgname", "generation date", "generation time",
                "seconds since epoch", "commit id", "data_source", "description"):
        assert key in gi, key
    for item in doc["data"].values():
        assert {"original format", "description", "data", "descriptions", "units"} <= set(item)
    assert not any(k.startswith("HISTORY") or k in ("FILTER", "FILTER1", "FILTER2")
                   for k in doc["header"])
    return doc


def test_every_section7_file_is_written(quality_run):
    tmp, total, report, _ = quality_run
    stem = total.drizzle_filename[:-9]
    doc = _load(tmp / f"{stem}_svm_num_sources.json")
    n = doc["data"]["number_of_sources"]["data"]
    assert set(n) == {"detector", "point", "segment"} and n["point"] > 20 and n["segment"] > 20
    assert doc["general information"]["visit"] == "01"
    doc = _load(tmp / f"{stem}_svm_gaia_sources.json")
    assert doc["data"]["Number of GAIA sources"]["data"]["Number of GAIA sources"] > 50
    assert set(doc["data"]["GAIA sources"]["data"]) == {"RA", "DEC", "mag"}
    for fdp in total.fdp_list:
        fstem = fdp.drizzle_filename[:-9]
        _load(tmp / f"{fstem}_svm_gaia_sources.json")
        doc = _load(tmp / f"{fstem}_svm_point_segment_crossmatch.json")
        assert {"Cross-match details", "Cross-matched point catalog",
                "Cross-matched segment catalog", "Segment - point on-sky separation statistics",
                "Delta_Photometry"} <= set(doc["data"])
        stats = doc["data"]["Segment - point on-sky separation statistics"]["data"]
        assert stats["3x3 sigma-clipped mean"] < 0.02
        doc = _load(tmp / f"{fstem}_svm_gaia_distribution_characterization.json")
        values = doc["data"]["distribution characterization statistics"]["data"]
        assert abs(values["X centroid"] - 200) < 60 and values["Mean neighbor distance"] > 0
        doc = _load(tmp / f"i00001_uvis_svm_{fdp.filters}_photometry.json")
        assert {"MagAp1 delta", "MagAp2 delta"} <= set(doc["data"])
        assert abs(doc["data"]["MagAp2 delta"]["data"]["Median"]) < 0.05
    # inter-filter: one file for the comparison filter (the other is the reference)
    inter = sorted(tmp.glob("*_svm_interfilter_crossmatch.json"))
    assert len(inter) == 1
    doc = _load(inter[0])
    details = doc["data"]["Interfilter cross-match details"]["data"]
    assert details["number of cross-matches"] >= 20
    assert abs(doc["data"]["Interfilter cross-matched X axis statistics"]["data"]
               ["3x3 sigma-clipped mean"]) < 0.1
    for edp in total.edp_list:
        _load(tmp / f"{edp.product_basename}_svm_gaia_sources.json")
        doc = _load(tmp / f"{edp.product_basename}_svm_wcs.json")
        data = doc["data"]
        assert data["PrimaryWCS"]["data"]["WCSNAME"] == "IDC_xyz-FIT_SVM_GAIADR3"
        assert {"AlternateWCS_default", "DeltaWCS_default", "AlternateWCS_apriori",
                "DeltaWCS_apriori"} <= set(data)
        assert data["DeltaWCS_default"]["data"]["CRVAL1"] == pytest.approx(
            -0.3 * np.cos(np.radians(DEC0)), abs=1e-3)  # on-sky arcsec


def test_report_and_summary(quality_run):
    tmp, total, report, hashes = quality_run
    assert isinstance(report, QualityReport)
    assert report.visit == "hst_12345_01_wfc3"
    assert report.summary_file == "hst_12345_01_wfc3_svm_quality.json"
    bad = [c for c in report.checks if c.status in ("failed", "error")]
    assert not bad, bad
    assert report.overall_status == "passed"
    for rel in report.files_written:
        assert (tmp / rel).exists(), rel
    summary = json.loads((tmp / report.summary_file).read_text())
    assert summary["overall_status"] == "passed"
    assert set(summary) >= {"visit", "generated", "counts", "thresholds", "checks", "alignment",
                            "stages", "previews", "plots"}
    assert summary["stages"]["drizzle"] == {"seconds": 12.5, "peak_memory_mb": 812.0}
    assert summary["stages"]["catalogs"]["seconds"] == 3.25
    assert len(summary["alignment"]) == 4
    assert summary["alignment"][0]["catalog"] == "GAIADR3"
    assert summary["alignment"][0]["rms_dec_mas"] == 6.0
    checks = {c["check"] for c in summary["checks"]}
    assert {"num_sources", "gaia_sources", "gaia_distribution", "point_segment_crossmatch",
            "photometry", "interfilter_crossmatch", "wcs_report", "hla_comparison", "alignment",
            "preview"} <= checks
    hla = [c for c in summary["checks"] if c["check"] == "hla_comparison"]
    assert all(c["status"] == "skipped" for c in hla)
    # previews of the total and both filter products, PNG plots referenced relatively
    assert len(summary["previews"]) == 3
    for rel in summary["previews"] + summary["plots"]:
        assert rel.endswith(".png") and not rel.startswith("/")
        assert (tmp / rel).read_bytes()[:4] == b"\x89PNG"
    # nothing was written into any FITS file
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp.glob("*.fits")}
    assert after == hashes


def test_failing_check_is_recorded_and_run_completes(tmp_path, caplog):
    visit, total, refcat = build_visit(tmp_path, n_stars=80, n_galaxies=5, seed=5)
    fdp = total.fdp_list[0]
    empty = Table.read(tmp_path / fdp.point_cat_filename, format="ascii.ecsv")[:0]
    empty.write(tmp_path / fdp.point_cat_filename, format="ascii.ecsv", overwrite=True)
    (tmp_path / total.edp_list[0].full_filename).unlink()
    with caplog.at_level(logging.ERROR, logger="hapsvm"):
        report = run_quality(total, tmp_path, None)
    errors = {(c.check, c.product) for c in report.checks if c.status == "error"}
    assert ("point_segment_crossmatch", fdp.product_basename) in errors
    assert ("photometry", fdp.product_basename) in errors
    assert ("wcs_report", total.edp_list[0].product_basename) in errors
    msg = next(c.message for c in report.checks if c.check == "point_segment_crossmatch"
               and c.status == "error")
    assert "empty" in msg
    assert "point_segment_crossmatch" in caplog.text
    # the other checks still ran; no reference catalog -> skipped, never a query
    other = total.fdp_list[1]
    ok = {(c.check, c.product): c.status for c in report.checks}
    assert ok[("point_segment_crossmatch", other.product_basename)] == "passed"
    assert ok[("wcs_report", total.edp_list[1].product_basename)] == "done"
    assert all(c.status == "skipped" for c in report.checks if c.check == "gaia_sources")
    summary = json.loads((tmp_path / report.summary_file).read_text())
    assert summary["overall_status"] == "failed"
    assert summary["counts"]["error"] == len(errors)


def test_single_filter_visit_skips_interfilter(tmp_path):
    _, total, refcat = build_visit(tmp_path, filters=(("f606w", 400.0, 2),), n_stars=60,
                                   n_galaxies=0, seed=7)
    report = run_quality(total, tmp_path, refcat)
    inter = report.outcomes("interfilter_crossmatch")
    assert len(inter) == 1 and inter[0].status == "skipped"
    assert not list(tmp_path.glob("*_svm_interfilter_crossmatch.json"))
