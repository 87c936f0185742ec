"""The product's PSF stack and the features it explains (hapcore.catalogs.psf_features)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from hapcore.catalogs.psf_features import empirical_psf, psf_features
from test_catalog_scene import make_visit

IR_SCALE = 0.128


def _ir_field():
    """WFC3/IR-like: an undersampled PSF (0.128"/px), stars only, so nothing is a feature."""
    return make_visit((500, 500), detector="wfc3/ir", filters=(("f160w", 300.0, 3),),
                      n_stars=300, n_galaxies=0, star_mags=(17.0, 24.0), seed=21,
                      scale=IR_SCALE)


def test_undersampled_stack_keeps_its_core():
    """The core pixels of an undersampled PSF scatter with the pixel phase by more than a third
    between stars; the significance cut of the far wings must not zero them (it left a ring)."""
    visit = _ir_field()
    truth = visit.truth
    image = visit.total.data
    flux = np.asarray(truth["countrate_f160w"], float)
    psf = empirical_psf(image, truth["x"], truth["y"], flux, radius=20, norm_radii=(3.3, 8.2))
    assert psf is not None
    h = psf.radius
    core = psf.image[h - 1:h + 2, h - 1:h + 2]
    assert core.min() > 0
    assert np.unravel_index(np.argmax(psf.image), psf.image.shape) in \
        [(h + dy, h + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def test_real_stars_near_bright_ones_are_not_features():
    visit = _ir_field()
    truth = visit.truth
    image = visit.total.data
    rms = float(np.std(image[image < np.percentile(image, 50)])) * 1.5
    x, y = np.asarray(truth["x"], float), np.asarray(truth["y"], float)
    flux = np.asarray(truth["countrate_f160w"], float)
    features, psf = psf_features(image, x, y, flux, aperture_radius=1.64, core_radius=3.3,
                                 model_radius=24, background=np.zeros_like(image),
                                 background_rms=rms,
                                 exptime=900.0, min_ratio=10.0)
    assert psf is not None
    # stars with a >= 10x brighter star within 3": the candidates the test looks at
    tree = cKDTree(np.column_stack([x, y]))
    tested = np.zeros(x.size, bool)
    for i, near in enumerate(tree.query_ball_point(np.column_stack([x, y]), 3.0 / IR_SCALE)):
        near = [j for j in near if j != i and flux[j] >= 10 * flux[i]]
        tested[i] = bool(near)
    assert tested.sum() >= 10
    assert features[tested].mean() <= 0.05, (features.sum(), tested.sum())
