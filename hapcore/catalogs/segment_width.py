"""Width test of segment rows: light narrower than the image's own sources (cosmic-ray tracks).

Where a filter product has only one or two exposures the median cannot tell which image a
cosmic ray hit, and a ray that struck both exposures at nearly the same place (or that the
rejection missed) stays in the product as a narrow track. The total image inherits it, its
segmentation gives it a segment, and the forced measurement in the other filters sees nothing
(flag 8 there) while the filter holding the track measures a clean-looking row (flag 0 or 1:
a track reaches past aperture 1, so its concentration index is not low). The point catalog
loses these rows through its cross-filter and sharpness tests; the segment catalog had no
test that could see them.

Every real source of a product is the sky convolved with the PSF, so across its narrowest
axis it is at least as wide as a star; a cosmic-ray track is not convolved with the PSF and is
narrower. The test measures the semi-minor axis of each row's second moments in the filter
image (``X2``, ``Y2``, ``XY`` of the segment table, over the total segment's footprint). The
moments inside a footprint grow with the footprint, hence with S/N, so the locus is taken
among the rows of similar S/N: a straight line in log S/N through the semi-minor axes of the
``window`` rows nearest in aperture-2 S/N, and the robust sigma about it, galaxies clipped
from above. The locus rows are the stars': point-like by their CI (where galaxies outnumber
stars, a locus of all rows lies above the stars), from places covered by more than
``max_exposures`` exposures where there are enough (the few-exposure strips and the
uncleaned single-exposure edges hold the very tracks looked for). A row at S/N
``min_snr``-``max_snr`` whose semi-minor axis lies more than ``nsigma`` robust sigmas below
that locus, in a place covered by at most ``max_exposures`` exposures of the filter, gets the
hot-pixel / cosmic-ray flag (16) there. Where the other filters do not see the row either
(flags above the trim value), the total catalog drops it; a real source of the filter is kept
by any filter that measures it cleanly. Fainter rows are not tested (a footprint of a few
pixels is as narrow for a faint star as for a track), nor brighter ones (their width grows
steeply with S/N; coincident-ray residuals are faint).

Measured with hapsim truth (``nsigma`` 3, S/N 10-50; bench_realism.py, same code with and
without the test): ``deep`` preset (UVIS F606W+F814W 4 x 600 s, 2-exposure strips at the
dither edges) total segment catalog 11 -> 4 spurious rows of 565 -> 558 (1.95% -> 0.72%), no
real row lost, point catalog and completeness unchanged. Offline on the ``two-exposure``
preset (2 x 500 s per filter everywhere) 1 of 10 spurious and 1 of ~1020 real rows trimmed;
at ``nsigma`` 2.5 and S/N >= 6 it lost 11 real rows (faint stars whose footprints are a few
pixels), and with a locus of all rows (not the point-like ones) its brightest stars were
called narrow.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["local_exposures", "moment_eigenvalues", "narrow_rows", "semi_minor_axis"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: rows nearest in S/N that make a row's width locus
WINDOW: int = 60
#: fewest rows with a measured width for the test to be made
MIN_LOCUS_ROWS: int = 40


def moment_eigenvalues(x2, y2, xy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(big, small, measured)``: the eigenvalues (pixels**2) of second moments ``x2``,
    ``y2``, ``xy`` and where the moments are measured (positive, not the -9999 of a missing
    value)."""
    x2, y2, xy = (np.asarray(v, dtype=float) for v in (x2, y2, xy))
    with np.errstate(invalid="ignore"):
        measured = (x2 > 0) & (y2 > 0) & (xy > -9999.0)
        root = np.sqrt(0.25 * (x2 - y2) ** 2 + xy ** 2)
    return 0.5 * (x2 + y2) + root, 0.5 * (x2 + y2) - root, measured


def semi_minor_axis(x2, y2, xy) -> np.ndarray:
    """Semi-minor axis (pixels) of second moments ``x2``, ``y2``, ``xy`` (pixels**2).

    NaN where the moments are not finite or not positive (missing values, -9999); 0 where
    the smaller eigenvalue is negative (moments of a noise-dominated footprint).
    """
    _, small, measured = moment_eigenvalues(x2, y2, xy)
    with np.errstate(invalid="ignore"):
        small = np.where(measured & np.isfinite(small), np.clip(small, 0.0, None), np.nan)
        return np.sqrt(small)


def local_exposures(x, y, nexp) -> np.ndarray:
    """Exposure count of ``nexp`` at the pixel of each 0-based position (0 outside)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ny, nx = np.shape(nexp)
    good = np.isfinite(x) & np.isfinite(y)
    ix = np.rint(np.where(good, x, -1)).astype(int)
    iy = np.rint(np.where(good, y, -1)).astype(int)
    inside = good & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    counts = np.zeros(x.shape, dtype=float)
    counts[inside] = np.asarray(nexp)[iy[inside], ix[inside]]
    return counts


def narrow_rows(width, snr, *, exposures=None, point_like=None, nsigma: float = 3.0,
                min_snr: float = 10.0, max_snr: float = 50.0, locus_snr: float = 5.0,
                max_exposures: int = 2,
                window: int = WINDOW, min_sigma: float = 0.02) -> np.ndarray:
    """Rows narrower than the locus of rows of similar S/N.

    Parameters
    ----------
    width : array_like
        Semi-minor axis of each row (:func:`semi_minor_axis`).
    snr : array_like
        Aperture-2 signal-to-noise ratio of each row in the same filter.
    exposures : array_like, optional
        Exposure count at each row; only rows with at most ``max_exposures`` are tested
        (default: every row).
    point_like : array_like of bool, optional
        Rows that may make the locus (default: every row). The locus must be the stars':
        where galaxies outnumber stars (a sparse field's bright end) a locus of all rows lies
        above the stars, and the stars would be called narrow.
    nsigma : float, optional
        Distance below the locus median, in robust sigmas of the locus, of a flagged row.
    min_snr : float, optional
        Fainter rows are not tested: their footprints are a few pixels, whose moments are
        as narrow for a faint star as for a track.
    max_snr : float, optional
        Brighter rows are not tested: there the footprint, hence the width, grows steeply
        with S/N, and the residuals of coincident cosmic rays are faint.
    locus_snr : float, optional
        Rows at this S/N or above make the locus.
    max_exposures : int, optional
    window : int, optional
        Number of rows nearest in log S/N making each row's locus.
    min_sigma : float, optional
        Floor of the locus' robust sigma (pixels).

    Returns
    -------
    ndarray of bool
    """
    width = np.asarray(width, dtype=float)
    snr = np.asarray(snr, dtype=float)
    out = np.zeros(width.shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        measured = np.isfinite(width) & np.isfinite(snr) & (snr >= locus_snr)
        tested = measured & (snr >= min_snr) & (snr < max_snr)
    usable = measured if point_like is None else measured & np.asarray(point_like, bool)
    if exposures is not None:
        exposures = np.asarray(exposures, dtype=float)
        tested &= exposures <= max_exposures
        # the locus comes from where the rejection works: the uncleaned single-exposure
        # edges and the few-exposure strips hold the very tracks being looked for (a visit of
        # few exposures everywhere keeps its rows of two or more)
        well_covered = usable & (exposures > max_exposures)
        usable = well_covered if well_covered.sum() >= MIN_LOCUS_ROWS else usable & (exposures >= 2)
    locus = np.flatnonzero(usable)
    if locus.size < max(MIN_LOCUS_ROWS, 2) or not tested.any():
        return out
    order = locus[np.argsort(snr[locus])]
    log_snr = np.log10(snr[order])
    half = min(window, order.size) // 2
    fits: dict[int, tuple] = {}
    for i in np.flatnonzero(tested):
        # the window of rows nearest in log S/N: centred on the row's rank, kept inside;
        # rows of the same rank share it, and its fit (only the centre moves with the S/N)
        rank = int(np.searchsorted(log_snr, np.log10(snr[i])))
        lo = min(max(rank - half, 0), order.size - 2 * half)
        if lo not in fits:
            fits[lo] = _lower_locus(log_snr[lo:lo + 2 * half], width[order[lo:lo + 2 * half]],
                                    min_sigma=min_sigma)
        slope, offset, shift, sigma = fits[lo]
        centre = offset + slope * np.log10(snr[i]) + shift
        out[i] = width[i] < centre - nsigma * sigma
    return out


def _lower_locus(log_snr, values, *, min_sigma: float, clip: float = 2.5,
                 iterations: int = 5) -> tuple[float, float, float, float]:
    """The line of the narrowest real sources' width in ``log10(S/N)`` over one window.

    A straight line in log S/N is fitted to the window's widths (the footprint, hence the
    width, grows with S/N across the window); galaxies, wider than stars, are clipped from
    above so that the stars set the locus.

    Returns
    -------
    slope, offset, shift, sigma : float
        The locus at ``log10(S/N) = a`` is ``offset + slope * a + shift`` (``shift``: the
        median residual of the rows kept); ``sigma`` its robust sigma.
    """
    log_snr = np.asarray(log_snr, dtype=float)
    values = np.asarray(values, dtype=float)
    keep = np.ones(values.size, bool)
    slope, offset, shift, sigma = 0.0, float(np.median(values)), 0.0, min_sigma
    for _ in range(iterations):
        if np.ptp(log_snr[keep]) > 0:
            slope, offset = np.polyfit(log_snr[keep], values[keep], 1)
        else:
            slope, offset = 0.0, float(np.median(values[keep]))
        residual = values - (offset + slope * log_snr)
        shift = float(np.median(residual[keep]))
        sigma = max(1.4826 * float(np.median(np.abs(residual[keep] - shift))), min_sigma)
        clipped = residual - shift <= clip * sigma
        if np.array_equal(clipped, keep) or clipped.sum() < 10:
            break
        keep = clipped
    return float(slope), float(offset), shift, sigma
