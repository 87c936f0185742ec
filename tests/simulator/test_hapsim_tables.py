"""
hapsim's NPOL/D2IM lookup tables (issue #15): the real keywords and extension layout, stars
rendered through the tables (the truth WCS reproduces them, the SIP alone does not), subarrays
addressing the full-chip tables, and SIP-only files on request.
"""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from photutils.centroids import centroid_2dg

from hapsim import simulate_visit, truth_wcs
from hapsim.detectors import get_detector
from hapsim.distortion import detector_tables, pixel_area_ratio
from hapsim.geometry import chip_wcs, radec_to_unit, unit_to_radec
from test_hapsim import _isolated_bright_stars

_LOOKUP_KEYS = ("CPDIS", "DP", "CPERR", "NPOLEXT", "D2IMDIS", "D2IM", "D2IMERR", "D2IMEXT")


@pytest.fixture(scope="module")
def wfc_visit(tmp_path_factory):
    """ACS/WFC 512 x 512 subarray on chip 1 (corner y = 1536): column-width D2IM, LTV != 0."""
    out = tmp_path_factory.mktemp("wfc_tables")
    return simulate_visit(out, detector="acs/wfc", filters={"f606w": 3}, exptime=500.0,
                          subarray=512, seed=7, star_density=500.0, galaxy_density=10.0,
                          star_mag_range=(19.3, 23.0), cr_fraction=2e-4)


@pytest.fixture(scope="module")
def uvis_small(tmp_path_factory):
    return simulate_visit(tmp_path_factory.mktemp("uvis_tables"), detector="wfc3/uvis",
                          filters={"f606w": 1}, subarray=128, seed=3, star_density=50.0)


def _wcs(hdul, extver=1):
    return WCS(hdul["SCI", extver].header, fobj=hdul)


@pytest.mark.parametrize("which", ["wfc", "uvis"])
def test_files_carry_tables_with_real_keywords(which, wfc_visit, uvis_small):
    result = wfc_visit if which == "wfc" else uvis_small
    spec = get_detector(result.detector)
    with fits.open(result.exposures[0]) as hdul:
        assert [(h.name, h.ver) for h in hdul[1:]] == [
            ("SCI", 1), ("ERR", 1), ("DQ", 1), ("D2IMARR", 1), ("D2IMARR", 2),
            ("WCSDVARR", 1), ("WCSDVARR", 2)]
        prim, sci = hdul[0].header, hdul["SCI", 1].header
        assert prim["NEXTEND"] == len(hdul) - 1
        npolfile, d2imfile = prim["NPOLFILE"], prim["D2IMFILE"]
        assert npolfile.endswith("_npl.fits") and d2imfile.endswith("_d2i.fits")
        codes = [name.split("$")[-1].split("_")[0] for name in (npolfile, d2imfile)]
        assert prim["DISTNAME"] == f"{prim['ROOTNAME']}_{spec.idctab}-{codes[0]}-{codes[1]}"
        assert sci["NPOLEXT"] == npolfile and sci["D2IMEXT"] == d2imfile
        for j in (1, 2):
            # record-valued cards exactly as stwcs writes them: DPj = 'EXTVER: j'
            assert f"DP{j}     = 'EXTVER: {j}'" in str(sci)
            assert f"D2IM{j}   = 'EXTVER: {j}'" in str(sci)
            for base, extname in (("DP", "WCSDVARR"), ("D2IM", "D2IMARR")):
                assert sci[f"{base}{j}.EXTVER"] == j and sci[f"{base}{j}.NAXES"] == 2
                assert sci[f"{base}{j}.AXIS.1"] == 1 and sci[f"{base}{j}.AXIS.2"] == 2
            assert sci[f"CPDIS{j}"] == "Lookup" and sci[f"D2IMDIS{j}"] == "Lookup"
            npol, d2im = hdul["WCSDVARR", j], hdul["D2IMARR", j]
            assert sci[f"CPERR{j}"] == pytest.approx(float(npol.data.max()))
            assert sci[f"D2IMERR{j}"] == pytest.approx(float(d2im.data.max()))
            # smooth NPOL on the reference files' 65 x 33 grid every 64 pixels, ~0.1-0.2 px
            assert npol.data.shape == (33, 65) and npol.header["CDELT1"] == 64.0
            assert 0.1 <= np.abs(npol.data).max() <= 0.2
            assert 0.03 <= np.abs(d2im.data).max() <= 0.07
            for table in (npol, d2im):
                # full-chip tables, addressed from the subarray through CRVAL = LTV
                for axis in (1, 2):
                    assert table.header[f"CRPIX{axis}"] == 0.0
                    assert table.header[f"CRVAL{axis}"] == sci[f"LTV{axis}"]
        if which == "wfc":
            # ACS/WFC's column-width pattern: one value per column, a 68-column cycle
            columns = hdul["D2IMARR", 1]
            assert columns.data.shape == (1, 4096) and columns.header["CDELT1"] == 1.0
            np.testing.assert_allclose(columns.data[0, 68:136], columns.data[0, :68], atol=1e-6)
            assert hdul["D2IMARR", 2].data.shape == (32, 64)
        wcs = _wcs(hdul)
        assert all(getattr(wcs, name) is not None
                   for name in ("cpdis1", "cpdis2", "det2im1", "det2im2"))


def test_tables_are_fixed_per_detector_and_chip(wfc_visit, tmp_path):
    other = simulate_visit(tmp_path, detector="acs/wfc", filters={"f814w": 1}, subarray=64,
                           seed=99, star_density=5.0, galaxy_density=0.0)
    with fits.open(wfc_visit.exposures[0]) as a, fits.open(other.exposures[0]) as b:
        for name in ("WCSDVARR", "D2IMARR"):
            for ver in (1, 2):
                np.testing.assert_array_equal(a[name, ver].data, b[name, ver].data)


def test_star_positions_match_truth_through_the_tables(wfc_visit):
    """Stars sit where the complete true WCS puts them; through the SIP alone they are
    ~0.07 px off (what a pipeline ignoring the tables would measure)."""
    offsets, sip_offsets = [], []
    for rootname in wfc_visit.rootnames:
        truth, idx, x, y, sci, _, _ = _isolated_bright_stars(wfc_visit, rootname)
        sip = WCS(fits.Header.fromtextfile(wfc_visit.out_dir / "truth_wcs" / f"{rootname}_sci1.hdr"))
        xs, ys = sip.all_world2pix(truth["ra"], truth["dec"], 0)
        for i in idx:
            ix, iy = int(np.rint(x[i])), int(np.rint(y[i]))
            background = np.median(sci[iy - 30:iy + 31, ix - 30:ix + 31])
            cx, cy = centroid_2dg(sci[iy - 3:iy + 4, ix - 3:ix + 4] - background)
            offsets.append((ix - 3 + cx - x[i], iy - 3 + cy - y[i]))
            sip_offsets.append((ix - 3 + cx - xs[i], iy - 3 + cy - ys[i]))
    offsets, sip_offsets = np.array(offsets), np.array(sip_offsets)
    assert len(offsets) >= 8
    assert np.all(np.sqrt(np.mean(offsets**2, axis=0)) < 0.02)
    assert np.median(np.hypot(*sip_offsets.T)) > 0.04


def test_header_wcs_is_the_truth_turned_by_the_pointing_error(wfc_visit):
    """Same tables in both: the header WCS maps every pixel to the rotated true position."""
    rotation = np.array(json.loads(wfc_visit.visit_truth.read_text())
                        ["pointing_error"]["rotation_matrix"])
    pixels = np.random.default_rng(1).uniform(-0.5, 511.5, (2, 2000))
    for rootname, path, truth_path in zip(wfc_visit.rootnames, wfc_visit.exposures,
                                          wfc_visit.truth_wcs):
        ra, dec = truth_wcs(truth_path).all_pix2world(*pixels, 0)
        ra, dec = unit_to_radec(radec_to_unit(ra, dec) @ rotation.T)
        with fits.open(path) as hdul:
            hra, hdec = _wcs(hdul).all_pix2world(*pixels, 0)
        sep = np.hypot((hra - ra) * np.cos(np.radians(dec)), hdec - dec) * 3.6e6
        assert sep.max() < 1e-3  # mas


def test_truth_wcs_files(wfc_visit):
    hdr_path = wfc_visit.truth_wcs[0]
    fits_path = hdr_path.with_suffix(".fits")
    assert hdr_path.exists() and fits_path.exists()
    a, b = truth_wcs(hdr_path), truth_wcs(fits_path)
    assert a.pixel_shape == b.pixel_shape == (512, 512) and a.cpdis1 is not None
    with fits.open(fits_path) as hdul:
        assert [h.name for h in hdul[1:]] == ["TRUTH", "D2IMARR", "D2IMARR", "WCSDVARR",
                                              "WCSDVARR"]
        assert hdul["TRUTH"].header["WCSNAME"] == "TRUTH"
    pixels = np.random.default_rng(2).uniform(0, 511, (2, 500))
    np.testing.assert_array_equal(a.all_pix2world(*pixels, 0), b.all_pix2world(*pixels, 0))
    # the text header alone (SIP) misses the tables
    sip = WCS(fits.Header.fromtextfile(hdr_path))
    x, y = sip.all_world2pix(*a.all_pix2world(*pixels, 0), 0)
    assert np.hypot(x - pixels[0], y - pixels[1]).max() > 0.05


def test_subarray_pixels_match_the_same_full_chip_pixels(wfc_visit):
    """The subarray's tables (CRVAL = LTV) give a subarray pixel the sky position of the same
    full-chip pixel (CRPIX - LTV, tables at CRVAL 0)."""
    with fits.open(wfc_visit.exposures[0]) as hdul:
        sub = _wcs(hdul)
        ltv = np.array([hdul["SCI", 1].header["LTV1"], hdul["SCI", 1].header["LTV2"]])
        assert ltv[1] != 0.0
        full = fits.HDUList([h.copy() for h in hdul])
    full["SCI", 1].header["CRPIX1"] -= ltv[0]
    full["SCI", 1].header["CRPIX2"] -= ltv[1]
    for name in ("WCSDVARR", "D2IMARR"):
        for ver in (1, 2):
            for axis in (1, 2):
                full[name, ver].header[f"CRVAL{axis}"] -= ltv[axis - 1]
    full_wcs = _wcs(full)
    pixels = np.random.default_rng(3).uniform(-0.5, 511.5, (2, 3000))
    a = np.array(sub.all_pix2world(*pixels, 0))
    b = np.array(full_wcs.all_pix2world(pixels[0] - ltv[0], pixels[1] - ltv[1], 0))
    assert np.abs(a - b).max() * 3.6e6 < 1e-3  # mas
    # the full-chip tables are the ones of a full-frame file
    spec = get_detector("acs/wfc")
    tables = detector_tables("acs/wfc", 1, spec.chips[1].shape)
    np.testing.assert_array_equal(full["WCSDVARR", 1].data, tables.npol[0].data)
    # stwcs's CRVAL - LTV would put the subarray 2 |LTV2| rows away in the tables
    for name in ("WCSDVARR", "D2IMARR"):
        for ver in (1, 2):
            for axis in (1, 2):
                full[name, ver].header[f"CRVAL{axis}"] = -ltv[axis - 1]
    full["SCI", 1].header["CRPIX1"] += ltv[0]
    full["SCI", 1].header["CRPIX2"] += ltv[1]
    c = np.array(_wcs(full).all_pix2world(*pixels, 0))
    assert np.abs(a - c).max() * 3600 / 0.05 > 0.02  # px


def test_pixel_area_includes_the_tables():
    """Column widths of the ACS/WFC D2IM pattern change pixel areas by ~0.3%."""
    spec = get_detector("acs/wfc")
    chip = spec.chips[1]
    tables = detector_tables("acs/wfc", chip.ccdchip, chip.shape)
    with_tables = chip_wcs(chip, 150.0, 2.0, 20.0, tables=tables)
    sip_only = chip_wcs(chip, 150.0, 2.0, 20.0)
    x = np.arange(1000.0, 1136.0)
    y = np.full_like(x, 1000.0)
    ratio = with_tables.pixel_area_ratio(x, y) / sip_only.pixel_area_ratio(x, y)
    assert 1e-3 < np.abs(ratio - 1.0).max() < 1e-2
    # 34 wider then 34 narrower columns (+-0.29%), on top of the smooth tables' ~0.1% slopes
    assert np.ptp(ratio) > 4e-3 and abs(np.mean(ratio) - 1.0) < 2e-3
    # ChipWCS.pixel_area_ratio is the tabled WCS's
    np.testing.assert_allclose(with_tables.pixel_area_ratio(x, y),
                               pixel_area_ratio(with_tables.to_astropy(), x, y))


def test_distortion_tables_false_gives_sip_only_files(tmp_path):
    kwargs = dict(detector="wfc3/uvis", filters={"f606w": 1}, subarray=64, seed=5,
                  star_density=400.0, star_mag_range=(18.0, 21.0))
    plain = simulate_visit(tmp_path / "plain", distortion_tables=False, **kwargs)
    tabled = simulate_visit(tmp_path / "tabled", **kwargs)
    with fits.open(plain.exposures[0]) as hdul:
        assert [h.name for h in hdul[1:]] == ["SCI", "ERR", "DQ"]
        assert hdul[0].header["NEXTEND"] == 3
        assert hdul[0].header["NPOLFILE"] == "N/A" and hdul[0].header["D2IMFILE"] == "N/A"
        sci = hdul["SCI", 1].header
        assert not [k for k in sci if k.split(".")[0].rstrip("12") in _LOOKUP_KEYS]
        WCS(sci)  # a SIP-only header needs no file
        plain_sci = hdul["SCI", 1].data.copy()
    assert not any(p.suffix == ".fits" for p in (tmp_path / "plain" / "truth_wcs").iterdir())
    assert truth_wcs(plain.truth_wcs[0]).cpdis1 is None
    with fits.open(tabled.exposures[0]) as hdul:
        # same noise, stars moved by the tables
        assert not np.array_equal(plain_sci, hdul["SCI", 1].data)
