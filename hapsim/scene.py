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


def _population_motions(rng, pmra, pmdec, mags, is_star, halo_fraction, halo_mean,
                        halo_sigma, fast_fraction, fast_range, fast_mag_limit):
    """Replace disk-like proper motions by halo-like ones and fast movers."""
    pmra, pmdec = pmra.copy(), pmdec.copy()
    stars = np.flatnonzero(is_star)
    halo = stars[rng.uniform(size=stars.size) < halo_fraction]
    pmra[halo] = rng.normal(halo_mean[0], halo_sigma, halo.size)
    pmdec[halo] = rng.normal(halo_mean[1], halo_sigma, halo.size)
    n_fast = rng.binomial(stars.size, fast_fraction) if fast_fraction > 0 else 0
    # Fast movers are nearby dwarfs: bright enough to be measured and to
    # be in the Gaia-like reference catalog when possible.
    bright = stars[mags[stars] < fast_mag_limit]
    pool = bright if bright.size >= n_fast else stars
    fast = rng.choice(pool, min(n_fast, pool.size), replace=False)
    speed = rng.uniform(*fast_range, fast.size)
    angle = rng.uniform(0.0, 2.0 * np.pi, fast.size)
    pmra[fast] = speed * np.sin(angle)
    pmdec[fast] = speed * np.cos(angle)
    return pmra, pmdec


def make_scene(rng, ra0, dec0, half_width_arcsec, *, star_density=150.0,
               galaxy_density=60.0, star_mag_range=(17.0, 27.0), star_slope=0.2,
               galaxy_mag_range=(19.0, 26.5), galaxy_slope=0.3, pm_sigma_mas=4.0,
               bright_star_density=0.0, bright_mag_range=(12.0, 17.0),
               pm_halo_fraction=0.0, pm_halo_mean_mas=(2.0, -6.0), pm_halo_sigma_mas=12.0,
               pm_fast_fraction=0.0, pm_fast_range_mas=(30.0, 100.0), pm_fast_mag_limit=22.0):
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
    bright_star_density : float, optional
        Extra stars per square arcminute with magnitudes uniform in
        `bright_mag_range` (saturating stars; none by default).
    bright_mag_range : tuple of float, optional
    pm_halo_fraction : float, optional
        Fraction of the stars given halo-like proper motions: Gaussian of
        mean `pm_halo_mean_mas` (pmra, pmdec; the solar reflex of a distant
        population) and dispersion `pm_halo_sigma_mas` per axis.
    pm_halo_mean_mas : tuple of float, optional
    pm_halo_sigma_mas : float, optional
    pm_fast_fraction : float, optional
        Fraction of the stars that are fast movers (nearby dwarfs): total
        proper motion uniform in `pm_fast_range_mas`, random direction,
        picked among the stars brighter than `pm_fast_mag_limit` when
        there are enough of them.
    pm_fast_range_mas : tuple of float, optional
    pm_fast_mag_limit : float, optional

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
    # The optional populations below draw only when asked for, so default
    # scenes stay identical for a given seed.
    if bright_star_density > 0:
        n_b = rng.poisson(bright_star_density * area)
        ra_b, dec_b = tangent_deproject(
            rng.uniform(-half_width_arcsec, half_width_arcsec, n_b) / 3600.0,
            rng.uniform(-half_width_arcsec, half_width_arcsec, n_b) / 3600.0, ra0, dec0)
        nan = np.full(n_b, np.nan)
        ra, dec = np.concatenate([ra, ra_b]), np.concatenate([dec, dec_b])
        is_star = np.concatenate([is_star, np.ones(n_b, dtype=bool)])
        mags = np.concatenate([mags, rng.uniform(*bright_mag_range, n_b)])
        color = np.concatenate([color, rng.uniform(-0.4, 1.0, n_b)])
        sersic_n, r_eff = np.concatenate([sersic_n, nan]), np.concatenate([r_eff, nan])
        ellipticity, theta = np.concatenate([ellipticity, nan]), np.concatenate([theta, nan])
        pmra = np.concatenate([pmra, rng.normal(0.0, pm_sigma_mas, n_b)])
        pmdec = np.concatenate([pmdec, rng.normal(-1.5, pm_sigma_mas, n_b)])
        n += n_b
    if pm_halo_fraction > 0 or pm_fast_fraction > 0:
        pmra, pmdec = _population_motions(
            rng, pmra, pmdec, mags, is_star, pm_halo_fraction, pm_halo_mean_mas,
            pm_halo_sigma_mas, pm_fast_fraction, pm_fast_range_mas, pm_fast_mag_limit)

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
