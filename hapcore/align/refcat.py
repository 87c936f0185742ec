"""Astrometric reference catalogs for the alignment step (spec §4.3).

drizzlepac asks the STScI catalog web service for GAIA*/GSC24*/2MASS positions in a cone around the
visit, renames the columns to one standard set and adds a ``weight`` column. Here the same
standard table is built from a *provider*: a local file
(:class:`hapcore.align.refcat_read.LocalCatalogProvider`, the default and the only one the tests
need) or the Gaia archive (:class:`hapcore.align.refcat_gaia.GaiaOnlineProvider`, optional,
needs ``astroquery``).

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

Reading a catalog file and standardising its table (and the local-file provider) are in
:mod:`hapcore.align.refcat_read`; this module holds the catalog model, the time and sky geometry
(epochs, separations, proper-motion propagation, cone and footprint selection) and the
provider-independent entry points.

Epochs are Julian years (``astropy.time.Time.jyear``), the unit of Gaia's ``ref_epoch`` and of
proper motions in mas/yr; drizzlepac uses calendar decimal years, which differ by < 1 day.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy.time import Time


__all__ = [
    "GaiaOnlineProvider",
    "STANDARD_COLUMNS",
    "ReferenceCatalog",
    "ReferenceCatalogError",
    "ReferenceCatalogProvider",
    "angular_separation_deg",
    "decimal_year_from_mjd",
    "fetch_reference_catalog",
    "footprint_cone",
    "mjd_from_decimal_year",
    "propagate_positions",
    "resolve_refcat_path",
    "select_in_cone",
    "select_in_footprint",
]

if TYPE_CHECKING:
    from .refcat_gaia import GaiaOnlineProvider

logger = logging.getLogger(f"hapsvm.{__name__}")

#: Standard column names, in output order.
STANDARD_COLUMNS = ("RA", "DEC", "RA_error", "DEC_error", "pmra", "pmra_error", "pmdec",
                    "pmdec_error", "mag", "objID", "epoch", "weight")

_MAS_PER_RAD = float((1 * u.rad).to_value(u.mas))


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
    """The gnomonic projection in unit-vector form, for the footprint test only.

    Same projection as :func:`hapcore.wcs.tangent.gnomonic`, other float operations: the two
    disagree in the last bits, which flips the inside/outside decision of stars lying exactly
    on a footprint edge, so the footprint selection keeps this form (results unchanged).
    """
    vectors = _unit_vectors(ra, dec)
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    centre = _unit_vectors(ra0, dec0)
    east = np.array([-np.sin(a0), np.cos(a0), 0.0])
    north = np.array([-np.sin(d0) * np.cos(a0), -np.sin(d0) * np.sin(a0), np.cos(d0)])
    depth = vectors @ centre
    with np.errstate(divide="ignore", invalid="ignore"):
        return (vectors @ east) / depth, (vectors @ north) / depth, depth > 0


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

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


def resolve_refcat_path(*sources: tuple[str, Any]) -> Path | None:
    """The local reference catalog named by the first of several sources.

    Parameters
    ----------
    *sources : (str, str or os.PathLike or None)
        ``(origin, value)`` pairs, highest precedence first, e.g. ``("--refcat", value)``,
        ``("parameter set", value)``, ``("HAPSVM_REFCAT", value)``. ``origin`` names the source
        in the error message; None and blank values count as unset. The caller reads the values
        (the environment is read by the entry points, :mod:`flows.options`).

    Returns
    -------
    pathlib.Path or None
        The resolved file, or None when no source names one.

    Raises
    ------
    ReferenceCatalogError
        The chosen value names no existing file (no silent fall-through to a lower source).
    """
    for origin, value in sources:
        if value is None or not str(value).strip():
            continue
        path = Path(str(value).strip()).expanduser()
        if not path.is_file():
            raise ReferenceCatalogError(
                f"reference catalog {path} (from {origin}): file not found")
        return path.resolve()
    return None
