"""L.A.Cosmic on one exposure (hapcore.drizzle.single_exposure_cr)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hapcore.drizzle.single_exposure_cr import (
    find_single_exposure_cosmic_rays,
    laplacian_positive,
)
from hapsim.artifacts import cosmic_rays


def test_laplacian_matches_the_subsampled_definition():
    rng = np.random.default_rng(1)
    image = rng.normal(100, 10, (40, 50)).astype(np.float32)
    image[20, 25] += 500
    fine = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    kernel = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32)
    lap = np.clip(ndimage.convolve(fine, kernel, mode="nearest"), 0, None)
    expected = lap.reshape(40, 2, 50, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(laplacian_positive(image), expected, rtol=1e-5, atol=1e-3)


def _chip(seed=3, shape=(300, 400), sky=80.0, readnoise=3.1):
    """Sky, undersampled stars (sigma 0.8 px, WFC3/UVIS-like), Poisson and read noise and the
    simulator's cosmic rays (1.5% of the pixels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    stars = np.zeros(shape)
    n = 120
    xs, ys = rng.uniform(10, shape[1] - 10, n), rng.uniform(10, shape[0] - 10, n)
    fluxes = 10 ** rng.uniform(2.5, 5.0, n)
    for x, y, f in zip(xs, ys, fluxes):
        box = (slice(int(y) - 8, int(y) + 9), slice(int(x) - 8, int(x) + 9))
        r2 = (xx[box] - x) ** 2 + (yy[box] - y) ** 2
        stars[box] += f * (0.8 * np.exp(-r2 / (2 * 0.8**2)) / (2 * np.pi * 0.8**2)
                           + 0.2 * np.exp(-r2 / (2 * 2.5**2)) / (2 * np.pi * 2.5**2))
    charge, truth = cosmic_rays(rng, shape, 0.015)
    image = rng.poisson(stars + sky).astype(np.float32) + rng.normal(0, readnoise, shape)
    image += charge
    return image.astype(np.float32), stars, charge, truth, sky, readnoise


def test_cosmic_rays_found_and_stars_kept():
    image, stars, charge, truth, sky, rn = _chip()
    mask = find_single_exposure_cosmic_rays(image, readnoise=rn)
    noise = np.sqrt(sky + stars + rn**2)
    strong = truth & (charge > 5 * noise)
    assert strong.sum() > 500
    assert (mask & strong).sum() / strong.sum() >= 0.97
    # star light on pixels flagged without a cosmic ray
    near_cr = ndimage.binary_dilation(truth, iterations=1)
    lost = stars[mask & ~near_cr].sum() / stars.sum()
    assert lost <= 0.0005, lost   # measured 0.0 (L.A.Cosmic's own growth: 1.9%)


def test_bad_pixels_never_flagged_and_clean_image_untouched():
    rng = np.random.default_rng(4)
    image = rng.poisson(80.0, (200, 200)).astype(np.float32)
    bad = np.zeros(image.shape, bool)
    bad[50:60, 70] = True            # a bad column segment with a huge value
    image[bad] = 60000.0
    mask = find_single_exposure_cosmic_rays(image, readnoise=3.0, bad=bad)
    assert not mask[bad].any()
    assert mask.sum() <= 5           # Poisson sky alone: (almost) nothing
