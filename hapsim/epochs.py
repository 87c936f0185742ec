"""
Epochs and proper motions of simulated sources.

The positions in a visit's truth table (``truth_sources.ecsv``) refer to
one epoch, its *reference epoch*, written in the table's meta as
``epoch`` (Julian year) and ``epoch_mjd``, and in ``visit_truth.json``
under ``"epochs"``. By default that is the start of the visit; a visit
simulated with ``reference_epoch=2016.0`` (the ``proper-motion`` preset)
keeps the Gaia epoch instead. Every exposure is rendered with its stars
moved to the exposure's EXPSTART, and the reference catalog gives the
positions at 2016.0 with the proper motions, as Gaia does.

To get a source's true position at a given time (e.g. an exposure's
EXPSTART) use `true_positions`::

    from astropy.table import Table
    from hapsim.epochs import true_positions

    truth = Table.read("truth_sources.ecsv")
    ra, dec = true_positions(truth, mjd=61100.3)

A proper motion moves a star along the tangent plane at its reference
position: the gnomonic offset after ``dt`` years is exactly
``(pmra * dt, pmdec * dt)`` (pmra includes cos(dec), as in Gaia), the
convention of the pipeline's own catalog propagation.
"""

from __future__ import annotations

import numpy as np
from astropy.time import Time

__all__ = ["mjd_to_jyear", "jyear_to_mjd", "propagate", "true_positions", "scene_at_epoch"]

_MAS_PER_RAD = 180.0 / np.pi * 3.6e6


def mjd_to_jyear(mjd):
    """Julian-year epoch (e.g. 2016.0) of an MJD (UTC)."""
    years = Time(np.asarray(mjd, dtype=float), format="mjd", scale="utc").jyear
    return float(years) if np.ndim(years) == 0 else np.asarray(years)


def jyear_to_mjd(year):
    """MJD (UTC) of a Julian-year epoch; inverse of `mjd_to_jyear`."""
    mjd = Time(np.asarray(year, dtype=float), format="jyear", scale="utc").mjd
    return float(mjd) if np.ndim(mjd) == 0 else np.asarray(mjd)


def propagate(ra, dec, pmra, pmdec, dt_years):
    """
    Move positions by their proper motions.

    Parameters
    ----------
    ra, dec : array_like
        Positions (deg) at the start epoch.
    pmra, pmdec : array_like
        Proper motions (mas/yr); ``pmra`` includes cos(dec). Rows where
        either is zero or not finite do not move.
    dt_years : float
        Target epoch minus start epoch (years).

    Returns
    -------
    ra, dec : ndarray
        Positions (deg) at the target epoch.
    """
    ra = np.array(ra, dtype=float)
    dec = np.array(dec, dtype=float)
    pmra = np.broadcast_to(np.asarray(pmra, dtype=float), ra.shape)
    pmdec = np.broadcast_to(np.asarray(pmdec, dtype=float), ra.shape)
    moves = np.isfinite(pmra) & np.isfinite(pmdec) & ((pmra != 0) | (pmdec != 0))
    if dt_years == 0 or not moves.any():
        return ra, dec
    a, d = np.deg2rad(ra[moves]), np.deg2rad(dec[moves])
    radial = np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(a)], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    step = dt_years / _MAS_PER_RAD
    vec = radial + (pmra[moves, None] * east + pmdec[moves, None] * north) * step
    ra[moves] = np.rad2deg(np.arctan2(vec[:, 1], vec[:, 0])) % 360.0
    dec[moves] = np.rad2deg(np.arctan2(vec[:, 2], np.hypot(vec[:, 0], vec[:, 1])))
    return ra, dec


def true_positions(truth, mjd, *, epoch=None):
    """
    True positions of the sources of a truth table at a given time.

    Parameters
    ----------
    truth : astropy.table.Table
        ``truth_sources.ecsv`` of a visit (columns ra, dec, pmra, pmdec).
    mjd : float
        Time (MJD, UTC) at which the positions are wanted, e.g. an
        exposure's EXPSTART.
    epoch : float, optional
        Julian year the table's positions refer to; default the table's
        ``epoch`` meta keyword.

    Returns
    -------
    ra, dec : ndarray
        Degrees.
    """
    if epoch is None:
        if "epoch" not in truth.meta:
            raise ValueError("truth table has no 'epoch' meta keyword; pass epoch=")
        epoch = float(truth.meta["epoch"])
    dt = mjd_to_jyear(mjd) - float(epoch)
    return propagate(truth["ra"], truth["dec"], truth["pmra"], truth["pmdec"], dt)


def scene_at_epoch(scene, epoch_mjd, mjd):
    """
    The scene with its positions moved from `epoch_mjd` to `mjd`.

    Returns `scene` itself when nothing moves (same epoch, no proper
    motions), otherwise a copy whose ``ra``/``dec`` are replaced.
    """
    dt = mjd_to_jyear(mjd) - mjd_to_jyear(epoch_mjd)
    if dt == 0:
        return scene
    ra, dec = propagate(scene["ra"], scene["dec"], scene["pmra"], scene["pmdec"], dt)
    moved = scene.copy(copy_data=False)
    moved["ra"] = ra
    moved["dec"] = dec
    moved["ra"].unit = moved["dec"].unit = "deg"
    return moved
