"""Swarm members on a saturated star's light that have a star's core are given back
(hapcore.catalogs.swarm_flags)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from astropy.table import Table
from test_catalog_saturated_cores import EXPTIME, SHAPE, SKY_RMS, _at, _scene

from hapcore.catalogs.swarm_flags import point_swarm, stars_on_saturated_light

CAT = SimpleNamespace(aperture_1=0.05, aperture_2=0.15, saturated_feature_nsigma=3.0,
                      saturated_feature_radius_arcsec=6.0, saturated_feature_model_error=0.3,
                      swarm_nsigma=None, psf_feature_nsigma=None)


def _inputs(objects, seed):
    image, sat = _scene(objects, seed)
    product = SimpleNamespace(data=image, shape=SHAPE, plate_scale=0.04, exptime=EXPTIME,
                              weight=np.ones(SHAPE))
    background = SimpleNamespace(background=np.zeros(SHAPE), rms=SKY_RMS, rms_value=SKY_RMS)
    return product, background, sat


def test_members_with_a_star_core_on_the_halo_are_stars():
    """Stars of 2-3 e/s on the halo (20 of them over 5 images) come back, lumps twice the
    PSF's width and a plain spike position stay members; members away from the light and
    the non-members are untouched."""
    n_star = n_lump = n_plain = 0
    for seed in range(5):
        stars = [(*_at(28.0 + 5.0 * k, 10.0 + 20.0 * k), 2.0 + 0.3 * k, 1.2) for k in range(4)]
        lumps = [(*_at(55.0 + 5.0 * k, 20.0 + 20.0 * k), 3.0, 3.0) for k in range(4)]
        bright = [(*_at(125.0, 5.0 + 20.0 * k), 40.0, 1.2) for k in range(5)]
        image, background, sat = _inputs(stars + lumps + bright, seed)
        spike = _at(60.0, 0.0)
        objects = stars + lumps + bright
        sources = Table({"xcentroid": [o[0] for o in objects] + [spike[0]],
                         "ycentroid": [o[1] for o in objects] + [spike[1]]})
        members = np.array([True] * 8 + [False] * 5 + [True])
        found = stars_on_saturated_light(image, background, sources, members, CAT, sat)
        n_star += int(found[:4].sum())
        n_lump += int(found[4:8].sum())
        n_plain += int(found[8:].sum())
    assert n_star / 20 >= 0.95
    assert n_lump / 20 <= 0.05
    assert n_plain == 0


def test_disabled_tests_and_lone_sources_give_no_members():
    image, background, sat = _inputs([], 1)
    sources = Table({"xcentroid": [10.0, 200.0], "ycentroid": [10.0, 220.0],
                     "flux": [1.0, 2.0]})
    # both tests disabled: not evaluated
    assert point_swarm(image, background, sources, CAT, (0.7, 1.0), saturated_xy=sat) is None
    cat = SimpleNamespace(**{**vars(CAT), "swarm_nsigma": 3.0, "swarm_radius_arcsec": 1.0,
                             "swarm_min_ratio": 10.0})
    members = point_swarm(image, background, sources, cat, (0.7, 1.0), saturated_xy=None)
    assert not members.any()
