"""The whole per-visit flow on a simulated visit: products, catalogs and records against truth."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from flows.svm import run_hap_processing
from hapcore.manifest import read_manifest
from hapsim import simulate_visit

pytestmark = pytest.mark.usefixtures("prefect_backend")


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    sim = simulate_visit(root / "visit", detector="wfc3/uvis", filters={"f606w": 2, "f814w": 2},
                         exptime=400.0, pointing_error=(1.0, 0.05), seed=12, subarray=1024,
                         # 16.5: two saturated stars inside the area every exposure covers
                         # (edge detections of single coverage are trimmed from the catalogs)
                         star_density=600.0, star_mag_range=(16.5, 27.0))
    out = root / "out"
    code = run_hap_processing(sim.poller, output_dir=out, refcat=sim.refcat, n_workers=2,
                              quality=True)
    return sim, out, code


def test_run_succeeds_and_lists_every_product(processed):
    sim, out, code = processed
    assert code == 0
    manifests = list(out.glob("*_manifest.txt"))
    assert len(manifests) == 1
    names = read_manifest(manifests[0])
    assert all((out / n).exists() for n in names)
    kinds = {"_drc.fits": 7, "_flc.fits": 4, "_hlet.fits": 4, "_point-cat.ecsv": 3,
             "_segment-cat.ecsv": 3}
    for suffix, count in kinds.items():
        assert sum(n.endswith(suffix) for n in names) == count, suffix


def test_total_product_is_aligned_and_flux_calibrated(processed):
    sim, out, _ = processed
    (total,) = out.glob("*_total_*_drc.fits")
    with fits.open(total) as hdul:
        assert hdul[0].header["HAPLEVEL"] == 2
        assert "FIT_SVM" in hdul["SCI"].header.get("WCSNAME", hdul[0].header.get("WCSNAME", ""))
        assert hdul["SCI"].header.get("BUNIT", "ELECTRONS/S").upper().startswith("ELECTRONS/S")


def test_catalog_finds_truth_stars_and_flags_saturation(processed):
    sim, out, _ = processed
    truth = Table.read(sim.truth_sources)
    (point,) = out.glob("*_f606w_*_point-cat.ecsv")
    cat = Table.read(point)
    product = out / point.name.replace("_point-cat.ecsv", "_drc.fits")
    wcs = WCS(fits.getheader(product, "SCI"))
    wht = fits.getdata(product, "WHT")
    tx, ty = wcs.all_world2pix(truth["ra"], truth["dec"], 0)
    d, i = cKDTree(np.column_stack([cat["X-Center"], cat["Y-Center"]])).query(
        np.column_stack([tx, ty]))
    inside = (tx > 30) & (ty > 30) & (tx < wcs.pixel_shape[0] - 30) & (ty < wcs.pixel_shape[1] - 30)
    covered = np.zeros(len(truth), bool)
    xi, yi = np.rint(tx[inside]).astype(int), np.rint(ty[inside]).astype(int)
    # well inside the area both exposures cover (weight at least 90% of the maximum)
    covered[inside] = wht[yi, xi] >= 0.9 * np.nanmax(wht)
    stars = (truth["type"] == "star") & covered
    bright = stars & (truth["abmag_f606w"] < 24.0)
    assert np.mean(d[bright] < 1.0) >= 0.95          # found, within 1 px of truth
    good = bright & (d < 1.0)
    dx = cat["X-Center"][i[good]] - tx[good]
    # no systematic offset after alignment: on this 40" field only ~11 reference stars are
    # unsaturated, so the fit itself is good to ~3 mas (0.08 px); full-frame accuracy is in
    # test_align.py
    assert abs(np.median(dx)) < 0.15
    # stars with saturated pixels (DQ 256) in an input exposure carry flag 4 in the catalog
    exposure = sim.exposures[0]
    true_wcs = WCS(fits.Header.fromtextfile(str(sim.out_dir / "truth_wcs" /
                                                 f"{sim.rootnames[0]}_sci1.hdr")))
    dq = fits.getdata(exposure, ("DQ", 1))
    ex, ey = true_wcs.all_world2pix(truth["ra"], truth["dec"], 0)
    saturating = np.zeros(len(truth), bool)
    on_chip = (truth["type"] == "star") & (d < 1.5)     # detected, wherever the coverage
    for k in np.flatnonzero(on_chip):
        x0, y0 = int(round(ex[k])), int(round(ey[k]))
        if 2 <= x0 < dq.shape[1] - 2 and 2 <= y0 < dq.shape[0] - 2:
            saturating[k] = bool(np.any(dq[y0 - 1:y0 + 2, x0 - 1:x0 + 2] & 256))
    assert saturating.any()
    assert np.all(cat["Flags"][i[saturating]] & 4)
    assert not np.any(cat["Flags"][i[good & ~saturating & (truth["abmag_f606w"] > 21)]] & 4)

def test_quality_summary_and_section7_files(processed):
    import json

    sim, out, _ = processed
    (summary,) = out.glob("*_svm_quality.json")
    doc = json.loads(summary.read_text())
    assert doc["overall_status"] in ("passed", "failed")
    assert {"checks", "alignment", "stages", "thresholds", "counts"} <= set(doc)
    assert any(s.startswith("drizzle") for s in doc["stages"])
    for pattern in ("*_svm_num_sources.json", "*_svm_gaia_sources.json",
                    "*_svm_point_segment_crossmatch.json",
                    "*_svm_gaia_distribution_characterization.json", "*_svm_*_photometry.json",
                    "*_svm_interfilter_crossmatch.json", "*_svm_wcs.json", "*_preview.png"):
        files = list(out.glob(pattern))
        assert files, pattern
        for f in files:
            if f.suffix == ".json":
                assert {"header", "general information", "data"} <= set(json.loads(f.read_text()))


def _spurious_fraction(out, sim, path):
    """Rows with no truth source within max(0.2", 3 px) (BENCHMARKS.md's definition) and not
    inside 3 r_eff of a truth galaxy (deblended parts of extended sources)."""
    truth = Table.read(sim.truth_sources)
    (product,) = out.glob("*_total_*_drc.fits")
    wcs = WCS(fits.getheader(product, "SCI"))
    tx, ty = wcs.all_world2pix(truth["ra"], truth["dec"], 0)
    galaxy = np.asarray(truth["type"]) != "star"
    reach = np.maximum(5.0, 3.0 * np.nan_to_num(np.asarray(truth["r_eff"], float)) / 0.04)
    cat = Table.read(path)
    xcol, ycol = ("X-Center", "Y-Center") if "point" in path.name else ("X-Centroid", "Y-Centroid")
    xy = np.column_stack([cat[xcol], cat[ycol]])
    d, _ = cKDTree(np.column_stack([tx, ty])).query(xy)
    real = d <= 5.0
    for g in np.flatnonzero(galaxy):
        real |= np.hypot(xy[:, 0] - tx[g], xy[:, 1] - ty[g]) <= reach[g]
    return len(cat), float(np.mean(~real))


def test_catalogs_of_pipeline_products_have_few_spurious_rows(processed):
    """Every catalog (filter and total, point and segment) of the drizzled products: <= 1%
    spurious rows (the requirement), in these TWO-exposure filters.

    Filter catalogs are trimmed to the total catalog's rows, rows absent from a covering
    exposure are flagged 16, faint rows seen in one filter only get flag 16 there
    (hapcore.catalogs.filter_consistency: cosmic-ray residuals, CR-on-CR included, that the
    two-image rejection cannot remove), and detections on a brighter neighbour's profile get
    flag 32 (hapcore.catalogs.swarm). Measured: point 0.5% (1 of 218; 3.0% before the last two
    tests), segment 0%."""
    sim, out, _ = processed
    catalogs = sorted(out.glob("*-cat.ecsv"))
    assert len(catalogs) == 6
    for path in catalogs:
        n_rows, spurious = _spurious_fraction(out, sim, path)
        assert n_rows > 100, path.name
        assert spurious <= 0.01, (path.name, spurious, n_rows)
