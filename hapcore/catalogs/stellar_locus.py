"""CI limits centred on the product's own stellar locus.

The concentration-index limits of the point and segment catalogs (flag 16 below the lower
limit: "too sharp for a star", a cosmic ray or hot pixel; flag 1 above the upper) come from
drizzlepac's CI table, calibrated on its photometry of real HST PSFs. A product whose stars are
more or less concentrated than that calibration (another PSF model, kernel, pixfrac, sky
annulus, an undersampled detector's pixel phase) puts its stars outside the limits: on a 3 x
WFC3/IR F160W visit whose stars have a CI of 0.51 (table: 0.50/0.67/0.84) 161 real stars were
flagged 16 and trimmed, and completeness fell from ~0.8 to 0.59.

:func:`stellar_ci_locus` finds the CI of the product's stars (an iterated median of the
high-S/N detections in a window the width of the table's limits, started at the table's
stellar peak; galaxies lie above it, cosmic rays and hot pixels below), and
:func:`locus_ci_limits` moves both limits by the locus's offset from the table's peak, so the
band keeps the table's width and asymmetry.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["stellar_ci_locus", "locus_ci_limits", "table_ci_peak", "catalog_ci_limits"]

log = logging.getLogger(f"hapsvm.{__name__}")


def stellar_ci_locus(ci, snr, *, start: float, half_width: float, min_snr: float = 20.0,
                     min_stars: int = 10, iterations: int = 10) -> float | None:
    """CI of the stars of a catalog: the iterated median of the high-S/N detections near it.

    Parameters
    ----------
    ci : array_like
        Concentration indices (NaN where undefined).
    snr : array_like
        Aperture-2 signal-to-noise ratios.
    start : float
        First guess of the locus (the CI table's stellar peak).
    half_width : float
        Half width of the window (CI units) around the current estimate.
    min_snr : float, optional
        Only detections above this S/N are used: faint ones scatter too much.
    min_stars : int, optional
        Fewer detections in the window: no locus (None).
    iterations : int, optional
        At most this many re-centrings (it stops when the estimate moves by < 0.001).

    Returns
    -------
    float or None
    """
    ci = np.asarray(ci, float)
    snr = np.asarray(snr, float)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(ci) & np.isfinite(snr) & (snr > min_snr)
    values = ci[usable]
    centre = float(start)
    for _ in range(iterations):
        window = values[np.abs(values - centre) <= half_width]
        if window.size < min_stars:
            return None
        new = float(np.median(window))
        if abs(new - centre) < 1e-3:
            return new
        centre = new
    return centre


def table_ci_peak(image, limits: tuple[float, float]) -> float:
    """The stellar CI peak the limits were drawn around: the CI table's ``ci_peak`` of the
    product's filter when its row gives these limits, else their midpoint."""
    from hapcore.obset.parameters import lookup_ci_limits_from_table

    for name in getattr(image, "filter_names", None) or ():
        if not name or name.lower() in ("clear", "n/a"):
            continue
        row = lookup_ci_limits_from_table(image.instrument, image.detector, name.lower())
        if row is not None and np.isclose(row.ci_lower, limits[0]) and \
                np.isclose(row.ci_upper, limits[1]):
            return float(row.ci_peak)
    return 0.5 * (limits[0] + limits[1])


def locus_ci_limits(ci, snr, *, limits: tuple[float, float], peak: float,
                    max_shift: tuple[float, float] = (0.4, 0.2), min_snr: float = 20.0,
                    min_stars: int = 10) -> tuple[tuple[float, float], float | None]:
    """CI limits moved by the offset of the catalog's stellar locus from ``peak``.

    Parameters
    ----------
    ci, snr : array_like
        The catalog's concentration indices and aperture-2 S/N.
    limits : tuple of float
        The table's (or configured) lower and upper CI limits, possibly already shifted.
    peak : float
        The stellar CI those limits were drawn around, shifted the same way.
    max_shift : tuple of float, optional
        Largest move allowed down and up: a locus further off is not taken for a stellar one
        and the limits stay. Upwards the risk is a field of compact galaxies, so the bound is
        tighter; downwards a sharp simulated PSF drizzled at the detector's own scale (a
        Gaussian WFC3/IR PSF: CI 0.42 against the table's 0.67) must still be followed.
    min_snr, min_stars : optional
        See :func:`stellar_ci_locus`.

    Returns
    -------
    limits : tuple of float
        The moved limits (``limits`` unchanged without a locus).
    locus : float or None
        The stellar locus found.
    """
    half_width = max(peak - limits[0], 0.05)
    locus = stellar_ci_locus(ci, snr, start=peak, half_width=half_width, min_snr=min_snr,
                             min_stars=min_stars)
    if locus is None or not -max_shift[0] <= locus - peak <= max_shift[1]:
        return limits, locus
    shift = locus - peak
    return (limits[0] + shift, limits[1] + shift), locus


def catalog_ci_limits(table, image, ci, shift: float, name: str, kind: str) -> tuple[float, float]:
    """The CI limits of one catalog (``ci``: its CIFilterSettings, moved by ``shift``) centred
    on its stars (:func:`locus_ci_limits` on the table's ``CI`` and aperture-2 S/N)."""
    limits = (ci.ci_lower_limit + shift, ci.ci_upper_limit + shift)
    peak = table_ci_peak(image, (ci.ci_lower_limit, ci.ci_upper_limit)) + shift
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.asarray(table["FluxAp2"], float) / np.asarray(table["FluxErrAp2"], float)
    moved, locus = locus_ci_limits(np.asarray(table["CI"], float), snr, limits=limits, peak=peak)
    if locus is None:
        log.debug("filter %s %s catalog: no stellar CI locus; CI limits %.3f-%.3f", name, kind,
                  *limits)
    else:
        log.debug("filter %s %s catalog: stellar CI locus %.3f (table peak %.3f): CI limits "
                  "%.3f-%.3f", name, kind, locus, peak, *moved)
    return moved
