"""Sharpness test: detections sharper than the image's own stars get flag 16."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from hapcore.catalogs.sharpness import flag_sharp_detections, sharpness_outliers


def _population(rng):
    """Stars: a locus at 0.75 (width 0.04) plus measurement noise 0.6 / S/N."""
    snr = np.r_[rng.uniform(20, 300, 300), rng.uniform(5, 20, 300)]
    sharp = 0.75 + rng.normal(0, 0.04, snr.size) + rng.normal(0, 1, snr.size) * 0.6 / snr
    return sharp, snr


def test_outliers_above_the_locus_widened_at_low_snr():
    rng = np.random.default_rng(2)
    sharp, snr = _population(rng)
    stars, cut = sharpness_outliers(sharp, snr)
    assert 0.85 < cut < 0.95
    assert stars.mean() < 0.01  # ~0.1% expected at 3 sigma
    # a bright residual at 0.95 and a faint one at 1.2 are flagged; a faint star at 0.9 is not
    extra_sharp = np.r_[0.95, 1.2, 0.9]
    extra_snr = np.r_[100.0, 8.0, 6.0]
    out, _ = sharpness_outliers(np.r_[sharp, extra_sharp], np.r_[snr, extra_snr])
    assert out[-3:].tolist() == [True, True, False]


def test_no_locus_no_test():
    out, cut = sharpness_outliers([0.7, 1.5], [50.0, 50.0])
    assert cut is None and not out.any()


def test_flags_set_in_every_filter_by_id():
    rng = np.random.default_rng(3)
    sharp, snr = _population(rng)
    n = sharp.size
    ids = np.arange(1, n + 2)
    sharp = np.r_[sharp, 1.3]        # the last row: a cosmic-ray residual at S/N 30
    snr = np.r_[snr, 30.0]
    a = Table({"ID": ids, "FluxAp2": snr, "FluxErrAp2": np.ones(n + 1),
               "Flags": np.zeros(n + 1, int)})
    b = Table({"ID": ids[::-1], "FluxAp2": snr[::-1] / 2, "FluxErrAp2": np.ones(n + 1),
               "Flags": np.ones(n + 1, int)})
    flagged = flag_sharp_detections({"f606w": a, "f814w": b}, dict(zip(ids, sharp)),
                                    nsigma=3.0, flag_trim_value=5)
    assert 1 <= flagged <= 3
    assert a["Flags"][-1] & 16 and b["Flags"][0] & 16
    assert np.count_nonzero(a["Flags"] & 16) == flagged
