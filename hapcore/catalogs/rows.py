"""Filter point catalogs of one detection, stacked row by row (``ID``).

The total-catalog checks that compare a source across filters
(:mod:`hapcore.catalogs.filter_consistency`, :mod:`hapcore.catalogs.sharpness`) need each
filter's aperture-2 flux, error and flags as ``(n_filters, n_sources)`` arrays on one ``ID``
axis, and write their flags back into the tables. :class:`FilterRows` does both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["FilterRows"]


@dataclass
class FilterRows:
    """Aperture-2 measurements and flags of the filters' point catalogs on one ``ID`` axis.

    Attributes
    ----------
    names : list of str
        Filters with a non-empty table, in input order.
    ids : ndarray
        Sorted union of their ``ID``.
    rows : list of ndarray
        Per filter, the position in ``ids`` of each table row.
    flux, error : ndarray, shape (n_filters, n_ids)
        ``FluxAp2`` and ``FluxErrAp2``; NaN where a filter has no row or no measurement
        (-9999).
    flags : ndarray of int, shape (n_filters, n_ids)
        ``Flags``; 0 where a filter has no row.
    present : ndarray of bool, shape (n_filters, n_ids)
        Where a filter has a row.
    """

    names: list
    ids: np.ndarray
    rows: list
    flux: np.ndarray
    error: np.ndarray
    flags: np.ndarray
    present: np.ndarray

    @classmethod
    def from_tables(cls, tables: Mapping[str, object]) -> FilterRows:
        """Stack ``{filter name: point catalog}`` (tables with ``ID``, ``FluxAp2``,
        ``FluxErrAp2``, ``Flags``; None or empty tables are left out)."""
        names = [name for name, table in tables.items() if table is not None and len(table)]
        ids = np.unique(np.concatenate([np.asarray(tables[n]["ID"]) for n in names])) \
            if names else np.zeros(0, np.int64)
        shape = (len(names), ids.size)
        flux, error = np.full(shape, np.nan), np.full(shape, np.nan)
        flags = np.zeros(shape, np.int64)
        present = np.zeros(shape, bool)
        rows = []
        for k, name in enumerate(names):
            table = tables[name]
            pos = np.searchsorted(ids, np.asarray(table["ID"]))
            f = np.asarray(table["FluxAp2"], dtype=float)
            e = np.asarray(table["FluxErrAp2"], dtype=float)
            # -9999 (the catalogs' missing value) means "not measured"
            flux[k, pos] = np.where(f <= -9999.0, np.nan, f)
            error[k, pos] = np.where(e <= -9999.0, np.nan, e)
            flags[k, pos] = np.asarray(table["Flags"])
            present[k, pos] = True
            rows.append(pos)
        return cls(names, ids, rows, flux, error, flags, present)

    @property
    def covered(self) -> np.ndarray:
        """Where a filter measured the row (finite flux, positive error)."""
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.flux) & np.isfinite(self.error) & (self.error > 0)

    def write_flags(self, tables: Mapping[str, object]) -> None:
        """Write ``flags`` back into each filter's ``Flags`` column (in place)."""
        for k, name in enumerate(self.names):
            table = tables[name]
            dtype = np.asarray(table["Flags"]).dtype
            table["Flags"] = self.flags[k, self.rows[k]].astype(dtype)
