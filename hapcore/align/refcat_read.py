"""Reading reference catalog files and standardising their tables (spec §4.3).

A file (ECSV, FITS binary table, CSV, Parquet, VOTable) in Gaia-archive, STScI catalog-service
or standard column names is read (:func:`read_catalog_table`), its columns renamed and converted
to the standard set of :mod:`hapcore.align.refcat` and its positions propagated to the
observation epoch (:func:`standardize_reference_table`). :class:`LocalCatalogProvider` serves a
local file as a :class:`~hapcore.align.refcat.ReferenceCatalogProvider`.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from hapcore.align.refcat import (
    STANDARD_COLUMNS,
    ReferenceCatalog,
    ReferenceCatalogError,
    decimal_year_from_mjd,
    propagate_positions,
    select_in_cone,
)

__all__ = [
    "LocalCatalogProvider",
    "read_catalog_table",
    "standardize_reference_table",
]

logger = logging.getLogger(f"hapsvm.{__name__}")

# Accepted input names (compared lower-case), first match wins, with the unit assumed when the
# file declares none. Gaia archive, STScI catalog service (GAIA*, GSC24*, 2MASS, PS1) and the
# standard names themselves (so a standardised ECSV reads back unchanged).
_ALIASES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "RA": (("ra", "deg"), ("ramean", "deg"), ("ra_icrs", "deg"), ("raj2000", "deg")),
    "DEC": (("dec", "deg"), ("decmean", "deg"), ("de_icrs", "deg"), ("dec_icrs", "deg"),
            ("dej2000", "deg")),
    # PS1 mean-position errors are documented in arcsec; the others in mas.
    "RA_error": (("ra_error", "mas"), ("raerr", "mas"), ("rameanerr", "arcsec"), ("e_ra", "mas")),
    "DEC_error": (("dec_error", "mas"), ("decerr", "mas"), ("decmeanerr", "arcsec"),
                  ("e_dec", "mas")),
    "pmra": (("pmra", "mas/yr"), ("rapm", "mas/yr"), ("pm_ra", "mas/yr")),
    "pmra_error": (("pmra_error", "mas/yr"), ("rapmerr", "mas/yr"), ("e_pmra", "mas/yr")),
    "pmdec": (("pmdec", "mas/yr"), ("decpm", "mas/yr"), ("pm_dec", "mas/yr")),
    "pmdec_error": (("pmdec_error", "mas/yr"), ("decpmerr", "mas/yr"), ("e_pmdec", "mas/yr")),
    "mag": (("mag", None), ("phot_g_mean_mag", None), ("gmag", None)),
    "objID": (("objid", None), ("source_id", None), ("id", None)),
    "epoch": (("epoch", None), ("ref_epoch", None), ("epochmean", None), ("jdate", None)),
}
_STANDARD_UNITS = {"RA": u.deg, "DEC": u.deg, "RA_error": u.mas, "DEC_error": u.mas,
                   "pmra": u.mas / u.yr, "pmra_error": u.mas / u.yr, "pmdec": u.mas / u.yr,
                   "pmdec_error": u.mas / u.yr, "epoch": u.yr, "weight": u.mas ** -2}
_NAME_META_KEYS = ("catalog_name", "catalog", "name")
_FORMAT_BY_SUFFIX = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".txt": "ascii.csv",
                     ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fits.gz": "fits",
                     ".parquet": "parquet", ".pq": "parquet", ".vot": "votable",
                     ".xml": "votable"}


def _epoch_to_year(values, *, column_name: str = "") -> np.ndarray:
    """Epoch column values as Julian years; JD and MJD are recognised by their size."""
    values = np.asarray(values, dtype=float)
    years = values.copy()
    if column_name.lower() == "jdate":
        is_jd, is_mjd = np.isfinite(values), np.zeros(values.shape, bool)
    else:
        is_jd = values > 2.0e6
        is_mjd = (values > 1.0e4) & ~is_jd
    if is_jd.any():
        years[is_jd] = decimal_year_from_mjd(values[is_jd] - 2400000.5)
    if is_mjd.any():
        years[is_mjd] = decimal_year_from_mjd(values[is_mjd])
    return years


def _table_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in sorted(_FORMAT_BY_SUFFIX.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return fmt
    return None


def read_catalog_table(path) -> Table:
    """Read a catalog file (ECSV, FITS binary table, CSV, Parquet, VOTable) as a Table.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    astropy.table.Table

    Raises
    ------
    ReferenceCatalogError
        If the file is missing, not a table, or Parquet without ``pyarrow`` installed.
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceCatalogError(f"reference catalog {path}: file not found")
    fmt = _table_format(path)
    if fmt == "parquet":
        # astropy's Parquet reader needs both; say so before astropy fails less clearly.
        missing = [module for module in ("pyarrow", "pandas")
                   if importlib.util.find_spec(module) is None]
        if missing:
            raise ReferenceCatalogError(
                f"reference catalog {path}: reading Parquet needs {' and '.join(missing)}, not "
                f"installed (pip install {' '.join(missing)}, or pip install 'hapsvm[parquet]')")
    try:
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as exc:  # astropy raises many types for unparseable input
        table, error = None, exc
    if fmt == "ascii.csv" and (table is None or _find_column(table, "RA") is None):
        # The STScI catalog service puts a description line above the CSV header.
        try:
            shifted = Table.read(path, format="ascii.csv", header_start=1, data_start=2)
        except Exception:
            shifted = None
        if shifted is not None and _find_column(shifted, "RA") is not None:
            table = shifted
    if table is None:
        raise ReferenceCatalogError(
            f"reference catalog {path}: not a readable table ({type(error).__name__}: {error})"
        ) from error
    return table


def _find_column(table: Table, standard: str) -> tuple[str, str | None] | None:
    by_lower = {name.lower(): name for name in table.colnames}
    for alias, default_unit in _ALIASES[standard]:
        if alias in by_lower:
            return by_lower[alias], default_unit
    return None


def _float_column(table: Table, name: str, *, target_unit, default_unit) -> np.ndarray:
    column = table[name]
    try:
        values = np.array(np.ma.asarray(column, dtype=float).filled(np.nan), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ReferenceCatalogError(f"column {name!r} is not numeric ({exc})") from exc
    if target_unit is None:
        return values
    unit = column.unit
    if unit is None and default_unit is not None:
        unit = u.Unit(default_unit)
    if unit is None:
        return values
    try:
        return (values * unit).to_value(target_unit)
    except (u.UnitsError, ValueError, TypeError):
        # An undeclared or unusual unit string (e.g. "Julian Year"): trust the convention.
        if default_unit is not None and u.Unit(default_unit) != target_unit:
            return (values * u.Unit(default_unit)).to_value(target_unit)
        return values


def _declared_name(meta: Mapping) -> str | None:
    by_lower = {str(key).lower(): value for key, value in meta.items()}
    for key in _NAME_META_KEYS:
        value = by_lower.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _name_from_path(path: Path) -> str:
    stem = path.name
    while Path(stem).suffix:
        stem = Path(stem).stem
    return stem.upper()


def _numeric_columns(raw: Table, found: Mapping) -> dict[str, np.ndarray]:
    """Float arrays in standard units for every standard column but objID (NaN if absent)."""
    n_rows = len(raw)
    columns: dict[str, np.ndarray] = {}
    for standard, match in found.items():
        if standard == "objID":
            continue
        if match is None:
            columns[standard] = np.full(n_rows, np.nan)
        elif standard == "epoch":
            columns[standard] = _epoch_to_year(_float_column(raw, match[0], target_unit=None,
                                                             default_unit=None),
                                               column_name=match[0])
        else:
            columns[standard] = _float_column(raw, match[0],
                                              target_unit=_STANDARD_UNITS.get(standard),
                                              default_unit=match[1])
    return columns


def standardize_reference_table(raw: Table, *, epoch: float, source: str = ""
                                ) -> tuple[Table, float]:
    """Rename, convert and propagate a catalog table to the standard columns.

    Parameters
    ----------
    raw : astropy.table.Table
        Catalog in Gaia-archive, STScI-service or standard column names (any case).
    epoch : float
        Julian year to propagate positions to.
    source : str, optional
        File or URL, used in messages.

    Returns
    -------
    table : astropy.table.Table
        Standard columns then the remaining input columns, bright first.
    positions_epoch : float
        ``epoch`` if every row with a proper motion and epoch was moved there (or rows already
        refer to it); otherwise the median epoch of the rows' positions; NaN if unknown.

    Raises
    ------
    ReferenceCatalogError
        No usable RA/Dec columns, or every row has non-finite coordinates.
    """
    found = {standard: _find_column(raw, standard) for standard in _ALIASES}
    if found["RA"] is None or found["DEC"] is None:
        raise ReferenceCatalogError(
            f"reference catalog {source}: no RA/Dec columns (accepted: ra/dec, raMean/decMean, "
            f"RA_ICRS/DE_ICRS, any case); it has columns {list(raw.colnames)}")
    n_rows = len(raw)
    try:
        columns = _numeric_columns(raw, found)
    except ReferenceCatalogError as exc:
        raise ReferenceCatalogError(f"reference catalog {source}: {exc}") from exc
    if found["objID"] is not None:
        object_ids = np.asarray(np.ma.getdata(raw[found["objID"][0]]))
    else:
        object_ids = np.arange(1, n_rows + 1, dtype=np.int64)

    valid = (np.isfinite(columns["RA"]) & np.isfinite(columns["DEC"])
             & (np.abs(columns["DEC"]) <= 90.0))
    n_invalid = int(n_rows - valid.sum())
    if n_invalid:
        if n_invalid == n_rows:
            raise ReferenceCatalogError(
                f"reference catalog {source}: all {n_rows} rows have non-finite or invalid RA/Dec")
        logger.warning("Reference catalog %s: dropped %d of %d rows with non-finite or invalid "
                       "RA/Dec", source, n_invalid, n_rows)
    columns = {standard: values[valid] for standard, values in columns.items()}
    object_ids = object_ids[valid]

    catalog_epoch = columns["epoch"]
    dt = epoch - catalog_epoch
    moved = np.isfinite(columns["pmra"]) & np.isfinite(columns["pmdec"]) & np.isfinite(dt)
    columns["RA"], columns["DEC"] = propagate_positions(columns["RA"], columns["DEC"],
                                                        columns["pmra"], columns["pmdec"],
                                                        np.where(moved, dt, np.nan))
    for error, pm_error in (("RA_error", "pmra_error"), ("DEC_error", "pmdec_error")):
        grows = moved & np.isfinite(columns[pm_error])
        columns[error] = np.where(grows, np.hypot(columns[error], columns[pm_error] * dt),
                                  columns[error])
    columns["epoch"] = np.where(moved, epoch, catalog_epoch)

    table = Table()
    for standard in STANDARD_COLUMNS[:-1]:
        values = object_ids if standard == "objID" else columns[standard]
        table[standard] = values
        if standard in _STANDARD_UNITS:
            table[standard].unit = _STANDARD_UNITS[standard]
    table["weight"] = _weights(table["RA_error"], table["DEC_error"])
    table["weight"].unit = _STANDARD_UNITS["weight"]
    used = {match[0] for match in found.values() if match is not None}
    taken = {name.lower() for name in STANDARD_COLUMNS}
    for name in raw.colnames:
        if name not in used and name.lower() not in taken:
            table[name] = raw[name][valid]
    table.meta.update({key: value for key, value in raw.meta.items()
                       if isinstance(key, str) and key.lower() not in ("comments", "history")})

    # Bright first; argsort puts NaN magnitudes last; stable keeps file order among ties.
    table = table[np.argsort(np.asarray(table["mag"]), kind="stable")]

    n_static = int((~moved).sum())
    row_epochs = np.asarray(table["epoch"], float)
    known = np.isfinite(row_epochs)
    if len(table) == 0 or np.all(known & (row_epochs == epoch)):
        positions_epoch = float(epoch)
    elif known.any():
        positions_epoch = float(np.median(row_epochs[known]))
    else:
        positions_epoch = float("nan")
        logger.warning("Reference catalog %s has no epoch column and no proper motions: the "
                       "epoch of its positions is unknown", source)
    if n_static and len(table):
        logger.info("Reference catalog %s: %d of %d rows have no proper motion or epoch and keep "
                    "their catalog positions (median epoch %.3f)", source, n_static, len(table),
                    positions_epoch)
    return table, positions_epoch


def _weights(ra_error, dec_error) -> np.ndarray:
    """drizzlepac's fit weights: 1/(RA_error^2 + DEC_error^2) if the catalog has errors, else 1."""
    ra_error = np.asarray(ra_error, dtype=float)
    dec_error = np.asarray(dec_error, dtype=float)
    variance = ra_error ** 2 + dec_error ** 2
    errors_known = np.any(np.isfinite(variance) & (variance > 0))
    if not errors_known:
        return np.ones(len(ra_error))
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = 1.0 / variance
    return np.where(np.isfinite(weight), weight, 0.0)


def _finish(table: Table, *, name: str, positions_epoch: float, source: str, ra: float,
            dec: float, radius_deg: float) -> ReferenceCatalog:
    """Cone-select a standard table and wrap it; warn (not raise) when nothing overlaps."""
    n_before = len(table)
    catalog = ReferenceCatalog(name=name, epoch=positions_epoch, table=table, source=source)
    catalog = select_in_cone(catalog, ra=ra, dec=dec, radius_deg=radius_deg)
    catalog.table.meta.update({"catalog_name": name, "epoch": positions_epoch,
                               "source": source,
                               "cone": [float(ra), float(dec), float(radius_deg)]})
    if len(catalog) == 0:
        logger.warning("Reference catalog %s (%s, %d rows) does not overlap the cone "
                       "RA=%.6f Dec=%.6f radius=%.4f deg: 0 reference sources",
                       name, source, n_before, ra, dec, radius_deg)
    else:
        logger.debug("Reference catalog %s: %d of %d sources within %.4f deg of "
                    "(%.6f, %.6f) at epoch %.3f", name, len(catalog), n_before, radius_deg,
                    ra, dec, positions_epoch)
    return catalog


class LocalCatalogProvider:
    """Reference catalog read from a local file (ECSV, FITS, CSV, Parquet, VOTable).

    Parameters
    ----------
    path : str or os.PathLike
        Catalog file. Column names may be Gaia-archive, STScI catalog-service or standard ones.
    name : str, optional
        Catalog name; default: the file's declared name (table meta ``catalog_name``,
        ``CATALOG`` or ``name``), else the file stem upper-cased.

    Notes
    -----
    The file is read once, on the first :meth:`fetch`.
    """

    def __init__(self, path, *, name: str | None = None):
        self.path = Path(path)
        self._name = name
        self._raw: Table | None = None

    def __repr__(self) -> str:
        return f"LocalCatalogProvider({str(self.path)!r}, name={self._name!r})"

    def _read(self) -> Table:
        if self._raw is None:
            self._raw = read_catalog_table(self.path)
        return self._raw

    @property
    def name(self) -> str:
        """Catalog name (explicit, declared by the file, or the upper-cased file stem)."""
        if self._name:
            return self._name
        return _declared_name(self._read().meta) or _name_from_path(self.path)

    def fetch(self, *, ra: float, dec: float, radius_deg: float,
              epoch: float) -> ReferenceCatalog:
        """Rows within ``radius_deg`` of (ra, dec), positions propagated to ``epoch``.

        Parameters
        ----------
        ra, dec, radius_deg : float
            Cone in degrees.
        epoch : float
            Observation epoch (Julian year).

        Returns
        -------
        ReferenceCatalog
            Possibly empty (a warning is logged) if the file does not overlap the cone.

        Raises
        ------
        ReferenceCatalogError
            Unreadable file, no RA/Dec columns, or no row with valid coordinates.
        """
        raw = self._read()
        table, positions_epoch = standardize_reference_table(raw, epoch=epoch,
                                                             source=str(self.path))
        return _finish(table, name=self.name, positions_epoch=positions_epoch,
                       source=str(self.path), ra=ra, dec=dec, radius_deg=radius_deg)
