"""The radial profile of a product's PSF, as a circular mixture of Gaussians: the inner part
measured on the image's own stars, the far wings from the handbook encircled-energy table.

The total fluxes of extended sources (:mod:`hapcore.catalogs.galaxy_flux`) fit Sersic
profiles convolved with the PSF. A Gaussian of the PSF's FWHM holds all its light within
~2 FWHM, but a real HST PSF spreads 10-25 % of it over 0.1-1" (Airy rings, scattered light;
WFC3/IR: 26 % beyond 0.25" at F160W) and another 5-8 % beyond 1": with a Gaussian the fit
takes that light for the galaxy's own wings or for sky, and the measured aperture must reach
the table's first radius (1" on WFC3) for the table to restore the rest -- an aperture that, in
a crowded field, holds several neighbours (hapsim ``crowded``: FluxSegment / true 0.77 on F606W
galaxies). With the PSF's profile known at every radius the aperture can follow the galaxy.

:func:`measure_psf_profile`:

1. **Stars.** Rows with Kron S/N >= ``min_snr`` whose circular-annulus profile (other
   segments' pixels replaced by their annulus's mean, :func:`annulus_profiles`) is covered
   to ``coverage`` in every annulus out to the table's radius; among them the most
   concentrated -- light within ``core_radius`` over light within the table's radius within
   ``1 - locus`` (relative) of the median of the ``n_top`` most concentrated rows, and at
   least ``min_concentration``: stars are the most concentrated sources of an image, saturated
   stars (flat cores) and galaxies are less, cosmic rays and hot pixels more.
2. **Profile.** Each star's cumulative annulus light over its light within the table's
   radius; the median over at least ``min_stars`` stars, made non-decreasing, times the
   handbook encircled energy there.
3. **Far wings.** The table's encircled energy beyond, to its "infinite" radius.
4. **Mixture.** :func:`~hapcore.catalogs.galaxy_flux.psf_components` fits non-negative
   Gaussian weights to that curve.

Fewer than ``min_stars`` stars, or a detector without a table: None (the caller keeps a
Gaussian and the table's wing correction).
"""

from __future__ import annotations

import logging

import numpy as np

from hapcore.catalogs.galaxy_flux import ANNULUS_EDGES, annulus_profiles, psf_components

__all__ = ["measure_psf_profile"]

log = logging.getLogger(f"hapsvm.{__name__}")


def measure_psf_profile(data, error, labels, x, y, own, flux, fluxerr, *, encircled_energy,
                        table_radius_px, infinity_px, invalid=None, min_snr=50.0, core_radius=2.5,
                        coverage=0.8, locus=0.9, n_top=10, max_candidates=400, min_stars=5,
                        min_concentration=0.6):
    """The PSF of an image as Gaussian components ``((weight, sigma_px), ...)``, or None.

    Parameters
    ----------
    data, error, labels : 2-D ndarray
        Background-subtracted image, per-pixel error, segmentation map.
    x, y, own : 1-D ndarray
        Centres (0-based pixels) and labels of the catalog's rows.
    flux, fluxerr : 1-D ndarray
        A flux of each row and its error (Kron): S/N and brightness order.
    encircled_energy : callable
        The handbook encircled energy at radii in pixels (valid from ``table_radius_px`` on).
    table_radius_px, infinity_px : float
        The table's first radius and its "infinite" radius, in pixels.
    invalid : 2-D bool ndarray, optional
        Pixels without data.
    min_snr, core_radius, coverage, locus, n_top, max_candidates, min_stars
        Star selection (module docstring).
    min_concentration : float
        Smallest concentration of a star: an HST PSF holds 75-90 % of its light within 1" in
        the core radius (2.5 pixels on WFC3/UVIS, ACS/WFC and WFC3/IR drizzled), a saturated
        star's flat core or a galaxy much less; without unsaturated stars (a filter where
        every bright star saturates) the profile is not measured.

    Returns
    -------
    tuple of (weight, sigma_px) or None
    """
    flux = np.asarray(flux, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / np.asarray(fluxerr, float)
    x, y = np.asarray(x, float), np.asarray(y, float)
    cand = np.flatnonzero(np.isfinite(snr) & (snr >= min_snr) & np.isfinite(x) & np.isfinite(y))
    if cand.size < min_stars:
        return None
    cand = cand[np.argsort(flux[cand])[::-1][:max_candidates]]
    edges = np.asarray(ANNULUS_EDGES, float)
    # the measured part: annuli out to the first edge at or beyond the table's radius
    n_in = int(np.clip(np.searchsorted(edges, table_radius_px - 1e-9), 1, edges.size - 1))
    r_norm = edges[n_in]
    ring, _, cover, _ = annulus_profiles(
        data, error, labels, x[cand], y[cand], np.ones(cand.size), np.zeros(cand.size),
        np.asarray(own)[cand], edges=edges[:n_in + 1], r_out=np.full(cand.size, r_norm + 1e-6),
        invalid=invalid)
    cum = np.cumsum(ring, axis=1)
    total = cum[:, -1]
    covered = np.all(cover >= coverage, axis=1) & (total > 0)
    k_core = int(np.clip(np.searchsorted(edges, core_radius - 1e-9), 1, n_in))
    with np.errstate(invalid="ignore", divide="ignore"):
        conc = np.where(covered, cum[:, k_core - 1] / total, np.nan)
    ok = np.isfinite(conc)
    if ok.sum() < min_stars:
        return None
    top = np.sort(conc[ok])[::-1][:n_top]
    # a window around the locus: below it saturated stars and galaxies, above it cosmic rays
    # and hot pixels of a single-exposure product (the real ACS/HRC FLT has two rows at 0.97
    # and 0.84, most likely such, against a locus at 0.60)
    locus_value = float(np.median(top))
    stars = ok & (np.abs(conc - locus_value) <= (1.0 - locus) * locus_value) & (
        conc >= min_concentration)
    log.debug("PSF profile: concentration of the %d most concentrated candidates %s",
              top.size, np.round(top, 3))
    if stars.sum() < min_stars:
        return None
    growth = np.median(cum[stars] / total[stars, None], axis=0)
    growth = np.minimum(np.maximum.accumulate(growth), 1.0)
    ee_norm = float(np.asarray(encircled_energy(np.array([r_norm])), float)[0])
    radii_in = edges[1:n_in + 1]
    ee_in = growth * ee_norm
    radii_out = np.geomspace(r_norm * 1.05, infinity_px, 12)
    ee_out = np.asarray(encircled_energy(radii_out), float)
    radii = np.r_[radii_in, radii_out]
    ee = np.r_[ee_in, ee_out]
    # a pixel's width is already in the stars' profile
    components = psf_components(radii, ee, pixel=False)
    log.debug("PSF profile from %d stars (of %d candidates): EE %s at %s px", int(stars.sum()),
              cand.size, np.round(ee_in[[0, k_core - 1, -1]], 3), radii_in[[0, k_core - 1, -1]])
    return components
