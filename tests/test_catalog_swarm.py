"""Swarm filter: detections on a bright star's profile are flagged, real companions are not."""

from __future__ import annotations

import numpy as np

from hapcore.catalog_swarm import swarm_members
from hapsim.detectors import get_detector
from hapsim.psf import psf_for_detector

SHAPE = (161, 161)
CENTRE = 80.0
CENTRE_I = int(CENTRE)


def _star_field(rng, *, companion_flux):
    """A bright ACS/WFC star (the simulator's PSF) with a companion 8 px away, unit noise."""
    psf = psf_for_detector(get_detector("acs/wfc"))
    image = np.zeros(SHAPE)
    image[CENTRE_I - 40:CENTRE_I + 41, CENTRE_I - 40:CENTRE_I + 41] += 2.0e5 * psf.kernel(40)
    cx, cy = CENTRE + 8 * np.cos(0.5), CENTRE + 8 * np.sin(0.5)
    ix, iy = int(round(cx)), int(round(cy))
    stamp = psf.stamps([cx - ix], [cy - iy], 10)[0]
    image[iy - 10:iy + 11, ix - 10:ix + 11] += companion_flux * stamp
    return image + rng.normal(0.0, 1.0, SHAPE), (cx, cy)


def test_ring_detections_are_flagged_and_the_companion_kept():
    rng = np.random.default_rng(5)
    image, (cx, cy) = _star_field(rng, companion_flux=1500.0)  # 0.75% of the star
    angles = np.array([2.0, 3.0, 4.2, 5.3])                   # blank places on the same ring
    x = np.r_[CENTRE, cx, CENTRE + 8 * np.cos(angles), 20.0]
    y = np.r_[CENTRE, cy, CENTRE + 8 * np.sin(angles), 20.0]  # last: an isolated faint source
    flux = np.r_[2.0e5, 1500.0, [300.0] * 4, 300.0]
    image[18:23, 18:23] += 30.0
    members = swarm_members(image, x, y, flux, aperture_radius=3.0, max_distance=20.0,
                            background_rms=1.0)
    assert not members[0], "the bright star itself"
    assert not members[1], "a real companion adds light above the star's azimuthal median"
    assert members[2:6].all(), "ring points hold only the star's profile"
    assert not members[6], "no brighter neighbour within max_distance"


def test_neighbour_must_be_min_ratio_brighter():
    rng = np.random.default_rng(6)
    image, _ = _star_field(rng, companion_flux=0.0)
    x = np.r_[CENTRE, CENTRE + 8]
    y = np.r_[CENTRE, CENTRE]
    # the star's flux measure only 5x the ring point's: not a neighbour at min_ratio 10
    members = swarm_members(image, x, y, np.r_[1500.0, 300.0], aperture_radius=3.0,
                            max_distance=20.0, background_rms=1.0)
    assert not members.any()
    members = swarm_members(image, x, y, np.r_[1.0e5, 300.0], aperture_radius=3.0,
                            max_distance=20.0, background_rms=1.0)
    assert members.tolist() == [False, True]


def test_few_or_no_sources():
    image = np.zeros(SHAPE)
    assert swarm_members(image, [], [], [], aperture_radius=3, max_distance=20).size == 0
    assert not swarm_members(image, [10.0], [10.0], [5.0], aperture_radius=3,
                             max_distance=20).any()
    # a neighbour at the image edge: too few ring samples on the image, nothing flagged
    x, y = np.r_[2.0, 10.0], np.r_[2.0, 2.0]
    assert not swarm_members(image, x, y, np.r_[1e5, 1.0], aperture_radius=3,
                             max_distance=20).any()
