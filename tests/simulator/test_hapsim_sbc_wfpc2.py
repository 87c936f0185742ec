"""
ACS/SBC and WFPC2 in the hapsim simulator: file layout, geometry and keywords.

SBC is a MAMA photon counter (one 1024 x 1024 chip, counts, no read noise,
no cosmic rays, mostly empty pixels); WFPC2 is four 800 x 800 CCDs of two
plate scales turned around the pyramid apex, written as the ``_flt.fits``
files drizzlepac makes from C0M/C1M pairs (DN, per-chip DETECTOR, DQ/ERR
after the four SCI extensions). The keyword conventions are also checked
through the pipeline's own poller reader.
"""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from hapcore.obset.poller import (
    complete_poller_line,
    locate_exposure,
    read_exposure_header,
    read_poller_lines,
)
from hapsim import simulate_visit
from hapsim.detectors import get_detector
from hapsim.geometry import tangent_project

SBC = get_detector("acs/sbc")
WFPC2 = get_detector("wfpc2")


@pytest.fixture(scope="module")
def sbc_visit(tmp_path_factory):
    # cr_fraction is asked for on purpose: a MAMA does not register cosmic rays
    return simulate_visit(tmp_path_factory.mktemp("sbc"), detector="acs/sbc",
                          filters={"f140lp": 2}, exptime=600.0, seed=3, star_density=1500.0,
                          star_mag_range=(16.0, 26.0), cr_fraction=0.01)


@pytest.fixture(scope="module")
def wfpc2_visit(tmp_path_factory):
    return simulate_visit(tmp_path_factory.mktemp("wfpc2"), detector="wfpc2",
                          filters={"f814w": 1, "f555w": 1}, exptime=500.0, seed=3,
                          star_density=300.0, star_mag_range=(15.5, 24.0),
                          # few cosmic rays so that whole star boxes stay clean (the default
                          # rate is the UVIS tests' business)
                          cr_fraction=1e-5, poller_form="aperture")


def _scales(header):
    """Pixel scales (arcsec) along x and y and the y-axis position angle, from CD."""
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    sx, sy = np.hypot(cd[0], cd[1]) * 3600.0   # lengths of the x and y pixel axes
    return sx, sy, np.degrees(np.arctan2(cd[0, 1], cd[1, 1]))


def _pipeline_record(poller):
    line = read_poller_lines(poller)[0]
    path = locate_exposure(line)
    return line, complete_poller_line(line, read_exposure_header(path))


def _box_flux(sci, x, y, half, *, ring=10):
    ix, iy = int(np.rint(x)), int(np.rint(y))
    stamp = sci[iy - half:iy + half + 1, ix - half:ix + half + 1]
    outer = sci[iy - half - ring:iy + half + ring + 1, ix - half - ring:ix + half + ring + 1].copy()
    outer[ring:-ring, ring:-ring] = np.nan
    # median: the ring may catch a neighbour's wing or a bleed trail
    return stamp.sum() - np.nanmedian(outer) * stamp.size


# ---------------------------------------------------------------------------- ACS/SBC

def test_sbc_layout_scale_and_keywords(sbc_visit):
    with fits.open(sbc_visit.exposures[0]) as hdul:
        assert [(h.name, h.ver) for h in hdul[1:]] == [("SCI", 1), ("ERR", 1), ("DQ", 1)]
        prim, sci = hdul[0].header, hdul["SCI", 1].header
        assert hdul["SCI", 1].data.shape == (1024, 1024)
        sx, sy, _ = _scales(sci)
        # the MAMA's pixels are not square: 0.034" x 0.030"
        assert sx == pytest.approx(0.0338, abs=5e-4) and sy == pytest.approx(0.0301, abs=5e-4)
        assert WCS(sci).sip is not None and sci["CTYPE1"] == "RA---TAN-SIP"
        assert (prim["INSTRUME"], prim["DETECTOR"], prim["OBSTYPE"]) == ("ACS", "SBC", "IMAGING")
        assert (prim["FILTER1"], prim["FILTER2"]) == ("F140LP", "N/A")
        assert sci["BUNIT"] == "COUNTS" and sci["PHOTFLAM"] == SBC.filter("f140lp").photflam
        assert prim["GLOBRATE"] > 0 and prim["ROOTNAME"].startswith("j")
        # a photon counter has no CCD electronics keywords (spec: gain 1, no read noise)
        for key in ("CCDGAIN", "CCDAMP", "ATODGNA", "READNSEA", "DARKTIME"):
            assert key not in prim, key
        assert "CCDCHIP" not in sci
    fields = sbc_visit.poller.read_text().splitlines()[0].split(",")
    assert fields[5:7] == ["F140LP;N/A", "SBC"]
    _, record = _pipeline_record(sbc_visit.poller)
    assert (record.instrument, record.detector, record.filter_name) == ("acs", "sbc", "f140lp")


def test_sbc_counts_photons_without_cosmic_rays(sbc_visit):
    summary = json.loads(sbc_visit.visit_truth.read_text())
    for path, crmask in zip(sbc_visit.exposures, sbc_visit.crmasks):
        with fits.open(crmask) as mask:
            assert not mask[1].data.any()
        assert summary["cr_fraction"][path.name[:9]] == 0.0
        with fits.open(path) as hdul:
            data = hdul["SCI", 1].data
            err = hdul["ERR", 1].data
            dq = hdul["DQ", 1].data
        # integer photon counts, no read noise, no negative values (no bias, no dark
        # subtraction), and the dark-limited FUV sky leaves most pixels at exactly 0
        assert np.all(data >= 0) and np.all(data == np.round(data))
        assert np.mean(data == 0) > 0.9
        assert np.all(err >= 1.0)
        # no saturation or bleeding on a MAMA
        assert not np.any(dq & (256 | 2048))


def test_sbc_star_counts_match_truth(sbc_visit):
    truth = Table.read(sbc_visit.truth_sources)
    hdr = fits.Header.fromtextfile(str(sbc_visit.out_dir / "truth_wcs"
                                       / f"{sbc_visit.rootnames[0]}_sci1.hdr"))
    x, y = WCS(hdr).all_world2pix(truth["ra"], truth["dec"], 0)
    sci = fits.getdata(sbc_visit.exposures[0], ("SCI", 1)).astype(float)
    counts = np.asarray(truth["countrate_f140lp"]) * 600.0
    pulls = []
    for k in np.flatnonzero((np.asarray(truth["type"]) == "star") & (counts > 3000)):
        if not (40 < x[k] < 984 and 40 < y[k] < 984):
            continue
        near = np.hypot(x - x[k], y - y[k]) < 30
        if np.sum(near & (counts > 0.002 * counts[k])) > 1:
            continue
        measured = _box_flux(sci, x[k], y[k], 15)
        # stamps are flat-fielded for the pixel area: compare within Poisson + 2 %
        pulls.append((measured - counts[k]) / np.hypot(np.sqrt(counts[k]), 0.02 * counts[k]))
    assert len(pulls) >= 3
    assert np.all(np.abs(pulls) < 3), pulls


# ---------------------------------------------------------------------------- WFPC2

def test_wfpc2_extension_layout_and_chips(wfpc2_visit):
    with fits.open(wfpc2_visit.exposures[0]) as hdul:
        # drizzlepac's wfpc2_to_flt: the C0M's four SCI, then one DQ/ERR pair per chip
        assert [(h.name, h.ver) for h in hdul[1:]] == (
            [("SCI", k) for k in range(1, 5)]
            + [(name, k) for k in range(1, 5) for name in ("DQ", "ERR")])
        assert hdul[0].header["NEXTEND"] == 12
        scales, angles = [], []
        for k in range(1, 5):
            sci = hdul["SCI", k]
            assert sci.data.shape == (800, 800) and hdul["DQ", k].data.shape == (800, 800)
            assert sci.header["DETECTOR"] == k
            sx, sy, pa = _scales(sci.header)
            assert sx == pytest.approx(sy, rel=0.01)
            assert sci.header["IDCSCALE"] == pytest.approx(sx, rel=0.01)
            scales.append(sx)
            angles.append(pa)
    assert scales[0] == pytest.approx(0.0455, abs=5e-4)
    assert all(s == pytest.approx(0.0996, abs=5e-4) for s in scales[1:])
    # each chip is turned by about 90 degrees from the previous one
    turns = [(a - angles[0]) % 360.0 for a in angles]
    for turn, expected in zip(turns, (0.0, 90.0, 180.0, 270.0)):
        assert turn == pytest.approx(expected, abs=1.0)


def test_wfpc2_chips_meet_at_the_pyramid_apex(wfpc2_visit):
    """The readout corners of the four chips meet at the apex and every chip fills its own
    quadrant around it (WF3 facing PC1), WFPC2's stair-step field."""
    with fits.open(wfpc2_visit.exposures[0]) as hdul:
        wcs = [WCS(hdul["SCI", k].header) for k in range(1, 5)]
    apex = [w.all_pix2world([[44.0, 44.0]], 0)[0] for w in wcs]
    centres = [w.all_pix2world([[420.0, 420.0]], 0)[0] for w in wcs]
    ra0, dec0 = np.mean(apex, axis=0)
    for a in apex:
        xi, eta = tangent_project(a[0], a[1], ra0, dec0)
        assert np.hypot(xi, eta) * 3600.0 < 1.0
    directions = []
    for c in centres:
        xi, eta = tangent_project(c[0], c[1], ra0, dec0)
        directions.append(np.degrees(np.arctan2(xi, eta)))
    # PC1's centre lies 24" from the apex, the WF chips' 53"
    distances = [np.hypot(*tangent_project(c[0], c[1], ra0, dec0)) * 3600.0 for c in centres]
    assert distances[0] == pytest.approx(24.4, abs=1.5)
    assert all(d == pytest.approx(53.5, abs=2.0) for d in distances[1:])
    steps = [(directions[k] - directions[0]) % 360.0 for k in range(4)]
    for step, expected in zip(steps, (0.0, 90.0, 180.0, 270.0)):
        assert step == pytest.approx(expected, abs=3.0)


def test_wfpc2_keywords_and_poller(wfpc2_visit):
    with fits.open(wfpc2_visit.exposures[0]) as hdul:
        prim = hdul[0].header
        assert (prim["INSTRUME"], prim["DETECTOR"], prim["PRIMESI"]) == ("WFPC2",) * 3
        assert prim["IMAGETYP"] == "EXT" and "OBSTYPE" not in prim
        assert (prim["FILTNAM1"], prim["FILTNAM2"]) == ("F814W", "")
        assert prim["ATODGAIN"] == 7.0 and prim["EXPTIME"] == 500.0 and "DARKTIME" in prim
        assert prim["APERTURE"] == "WFALL"
        for key in ("CCDGAIN", "ATODGNA", "READNSEA", "FILTER"):
            assert key not in prim, key
        for k in range(1, 5):
            sci = hdul["SCI", k].header
            assert sci["BUNIT"] == "COUNTS" and sci["PHOTZPT"] == -21.1
            assert sci["PHOTFLAM"] == WFPC2.filter("f814w").photflam
            assert sci["PHOTMODE"] == f"WFPC2,{k},A2D7,F814W,,CAL"
            assert "CCDCHIP" not in sci
    root = wfpc2_visit.rootnames
    assert root == ("u" + root[0][1:6] + "01t", "u" + root[0][1:6] + "02t")
    assert wfpc2_visit.poller.name.startswith("wfpc2_")
    lines = wfpc2_visit.poller.read_text().split()
    assert lines == [f"{p.name},WFALL" for p in wfpc2_visit.exposures]
    # the pipeline reads the 2-field form and completes it from these headers
    line, record = _pipeline_record(wfpc2_visit.poller)
    assert line.aperture == "WFALL" and record.aperture == "WFALL"
    assert (record.instrument, record.detector, record.filter_name) == ("wfpc2", "pc", "f814w")
    assert record.exptime == 500.0 and record.photflam == WFPC2.filter("f814w").photflam


def test_wfpc2_data_in_dn_with_wfpc2_dq_bits(wfpc2_visit):
    truth = Table.read(wfpc2_visit.truth_sources)
    counts = np.asarray(truth["countrate_f814w"]) * 500.0       # DN
    rootname = wfpc2_visit.rootnames[0]
    with fits.open(wfpc2_visit.exposures[0]) as hdul, fits.open(wfpc2_visit.crmasks[0]) as crm:
        checked = {}
        saturated = 0
        for k in range(1, 5):
            sci = hdul["SCI", k].data.astype(float)
            dq = hdul["DQ", k].data
            hit = crm[k].data.astype(bool)
            # A-to-D saturation is WFPC2's bit 8; ACS/WFC3's 256/2048 never appear
            assert not np.any(dq & (256 | 2048 | 4096))
            assert sci.max() <= 4095.0 - 310.0 + 1e-3
            saturated += int(np.sum((dq & 8) != 0))
            np.testing.assert_allclose(hdul["ERR", k].data, np.sqrt(np.clip(sci, 0, None)),
                                       rtol=1e-5)
            hdr = fits.Header.fromtextfile(str(wfpc2_visit.out_dir / "truth_wcs"
                                               / f"{rootname}_sci{k}.hdr"))
            x, y = WCS(hdr).all_world2pix(truth["ra"], truth["dec"], 0, quiet=True)
            # a 2.1" box on either plate scale holds all but ~1 % of a star
            half = int(round(1.05 / _scales(hdr)[0]))
            ratios = []
            for j in np.flatnonzero((np.asarray(truth["type"]) == "star") & (counts > 1000)):
                if not (half + 15 < x[j] < 784 - half and half + 15 < y[j] < 784 - half):
                    continue
                if np.sum((np.hypot(x - x[j], y - y[j]) < 2.2 * half)
                          & (counts > 0.01 * counts[j])) > 1:
                    continue
                ix, iy = int(np.rint(x[j])), int(np.rint(y[j]))
                box = np.s_[iy - half - 10:iy + half + 11, ix - half - 10:ix + half + 11]
                if np.any(dq[box] & (8 | 4)) or np.any(hit[box]):
                    continue
                ratios.append(_box_flux(sci, x[j], y[j], half) / counts[j])
            checked[k] = ratios
        assert saturated > 0
    # star fluxes in DN, on the PC and the WF chips alike
    for k, ratios in checked.items():
        assert len(ratios) >= 2, k
        assert np.median(ratios) == pytest.approx(0.99, abs=0.04), (k, ratios)


def test_wfpc2_has_no_subarrays_and_poller_forms(tmp_path):
    with pytest.raises(ValueError, match="no subarray"):
        simulate_visit(tmp_path / "w", detector="wfpc2", subarray=256)
    names = simulate_visit(tmp_path / "n", detector="acs/hrc", filters={"f555w": 1},
                           subarray=64, poller_form="names")
    assert names.poller.read_text().split() == [names.exposures[0].name]
    with pytest.raises(ValueError, match="poller form"):
        simulate_visit(tmp_path / "x", subarray=64, poller_form="csv")
