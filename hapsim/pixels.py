"""
Detector pixels of a simulated exposure: noise, cosmic rays and artefacts, DQ, statistics.

:func:`chip_pixels` turns a noise-free model (electrons) into calibrated SCI, ERR and DQ
arrays and the cosmic-ray truth mask (MAMA photon counts, CCD and IR detectors, WFPC2 in DN);
:func:`image_statistics` gives the good-pixel cards of a SCI header; :func:`write_crmask`
writes the truth masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from .artifacts import (DQ_ATOD_SATURATED, DQ_BAD_DETECTOR, DQ_BAD_REFERENCE, DQ_HOT,
                        DQ_SATURATED, bad_columns, cosmic_rays, hot_pixels,
                        saturate_and_bleed)

__all__ = ["chip_pixels", "image_statistics", "write_crmask"]


def _mama_pixels(spec, rng, exptime, model):
    """
    Photon counts of the SBC MAMA; returns sci, err, dq, crmask.

    A MAMA counts photons: no read noise, almost blind to cosmic rays (none
    are simulated), no full well and no bleeding. Calibration divides
    by the flat but subtracts no dark (too low to measure per pixel), so
    with the dark-limited FUV sky most pixels hold exactly 0, which the
    pipeline's SBC background rule relies on.
    """
    shape = model.shape
    hot_flat, hot_counts = hot_pixels(rng, shape, spec.hot_pixel_fraction, exptime)
    model.flat[hot_flat] += hot_counts
    counts = rng.poisson(model).astype(np.float64)
    dq = np.zeros(shape, dtype=np.int16)
    dq.flat[hot_flat] |= DQ_HOT
    n_bad_ref = rng.binomial(shape[0] * shape[1], 2e-4)
    dq.flat[rng.choice(shape[0] * shape[1], n_bad_ref, replace=False)] |= DQ_BAD_REFERENCE
    # calacs' Poisson error, kept at one count where none were detected so
    # that signal-to-noise ratios stay finite
    err = np.sqrt(np.maximum(counts, 1.0))
    return (counts.astype(np.float32), err.astype(np.float32), dq,
            np.zeros(shape, dtype=bool))


#: WFPC2 DQ bits (C1M files): 2 calibration-file defect, 4 permanent camera
#: defect, 8 A-to-D saturation, 1024 unrepaired warm pixel.
_WFPC2_DQ = {DQ_BAD_REFERENCE: 2, DQ_BAD_DETECTOR: 4, DQ_SATURATED: 8,
             DQ_ATOD_SATURATED: 8, DQ_HOT: 1024}
#: Largest signal (DN) of WFPC2's 12-bit converter above its ~310 DN bias.
_WFPC2_ATOD_DN = 4095.0 - 310.0


def _wfpc2_dq(dq):
    out = np.zeros(dq.shape, dtype=np.int16)
    for acs_bit, wfpc2_bit in _WFPC2_DQ.items():
        out[(dq & acs_bit) != 0] |= wfpc2_bit
    return out


def chip_pixels(spec, chip_wcs_true, rng, exptime, model, cr_fraction, psf_unused=None):
    """Noise, cosmic rays and detector artefacts; returns sci, err, dq, crmask."""
    if spec.is_mama:
        return _mama_pixels(spec, rng, exptime, model)
    shape = model.shape
    readnoise = spec.readnoise_mean if spec.is_ccd else spec.readnoise_mean / 1.5
    dark = spec.dark_rate * exptime
    hot_flat, hot_e = hot_pixels(rng, shape, spec.hot_pixel_fraction, exptime)
    model.flat[hot_flat] += hot_e
    cr_charge, cr_mask = cosmic_rays(rng, shape, cr_fraction,
                                     mean_length=spec.cr_track_length_mean,
                                     charge_median=spec.cr_charge_median)
    electrons = rng.poisson(model).astype(np.float64)
    electrons += rng.normal(0.0, readnoise, shape)
    electrons += cr_charge
    if spec.instrument == "WFPC2":
        # the full well (53000 e-) lies above the converter's range at gain 7:
        # bright stars bleed only in the brightest cores and are clipped at
        # the A-to-D limit (WFPC2 DQ 8)
        atod = _WFPC2_ATOD_DN * spec.gain
        dq = saturate_and_bleed(electrons, spec.full_well, atod)
        over = electrons >= atod
        electrons[over] = atod
        dq[over] |= DQ_ATOD_SATURATED
    elif spec.is_ccd:
        dq = saturate_and_bleed(electrons, spec.full_well, 65535.0 * spec.gain)
    else:
        # IR ramps are fitted from the unsaturated reads: flag, keep the rate.
        dq = np.where(model > spec.full_well, np.int16(256), np.int16(0)).astype(np.int16)
    electrons -= dark  # dark-subtracted by calibration; hot-pixel residuals remain
    dq.flat[hot_flat] |= DQ_HOT
    for col, start, stop in bad_columns(rng, shape, spec.bad_columns_per_chip):
        electrons[start:stop, col] = electrons[start:stop, col] * 0.4 + rng.normal(
            0.0, 3 * readnoise, stop - start)
        dq[start:stop, col] |= DQ_BAD_DETECTOR
    n_bad_ref = rng.binomial(shape[0] * shape[1], 2e-4)
    dq.flat[rng.choice(shape[0] * shape[1], n_bad_ref, replace=False)] |= DQ_BAD_REFERENCE
    err = np.sqrt(np.clip(electrons + dark, 0.0, None) + readnoise**2)
    if spec.instrument == "WFPC2":
        # DN, and the ERR drizzlepac's wfpc2_to_flt writes: sqrt(SCI), not a
        # noise model (clipped at 0 where it would be NaN)
        electrons /= spec.gain
        err = np.sqrt(np.clip(electrons, 0.0, None))
        dq = _wfpc2_dq(dq)
    if spec.detector == "IR":
        electrons /= exptime
        err /= exptime
    return electrons.astype(np.float32), err.astype(np.float32), dq.astype(np.int16), cr_mask


_SDQFLAGS = 31743


def image_statistics(sci, err, dq, spec, exptime):
    """Good-pixel statistics cards of SCI headers (AstroDrizzle reads NGOODPIX)."""
    good = (dq & _SDQFLAGS) == 0
    values = sci[good]
    # WFPC2's ERR (sqrt of the DN) is 0 where the data are: no ratio there
    snr = values[err[good] > 0] / err[good][err[good] > 0]
    return {
        "NGOODPIX": (int(good.sum()), "number of good pixels"),
        "SDQFLAGS": (_SDQFLAGS, "serious data quality flags"),
        "GOODMIN": (float(values.min()), "minimum value of good pixels"),
        "GOODMAX": (float(values.max()), "maximum value of good pixels"),
        "GOODMEAN": (float(values.mean()), "mean value of good pixels"),
        "SNRMIN": (float(snr.min()), "minimum signal to noise of good pixels"),
        "SNRMAX": (float(snr.max()), "maximum signal to noise of good pixels"),
        "SNRMEAN": (float(snr.mean()), "mean value of signal to noise of good pixels"),
        "SOFTERRS": (0, "number of soft error pixels (DQF=1)"),
        "MEANDARK": (float(spec.dark_rate * exptime), "average of the dark values subtracted"),
    }


def write_crmask(path: Path, masks):
    hdus = [fits.PrimaryHDU()]
    for k, mask in enumerate(masks, start=1):
        hdu = fits.CompImageHDU(mask.astype(np.uint8), name="CRMASK", compression_type="RICE_1")
        hdu.header["EXTVER"] = k
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
