"""Positions of saturated stars' segment rows: the star's centre, not the segment's centroid.

The centroid of a segment is the first moment of its background-subtracted pixels (photutils'
``xcentroid``/``ycentroid``, as in drizzlepac). For a saturated star those pixels are clipped at
the full well over the core and spread along its bleed columns, which are not symmetric about
the star (charge bleeds farther one way, a column ends on a chip gap or at the edge of an
exposure): the centroid moves 0.1-0.15" along the columns (``saturated`` preset: 4 of its
stars, 1950-293000 e-/s, whose segment rows then match no source within 0.1"). drizzlepac does
nothing about it. The point catalog places the same star at its plateau's centre or its star
finder's centroid (:func:`hapcore.catalogs.saturated_features.saturated_star_rows`), within
0.08" of the truth on that preset.

:func:`recentre_saturated_segments` gives each segment row flagged saturated (4) in some
filter the position (pixels and sky) of the nearest point row that is a saturated star (flag
4 without the saturated-light flag 32 in some filter) within ``max_offset`` pixels.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import cKDTree

from hap_models.catalogs import FLAG_SATURATION, FLAG_SWARM

__all__ = ["MAX_OFFSET_ARCSEC", "recentre_saturated_segments", "saturated_star_matches"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Largest distance (arcsec) from a saturated star's segment centroid to its star's centre.
MAX_OFFSET_ARCSEC: float = 0.25


def saturated_star_matches(seg_x, seg_y, seg_saturated, star_x, star_y, *,
                           max_offset: float) -> np.ndarray:
    """Index of the star each saturated segment row moves to (-1: none).

    Parameters
    ----------
    seg_x, seg_y : array_like
        Segment centroids (pixels).
    seg_saturated : array_like of bool
        Rows flagged saturated.
    star_x, star_y : array_like
        Centres of the saturated stars (pixels).
    max_offset : float
        Largest distance (pixels).

    Returns
    -------
    ndarray of int
    """
    seg_x = np.asarray(seg_x, float)
    seg_y = np.asarray(seg_y, float)
    out = np.full(seg_x.size, -1, int)
    star_x = np.asarray(star_x, float).ravel()
    star_y = np.asarray(star_y, float).ravel()
    stars = np.isfinite(star_x) & np.isfinite(star_y)
    rows = np.flatnonzero(np.asarray(seg_saturated, bool) & np.isfinite(seg_x) &
                          np.isfinite(seg_y))
    if rows.size == 0 or not stars.any():
        return out
    which = np.flatnonzero(stars)
    dist, k = cKDTree(np.column_stack([star_x[which], star_y[which]])).query(
        np.column_stack([seg_x[rows], seg_y[rows]]), distance_upper_bound=max_offset)
    hit = np.isfinite(dist)
    out[rows[hit]] = which[k[hit]]
    return out


def _any_flag(tables, ids, test) -> np.ndarray:
    """Whether ``test(flags)`` holds in some table for each of ``ids`` (rows matched by ID)."""
    ids = np.asarray(ids)
    out = np.zeros(ids.size, bool)
    for table in tables:
        if table is None or not len(table):
            continue
        flags = dict(zip(np.asarray(table["ID"]).tolist(),
                         np.asarray(table["Flags"], np.int64).tolist()))
        values = np.array([flags.get(i, 0) for i in ids.tolist()], np.int64)
        out |= test(values)
    return out


def recentre_saturated_segments(segment, point, segment_tables, point_tables, *,
                                plate_scale: float, detector: str = "",
                                max_offset_arcsec: float = MAX_OFFSET_ARCSEC) -> int:
    """Move saturated stars' segment rows to their star's point-catalog position.

    Parameters
    ----------
    segment : astropy.table.Table
        The total segment table (``ID``, ``X-Centroid``, ``Y-Centroid``, ``RA``, ``DEC``);
        modified in place, as are ``segment_tables``.
    point : astropy.table.Table
        The detection's point sources (``id``, ``xcentroid``, ``ycentroid``, ``RA``, ``DEC``).
    segment_tables, point_tables : sequence of astropy.table.Table or None
        The filter catalogs (``ID``, ``Flags``), for the saturation flags.
    plate_scale : float
        arcsec per pixel.
    detector : str, optional
        Nothing is moved on IR: no bleed columns, and its flag 4 marks rows on the holes a core
        saturated in every exposure left in the product, where the point row is no better
        placed (``ir-only`` seed 15: a 3250 e-/s star's row moved 0.22" away from it).
    max_offset_arcsec : float, optional

    Returns
    -------
    int
        Rows moved.
    """
    if segment is None or point is None or not len(segment) or not len(point) or \
            str(detector).upper() == "IR":
        return 0
    seg_ids = np.asarray(segment["ID"])
    saturated = _any_flag(segment_tables, seg_ids, lambda f: (f & FLAG_SATURATION) != 0)
    if not saturated.any():
        return 0
    star = _any_flag(point_tables, np.asarray(point["id"]),
                     lambda f: ((f & FLAG_SATURATION) != 0) & ((f & FLAG_SWARM) == 0))
    sx = np.where(star, np.asarray(point["xcentroid"], float), np.nan)
    sy = np.where(star, np.asarray(point["ycentroid"], float), np.nan)
    match = saturated_star_matches(segment["X-Centroid"], segment["Y-Centroid"], saturated, sx,
                                   sy, max_offset=max_offset_arcsec / plate_scale)
    moved = np.flatnonzero(match >= 0)
    if moved.size == 0:
        return 0
    new = {"X-Centroid": np.asarray(point["xcentroid"], float)[match[moved]],
           "Y-Centroid": np.asarray(point["ycentroid"], float)[match[moved]],
           "RA": np.asarray(point["RA"], float)[match[moved]],
           "DEC": np.asarray(point["DEC"], float)[match[moved]]}
    shift = float(np.median(np.hypot(new["X-Centroid"] - np.asarray(segment["X-Centroid"],
                                                                    float)[moved],
                                     new["Y-Centroid"] - np.asarray(segment["Y-Centroid"],
                                                                    float)[moved])))
    by_id = dict(zip(seg_ids[moved].tolist(), range(moved.size)))
    for table in [segment, *segment_tables]:
        if table is None or not len(table):
            continue
        ids = np.asarray(table["ID"]).tolist()
        rows = np.array([r for r, i in enumerate(ids) if i in by_id], int)
        if rows.size == 0:
            continue
        src = np.array([by_id[ids[r]] for r in rows], int)
        for name, values in new.items():
            if name in table.colnames:
                table[name][rows] = values[src]
    log.debug("segment catalog: %d saturated star(s)' segment row(s) moved to the star's centre "
             "(median shift %.3f\")", moved.size, shift * plate_scale)
    return int(moved.size)
