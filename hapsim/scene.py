"""
The astronomical scene: stars and Sersic galaxies with their photometry.

Sources are drawn uniformly in the tangent plane of the visit centre.
Magnitudes follow power-law luminosity functions (number counts rising
as ``10**(slope * m)``, i.e. a power law in flux); each source has an AB
magnitude at 6000 A and a colour (magnitudes per octave of wavelength),
so that every filter gets its own consistent count rate.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .detectors import FilterPhotometry
from .geometry import tangent_deproject

__all__ = [
    "make_scene",
    "abmag_in_filter",
    "abmag_to_countrate",
    "countrate_to_abmag",
    "REFERENCE_WAVELENGTH",
]

#: Wavelength (A) at which ``abmag_ref`` of a source is defined.
REFERENCE_WAVELENGTH = 6000.0


def abmag_to_countrate(abmag, phot: FilterPhotometry):
    """
    Count rate (e-/s) of a source of AB magnitude `abmag` in a filter.

    Inverse of ABMAG = -2.5 log10(F PHOTFLAM) - 21.10 - 5 log10(PHOTPLAM) + 18.6921.
    """
    abmag = np.asarray(abmag, dtype=float)
    stmag = abmag + 5.0 * np.log10(phot.photplam) - 18.6921
    return 10.0 ** (-0.4 * (stmag + 21.10)) / phot.photflam


def countrate_to_abmag(countrate, phot: FilterPhotometry):
    """AB magnitude of a count rate (e-/s), the pipeline's formula (spec §6.5)."""
    countrate = np.asarray(countrate, dtype=float)
    return (-2.5 * np.log10(countrate * phot.photflam) - 21.10
            - 5.0 * np.log10(phot.photplam) + 18.6921)


def abmag_in_filter(abmag_ref, color, wavelength):
    """
    AB magnitude at `wavelength` of sources with colour `color`.

    Parameters
    ----------
    abmag_ref : array_like
        AB magnitude at `REFERENCE_WAVELENGTH`.
    color : array_like
        Magnitudes per octave; positive means redder (brighter at long
        wavelengths).
    wavelength : float
        Angstrom.
    """
    return np.asarray(abmag_ref) - np.asarray(color) * np.log2(wavelength / REFERENCE_WAVELENGTH)


def _power_law_mags(rng, n, bright, faint, slope):
    """Magnitudes with dN/dm proportional to 10**(slope m) between limits."""
    u = rng.uniform(size=n)
    lo, hi = 10.0 ** (slope * bright), 10.0 ** (slope * faint)
    return np.log10(lo + u * (hi - lo)) / slope


def make_scene(rng, ra0, dec0, half_width_arcsec, *, star_density=150.0,
               galaxy_density=60.0, star_mag_range=(17.0, 27.0), star_slope=0.2,
               galaxy_mag_range=(19.0, 26.5), galaxy_slope=0.3, pm_sigma_mas=4.0):
    """
    Draw a random field of stars and galaxies.

    Parameters
    ----------
    rng : numpy.random.Generator
    ra0, dec0 : float
        Field centre (deg).
    half_width_arcsec : float
        Sources are drawn in a square of this half width.
    star_density, galaxy_density : float, optional
        Sources per square arcminute.
    star_mag_range, galaxy_mag_range : tuple of float, optional
        AB magnitude limits at 6000 A.
    star_slope, galaxy_slope : float, optional
        Slope of log10 dN/dm.
    pm_sigma_mas : float, optional
        Dispersion of stellar proper motions per axis (mas/yr).

    Returns
    -------
    astropy.table.Table
        Columns id, ra, dec, type, abmag_ref, color, sersic_n, r_eff
        (arcsec), ellipticity, theta (deg, east of north), pmra, pmdec.
    """
    area = (2.0 * half_width_arcsec / 60.0) ** 2
    n_star = rng.poisson(star_density * area)
    n_gal = rng.poisson(galaxy_density * area)
    n = n_star + n_gal
    xi = rng.uniform(-half_width_arcsec, half_width_arcsec, n) / 3600.0
    eta = rng.uniform(-half_width_arcsec, half_width_arcsec, n) / 3600.0
    ra, dec = tangent_deproject(xi, eta, ra0, dec0)
    is_star = np.arange(n) < n_star

    mags = np.empty(n)
    mags[is_star] = _power_law_mags(rng, n_star, *star_mag_range, star_slope)
    mags[~is_star] = _power_law_mags(rng, n_gal, *galaxy_mag_range, galaxy_slope)
    color = np.where(is_star, rng.uniform(-0.4, 1.0, n), rng.uniform(0.0, 1.2, n))

    sersic_n = np.where(is_star, np.nan, rng.uniform(0.6, 4.0, n))
    # Fainter galaxies are smaller (roughly as in deep HST fields).
    r_eff = np.exp(rng.normal(np.log(0.35) - 0.15 * (mags - 22.0), 0.4, n))
    r_eff = np.where(is_star, np.nan, np.clip(r_eff, 0.08, 1.5))
    ellipticity = np.where(is_star, np.nan, rng.uniform(0.0, 0.65, n))
    theta = np.where(is_star, np.nan, rng.uniform(0.0, 180.0, n))
    pmra = np.where(is_star, rng.normal(0.0, pm_sigma_mas, n), 0.0)
    pmdec = np.where(is_star, rng.normal(-1.5, pm_sigma_mas, n), 0.0)

    table = Table()
    table["id"] = np.arange(1, n + 1)
    table["ra"] = ra
    table["dec"] = dec
    table["type"] = np.where(is_star, "star", "galaxy")
    table["abmag_ref"] = mags
    table["color"] = color
    table["sersic_n"] = sersic_n
    table["r_eff"] = r_eff
    table["ellipticity"] = ellipticity
    table["theta"] = theta
    table["pmra"] = pmra
    table["pmdec"] = pmdec
    table["ra"].unit = table["dec"].unit = "deg"
    table["r_eff"].unit = "arcsec"
    table["theta"].unit = "deg"
    table["pmra"].unit = table["pmdec"].unit = "mas / yr"
    return table
