"""Assembly of total catalogs and the cosmic-ray-dominance test (spec §6.8).

* :func:`join_filter_columns` -- ``MagAP2_<f>``, ``CI_<f>``, ``Flags_<f>`` of each filter catalog
  joined on ``ID`` into the total table;
* :func:`trim_total_catalog` -- drop rows whose every ``Flags_*`` is > flag_trim_value or missing;
* :func:`cr_dominance_threshold` / :func:`reject_cr_dominated` -- the rejection test, fixed so it
  can fire (drizzlepac sets the singleton exposure time to 0 whenever any filter has more than
  one exposure, so mixed visits were never tested, §12.6).

The fixed test: only single-exposure filters carry unrejected cosmic rays, so
``n1_exptime`` = summed EXPTIME of the filters with one exposure (0 if there is none: nothing to
test). ``crfactor`` is the number of cosmic-ray detections per hour of exposure over a full
detector; the expected number of CR-like detections is scaled by the single-exposure time (h),
by the single-exposure share of the total exposure time and by the covered fraction of the
detector::

    thresh = crfactor * (n1_exptime / 3600) * (n1_exptime / tot_exptime) * (n_pixels / detector_pixels)

A catalog with ``0 < n_good < thresh`` good rows (any ``Flags*`` < 2) is rejected, and then
every catalog type of the detector is rejected.
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.table import Table

from hap_models.catalogs import TOTAL_FILTER_COLUMN_PREFIXES, total_filter_columns

__all__ = [
    "DETECTOR_PIXELS",
    "join_filter_columns",
    "trim_total_catalog",
    "count_good_rows",
    "cr_dominance_threshold",
    "reject_cr_dominated",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Pixels of the full detector (all chips), native scale, for the CR-rate scaling.
DETECTOR_PIXELS: dict[str, int] = {
    "WFC": 4096 * 4096,
    "UVIS": 4096 * 4102,
    "HRC": 1024 * 1024,
    "PC": 800 * 800,
    "WFPC2": 800 * 800,
}


def join_filter_columns(total: Table, filter_table: Table, filter_name: str) -> Table:
    """Left-join one filter catalog's ``MagAp2``, ``CI``, ``Flags`` onto ``total`` by ``ID``.

    Returns a new table; rows of ``total`` without a match get NaN (magnitudes, CI) and -9999
    (flags) so they read as missing.
    """
    result = total.copy(copy_data=True)
    specs = total_filter_columns(filter_name)
    index = {int(i): k for k, i in enumerate(np.asarray(filter_table["ID"]))} if len(filter_table) else {}
    rows = np.array([index.get(int(i), -1) for i in np.asarray(total["ID"])], dtype=int)
    have = rows >= 0
    for spec, (_, source) in zip(specs, TOTAL_FILTER_COLUMN_PREFIXES):
        if spec.kind == "int":
            values = np.full(len(total), -9999, dtype=np.int64)
        else:
            values = np.full(len(total), np.nan)
        if have.any():
            values[have] = np.asarray(filter_table[source])[rows[have]]
        result[spec.name] = values
        result[spec.name].format = spec.format
        if spec.unit:
            result[spec.name].unit = spec.unit
    return result


def _flag_columns(table):
    return [name for name in table.colnames if name.startswith("Flags")]


def trim_total_catalog(table: Table, *, flag_trim_value=5) -> Table:
    """Drop rows where every ``Flags_*`` value is > ``flag_trim_value`` or missing (< 0)."""
    columns = _flag_columns(table)
    if not columns or len(table) == 0:
        return table
    flags = np.column_stack([np.asarray(table[c], dtype=np.int64) for c in columns])
    bad = np.all((flags > flag_trim_value) | (flags < 0), axis=1)
    if bad.any():
        log.debug("total catalog: %d of %d rows trimmed (all flags > %d)", int(bad.sum()),
                 len(table), flag_trim_value)
    return table[~bad]


def count_good_rows(table: Table) -> int:
    """Rows with any ``Flags*`` value in {0, 1} (point-like or extended, nothing else)."""
    columns = _flag_columns(table)
    if not columns or len(table) == 0:
        return len(table) if not columns else 0
    flags = np.column_stack([np.asarray(table[c], dtype=np.int64) for c in columns])
    return int(np.count_nonzero(np.any((flags >= 0) & (flags < 2), axis=1)))


def cr_dominance_threshold(filter_exposures, *, crfactor, total_exptime=None, detector="",
                           n_pixels=None, cleaned=()) -> float:
    """Number of good sources below which a catalog counts as cosmic-ray dominated.

    Parameters
    ----------
    filter_exposures : mapping
        ``{filter name: list of exposure times}``.
    crfactor : float
        CR-like detections per hour over the full detector (catalog parameter).
    total_exptime : float, optional
        Total exposure time of the detector; default the sum of all exposures.
    detector : str
        Detector name, for :data:`DETECTOR_PIXELS`.
    n_pixels : int, optional
        Covered pixels of the product; scales the rate to the covered area.
    cleaned : collection of str, optional
        Single-exposure filters whose cosmic rays were removed (found on the exposure alone):
        they count as cleaned, not as singletons.

    Returns
    -------
    float
        0.0 when no filter is a singleton (every filter was CR-cleaned).
    """
    n1 = sum(float(sum(times)) for name, times in filter_exposures.items()
             if len(times) == 1 and name not in cleaned)
    tot = total_exptime if total_exptime else sum(float(sum(t)) for t in filter_exposures.values())
    if n1 <= 0 or tot <= 0:
        return 0.0
    area = 1.0
    full = DETECTOR_PIXELS.get(str(detector).upper())
    if n_pixels is not None and full:
        area = min(float(n_pixels) / full, 1.0)
    return float(crfactor * (n1 / 3600.0) * (n1 / tot) * area)


def reject_cr_dominated(tables, thresholds) -> dict[str, str | None]:
    """Decide rejection of each catalog type; one rejected type rejects all.

    Parameters
    ----------
    tables : mapping
        ``{"aperture"|"segment": total table with Flags_* columns}``.
    thresholds : mapping
        ``{catalog type: threshold}`` from :func:`cr_dominance_threshold`.

    Returns
    -------
    dict
        ``{catalog type: reason or None}``.
    """
    reasons = {}
    for kind, table in tables.items():
        n_good = count_good_rows(table)
        thresh = thresholds.get(kind, 0.0)
        if 0 < n_good < thresh:
            reasons[kind] = (f"cosmic-ray dominated: {n_good} good sources < expected "
                             f"{thresh:.1f} cosmic-ray detections")
            log.warning("%s catalog rejected: %s", kind, reasons[kind])
        else:
            reasons[kind] = None
    first = next((r for r in reasons.values() if r), None)
    if first:
        for kind in reasons:
            if reasons[kind] is None:
                reasons[kind] = f"rejected together with another catalog type ({first})"
    return reasons
