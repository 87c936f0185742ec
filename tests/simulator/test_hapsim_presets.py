"""
Tests of hapsim's visit presets (`hapsim.presets`), on small subarrays.

Each preset is checked against the property it promises: the deep
luminosity function continues below the detection limit, the crowded
density gives >= 5,000 stars per full chip, cr2x doubles the cosmic-ray
fraction, saturated stars bleed along columns, proper-motion stars sit
where `hapsim.epochs.true_positions` puts them at each exposure's epoch.
"""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from photutils.centroids import centroid_2dg
from scipy import ndimage

from hapsim import simulate_visit
from hapsim.cli import main as hapsim_main
from hapsim.detectors import get_detector
from hapsim.epochs import jyear_to_mjd, mjd_to_jyear, true_positions
from hapsim.presets import PRESETS, chip_area_arcmin2, resolve_preset, simulate_preset

UVIS = get_detector("wfc3/uvis")


def _true_wcs(result, rootname, extver=1):
    path = result.out_dir / "truth_wcs" / f"{rootname}_sci{extver}.hdr"
    try:
        # chips with NPOL/D2IM lookup tables keep their complete truth beside the text header
        from hapsim.distortion import truth_wcs
    except ImportError:
        return WCS(fits.Header.fromtextfile(path))
    return truth_wcs(path)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_simulates_and_is_recorded(tmp_path, name):
    result = simulate_preset(tmp_path, name, subarray=128, seed=3)
    layout = PRESETS[name].layout
    assert len(result.exposures) == sum(layout["filters"].values())
    assert result.detector == layout["detector"]
    recorded = json.loads(result.visit_truth.read_text())["preset"]
    assert recorded["name"] == name and recorded["components"] == [name]
    params = recorded["parameters"]
    assert params["subarray"] == 128 and params["seed"] == 3
    assert params["filters"] == layout["filters"] and params["exptime"] == layout["exptime"]
    assert result.summary["preset"] == recorded
    with fits.open(result.exposures[0]) as hdul:
        assert hdul["SCI", 1].data.shape == (128, 128)


def test_presets_compose_and_overrides_win():
    both = resolve_preset("deep+cr2x")
    assert resolve_preset(["deep", "cr2x"])["parameters"] == both["parameters"]
    params = both["parameters"]
    # the first preset's layout, the second's cosmic rays, the first's derived magnitudes
    assert params["filters"] == PRESETS["deep"].layout["filters"]
    assert params["cr_rate_scale"] == 2.0
    assert params["star_mag_range"] == resolve_preset("deep")["parameters"]["star_mag_range"]
    ir = resolve_preset("ir-only+deep")["parameters"]
    assert ir["detector"] == "wfc3/ir" and ir["galaxy_density"] == 800.0
    mine = resolve_preset("crowded", star_density=100.0,
                          scene_options={"star_slope": 0.1})["parameters"]
    assert mine["star_density"] == 100.0 and mine["scene_options"]["star_slope"] == 0.1
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("deep+shallow")
    with pytest.raises(ValueError, match="unknown simulate_visit keyword"):
        resolve_preset("deep", colour="red")


def test_saturated_asks_for_the_optical_psf_when_available(monkeypatch):
    import inspect

    import hapsim.presets as presets

    signature = inspect.signature(simulate_visit)
    without = signature.replace(parameters=[p for p in signature.parameters.values()
                                            if p.name != "psf"])
    with_psf = without.replace(parameters=[*without.parameters.values(), inspect.Parameter(
        "psf", inspect.Parameter.KEYWORD_ONLY, default="gaussian")])
    for sig, supported in ((without, False), (with_psf, True)):
        def fake(*args, **kwargs):
            raise AssertionError("not called")

        fake.__signature__ = sig
        monkeypatch.setattr(presets, "simulate_visit", fake)
        preset = resolve_preset("saturated")
        if supported:
            assert preset["parameters"]["psf"] == "optical" and not preset["not_supported"]
        else:
            assert "psf" not in preset["parameters"]
            assert preset["not_supported"] == {"psf": "optical"}


def test_deep_counts_rise_below_the_detection_limit(tmp_path):
    # F606W alone: its limit is that of the full preset (4 x 600 s)
    result = simulate_preset(tmp_path, "deep", subarray=256, seed=2, filters={"f606w": 4})
    derived = result.summary["preset"]["derived"]["deep"]
    limit = derived["detection_limit_abmag"]["f606w"]
    assert 27.0 < limit < 28.5  # 4 x 600 s in F606W, S/N 5 in 0.1"
    mags = np.asarray(Table.read(result.truth_sources)["abmag_f606w"])
    assert mags.max() > limit + 2.8
    # most sources are undetectable: the confusion background
    assert np.mean(mags > limit) > 0.7
    counts, _ = np.histogram(mags, bins=np.arange(25.0, limit + 3.0, 1.0))
    assert np.all(np.diff(counts) > 0), counts
    # about 10**0.3 = 2 times more sources per magnitude
    slope = np.polyfit(np.arange(counts.size), np.log10(counts), 1)[0]
    assert 0.2 < slope < 0.4


def test_crowded_density_gives_5000_stars_per_chip(tmp_path):
    result = simulate_preset(tmp_path, "crowded", subarray=512, seed=4, filters={"f606w": 1})
    density = result.summary["preset"]["parameters"]["star_density"]
    assert density * chip_area_arcmin2("wfc3/uvis") >= 5000
    truth = Table.read(result.truth_sources)
    stars = truth[truth["type"] == "star"]
    wcs = _true_wcs(result, result.rootnames[0])
    x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    on_chip = np.sum((x > -0.5) & (x < 511.5) & (y > -0.5) & (y < 511.5))
    area = 512**2 * wcs.proj_plane_pixel_area().to_value("arcmin2")
    expected = density * area
    assert abs(on_chip - expected) < 4 * np.sqrt(expected), (on_chip, expected)
    # scaled to the full chip
    assert on_chip / area * chip_area_arcmin2("wfc3/uvis") > 5000


def test_cr2x_doubles_the_cosmic_ray_fraction(tmp_path):
    result = simulate_preset(tmp_path, "cr2x", subarray=256, seed=5, filters={"f606w": 2})
    default = 1.0 - np.exp(-UVIS.cr_pixel_rate * 500.0)
    for path in result.crmasks:
        with fits.open(path) as hdul:
            assert hdul[1].data.astype(bool).mean() == pytest.approx(2 * default, rel=0.03)
    with pytest.raises(ValueError, match="not both"):
        simulate_visit(tmp_path / "both", subarray=64, cr_fraction=0.01, cr_rate_scale=2.0)


def test_saturated_stars_bleed_along_columns(tmp_path):
    # more bright stars than the preset's 10 per arcmin^2, so that the small
    # subarray surely holds some
    result = simulate_preset(tmp_path, "saturated", subarray=512, seed=6, filters={"f606w": 1},
                             scene_options={"bright_star_density": 100.0})
    preset = result.summary["preset"]
    faintest = preset["parameters"]["scene_options"]["bright_mag_range"][1]
    assert faintest < preset["derived"]["saturated"]["saturation_abmag"]["f606w"] - 0.4
    with fits.open(result.exposures[0]) as hdul:
        dq = hdul["DQ", 1].data
    saturated = (dq & 256) != 0
    assert saturated.sum() > 100
    labels, n = ndimage.label(saturated)
    shapes = [(s[0].stop - s[0].start, s[1].stop - s[1].start)
              for s in ndimage.find_objects(labels)]
    # a bleed: saturated runs along a column far longer than the region is wide
    assert max(h for h, w in shapes) >= 30
    assert any(h >= 3 * w and h >= 20 for h, w in shapes), shapes


def test_true_positions_follow_proper_motion():
    truth = Table({"ra": [10.0, 10.0], "dec": [60.0, 60.0], "pmra": [100.0, 0.0],
                   "pmdec": [0.0, -50.0]}, meta={"epoch": 2016.0})
    ra, dec = true_positions(truth, jyear_to_mjd(2026.0))
    assert (ra[0] - 10.0) * np.cos(np.radians(60.0)) * 3600 == pytest.approx(1.0, rel=1e-6)
    # a great circle leaves the parallel: 4 uas lower after 1" east at dec 60
    assert dec[0] == pytest.approx(60.0, abs=1e-8)
    assert (dec[1] - 60.0) * 3600 == pytest.approx(-0.5, rel=1e-6)
    assert mjd_to_jyear(jyear_to_mjd(2016.0)) == pytest.approx(2016.0)


def _centroid_sky(result, rootname, x, y):
    with fits.open(result.out_dir / f"{rootname}_flc.fits") as hdul:
        sci = hdul["SCI", 1].data.astype(float)
    ix, iy = int(np.rint(x)), int(np.rint(y))
    background = np.median(sci[iy - 20:iy + 21, ix - 20:ix + 21])
    cx, cy = centroid_2dg(sci[iy - 3:iy + 4, ix - 3:ix + 4] - background)
    return ix - 3 + cx, iy - 3 + cy


def test_proper_motion_stars_rendered_at_each_exposure_epoch(tmp_path):
    # no cosmic rays, so that the centroid boxes of the fastest stars stay clean
    result = simulate_preset(tmp_path, "proper-motion", subarray=512, seed=5, cr_rate_scale=0.0,
                             filters={"f606w": 1, "f814w": 1})
    truth = Table.read(result.truth_sources)
    epochs = result.summary["epochs"]
    assert truth.meta["epoch"] == pytest.approx(2016.0) and epochs["truth_epoch"] == 2016.0
    assert all(e["epoch"] > 2026.0 for e in epochs["exposures"].values())
    speed = np.hypot(truth["pmra"], truth["pmdec"])
    assert speed.max() > 30.0 and np.sum(speed > 20.0) > 0.1 * np.sum(truth["type"] == "star")

    # the truth: positions move by pm x dt between any two epochs
    first, last = result.rootnames  # F606W and F814W
    t1, t2 = (epochs["exposures"][r]["expstart_mjd"] for r in (first, last))
    ra1, dec1 = true_positions(truth, t1)
    ra2, dec2 = true_positions(truth, t2)
    dt = mjd_to_jyear(t2) - mjd_to_jyear(t1)
    np.testing.assert_allclose((dec2 - dec1) * 3.6e6, truth["pmdec"] * dt, atol=1e-6)
    np.testing.assert_allclose((ra2 - ra1) * np.cos(np.radians(dec1)) * 3.6e6,
                               truth["pmra"] * dt, atol=1e-6)

    # the pixels: a fast, bright, clean star sits at its epoch position in both exposures
    counts = np.asarray(truth["countrate_f606w"]) * 500.0
    wcs1 = _true_wcs(result, first)
    x, y = wcs1.all_world2pix(ra1, dec1, 0)
    x16, y16 = wcs1.all_world2pix(truth["ra"], truth["dec"], 0)
    moved = np.hypot(x - x16, y - y16)
    masks = [fits.getdata(result.out_dir / "truth_crmask" / f"{r}_crmask.fits", 1)
             for r in (first, last)]
    best = None
    for i in np.argsort(-moved):
        if not (truth["type"][i] == "star" and 5e3 < counts[i] < 2.5e5
                and 25 < x[i] < 486 and 25 < y[i] < 486):
            continue
        near = np.hypot(x - x[i], y - y[i])
        if np.any((near > 0) & (near < 12) & (counts > 0.02 * counts[i])):
            continue
        ix, iy = int(np.rint(x[i])), int(np.rint(y[i]))
        if any(m[iy - 4:iy + 5, ix - 4:ix + 5].any() for m in masks):
            continue
        best = i
        break
    assert best is not None and moved[best] > 3.0  # pixels moved since 2016
    for rootname, ra, dec in ((first, ra1, dec1), (last, ra2, dec2)):
        wcs = _true_wcs(result, rootname)
        xe, ye = wcs.all_world2pix(ra[best], dec[best], 0)
        xm, ym = _centroid_sky(result, rootname, xe, ye)
        assert np.hypot(xm - xe, ym - ye) < 0.1, (rootname, xm - xe, ym - ye)
        x0, y0 = wcs.all_world2pix(truth["ra"][best], truth["dec"][best], 0)
        assert np.hypot(xm - x0, ym - y0) > 3.0

    # the reference catalog: Gaia-like, positions at 2016.0 with the truth's motions
    ref = Table.read(result.refcat)
    rows = {i: k for k, i in enumerate(truth["id"])}
    k = np.array([rows[i] for i in ref["truth_id"]])
    assert np.all(ref["ref_epoch"] == 2016.0)
    d_dec = (ref["dec"] - truth["dec"][k]) * 3.6e6
    assert np.all(np.abs(d_dec) < 5 * ref["dec_error"] + 1e-3)
    assert np.all(np.abs(ref["pmdec"] - truth["pmdec"][k]) < 5 * ref["pmdec_error"] + 1e-3)


def test_cli_preset(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        hapsim_main(["--help"])
    assert exit_info.value.code == 0
    # help lines wrap at hyphens: compare without white space
    help_text = "".join(capsys.readouterr().out.split())
    assert all(f"{name}:" in help_text for name in PRESETS)
    out = tmp_path / "cli"
    assert hapsim_main(["--preset", "two-exposure+cr2x", "--subarray", "64",
                        "--exptime", "300", "--seed", "9", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["preset"] == "two-exposure+cr2x" and len(printed["exposures"]) == 4
    recorded = json.loads((out / "visit_truth.json").read_text())["preset"]
    assert recorded["parameters"]["exptime"] == 300.0
    assert recorded["parameters"]["cr_rate_scale"] == 2.0
    assert recorded["overrides"]["exptime"] == 300.0
    with pytest.raises(SystemExit) as exit_info:
        hapsim_main(["--preset", "nope", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
