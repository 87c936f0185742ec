"""Cross-filter check of the saturated-light flag: a feature in one filter is one in all.

:func:`~hapcore.catalogs.saturated_features.flag_saturated_light` runs on each filter product
alone. A halo lump, ring or spike fragment of a saturated star is often "explained" by the
star's light in one filter and missed in the other, where the rotated copies disagree (rings
and spike speckles sit at radii proportional to the wavelength) or the noise is larger; its
CI there says extended (flag 1, <= the trim value), so the row stayed in the total catalog
(``saturated`` preset: 12 of its 26 spurious point rows were flagged 32 in one filter and
extended in the other).

:func:`saturated_light_rows` finds the rows flagged 32 in some covering filter but not in all,
whose every other covering filter calls them extended (1) and not saturated (4: the star
itself); :func:`flag_saturated_light_across` sets 32 in those filters too. The rows of stars on
a saturated star's light keep their rows: their excess is a star's core in the filters that
see it (:mod:`hapcore.catalogs.saturated_cores`), where they are neither flagged 32 nor
extended. Measured on the ``saturated`` preset's truth: spurious point rows 30 -> 18 with
the core test, no star of S/N >= 10 lost, one galaxy row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from hap_models.catalogs import FLAG_EXTENDED, FLAG_SATURATION, FLAG_SWARM
from hapcore.catalogs.rows import FilterRows

__all__ = ["flag_saturated_light_across", "saturated_light_rows"]

log = logging.getLogger(f"hapsvm.{__name__}")


def saturated_light_rows(flags: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Rows (columns of ``flags``) to flag 32 in every covering filter.

    Parameters
    ----------
    flags : ndarray of int, shape (n_filters, n_rows)
    covered : ndarray of bool, shape (n_filters, n_rows)
        Where a filter measured the row.

    Returns
    -------
    ndarray of bool, shape (n_rows,)
        Flagged 32 in at least one covering filter, not in all, and extended (1) but not
        saturated (4) in every covering filter without 32.
    """
    flags = np.atleast_2d(np.asarray(flags, np.int64))
    covered = np.atleast_2d(np.asarray(covered, bool))
    if flags.shape[0] < 2:
        return np.zeros(flags.shape[1], bool)
    light = covered & ((flags & FLAG_SWARM) != 0)
    others = covered & ~light
    extended = ((flags & FLAG_EXTENDED) != 0) & ((flags & FLAG_SATURATION) == 0)
    return light.any(axis=0) & others.any(axis=0) & np.all(~others | extended, axis=0)


def flag_saturated_light_across(tables: Mapping[str, object]) -> int:
    """Set flag 32 (in place) in every covering filter of the rows of
    :func:`saturated_light_rows`.

    ``tables``: ``{filter name: point catalog}`` (astropy tables with ``ID``, ``FluxAp2``,
    ``FluxErrAp2``, ``Flags``), rows matched by ``ID``. Returns the number of rows flagged.
    """
    stack = FilterRows.from_tables(tables)
    if len(stack.names) < 2:
        return 0
    covered = stack.covered & stack.present
    rows = saturated_light_rows(stack.flags, covered)
    if not rows.any():
        return 0
    stack.flags[:, rows] |= np.where(covered[:, rows], FLAG_SWARM, 0)
    stack.write_flags(tables)
    log.debug("cross-filter check: %d row(s) flagged 32 on a saturated star's light in some "
              "filter(s) and extended in the others: flag 32 in all", int(rows.sum()))
    return int(rows.sum())
