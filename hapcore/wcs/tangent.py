"""The gnomonic (tangent-plane) projection of sky positions, written once.

The standard coordinates of a position (ra, dec) about a tangent point (ra0, dec0) are::

    cos c = sin(dec0) sin(dec) + cos(dec0) cos(dec) cos(ra - ra0)
    xi    = cos(dec) sin(ra - ra0) / cos c                                  (east)
    eta   = (cos(dec0) sin(dec) - sin(dec0) cos(dec) cos(ra - ra0)) / cos c  (north)

``c`` is the angular distance from the tangent point; positions with ``cos c <= 0`` lie on the
far hemisphere and have no meaningful projection (the ratios are then infinite or of the wrong
sign). :func:`from_tangent_plane_arcsec` is the inverse. Users: the alignment fit
(:mod:`hapcore.align.visit`) and the point/segment cross-match of the quality checks
(:mod:`hapcore.quality.checks_catalogs`). The footprint selection of the reference catalog
(:func:`hapcore.align.refcat.select_in_footprint`) keeps a unit-vector form of the same
projection: its last bits differ, which would move stars lying exactly on a footprint edge.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gnomonic", "tangent_plane_arcsec", "from_tangent_plane_arcsec"]


def gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard coordinates of (ra, dec) about the tangent point (ra0, dec0).

    Parameters
    ----------
    ra, dec : float or array-like
        Positions in degrees.
    ra0, dec0 : float
        Tangent point in degrees.

    Returns
    -------
    xi, eta : numpy.ndarray
        Standard coordinates in radians (xi towards east, eta towards north); infinite or NaN
        where ``cos_c`` is 0.
    cos_c : numpy.ndarray
        Cosine of the angular distance from the tangent point; ``cos_c > 0`` on the near
        hemisphere, where the projection is valid.
    """
    ra = np.radians(np.asarray(ra, float))
    dec = np.radians(np.asarray(dec, float))
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.cos(dec) * np.sin(ra - a0) / cos_c
        eta = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cos_c
    return xi, eta, cos_c


def tangent_plane_arcsec(ra, dec, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic projection of (ra, dec) about (ra0, dec0) as an (N, 2) array in arcsec.

    Parameters
    ----------
    ra, dec : array-like
        Positions in degrees.
    ra0, dec0 : float
        Tangent point in degrees.

    Returns
    -------
    numpy.ndarray
        Columns xi (east) and eta (north), arcsec (see :func:`gnomonic`).
    """
    xi, eta, _ = gnomonic(ra, dec, ra0, dec0)
    return np.degrees(np.column_stack([xi, eta])) * 3600.0


def from_tangent_plane_arcsec(xy, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`tangent_plane_arcsec`: sky positions of tangent-plane offsets.

    Parameters
    ----------
    xy : array-like, shape (N, 2)
        xi (east) and eta (north) in arcsec.
    ra0, dec0 : float
        Tangent point in degrees.

    Returns
    -------
    ra, dec : numpy.ndarray
        Degrees, ra in [0, 360).
    """
    xy = np.radians(np.asarray(xy, float) / 3600.0)
    xi, eta = xy[:, 0], xy[:, 1]
    a0, d0 = np.radians(ra0), np.radians(dec0)
    rho = np.hypot(xi, eta)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(np.cos(c) * np.sin(d0)
                        + np.where(rho > 0, eta * np.sin(c) * np.cos(d0) / rho, 0.0))
        ra = a0 + np.arctan2(xi * np.sin(c),
                             rho * np.cos(d0) * np.cos(c) - eta * np.sin(d0) * np.sin(c))
    return np.degrees(ra) % 360.0, np.degrees(dec)
