"""Cross-filter check of total-catalog sources: faint detections seen in one filter only.

A source of the total (white-light) image is real light in every filter that covers it, in
proportion to its colour. A cosmic-ray residual that a filter product's rejection missed (most
often in filters of one or two exposures, where the median cannot tell which image is wrong)
is light in that filter only: its aperture-2 flux in every other filter is consistent with
zero. At the faint end the cross-exposure check (:mod:`hapcore.catalogs.exposure_check`)
cannot see these residuals: an exposure product's noise is larger than the residual's whole
signal. Across filters the test is sharper, because the other filter products are as deep as
the one holding the residual.

:func:`single_filter_detections` marks rows whose aperture-2 signal-to-noise ratio reaches
``snr`` in exactly one of at least two covering filters, stays below ``max_snr`` there, and
that filter has at most ``max_exposures`` exposures. The catalog stage sets the hot-pixel /
cosmic-ray bit (16) of that filter, so the row is trimmed from the total catalog unless another
filter keeps it.

Measured on the ACS/WFC benchmark visit (2 x F606W + 2 x F814W, hapsim truth): of 156 total
rows with no true source within 0.2", 101 are single-filter detections by this test at
``snr`` 2.5 and ``max_snr`` 15, against 2 of 1957 rows of real sources (the S/N of real sources
with S/N < 10 in their brighter filter is >= 4.4 in the fainter for 95% of them).

What a user gives up: a real source of extreme colour, faint (S/N < ``max_snr``) and seen in a
filter of at most two exposures only (a dropout, say), is flagged 16 in that filter. Set
``filter_consistency_snr`` to None to keep drizzlepac's behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from hap_models.catalogs import FLAG_HOT_PIXEL
from hapcore.catalogs.rows import FilterRows
from hapcore.catalogs.saturated_consistency import flag_saturated_light_across

__all__ = ["cr_dominated_rows", "flag_single_filter_detections", "single_filter_detections"]

log = logging.getLogger(f"hapsvm.{__name__}")


def single_filter_detections(flux: np.ndarray, error: np.ndarray, n_exposures: Sequence[int], *,
                             snr: float = 2.5, max_snr: float = 50.0,
                             max_exposures: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Rows detected in one filter only.

    Parameters
    ----------
    flux, error : ndarray, shape (n_filters, n_rows)
        Aperture-2 flux and its error of each row in each filter; NaN (or a non-positive
        error) where the filter does not cover the row.
    n_exposures : sequence of int
        Number of exposures of each filter product.
    snr : float, optional
        Signal-to-noise ratio at which a filter counts as seeing the source.
    max_snr : float, optional
        Rows seen at this S/N or above in their one filter are kept (bright sources of extreme
        colour; residuals this bright are left to the exposure check).
    max_exposures : int, optional
        Only filters of at most this many exposures are suspected.

    Returns
    -------
    flagged : ndarray of bool, shape (n_rows,)
        Rows detected in one filter only.
    which : ndarray of int, shape (n_rows,)
        Index of the filter that sees a flagged row (-1 elsewhere).
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    error = np.atleast_2d(np.asarray(error, dtype=float))
    if flux.shape != error.shape:
        raise ValueError(f"flux {flux.shape} and error {error.shape} differ in shape")
    n_filters, n_rows = flux.shape
    if len(n_exposures) != n_filters:
        raise ValueError(f"{len(n_exposures)} exposure counts for {n_filters} filters")
    flagged = np.zeros(n_rows, bool)
    which = np.full(n_rows, -1, int)
    if n_filters < 2 or n_rows == 0:
        return flagged, which
    with np.errstate(invalid="ignore", divide="ignore"):
        covered = np.isfinite(flux) & np.isfinite(error) & (error > 0)
        ratio = np.where(covered, flux / np.where(covered, error, 1.0), np.nan)
    seen = covered & (ratio >= snr)
    n_seen = seen.sum(axis=0)
    candidate = (covered.sum(axis=0) >= 2) & (n_seen == 1)
    index = np.argmax(seen, axis=0)
    cols = np.arange(n_rows)
    suspect = np.asarray(n_exposures)[index] <= max_exposures
    flagged = candidate & suspect & (ratio[index, cols] < max_snr)
    which[flagged] = index[flagged]
    return flagged, which


def cr_dominated_rows(flux: np.ndarray, error: np.ndarray, flags: np.ndarray, *,
                      support_snr: float = 8.0, bit: int = FLAG_HOT_PIXEL) -> np.ndarray:
    """Rows whose strongest filter calls them a cosmic ray and no other filter backs them.

    The highest-S/N covering filter of the row has ``bit`` (hot pixel / cosmic ray, from the
    CI test or the exposure check) set, and no other covering filter sees the row at
    ``support_snr`` or above. Such a row survives drizzlepac's trimming whenever another
    filter's forced measurement at the cosmic ray's place happens to carry a low flag (the
    CI of a noise measurement often passes as "extended", flag 1).

    Parameters
    ----------
    flux, error : ndarray, shape (n_filters, n_rows)
        As in `single_filter_detections`.
    flags : ndarray of int, shape (n_filters, n_rows)
    support_snr : float, optional
    bit : int, optional

    Returns
    -------
    ndarray of bool, shape (n_rows,)
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=float))
    error = np.atleast_2d(np.asarray(error, dtype=float))
    flags = np.atleast_2d(np.asarray(flags))
    n_filters, n_rows = flux.shape
    if n_filters < 2 or n_rows == 0:
        return np.zeros(n_rows, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        covered = np.isfinite(flux) & np.isfinite(error) & (error > 0)
        ratio = np.where(covered, flux / np.where(covered, error, 1.0), -np.inf)
    strongest = np.argmax(ratio, axis=0)
    cols = np.arange(n_rows)
    others = ratio.copy()
    others[strongest, cols] = -np.inf
    return ((covered.sum(axis=0) >= 2) & np.isfinite(ratio[strongest, cols]) &
            ((flags[strongest, cols] & bit) != 0) & (others.max(axis=0) < support_snr))


def flag_single_filter_detections(tables: Mapping[str, object], n_exposures: Mapping[str, int], *,
                                  snr: float, max_snr: float, max_exposures: int,
                                  support_snr: float | None = None,
                                  bit: int = FLAG_HOT_PIXEL) -> int:
    """Set ``bit`` in the ``Flags`` of the filter that alone sees a row (in place).

    ``tables``: ``{filter name: point catalog}`` (astropy tables with ``ID``, ``FluxAp2``,
    ``FluxErrAp2``, ``Flags``). Rows are matched by ``ID``; a filter without a row for an ID
    does not cover it. With ``support_snr``, rows that `cr_dominated_rows` finds (after the
    single-filter flags are set) get ``bit`` in every filter that covers them. Then the rows
    flagged 32 on a saturated star's light in some filters and extended in the others get 32
    in all (:func:`~hapcore.catalogs.saturated_consistency.flag_saturated_light_across`).
    Returns the number of rows flagged ``bit``.
    """
    stack = FilterRows.from_tables(tables)
    if len(stack.names) < 2:
        return 0
    flagged, which = single_filter_detections(
        stack.flux, stack.error, [int(n_exposures.get(n, 1)) for n in stack.names], snr=snr,
        max_snr=max_snr, max_exposures=max_exposures)
    for k in range(len(stack.names)):
        stack.flags[k, flagged & (which == k)] |= bit
    dominated = np.zeros(stack.ids.size, bool)
    if support_snr is not None:
        dominated = cr_dominated_rows(stack.flux, stack.error, stack.flags,
                                      support_snr=support_snr, bit=bit) & ~flagged
        stack.flags[:, dominated] |= np.where(stack.covered[:, dominated], bit, 0)
    stack.write_flags(tables)
    # a saturated star's feature in one filter and extended in the others is one in all
    # (hapcore.catalogs.saturated_consistency)
    flag_saturated_light_across(tables)
    n = int(flagged.sum()) + int(dominated.sum())
    log.debug("cross-filter check: of %d sources, %d seen in one filter only (S/N >= %.1f there, "
             "< %.1f elsewhere) and %d called a cosmic ray by their strongest filter without "
             "S/N >= %s support elsewhere; flag %d", stack.ids.size, int(flagged.sum()), snr,
             snr, int(dominated.sum()), support_snr, bit)
    return n
