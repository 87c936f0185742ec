"""Astrometric reference catalogs for the alignment step (spec §4.3).

drizzlepac asks the STScI catalog web service for GAIA*/GSC24*/2MASS positions in a cone around the
visit, renames the columns to one standard set and adds a ``weight`` column. Here the same
standard table is built from a *provider*: a local file (:class:`LocalCatalogProvider`, the
default and the only one the tests need) or the Gaia archive
(:class:`hapcore.align.refcat_gaia.GaiaOnlineProvider`, optional, needs ``astroquery``).

Standard columns of :attr:`ReferenceCatalog.table` (in this order, extra input columns follow):

========== ======== ==========================================================================
column     unit     meaning
========== ======== ==========================================================================
RA, DEC    deg      position at :attr:`ReferenceCatalog.epoch` (after proper-motion propagation)
RA_error   mas      position errors (NaN if unknown), grown by the proper-motion errors x dt
DEC_error  mas
pmra       mas/yr   proper motion, ``pmra`` includes cos(dec) as in Gaia (NaN if unknown)
pmra_error mas/yr
pmdec      mas/yr
pmdec_error mas/yr
mag                 catalog magnitude (NaN if unknown)
objID               catalog identifier (row number when the file has none)
epoch      yr       epoch (Julian year) each row's position refers to (NaN if unknown)
weight     mas^-2   1/(RA_error^2 + DEC_error^2), non-finite -> 0, or 1 when errors are unknown
========== ======== ==========================================================================

Rows are sorted bright first (stable, unknown magnitudes last). drizzlepac sorts faint first;
the order does not change a tweakwcs fit, and bright-first lets a caller keep the N best stars.

Epochs are Julian years (``astropy.time.Time.jyear``), the unit of Gaia's ``ref_epoch`` and of
proper motions in mas/yr; drizzlepac uses calendar decimal years, which differ by < 1 day.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy.time import Time

__all__ = [
    "GaiaOnlineProvider",
    "REFCAT_ENV_VAR",
    "STANDARD_COLUMNS",
    "LocalCatalogProvider",
    "ReferenceCatalog",
    "ReferenceCatalogError",
    "ReferenceCatalogProvider",
    "angular_separation_deg",
    "decimal_year_from_mjd",
    "fetch_reference_catalog",
    "footprint_cone",
    "mjd_from_decimal_year",
    "propagate_positions",
    "read_catalog_table",
    "resolve_refcat_path",
    "select_in_cone",
    "select_in_footprint",
    "standardize_reference_table",
]

if TYPE_CHECKING:
    from .refcat_gaia import GaiaOnlineProvider

logger = logging.getLogger("hapsvm")

#: Environment variable naming a local reference catalog (used when neither ``--refcat`` nor the
#: parameter set names one).
REFCAT_ENV_VAR = "HAPSVM_REFCAT"

#: Standard column names, in output order.
STANDARD_COLUMNS = ("RA", "DEC", "RA_error", "DEC_error", "pmra", "pmra_error", "pmdec",
                    "pmdec_error", "mag", "objID", "epoch", "weight")

_MAS_PER_RAD = float((1 * u.rad).to_value(u.mas))
_MAS_PER_DEG = 3.6e6

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


def __getattr__(name: str):
    # The online provider lives in its own module; re-exported lazily (it imports this one).
    if name == "GaiaOnlineProvider":
        from .refcat_gaia import GaiaOnlineProvider
        return GaiaOnlineProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ReferenceCatalogError(ValueError):
    """A reference catalog could not be read, parsed or fetched (the message says why)."""


@dataclass
class ReferenceCatalog:
    """A standardised astrometric reference catalog.

    Attributes
    ----------
    name : str
        Catalog name (e.g. ``"GAIADR3"``, or the name a file declares).
    epoch : float
        Julian year the positions refer to after propagation; NaN if unknown.
    table : astropy.table.Table
        Standard columns (see module docstring), sorted bright first.
    source : str
        File path or archive URL the rows came from.
    """

    name: str
    epoch: float
    table: Table
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)


@runtime_checkable
class ReferenceCatalogProvider(Protocol):
    """Anything that returns a :class:`ReferenceCatalog` for a cone and an epoch."""

    def fetch(self, *, ra: float, dec: float, radius_deg: float,
              epoch: float) -> ReferenceCatalog:
        """Return the catalog rows within ``radius_deg`` of (ra, dec), propagated to ``epoch``."""
        ...


# --------------------------------------------------------------------------------------------
# Time and geometry helpers
# --------------------------------------------------------------------------------------------

def decimal_year_from_mjd(mjd):
    """Convert MJD (UTC) to a Julian-year epoch (e.g. 2016.0 for Gaia DR3).

    Parameters
    ----------
    mjd : float or array-like

    Returns
    -------
    float or numpy.ndarray
    """
    years = Time(np.asarray(mjd, dtype=float), format="mjd", scale="utc").jyear
    return float(years) if np.ndim(years) == 0 else np.asarray(years)


def mjd_from_decimal_year(year):
    """Convert a Julian-year epoch to MJD (UTC); inverse of :func:`decimal_year_from_mjd`."""
    mjd = Time(np.asarray(year, dtype=float), format="jyear", scale="utc").mjd
    return float(mjd) if np.ndim(mjd) == 0 else np.asarray(mjd)


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


def _unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.deg2rad(ra_deg), np.deg2rad(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _ra_dec_from_vectors(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    ra = np.rad2deg(np.arctan2(y, x)) % 360.0
    dec = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    return ra, dec


def angular_separation_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Vectorised great-circle distance in degrees (Vincenty formula, stable at all distances)."""
    ra1, dec1, ra2, dec2 = (np.deg2rad(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra),
                   np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.rad2deg(np.arctan2(num, den))


def propagate_positions(ra, dec, pmra, pmdec, dt_years) -> tuple[np.ndarray, np.ndarray]:
    """Move positions by their proper motions over ``dt_years``.

    The star moves along the tangent direction (pmra east including cos(dec), pmdec north) and
    the result is projected back to the sphere, i.e. a star at infinite distance with zero radial
    velocity; the gnomonic offset from the start position is exactly (pmra, pmdec) x dt.

    Parameters
    ----------
    ra, dec : array-like
        Positions in degrees.
    pmra, pmdec : array-like
        Proper motions in mas/yr; rows where either is not finite are not moved.
    dt_years : float or array-like
        Target epoch minus catalog epoch (years); rows where it is not finite are not moved.

    Returns
    -------
    ra, dec : numpy.ndarray
    """
    ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
    pmra, pmdec = np.asarray(pmra, dtype=float), np.asarray(pmdec, dtype=float)
    dt = np.broadcast_to(np.asarray(dt_years, dtype=float), ra.shape)
    moves = np.isfinite(pmra) & np.isfinite(pmdec) & np.isfinite(dt)
    new_ra, new_dec = ra.copy(), dec.copy()
    if not moves.any():
        return new_ra, new_dec
    a, d = np.deg2rad(ra[moves]), np.deg2rad(dec[moves])
    position = _unit_vectors(ra[moves], dec[moves])
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    step_rad = dt[moves, None] / _MAS_PER_RAD
    step = (pmra[moves, None] * east + pmdec[moves, None] * north) * step_rad
    new_ra[moves], new_dec[moves] = _ra_dec_from_vectors(position + step)
    return new_ra, new_dec


def _footprint_corners(footprint) -> np.ndarray:
    corners = footprint.calc_footprint() if hasattr(footprint, "calc_footprint") else footprint
    corners = np.asarray(corners, dtype=float)
    if corners.ndim != 2 or corners.shape[1] != 2 or len(corners) < 1:
        raise ValueError(f"footprint must be an (N, 2) array of (ra, dec) corners, "
                         f"got shape {corners.shape}")
    return corners


def footprint_cone(footprints: Iterable, *, margin_deg: float = 0.005
                   ) -> tuple[float, float, float]:
    """Cone (ra, dec, radius_deg) that contains every corner of the given footprints.

    Parameters
    ----------
    footprints : iterable
        Each an (N, 2) array of (ra, dec) corners in degrees, or an object with a
        ``calc_footprint()`` method (e.g. `astropy.wcs.WCS`).
    margin_deg : float, optional
        Added to the radius so stars just outside the nominal footprint (a-priori WCS errors)
        remain available to the matcher.

    Returns
    -------
    ra, dec, radius_deg : float
        The centre is the normalised mean of the corners' unit vectors (robust at RA = 0/360 and
        near the poles); the radius is the largest centre-corner distance plus the margin.
    """
    corners = np.concatenate([_footprint_corners(fp) for fp in footprints])
    mean_vector = _unit_vectors(corners[:, 0], corners[:, 1]).mean(axis=0)
    if np.linalg.norm(mean_vector) < 1e-12:
        raise ValueError("footprint corners surround the whole sphere; no cone centre")
    ra, dec = _ra_dec_from_vectors(mean_vector)
    radius = float(np.max(angular_separation_deg(ra, dec, corners[:, 0], corners[:, 1])))
    return float(ra), float(dec), radius + margin_deg


def _table_of(catalog):
    return catalog.table if isinstance(catalog, ReferenceCatalog) else catalog


def _with_table(catalog, table):
    if isinstance(catalog, ReferenceCatalog):
        return ReferenceCatalog(name=catalog.name, epoch=catalog.epoch, table=table,
                                source=catalog.source, meta=dict(catalog.meta))
    return table


def select_in_cone(catalog, *, ra: float, dec: float, radius_deg: float):
    """Rows of a standard catalog (or table) within ``radius_deg`` of (ra, dec).

    Parameters
    ----------
    catalog : ReferenceCatalog or astropy.table.Table
        Needs ``RA`` and ``DEC`` columns in degrees.
    ra, dec, radius_deg : float
        Cone centre and radius in degrees.

    Returns
    -------
    ReferenceCatalog or astropy.table.Table
        Same type as ``catalog``.
    """
    table = _table_of(catalog)
    separation = angular_separation_deg(ra, dec, np.asarray(table["RA"]), np.asarray(table["DEC"]))
    return _with_table(catalog, table[separation <= radius_deg])


def select_in_footprint(catalog, footprint):
    """Rows of a standard catalog (or table) inside a sky polygon.

    Parameters
    ----------
    catalog : ReferenceCatalog or astropy.table.Table
        Needs ``RA`` and ``DEC`` columns in degrees.
    footprint : array-like or WCS
        (N, 2) polygon vertices (ra, dec) in degrees, in order, or an object with
        ``calc_footprint()``. Edges are great circles (straight in the gnomonic projection).

    Returns
    -------
    ReferenceCatalog or astropy.table.Table
        Same type as ``catalog``.
    """
    table = _table_of(catalog)
    corners = _footprint_corners(footprint)
    ra0, dec0, _ = footprint_cone([corners], margin_deg=0.0)
    vertex_x, vertex_y, _ = _gnomonic(corners[:, 0], corners[:, 1], ra0, dec0)
    x, y, in_front = _gnomonic(np.asarray(table["RA"], float), np.asarray(table["DEC"], float),
                               ra0, dec0)
    inside = np.zeros(len(table), bool)
    # Even-odd ray casting, vectorised over the stars (polygons have few edges).
    for i in range(len(corners)):
        x1, y1 = vertex_x[i], vertex_y[i]
        x2, y2 = vertex_x[i - 1], vertex_y[i - 1]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_cross)
    return _with_table(catalog, table[inside & in_front])


def _gnomonic(ra, dec, ra0, dec0):
    vectors = _unit_vectors(ra, dec)
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    centre = _unit_vectors(ra0, dec0)
    east = np.array([-np.sin(a0), np.cos(a0), 0.0])
    north = np.array([-np.sin(d0) * np.cos(a0), -np.sin(d0) * np.sin(a0), np.cos(d0)])
    depth = vectors @ centre
    with np.errstate(divide="ignore", invalid="ignore"):
        return (vectors @ east) / depth, (vectors @ north) / depth, depth > 0


# --------------------------------------------------------------------------------------------
# Reading and standardising
# --------------------------------------------------------------------------------------------

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
        logger.info("Reference catalog %s: %d of %d sources within %.4f deg of "
                    "(%.6f, %.6f) at epoch %.3f", name, len(catalog), n_before, radius_deg,
                    ra, dec, positions_epoch)
    return catalog


# --------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------

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


def fetch_reference_catalog(provider: ReferenceCatalogProvider, *, epoch: float,
                            wcs_footprints: Sequence | None = None, ra: float | None = None,
                            dec: float | None = None, radius_deg: float | None = None,
                            margin_deg: float = 0.005) -> ReferenceCatalog:
    """Fetch the reference catalog covering some footprints, or a given cone.

    Parameters
    ----------
    provider : ReferenceCatalogProvider
    epoch : float
        Observation epoch (Julian year), e.g. ``decimal_year_from_mjd(EXPSTART)``.
    wcs_footprints : sequence, optional
        Footprints (see :func:`footprint_cone`); the cone is derived from them.
    ra, dec, radius_deg : float, optional
        Explicit cone (degrees), used when ``wcs_footprints`` is not given.
    margin_deg : float, optional
        Radius margin added to a footprint-derived cone.

    Returns
    -------
    ReferenceCatalog
    """
    if wcs_footprints is not None:
        ra, dec, radius_deg = footprint_cone(wcs_footprints, margin_deg=margin_deg)
    elif ra is None or dec is None or radius_deg is None:
        raise ValueError("give either wcs_footprints or all of ra, dec and radius_deg")
    if not np.isfinite(epoch):
        raise ValueError(f"epoch must be a finite year, got {epoch!r}")
    return provider.fetch(ra=float(ra), dec=float(dec), radius_deg=float(radius_deg),
                          epoch=float(epoch))


def resolve_refcat_path(cli_value=None, parameter_value=None, *,
                        env: Mapping[str, str] | None = None) -> Path | None:
    """Which local reference catalog to use: ``--refcat``, then the parameter set, then the env.

    Parameters
    ----------
    cli_value : str or os.PathLike, optional
        Value of ``--refcat``.
    parameter_value : str or os.PathLike, optional
        Value from the parameter set.
    env : mapping, optional
        Environment (default ``os.environ``); ``HAPSVM_REFCAT`` is read from it.

    Returns
    -------
    pathlib.Path or None
        The resolved file, or None when no source names one (empty strings count as unset).

    Raises
    ------
    ReferenceCatalogError
        The chosen value names no existing file (no silent fall-through to a lower source).
    """
    env = os.environ if env is None else env
    for origin, value in (("--refcat", cli_value), ("parameter set", parameter_value),
                          (REFCAT_ENV_VAR, env.get(REFCAT_ENV_VAR))):
        if value is None or not str(value).strip():
            continue
        path = Path(str(value).strip()).expanduser()
        if not path.is_file():
            raise ReferenceCatalogError(
                f"reference catalog {path} (from {origin}): file not found")
        return path.resolve()
    return None
