"""
Tests of the hapsim visit simulator, asserted numerically against its truth.

Accuracy criteria (per bright, isolated, unflagged star in 512x512 UVIS
subarrays): positions measured with photutils ``centroid_2dg`` and
converted through the TRUE WCS match the truth with an rms below 0.02 px
per axis; box fluxes (the stamp footprint, background subtracted,
pixel-area corrected) agree with the truth within their Poisson + sky
errors (|pull| < 4 for every star, rms pull < 2).
"""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS
from photutils.centroids import centroid_2dg

from hapsim import simulate_visit, truth_wcs
from hapsim.detectors import get_detector
from hapsim.distortion import pixel_area_ratio
from hapsim.geometry import tangent_project
from hapsim.psf import concentration_index

UVIS = get_detector("wfc3/uvis")


@pytest.fixture(scope="module")
def uvis_visit(tmp_path_factory):
    out = tmp_path_factory.mktemp("uvis_sub")
    return simulate_visit(out, detector="wfc3/uvis", filters={"f606w": 3}, exptime=500.0,
                          subarray=512, seed=5, star_density=500.0,
                          galaxy_density=10.0, star_mag_range=(19.3, 23.0),
                          # few cosmic rays so that whole star boxes stay clean;
                          # the default rate is tested in test_cosmic_ray_fraction
                          cr_fraction=2e-4,
                          pointing_error=(1.0, 0.05))


def _true_wcs(result, rootname, extver=1):
    """The complete true WCS (NPOL/D2IM tables included) and the text header of the truth."""
    path = result.out_dir / "truth_wcs" / f"{rootname}_sci{extver}.hdr"
    return truth_wcs(path), fits.Header.fromtextfile(path)


def _header_wcs(path, extver=1):
    """The header WCS of a simulated file, with the lookup tables its SCI header references."""
    with fits.open(path) as hdul:
        return WCS(hdul["SCI", extver].header, fobj=hdul)


def _isolated_bright_stars(result, rootname, filt="f606w", *, half=15):
    """Truth rows and pixel positions of bright, isolated, clean stars."""
    truth = Table.read(result.truth_sources)
    wcs, hdr = _true_wcs(result, rootname)
    with fits.open(result.out_dir / f"{rootname}_flc.fits") as hdul:
        sci = hdul["SCI", 1].data.astype(float)
        dq = hdul["DQ", 1].data
        exptime = hdul[0].header["EXPTIME"]
    with fits.open(result.out_dir / "truth_crmask" / f"{rootname}_crmask.fits") as hdul:
        crmask = hdul[1].data.astype(bool)
    x, y = wcs.all_world2pix(truth["ra"], truth["dec"], 0)
    counts = np.asarray(truth[f"countrate_{filt}"]) * exptime
    ny, nx = sci.shape
    chosen = []
    for i in np.flatnonzero(np.asarray(truth["type"]) == "star"):
        if not (1e4 < counts[i] < 2.8e5):
            continue
        if not (half + 12 < x[i] < nx - half - 13 and half + 12 < y[i] < ny - half - 13):
            continue
        d = np.hypot(x - x[i], y - y[i])
        # No neighbour whose stamp overlaps ours carries more than 0.3% of the flux.
        # and none whose stamp reaches the sky ring is brighter than half of it.
        if np.any((d > 0) & (d < 2 * half + 2) & (counts > 3e-3 * counts[i])) or \
                np.any((d > 0) & (d < 3 * half + 12) & (counts > 0.5 * counts[i])):
            continue
        ix, iy = int(np.rint(x[i])), int(np.rint(y[i]))
        box = np.s_[iy - half:iy + half + 1, ix - half:ix + half + 1]
        core = np.s_[iy - 3:iy + 4, ix - 3:ix + 4]
        if crmask[box].any() or (dq[core] & (16 | 512)).any() or (dq[box] & (4 | 256)).any():
            continue
        chosen.append(i)
    # Hot/bad pixels outside star cores are replaced by the median of their
    # 3x3 neighbourhood (the pipeline would mask them).
    flagged = np.argwhere((dq & (4 | 16 | 512)) != 0)
    repaired = sci.copy()
    for row, col in flagged:
        patch = sci[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2]
        repaired[row, col] = np.median(patch)
    return truth, np.array(chosen), x, y, repaired, exptime, hdr


def test_positions_match_truth_through_true_wcs(uvis_visit):
    offsets = []
    for rootname in uvis_visit.rootnames:
        truth, idx, x, y, sci, _, _ = _isolated_bright_stars(uvis_visit, rootname)
        for i in idx:
            ix, iy = int(np.rint(x[i])), int(np.rint(y[i]))
            background = np.median(sci[iy - 30:iy + 31, ix - 30:ix + 31])
            cx, cy = centroid_2dg(sci[iy - 3:iy + 4, ix - 3:ix + 4] - background)
            offsets.append((ix - 3 + cx - x[i], iy - 3 + cy - y[i]))
    offsets = np.array(offsets)
    assert len(offsets) >= 8
    rms = np.sqrt(np.mean(offsets**2, axis=0))
    assert np.all(rms < 0.02), rms
    assert np.all(np.abs(offsets) < 0.05)


def test_fluxes_match_truth_within_poisson_errors(uvis_visit):
    pulls = []
    half = 15
    for rootname in uvis_visit.rootnames:
        truth, idx, x, y, sci, exptime, hdr = _isolated_bright_stars(uvis_visit, rootname)
        wcs, _ = _true_wcs(uvis_visit, rootname)
        for i in idx:
            ix, iy = int(np.rint(x[i])), int(np.rint(y[i]))
            stamp = sci[iy - half:iy + half + 1, ix - half:ix + half + 1]
            ring = np.concatenate([sci[iy - half - 10:iy - half, ix - 25:ix + 26].ravel(),
                                   sci[iy + half + 1:iy + half + 11, ix - 25:ix + 26].ravel()])
            sky = np.median(ring)
            measured = (stamp - sky).sum() * pixel_area_ratio(wcs, x[i], y[i])
            expected = truth["countrate_f606w"][i] * exptime
            sigma = np.sqrt(expected + stamp.size * (sky + UVIS.readnoise_mean**2)
                            + (stamp.size * np.std(ring) / np.sqrt(ring.size)) ** 2)
            pulls.append((measured - expected) / sigma)
    pulls = np.array(pulls)
    assert len(pulls) >= 8
    assert np.all(np.abs(pulls) < 4), pulls
    assert np.sqrt(np.mean(pulls**2)) < 2.0


def test_concentration_index_within_spec_limits(uvis_visit):
    cis = []
    r1, r2 = (a / UVIS.idcscale for a in UVIS.ci_apertures_arcsec)
    for rootname in uvis_visit.rootnames:
        _, idx, x, y, sci, _, _ = _isolated_bright_stars(uvis_visit, rootname)
        for i in idx:
            ix, iy = int(np.rint(x[i])), int(np.rint(y[i]))
            background = np.median(sci[iy - 30:iy + 31, ix - 30:ix + 31])
            cis.append(concentration_index(sci, x[i], y[i], r1, r2, background=background)[0])
    lo, hi = UVIS.ci_limits
    assert lo < np.median(cis) < hi


def test_cosmic_ray_fraction(tmp_path):
    expected = 1.0 - np.exp(-UVIS.cr_pixel_rate * 500.0)
    visit = simulate_visit(tmp_path / "default", filters={"f606w": 2}, subarray=512, seed=8)
    summary = json.loads(visit.visit_truth.read_text())
    for path in visit.crmasks:
        with fits.open(path) as hdul:
            fraction = hdul[1].data.astype(bool).mean()
        assert fraction == pytest.approx(expected, rel=0.03)
        assert summary["cr_fraction"][path.name[:9]] == pytest.approx(fraction)
    asked = simulate_visit(tmp_path / "asked", filters={"f814w": 1}, subarray=256, cr_fraction=0.01,
                           seed=2)
    with fits.open(asked.crmasks[0]) as hdul:
        assert hdul[1].data.astype(bool).mean() == pytest.approx(0.01, rel=0.03)
    # The cosmic-ray charge is really in the image: flagged pixels stand out.
    with fits.open(asked.exposures[0]) as hdul, fits.open(asked.crmasks[0]) as mask:
        sci = hdul["SCI", 1].data
        hit = mask[1].data.astype(bool)
        assert np.median(sci[hit]) > np.median(sci[~hit]) + 100


def test_header_wcs_offset_by_pointing_error(uvis_visit):
    summary = json.loads(uvis_visit.visit_truth.read_text())
    for rootname in uvis_visit.rootnames:
        true_wcs, _ = _true_wcs(uvis_visit, rootname)
        header_wcs = _header_wcs(uvis_visit.out_dir / f"{rootname}_flc.fits")
        ra_t, dec_t = true_wcs.all_pix2world(255.5, 255.5, 0)
        ra_h, dec_h = header_wcs.all_pix2world(255.5, 255.5, 0)
        xi, eta = tangent_project(ra_h, dec_h, ra_t, dec_t)
        # Subarray centre lies a few arcsec from the rotation centre: the
        # 0.05 deg turn adds < 0.01" there.
        assert np.hypot(xi, eta) * 3600 == pytest.approx(1.0, abs=0.01)
        orient_true = np.degrees(np.arctan2(true_wcs.wcs.cd[0, 1], true_wcs.wcs.cd[1, 1]))
        orient_head = np.degrees(np.arctan2(header_wcs.wcs.cd[0, 1], header_wcs.wcs.cd[1, 1]))
        assert orient_head - orient_true == pytest.approx(0.05, abs=2e-4)
    vec = summary["pointing_error"]["shift_vector_arcsec"]
    assert np.hypot(*vec) == pytest.approx(1.0, abs=1e-6)


def test_dithers_are_in_true_and_header_wcs(uvis_visit):
    first, second = uvis_visit.rootnames[:2]
    summary = json.loads(uvis_visit.visit_truth.read_text())
    step = np.hypot(*summary["dither"]["offsets_arcsec"][second])
    for source in ("truth", "header"):
        centres = []
        for root in (first, second):
            if source == "truth":
                wcs, _ = _true_wcs(uvis_visit, root)
            else:
                wcs = _header_wcs(uvis_visit.out_dir / f"{root}_flc.fits")
            centres.append(wcs.all_pix2world(255.5, 255.5, 0))
        xi, eta = tangent_project(*centres[1], *centres[0])
        assert np.hypot(xi, eta) * 3600 == pytest.approx(step, abs=0.005)


def test_refcat_consistent_with_truth(uvis_visit):
    ref = Table.read(uvis_visit.refcat)
    truth = Table.read(uvis_visit.truth_sources)
    assert {"ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "ref_epoch",
            "phot_g_mean_mag", "source_id"} <= set(ref.colnames)
    rows = {i: k for k, i in enumerate(truth["id"])}
    k = np.array([rows[i] for i in ref["truth_id"]])
    with fits.open(uvis_visit.exposures[0]) as hdul:
        epoch = Time(hdul[0].header["EXPSTART"], format="mjd").jyear
    dt = epoch - 2016.0
    cosdec = np.cos(np.radians(ref["dec"]))
    ra_obs = ref["ra"] + ref["pmra"] * dt / 3.6e6 / cosdec
    dec_obs = ref["dec"] + ref["pmdec"] * dt / 3.6e6
    d_ra = (ra_obs - truth["ra"][k]) * cosdec * 3.6e6
    d_dec = (dec_obs - truth["dec"][k]) * 3.6e6
    sigma = np.hypot(ref["ra_error"], ref["pmra_error"] * dt)
    assert np.all(np.abs(d_ra) < 5 * sigma + 1e-3)
    assert np.all(np.abs(d_dec) < 5 * sigma + 1e-3)
    assert np.all(ref["phot_g_mean_mag"] < 21.0)


def test_same_seed_identical_arrays(tmp_path):
    a = simulate_visit(tmp_path / "a", filters={"f606w": 1}, subarray=128, seed=11)
    b = simulate_visit(tmp_path / "b", filters={"f606w": 1}, subarray=128, seed=11)
    c = simulate_visit(tmp_path / "c", filters={"f606w": 1}, subarray=128, seed=12)
    with fits.open(a.exposures[0]) as ha, fits.open(b.exposures[0]) as hb, \
            fits.open(c.exposures[0]) as hc:
        for ext in ("SCI", "ERR", "DQ"):
            np.testing.assert_array_equal(ha[ext, 1].data, hb[ext, 1].data)
        assert not np.array_equal(ha["SCI", 1].data, hc["SCI", 1].data)
        assert ha["SCI", 1].header["CRVAL1"] == hb["SCI", 1].header["CRVAL1"]
    assert Table.read(a.truth_sources).as_array().tobytes() == \
        Table.read(b.truth_sources).as_array().tobytes()


PRIMARY_KEYWORDS = [
    "INSTRUME", "DETECTOR", "EXPTIME", "EXPSTART", "EXPEND", "DATE-OBS", "TIME-OBS", "PROPOSID",
    "LINENUM", "PRIMESI", "ROOTNAME", "ASN_ID", "OBSTYPE", "TARGNAME", "RA_TARG", "DEC_TARG",
    "PA_V3", "CCDGAIN", "ATODGNA", "ATODGND", "READNSEA", "READNSED", "DRIZCORR", "MTFLAG",
    "FGSLOCK", "SUBARRAY", "APERTURE", "EQUINOX", "FILENAME", "NEXTEND",
]
SCI_KEYWORDS = [
    "BUNIT", "IDCSCALE", "WCSNAME", "ORIENTAT", "RA_APER", "DEC_APER", "RADESYS", "LTV1", "LTV2",
    "CRPIX1", "CRVAL1", "CD1_1", "CD2_2", "A_ORDER", "B_ORDER", "A_4_0", "B_0_4",
]


def test_keywords_present(uvis_visit):
    with fits.open(uvis_visit.exposures[0]) as hdul:
        prim, sci = hdul[0].header, hdul["SCI", 1].header
        for key in PRIMARY_KEYWORDS + ["FILTER", "SCAN_TYP", "CHINJECT"]:
            assert key in prim, key
        for key in SCI_KEYWORDS + ["CCDCHIP", "PHOTMODE", "PHOTFLAM", "PHOTPLAM", "PHOTFNU",
                                   "PHOTZPT", "PHOTBW"]:
            assert key in sci, key
        root = prim["ROOTNAME"]
        assert len(root) == 9 and root[0] == "i" and root[-1] == "q"
        assert prim["OBSTYPE"] == "IMAGING" and prim["SUBARRAY"] is True
        assert sci["WCSNAME"].startswith("IDC_") and sci["WCSNAME"].endswith("-GSC240")
        assert sci["CRPIX1"] == pytest.approx(2048.0 + sci["LTV1"])
        assert sci["A_ORDER"] == 4 and sci["CTYPE1"] == "RA---TAN-SIP"
        assert hdul["SCI", 1].data.dtype.kind == "f" and hdul["SCI", 1].header["BITPIX"] == -32
        assert hdul["DQ", 1].header["BITPIX"] == 16
    fields = uvis_visit.poller.read_text().strip().splitlines()[0].split(",")
    assert len(fields) == 8 and fields[6] == "UVIS" and fields[5] == "F606W"
    assert uvis_visit.poller.name == f"wfc3_{fields[2].lower()}_{fields[3]}_input.out"


def test_ir_and_acs_layouts(tmp_path):
    ir = simulate_visit(tmp_path / "ir", detector="wfc3/ir", filters={"f160w": 1}, subarray=256,
                        seed=3, exptime=300.0)
    with fits.open(ir.exposures[0]) as hdul:
        names = [(h.name, h.ver) for h in hdul[1:]]
        assert names == [("SCI", 1), ("ERR", 1), ("DQ", 1), ("SAMP", 1), ("TIME", 1)]
        assert hdul[0].header["PHOTFLAM"] > 0 and "PHOTFLAM" not in hdul["SCI", 1].header
        assert hdul["SCI", 1].header["BUNIT"] == "ELECTRONS/S"
        assert "NSAMP" in hdul[0].header and "SAMP_SEQ" in hdul[0].header
        assert ir.exposures[0].name.endswith("_flt.fits")
    wfc = simulate_visit(tmp_path / "wfc", detector="acs/wfc", filters={"f606w": 1, "f814w": 1},
                         subarray=128, seed=3)
    with fits.open(wfc.exposures[0]) as hdul:
        assert (hdul[0].header["FILTER1"], hdul[0].header["FILTER2"]) == ("F606W", "CLEAR2L")
        assert hdul[0].header["ROOTNAME"][0] == "j"
    lines = wfc.poller.read_text().split()
    assert lines[0].split(",")[5] == "F606W;CLEAR2L" and lines[1].split(",")[5] == "CLEAR1L;F814W"
    assert wfc.poller.name.startswith("acs_")


def test_full_frame_layout(tmp_path):
    result = simulate_visit(tmp_path, detector="wfc3/uvis", filters={"f606w": 1}, dither="none",
                            star_density=20.0, galaxy_density=5.0, seed=4)
    with fits.open(result.exposures[0]) as hdul:
        # the lookup tables follow the chips, as updatewcs appends them (test_hapsim_tables.py)
        assert [(h.name, h.ver) for h in hdul[1:]] == [
            ("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2), ("ERR", 2), ("DQ", 2),
            *(("D2IMARR", v) for v in range(1, 5)), *(("WCSDVARR", v) for v in range(1, 5))]
        assert hdul["SCI", 1].data.shape == (2051, 4096)
        assert hdul["SCI", 1].header["CCDCHIP"] == 2 and hdul["SCI", 2].header["CCDCHIP"] == 1
        assert hdul[0].header["SUBARRAY"] is False and hdul[0].header["NEXTEND"] == 14
        # Chip 1 lies above chip 2 on the sky, separated by the real gap.
        w1 = WCS(hdul["SCI", 1].header, fobj=hdul)
        w2 = WCS(hdul["SCI", 2].header, fobj=hdul)
        top_of_chip2 = w1.all_pix2world(2047.5, 2050.0, 0)
        bottom_of_chip1 = w2.all_pix2world(2047.5, 0.0, 0)
        xi, eta = tangent_project(*bottom_of_chip1, *top_of_chip2)
        assert 0.5 < np.hypot(xi, eta) * 3600 < 2.5
    hrc = simulate_visit(tmp_path / "hrc", detector="acs/hrc", filters={"f555w": 1}, seed=4,
                         star_density=50.0)
    with fits.open(hrc.exposures[0]) as hdul:
        assert hdul["SCI", 1].data.shape == (1024, 1024)
        assert hdul[0].header["FILTER1"] == "F555W"


@pytest.mark.parametrize("kwargs, message", [
    (dict(exptime=0.0), "exposure time"),
    (dict(exptime=-5.0), "exposure time"),
    (dict(detector="nicmos/nic1"), "unknown detector"),
    (dict(filters={"f999w": 1}), "unknown filter"),
    (dict(dither="spiral"), "unknown dither"),
])
def test_bad_inputs(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_visit(tmp_path / "x", subarray=64, **kwargs)


def test_refuses_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        simulate_visit(tmp_path, subarray=64)
    result = simulate_visit(tmp_path, subarray=64, overwrite=True)
    assert (tmp_path / "keep.txt").exists() and result.exposures[0].exists()
