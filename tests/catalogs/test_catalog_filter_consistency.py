"""Cross-filter check: faint total-catalog rows seen in one filter of few exposures only."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from hapcore.catalogs.filter_consistency import (
    cr_dominated_rows,
    flag_single_filter_detections,
    single_filter_detections,
)


def test_single_filter_detections_rules():
    # rows: seen in A only (S/N 6); in both; in A only but bright (S/N 60); in B only (S/N 4);
    # covered by A only; in neither
    flux = np.array([[6.0, 6.0, 60.0, 0.5, 6.0, 1.0],
                     [0.3, 5.0, -0.2, 4.0, np.nan, 0.5]])
    error = np.ones_like(flux)
    flagged, which = single_filter_detections(flux, error, [2, 2])
    assert flagged.tolist() == [True, False, False, True, False, False]
    assert which.tolist() == [0, -1, -1, 1, -1, -1]
    # filters of 3+ exposures reject their own cosmic rays: not suspected
    flagged, _ = single_filter_detections(flux, error, [4, 2])
    assert flagged.tolist() == [False, False, False, True, False, False]
    # one filter: nothing to compare with
    assert not single_filter_detections(flux[:1], error[:1], [2])[0].any()


def test_single_filter_detections_validates_shapes():
    import pytest
    with pytest.raises(ValueError, match="shape"):
        single_filter_detections(np.ones((2, 3)), np.ones((2, 4)), [2, 2])
    with pytest.raises(ValueError, match="exposure counts"):
        single_filter_detections(np.ones((2, 3)), np.ones((2, 3)), [2])


def test_flags_set_in_the_filter_that_sees_the_row_matched_by_id():
    a = Table({"ID": [1, 2, 3], "FluxAp2": [6.0, 6.0, -9999.0], "FluxErrAp2": [1.0, 1.0, -9999.0],
               "Flags": [0, 1, 64]})
    # filter B lists the rows in another order
    b = Table({"ID": [3, 2, 1], "FluxAp2": [7.0, 5.0, 0.2], "FluxErrAp2": [1.0, 1.0, 1.0],
               "Flags": [0, 0, 8]})
    n = flag_single_filter_detections({"f606w": a, "f814w": b}, {"f606w": 2, "f814w": 2},
                                      snr=2.5, max_snr=15.0, max_exposures=2)
    assert n == 1  # row 1 (A only); row 2 in both; row 3 not covered by A, B alone
    assert a["Flags"].tolist() == [16, 1, 64]
    assert b["Flags"].tolist() == [0, 0, 8]


def test_cr_dominated_rows():
    # rows: strongest filter (A) says CR, B at S/N 5; A says CR but B backs it at S/N 12;
    # A clean; B strongest and CR, A at S/N 3; covered by A only
    flux = np.array([[40.0, 40.0, 40.0, 3.0, 40.0],
                     [5.0, 12.0, 5.0, 30.0, np.nan]])
    error = np.ones_like(flux)
    flags = np.array([[16, 16, 0, 1, 16],
                      [1, 0, 1, 16, 0]])
    assert cr_dominated_rows(flux, error, flags).tolist() == [True, False, False, True, False]


def test_cr_dominated_rows_flagged_in_every_covering_filter():
    a = Table({"ID": [1, 2], "FluxAp2": [40.0, 40.0], "FluxErrAp2": [1.0, 1.0], "Flags": [16, 0]})
    b = Table({"ID": [1, 2], "FluxAp2": [5.0, 30.0], "FluxErrAp2": [1.0, 1.0], "Flags": [1, 0]})
    n = flag_single_filter_detections({"f606w": a, "f814w": b}, {"f606w": 2, "f814w": 2},
                                      snr=2.5, max_snr=50.0, max_exposures=2, support_snr=8.0)
    assert n == 1
    assert a["Flags"].tolist() == [16, 0] and b["Flags"].tolist() == [17, 0]
