"""Alignment centroids on an undersampled chip (WFC3/IR, optical PSF) against hapsim's truth.

The windowed centroid of an undersampled star is pulled towards the centre of its brightest
pixel; the pixel-integrated PSF fit (`hapcore.align.undersampled`) is not. Both are measured
here on the same detections of a simulated IR subarray, in the chip's true WCS.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

import hapsim
from hapcore.align import sources
from hapcore.align.sources import detect_chip_sources


def _errors(found, truth_xy):
    xy = np.column_stack([found.table["x"], found.table["y"]])
    d, i = cKDTree(truth_xy).query(xy, distance_upper_bound=1.0)
    ok = np.isfinite(d)
    err = xy[ok] - truth_xy[i[ok]]
    phase = truth_xy[i[ok]] - np.floor(truth_xy[i[ok]] + 0.5)   # -0.5 .. 0.5 from pixel centre
    return err, phase


@pytest.fixture(scope="module")
def ir_chip(tmp_path_factory):
    base = tmp_path_factory.mktemp("undersampled")
    sim = hapsim.simulate_visit(base / "in", detector="wfc3/ir", filters={"f125w": 1},
                                subarray=512, seed=21, psf="optical", exptime=600.0,
                                star_density=1500.0, galaxy_density=5.0,
                                star_mag_range=(17.0, 23.0), pointing_error=(0.0, 0.0))
    path = sim.exposures[0]
    with fits.open(path) as hdul:
        sci = hdul["SCI", 1].data.astype(np.float32)
        dq = hdul["DQ", 1].data
    root = path.name.split("_")[0]
    wcs = WCS(fits.Header.fromtextfile(path.parent / "truth_wcs" / f"{root}_sci1.hdr"))
    truth = Table.read(sim.truth_sources)
    stars = truth[truth["type"] == "star"]
    tx, ty = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
    return sci, dq, np.column_stack([tx, ty])


def test_undersampled_centroids_have_no_pixel_phase_bias(ir_chip, monkeypatch):
    sci, dq, truth_xy = ir_chip
    fwhm_px = 0.13 / 0.128           # the alignment's fwhmpsf on the IR pixels
    fitted = detect_chip_sources(sci, dq, fwhm_px=fwhm_px, max_sources=250)
    # the windowed centroids alone: the refinement switched off
    monkeypatch.setattr(sources, "UNDERSAMPLED_FWHM_PX", 0.0)
    windowed = detect_chip_sources(sci, dq, fwhm_px=fwhm_px, max_sources=250)
    err_f, phase_f = _errors(fitted, truth_xy)
    err_w, phase_w = _errors(windowed, truth_xy)
    assert len(err_f) >= 60 and len(err_w) >= 60

    def phase_bias(err, phase):
        # mean error of stars right of their pixel centre minus that of stars left of it
        # (x and y pooled): a centroid pulled to the pixel centre makes it negative
        right = np.r_[err[phase[:, 0] > 0.15, 0], err[phase[:, 1] > 0.15, 1]]
        left = np.r_[err[phase[:, 0] < -0.15, 0], err[phase[:, 1] < -0.15, 1]]
        return float(np.median(right) - np.median(left))

    bias_w, bias_f = phase_bias(err_w, phase_w), phase_bias(err_f, phase_f)
    median_w = float(np.median(np.hypot(*err_w.T)))
    median_f = float(np.median(np.hypot(*err_f.T)))
    # measured (250 stars): windowed -0.23 px phase bias, 0.13 px median error; fitted
    # +0.04 px and 0.032 px
    assert bias_w < -0.12
    assert abs(bias_f) < 0.07
    assert median_f < 0.05 < 0.1 < median_w


def test_well_sampled_chips_keep_windowed_centroids():
    # WFC3/UVIS, ACS/WFC, ACS/HRC: fwhmpsf 0.13" over 0.04", 0.05", 0.025" pixels
    assert all(0.13 / scale >= sources.UNDERSAMPLED_FWHM_PX for scale in (0.04, 0.05, 0.025))
    assert 0.13 / 0.128 < sources.UNDERSAMPLED_FWHM_PX
