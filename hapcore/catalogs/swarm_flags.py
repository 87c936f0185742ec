"""Swarm members of the point sources: features of a brighter neighbour's profile (flag 32).

:func:`point_swarm` runs the detection's feature tests on the total image -- the swarm test
(:func:`hapcore.catalogs.swarm.swarm_members`), the product's stacked PSF
(:func:`hapcore.catalogs.psf_features.psf_features`) and the four-fold test
(:func:`hapcore.catalogs.psf_features.fourfold_features`) -- and the catalog stage sets flag 32
on their members in every filter. A brighter "neighbour" near a saturated star is often a
fragment of it (a bleed end, a halo lump: DAOStarFinder's flux of a saturated star is its
clipped core's), and its "features" include real faint stars on the star's halo and spikes
(``saturated`` preset: 8 of the 36 true stars of S/N >= 10 in F606W without a point row were
swarm members 1.4-7.5" from saturated stars). :func:`stars_on_saturated_light` gives back the
members whose excess over the saturated star's light has a star's core
(:mod:`hapcore.catalogs.saturated_cores`, as the filter catalogs' saturated-light test does).
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.table import Table

from hapcore.catalogs.psf_features import fourfold_features, point_like, psf_features
from hapcore.catalogs.swarm import aperture_sums, swarm_members

__all__ = ["RATIO_SNR", "point_swarm", "stars_on_saturated_light"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Smallest aperture-2 S/N of the point sources that give the image's stellar ratio.
RATIO_SNR: float = 20.0


def point_swarm(image, background, sources: Table, cat, ci_limits, *,
                saturated_xy=None) -> np.ndarray | None:
    """Features of a brighter neighbour's profile among the point sources (flag 32).

    The swarm test (:func:`hapcore.catalogs.swarm.swarm_members`: azimuthal and mirror
    symmetry) or the product's own PSF (:func:`hapcore.catalogs.psf_features.psf_features`:
    rings, spikes and halo of a stacked PSF), whichever recognises them; except the members
    on a saturated star's light (``saturated_xy``: its saturated pixels, 0-based product
    x, y) whose excess over that light has a star's core (:func:`stars_on_saturated_light`).

    Parameters
    ----------
    image : CatalogImage
        The total (detection) image.
    background : BackgroundModel
    sources : astropy.table.Table
        ``xcentroid``, ``ycentroid``, ``flux`` of the point sources.
    cat : CatalogParameters
    ci_limits : (float, float)
        Stellar CI limits of the PSF stack's stars.
    saturated_xy : (m, 2) array, optional

    Returns
    -------
    ndarray of bool or None
        None when not evaluated (fewer than two sources, tests disabled).
    """
    if sources is None or len(sources) < 2:
        return None
    if cat.swarm_nsigma is None and cat.psf_feature_nsigma is None:
        return None
    members = np.zeros(len(sources), bool)
    aperture = cat.aperture_2 / image.plate_scale
    if cat.swarm_nsigma is not None:
        members |= swarm_members(image.data, sources["xcentroid"], sources["ycentroid"],
                                 sources["flux"], aperture_radius=aperture,
                                 max_distance=cat.swarm_radius_arcsec / image.plate_scale,
                                 min_ratio=cat.swarm_min_ratio, nsigma=cat.swarm_nsigma,
                                 background_rms=background.rms, exptime=image.exptime,
                                 background=background.background)
    if cat.psf_feature_nsigma is not None:
        # CI on the total image, as the filter catalogs measure it: galaxies stay out of the
        # PSF stack
        x, y = np.asarray(sources["xcentroid"], float), np.asarray(sources["ycentroid"], float)
        inner = aperture_sums(image.data, x, y, cat.aperture_1 / image.plate_scale,
                              background=background.background)
        outer = aperture_sums(image.data, x, y, aperture, background=background.background)
        with np.errstate(invalid="ignore", divide="ignore"):
            ci = -2.5 * np.log10(inner / outer)
        candidates = point_like(ci, outer, limits=ci_limits)
        # a small aperture (1.5 FWHM, at least aperture 1) and pairs at least two of them
        # apart: with aperture 2 (0.45" on IR) a detection next to a star had the star's core
        # in its aperture, and the prediction of that core decided
        test_radius = max(cat.aperture_1 / image.plate_scale,
                          1.5 * cat.tweak_fwhmpsf / image.plate_scale)
        features, psf = psf_features(
            image.data, sources["xcentroid"], sources["ycentroid"], sources["flux"],
            aperture_radius=test_radius, core_radius=2.0 * test_radius,
            model_radius=int(np.ceil(cat.psf_feature_radius_arcsec / image.plate_scale)),
            background=background.background, background_rms=background.rms,
            exptime=image.exptime, min_ratio=cat.swarm_min_ratio,
            nsigma=cat.psf_feature_nsigma, model_error=cat.psf_feature_model_error,
            valid=image.weight > 0, stack_candidates=candidates)
        fourfold = fourfold_features(
            image.data, sources["xcentroid"], sources["ycentroid"], aperture_radius=aperture,
            min_distance=aperture,
            max_distance=cat.psf_feature_radius_arcsec / image.plate_scale,
            background=background.background, background_rms=background.rms,
            exptime=image.exptime, min_ratio=cat.swarm_min_ratio, nsigma=cat.psf_feature_nsigma,
            model_error=cat.psf_feature_model_error)
        log.debug("PSF features: %d from the PSF stack, %d four-fold (%d not swarm members)",
                  int(features.sum()), int(fourfold.sum()),
                  int(((features | fourfold) & ~members).sum()))
        members |= features | fourfold
    if saturated_xy is not None and len(saturated_xy) and members.any() \
            and cat.saturated_feature_nsigma is not None:
        stars = stars_on_saturated_light(image, background, sources, members, cat,
                                         saturated_xy)
        log.debug("swarm members: %d of %d on saturated stars' light have a star's core",
                  int(stars.sum()), int(members.sum()))
        members &= ~stars
    return members


def stars_on_saturated_light(image, background, sources: Table, members, cat,
                             saturated_xy) -> np.ndarray:
    """Members (bool array over ``sources``) on a saturated star's light whose excess over it
    has a star's core (:func:`~hapcore.catalogs.saturated_cores.stellar_cores`, against the
    stellar ratio of the non-members of aperture-2 S/N >= :data:`RATIO_SNR`)."""
    from hapcore.catalogs.saturated_cores import (
        CORE_RATIO_FRACTION,
        stellar_core_ratio,
        stellar_cores,
    )
    from hapcore.catalogs.saturated_features import saturated_star_features
    from hapcore.catalogs.saturated_profiles import star_light_key

    members = np.asarray(members, bool)
    stars = np.zeros(members.size, bool)
    scale = image.plate_scale
    inner, outer = cat.aperture_1 / scale, cat.aperture_2 / scale
    max_distance = cat.saturated_feature_radius_arcsec / scale
    x, y = np.asarray(sources["xcentroid"], float), np.asarray(sources["ycentroid"], float)
    rows = np.flatnonzero(members)
    cache: dict = {}
    # the saturated stars' ring profiles (cached by the feature test)
    saturated_star_features(image.data, x[rows[:1]], y[rows[:1]], saturated_xy,
                            aperture_radius=outer, max_distance=max_distance,
                            background=background.background, background_rms=background.rms,
                            exptime=image.exptime, cache=cache)
    light = cache.get(star_light_key(max_distance))
    if light is None or not np.size(light[0]):
        return stars
    flux = aperture_sums(image.data, x, y, outer, background=background.background)
    rms = np.asarray(background.rms_value if hasattr(background, "rms_value")
                     else np.nanmedian(background.rms), float)
    poisson = np.clip(np.nan_to_num(flux), 0.0, None) / image.exptime if image.exptime > 0 \
        else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / np.sqrt(2.0 * np.pi * outer ** 2 * rms ** 2 + poisson)
    usable = ~members & (snr >= RATIO_SNR)
    ratio = stellar_core_ratio(image.data, x[usable], y[usable], inner_radius=inner,
                               outer_radius=outer, background=background.background)
    if ratio is None:
        return stars
    stars[rows] = stellar_cores(
        image.data, x[rows], y[rows], light[:2], light[4], light[5], inner_radius=inner,
        outer_radius=outer, max_distance=max_distance, min_ratio=CORE_RATIO_FRACTION * ratio,
        background=background.background, background_rms=background.rms,
        exptime=image.exptime, nsigma=cat.saturated_feature_nsigma,
        model_error=cat.saturated_feature_model_error)
    return stars
