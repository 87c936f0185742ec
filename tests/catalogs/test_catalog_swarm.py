"""Swarm filter: detections on a bright star's profile are flagged, real companions are not."""

from __future__ import annotations

import numpy as np

from hapcore.catalogs.swarm import swarm_members
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
    cx, cy = CENTRE + 8 * np.cos(5.8), CENTRE + 8 * np.sin(5.8)
    ix, iy = int(round(cx)), int(round(cy))
    stamp = psf.stamps([cx - ix], [cy - iy], 10)[0]
    image[iy - 10:iy + 11, ix - 10:ix + 11] += companion_flux * stamp
    return image + rng.normal(0.0, 1.0, SHAPE), (cx, cy)


def test_ring_detections_are_flagged_and_the_companion_kept():
    rng = np.random.default_rng(5)
    image, (cx, cy) = _star_field(rng, companion_flux=1500.0)  # 0.75% of the star
    # blank places on the same ring, with no detection at their mirror points
    angles = np.array([0.6, 1.4])
    x = np.r_[CENTRE, cx, CENTRE + 8 * np.cos(angles), 20.0]
    y = np.r_[CENTRE, cy, CENTRE + 8 * np.sin(angles), 20.0]  # last: an isolated faint source
    flux = np.r_[2.0e5, 1500.0, [300.0] * 2, 300.0]
    image[18:23, 18:23] += 30.0
    members = swarm_members(image, x, y, flux, aperture_radius=3.0, max_distance=20.0,
                            background_rms=1.0)
    assert not members[0], "the bright star itself"
    assert not members[1], "a real companion adds light above the star's azimuthal median"
    assert members[2:4].all(), "ring points hold only the star's profile"
    assert not members[4], "no brighter neighbour within max_distance"


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


def test_crowded_field_keeps_real_faint_stars_near_a_bright_one():
    """47 Tuc-like crowding: the ring around a bright star holds many real faint stars. Its
    scatter would hide each one's excess; the mirror test (both must agree there) keeps them."""
    rng = np.random.default_rng(8)
    psf = psf_for_detector(get_detector("acs/wfc"))
    image = np.zeros(SHAPE)
    image[CENTRE_I - 40:CENTRE_I + 41, CENTRE_I - 40:CENTRE_I + 41] += 2.0e5 * psf.kernel(40)
    n = 30
    radius = rng.uniform(6.0, 20.0, n)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    fx, fy = CENTRE + radius * np.cos(angle), CENTRE + radius * np.sin(angle)
    fflux = rng.uniform(1000.0, 4000.0, n)  # 0.5-2% of the bright star, S/N > 50 each
    for x0, y0, f in zip(fx, fy, fflux):
        ix, iy = int(round(x0)), int(round(y0))
        image[iy - 10:iy + 11, ix - 10:ix + 11] += f * psf.stamps([x0 - ix], [y0 - iy], 10)[0]
    image += rng.normal(0.0, 1.0, SHAPE)
    members = swarm_members(image, np.r_[CENTRE, fx], np.r_[CENTRE, fy], np.r_[2.0e5, fflux],
                            aperture_radius=3.0, max_distance=20.0, background_rms=1.0,
                            exptime=1000.0)
    assert members.sum() <= 1, np.flatnonzero(members)
