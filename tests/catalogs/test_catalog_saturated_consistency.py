"""A saturated star's feature in one filter, extended in the others, is a feature in all
(hapcore.catalogs.saturated_consistency)."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from hapcore.catalogs.filter_consistency import flag_single_filter_detections
from hapcore.catalogs.saturated_consistency import (
    flag_saturated_light_across,
    saturated_light_rows,
)


def _tables():
    # rows: feature in A / extended in B; feature in A / point-like in B; feature in A /
    # the saturated star itself in B (1 + 4); swarm member (32 in both); extended in both;
    # feature in A, not measured in B; feature in A / extended + faint in B
    flags_a = [32, 32, 32, 32, 1, 33, 32]
    flags_b = [1, 0, 5, 32, 1, 1, 9]
    flux_b = [5.0, 5.0, 5.0, 5.0, 5.0, -9999.0, 5.0]
    ids = np.arange(1, 8)
    a = Table({"ID": ids, "FluxAp2": np.full(7, 5.0), "FluxErrAp2": np.full(7, 0.5),
               "Flags": flags_a})
    b = Table({"ID": ids, "FluxAp2": flux_b, "FluxErrAp2": np.full(7, 0.5), "Flags": flags_b})
    return {"A": a, "B": b}


def test_rows_flagged_in_one_filter_and_extended_in_the_others():
    flags = np.array([[32, 32, 32, 32, 1, 33, 32], [1, 0, 5, 32, 1, 1, 9]])
    covered = np.ones_like(flags, bool)
    covered[1, 5] = False
    rows = saturated_light_rows(flags, covered)
    assert rows.tolist() == [True, False, False, False, False, False, True]
    # one filter: nothing to compare
    assert not saturated_light_rows(flags[:1], covered[:1]).any()


def test_flags_written_in_place_only_where_measured():
    tables = _tables()
    assert flag_saturated_light_across(tables) == 2
    assert tables["A"]["Flags"].tolist() == [32, 32, 32, 32, 1, 33, 32]
    assert tables["B"]["Flags"].tolist() == [33, 0, 5, 32, 1, 1, 41]
    # one filter alone is left as it is
    single = {"A": _tables()["A"]}
    assert flag_saturated_light_across(single) == 0


def test_cross_filter_check_runs_it():
    tables = _tables()
    flag_single_filter_detections(tables, {"A": 3, "B": 3}, snr=2.5, max_snr=50.0,
                                  max_exposures=2)
    assert tables["B"]["Flags"].tolist()[:2] == [33, 0]
