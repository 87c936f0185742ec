"""
A Gaia-like astrometric reference catalog of the simulated stars.

Positions are given at ``ref_epoch`` 2016.0 (Gaia DR3) and proper
motions bring them to the truth positions at the observation epoch, up
to the catalog's own errors, which grow with magnitude roughly as in
Gaia DR3 (0.02 mas at G=15, 0.5 mas at G=20, 1.3 mas at G=21; proper
motion errors about 1.3 times larger per year).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from astropy.time import Time

from .scene import abmag_in_filter

__all__ = ["make_refcat", "gaia_position_error_mas", "GAIA_REF_EPOCH"]

GAIA_REF_EPOCH = 2016.0
_G_WAVELENGTH = 6400.0


def gaia_position_error_mas(gmag):
    """Typical Gaia DR3 position error (mas per axis) at G magnitude."""
    return 0.02 + 1.3 * 10.0 ** (0.4 * (np.asarray(gmag) - 21.0))


def make_refcat(rng, scene, obs_mjd, *, gmag_limit=21.0, gmag_bright=12.0):
    """
    Build the reference catalog from the stars of a scene.

    Parameters
    ----------
    rng : numpy.random.Generator
    scene : astropy.table.Table
        Truth sources, positions at epoch `obs_mjd`.
    obs_mjd : float
        Epoch (MJD) of the scene's positions: the observation, or the
        visit's reference epoch (`hapsim.simulate_visit`).
    gmag_limit, gmag_bright : float, optional
        G magnitude range of the catalog.

    Returns
    -------
    astropy.table.Table
        Gaia archive column names: source_id, ra, dec, ra_error, dec_error
        (mas), pmra, pmdec, pmra_error, pmdec_error (mas/yr), ref_epoch,
        phot_g_mean_mag.
    """
    stars = scene[scene["type"] == "star"]
    gmag = abmag_in_filter(stars["abmag_ref"], stars["color"], _G_WAVELENGTH)
    keep = (gmag < gmag_limit) & (gmag > gmag_bright)
    stars, gmag = stars[keep], np.asarray(gmag[keep])
    n = len(stars)
    sigma = gaia_position_error_mas(gmag)
    sigma_pm = 1.3 * sigma
    dt = Time(obs_mjd, format="mjd").jyear - GAIA_REF_EPOCH
    cosdec = np.cos(np.deg2rad(np.asarray(stars["dec"])))

    pmra = np.asarray(stars["pmra"]) + rng.normal(0.0, sigma_pm)
    pmdec = np.asarray(stars["pmdec"]) + rng.normal(0.0, sigma_pm)
    # Truth proper motions move the stars back to 2016; then catalog errors.
    ra = (np.asarray(stars["ra"]) - np.asarray(stars["pmra"]) * dt / 3.6e6 / cosdec
          + rng.normal(0.0, sigma) / 3.6e6 / cosdec)
    dec = (np.asarray(stars["dec"]) - np.asarray(stars["pmdec"]) * dt / 3.6e6
           + rng.normal(0.0, sigma) / 3.6e6)

    table = Table()
    table["source_id"] = (np.int64(4_000_000_000_000_000_000) + np.asarray(stars["id"], dtype=np.int64))
    table["ra"] = ra
    table["dec"] = dec
    table["ra_error"] = sigma
    table["dec_error"] = sigma
    table["pmra"] = pmra
    table["pmdec"] = pmdec
    table["pmra_error"] = sigma_pm
    table["pmdec_error"] = sigma_pm
    table["ref_epoch"] = np.full(n, GAIA_REF_EPOCH)
    table["phot_g_mean_mag"] = gmag
    table["truth_id"] = np.asarray(stars["id"])
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("ra_error", "mas"), ("dec_error", "mas"),
                      ("pmra", "mas / yr"), ("pmdec", "mas / yr"), ("pmra_error", "mas / yr"),
                      ("pmdec_error", "mas / yr"), ("ref_epoch", "yr"), ("phot_g_mean_mag", "mag")):
        table[col].unit = unit
    return table
