"""Sharpness test of point sources: detections sharper than the image's own stars.

DAOStarFinder's ``sharpness`` compares a detection's central pixel with its kernel-weighted
surroundings: point sources of one image share a narrow locus (their PSF), cosmic-ray
residuals and hot pixels lie above it. drizzlepac only applies DAOStarFinder's fixed limit
(1.0), which lets most residuals through. Here the locus is measured on the image: the median
and robust sigma of the sharpness of the catalog's well-measured point sources (aperture-2
S/N in ``snr_range`` in their best filter, not saturated, not already flagged away), widened
at low S/N by the measurement noise (from the spread of the S/N 5-20 rows), and a row above
``median + nsigma * width`` gets the hot-pixel / cosmic-ray flag (16) in every filter. Rows
called extended (flag 1) are tested too: besides noise peaks inside large galaxies this takes
the cusps of a few compact galaxies out of the *point* catalog (8 of the UVIS benchmark
visit's ~1240 rows); they stay in the segment catalog.

Measured with hapsim truth (BENCHMARKS.md): spurious rows of the ACS/WFC benchmark visit
1.31% -> 0.66%, UVIS 0.72% -> 0.41%, completeness at S/N 10 unchanged within 1 star. Without
the S/N-dependent width, faint clean stars (S/N 10-20) were flagged too (UVIS completeness
0.966 -> 0.961).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from hap_models.catalogs import FLAG_EXTENDED, FLAG_HOT_PIXEL, FLAG_SATURATION
from hapcore.catalogs.rows import FilterRows

__all__ = ["flag_sharp_detections", "sharpness_outliers"]

log = logging.getLogger(f"hapsvm.{__name__}")


def sharpness_outliers(sharpness, snr, *, usable=None, nsigma: float = 3.0,
                       snr_range: tuple[float, float] = (20.0, 500.0), min_sigma: float = 0.02,
                       min_locus: int = 20) -> tuple[np.ndarray, float | None]:
    """Rows whose sharpness lies more than ``nsigma`` above the locus of good point sources.

    Parameters
    ----------
    sharpness : array_like
        DAOStarFinder sharpness of each row.
    snr : array_like
        Aperture-2 S/N of each row in its best filter (NaN when unmeasured).
    usable : array_like of bool, optional
        Rows that may define the locus (e.g. unsaturated rows kept by the catalog's trimming);
        default all.
    nsigma : float, optional
    snr_range : (float, float), optional
        S/N range of the locus rows.
    min_sigma : float, optional
        Floor of the locus' robust sigma.
    min_locus : int, optional
        Fewer locus rows than this: no test (all False).

    Returns
    -------
    outliers : ndarray of bool
    cut : float or None
        The sharpness limit of bright rows (None when no test was made); fainter rows get a
        wider one, the locus width plus the measurement noise at their S/N.
    """
    sharpness = np.asarray(sharpness, dtype=float)
    snr = np.asarray(snr, dtype=float)
    usable = np.ones(sharpness.shape, bool) if usable is None else np.asarray(usable, bool)
    with np.errstate(invalid="ignore"):
        locus = usable & np.isfinite(sharpness) & (snr >= snr_range[0]) & (snr < snr_range[1])
    if locus.sum() < min_locus:
        return np.zeros(sharpness.shape, bool), None
    median = float(np.median(sharpness[locus]))
    sigma = max(1.4826 * float(np.median(np.abs(sharpness[locus] - median))), min_sigma)
    # the measurement noise of sharpness grows as 1/S/N: its size is taken from the spread of
    # the fainter usable rows (S/N 5-20), beyond the locus' own width
    faint = usable & np.isfinite(sharpness) & (snr >= 5.0) & (snr < snr_range[0])
    noise_coeff = 0.0
    if faint.sum() >= min_locus:
        f_sigma = 1.4826 * float(np.median(np.abs(sharpness[faint] - median)))
        f_snr = float(np.median(snr[faint]))
        noise_coeff = np.sqrt(max(f_sigma ** 2 - sigma ** 2, 0.0)) * f_snr
    with np.errstate(invalid="ignore", divide="ignore"):
        width = np.sqrt(sigma ** 2 + (noise_coeff / np.clip(snr, 1.0, None)) ** 2)
        outliers = np.isfinite(sharpness) & (sharpness > median + nsigma * width)
    return outliers, median + nsigma * sigma


def flag_sharp_detections(tables: Mapping[str, object], sharpness_by_id: Mapping[int, float], *,
                          nsigma: float, flag_trim_value: int,
                          bit: int = FLAG_HOT_PIXEL) -> int:
    """Set ``bit`` in every filter's ``Flags`` of the point sources too sharp for a star.

    ``tables``: ``{filter name: point catalog}`` (astropy tables with ``ID``, ``FluxAp2``,
    ``FluxErrAp2``, ``Flags``), changed in place; ``sharpness_by_id``: the detection's
    sharpness per ``ID``. The locus is made of rows the trimming would keep (some filter flag
    <= ``flag_trim_value``) that no filter flags as saturated and that their best filter does
    not call extended. Returns the number of rows flagged.
    """
    stack = FilterRows.from_tables(tables)
    if not stack.names:
        return 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(stack.covered, stack.flux / stack.error, -np.inf)
    best = np.argmax(ratio, axis=0)  # the row's best filter decides "extended"
    cols = np.arange(stack.ids.size)
    snr = ratio[best, cols]
    extended = (stack.flags[best, cols] & FLAG_EXTENDED) != 0
    kept = (stack.present & (stack.flags <= flag_trim_value)).any(axis=0)
    saturated = ((stack.flags & FLAG_SATURATION) != 0).any(axis=0)
    sharpness = np.array([sharpness_by_id.get(int(i), np.nan) for i in stack.ids], dtype=float)
    # the locus is made of point sources only; every row is tested
    outliers, cut = sharpness_outliers(sharpness, snr, usable=kept & ~saturated & ~extended,
                                       nsigma=nsigma)
    if cut is None:
        log.info("sharpness test skipped: too few well-measured point sources for a locus")
        return 0
    stack.flags[:, outliers] |= np.where(stack.present[:, outliers], bit, 0)
    stack.write_flags(tables)
    n = int(outliers.sum())
    log.debug("sharpness test: %d of %d point sources sharper than %.3f (stellar locus + %.1f "
             "sigma) flagged %d", n, stack.ids.size, cut, nsigma, bit)
    return n
