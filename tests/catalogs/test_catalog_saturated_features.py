"""Saturated stars (issue #15): their halo, rings, spikes and bleed trails are not sources, the
stars themselves and the faint sources near them are; the background rms ignores their light."""

from __future__ import annotations

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.wcs import WCS
from test_catalog_scene import saturated_flagging_inputs

from hapcore.catalogs.image import CatalogImage, compute_background
from hapcore.catalogs.saturated_features import (
    saturated_halo_model,
    saturated_star_features,
    saturated_star_rows,
    saturated_stars,
)

SHAPE = (301, 301)
CENTRE = (150.0, 150.0)
SKY_RMS = 0.01


def _gauss(shape, x0, y0, flux, sigma=1.2):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return flux / (2 * np.pi * sigma ** 2) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2)
                                                   / (2 * sigma ** 2))


def _saturated_scene(*, faint=(), seed=1):
    """A saturated star at CENTRE: r^-3 halo with a ring, four spikes, a plateau and a bleed
    column 30 px up and 12 px down; sky noise SKY_RMS. Returns image, saturated (x, y)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    dx, dy = xx - CENTRE[0], yy - CENTRE[1]
    r = np.hypot(dx, dy)
    image = 2000.0 / np.maximum(r, 3.0) ** 3
    image += 0.3 * np.exp(-0.5 * ((r - 18.0) / 1.5) ** 2)                      # a ring
    spike = (np.exp(-0.5 * (dx / 1.0) ** 2) + np.exp(-0.5 * (dy / 1.0) ** 2))   # + shape
    image += spike * 40.0 / np.maximum(r, 3.0) ** 1.5
    plateau = r <= 4.0
    bleed = (np.abs(dx) <= 1) & (dy >= -12) & (dy <= 30)
    saturated = plateau | bleed
    image[saturated] = 50.0
    for x0, y0, flux in faint:
        image += _gauss(SHAPE, x0, y0, flux)
    image += rng.normal(0.0, SKY_RMS, SHAPE)
    ys, xs = np.nonzero(saturated)
    return image, np.column_stack([xs, ys]).astype(float)


def test_saturated_star_is_centred_on_its_plateau_not_its_bleed():
    _, sat = _saturated_scene()
    x, y, npix, _ = saturated_stars(sat, shape=SHAPE)
    assert npix.tolist() == [len(sat)]
    # the mean of the saturated pixels is 5 px up the longer bleed; the plateau's centre is not
    assert abs(float(np.mean(sat[:, 1])) - CENTRE[1]) > 3.0
    assert abs(x[0] - CENTRE[0]) < 0.6 and abs(y[0] - CENTRE[1]) < 0.6


def test_star_missed_by_the_finder_is_added_once():
    _, sat = _saturated_scene()
    # detections: a bleed end and a halo knot, none on the plateau
    x, y = saturated_star_rows([150.0, 170.0], [178.0, 150.0], sat, shape=SHAPE, radius=3.75)
    assert x.size == 1 and abs(x[0] - 150.0) < 0.6 and abs(y[0] - 150.0) < 0.6
    x, y = saturated_star_rows([150.3], [149.8], sat, shape=SHAPE, radius=3.75)
    assert x.size == 0


def test_halo_ring_and_spike_features_flagged_faint_neighbours_kept():
    faint = [(175.0, 130.0, 3.0), (120.0, 190.0, 1.5), (150.0 + 60.0, 150.0 + 1.0, 4.0)]
    image, sat = _saturated_scene(faint=faint)
    # features: halo at 10 px, the ring at 18 px (two places), spikes at 40 and 70 px, the
    # bleed column's far end (touches saturated pixels: left to the fragment test);
    # real sources: the three faint stars (the last one on the +x spike) and a far one
    x = np.array([150.0 + 10.0, 150.0 - 12.7, 150.0, 150.0 - 40.0, 150.0, 175.0, 120.0, 210.0,
                  290.0])
    y = np.array([150.0, 150.0 + 12.7, 150.0 - 70.0, 150.0, 150.0 + 31.0, 130.0, 190.0, 151.0,
                  20.0])
    features = saturated_star_features(image, x, y, sat, aperture_radius=3.75,
                                       max_distance=150.0, background=np.zeros(SHAPE),
                                       background_rms=SKY_RMS, exptime=1000.0)
    assert features.tolist() == [True, True, True, True, False, False, False, False, False]


def test_no_saturated_pixels_no_features():
    image = np.random.default_rng(2).normal(0.0, SKY_RMS, SHAPE)
    assert not saturated_star_features(image, [10.0, 50.0], [10.0, 60.0], None,
                                       aperture_radius=3.0, max_distance=100.0).any()
    assert saturated_halo_model(image, np.empty((0, 2)), max_radius=100.0) is None


def test_halo_model_removes_the_round_light_but_not_a_faint_star():
    image, sat = _saturated_scene(faint=[(175.0, 130.0, 3.0)])
    model = saturated_halo_model(image, sat, background=0.0, background_rms=SKY_RMS,
                                 max_radius=150.0)
    residual = image - model
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    r = np.hypot(xx - 150.0, yy - 150.0)
    # off the spikes and the bleed column, 8-30 px from the star
    off = (r > 8) & (r < 30) & (np.abs(xx - 150) > 6) & (np.abs(yy - 150) > 6)
    off &= np.hypot(xx - 175.0, yy - 130.0) > 6
    assert np.std(image[off]) > 25 * SKY_RMS
    assert np.std(residual[off]) < 2.5 * SKY_RMS
    star = residual[127:134, 172:179].sum()
    assert abs(star - 3.0) < 0.4


def test_background_rms_of_a_field_with_bright_halos_is_the_sky_noise():
    rng = np.random.default_rng(3)
    shape = (600, 600)
    data = rng.normal(0.1, SKY_RMS, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for x0, y0 in ((150, 150), (450, 420), (150, 480)):
        r = np.hypot(xx - x0, yy - y0)
        data += 20000.0 / np.maximum(r, 3.0) ** 3.5
    # three clipping iterations leave 2.1x the sky noise
    assert sigma_clipped_stats(data, sigma=3.0, maxiters=3, cenfunc="median")[2] > 2.0 * SKY_RMS
    image = CatalogImage.from_arrays(data.astype(np.float32), wcs=WCS(naxis=2),
                                     weight=np.ones(shape, np.float32))
    model = compute_background(image, nsigma_clip=3.0, maxiters=3)
    # converged: 1.06x (the faint wings stay in), and no 2-D background for a skew that
    # was the halos'
    assert model.method == "sigma_clipped_background"
    assert model.rms_value < 1.08 * SKY_RMS
    assert abs(model.median - 0.1) < 0.25 * SKY_RMS


def test_background_of_a_clean_sky_keeps_the_spec_statistics():
    data = np.random.default_rng(4).normal(0.1, SKY_RMS, (300, 300))
    image = CatalogImage.from_arrays(data.astype(np.float32), wcs=WCS(naxis=2),
                                     weight=np.ones(data.shape, np.float32))
    model = compute_background(image, nsigma_clip=3.0, maxiters=3)
    _, median, std = sigma_clipped_stats(data[image.illuminated].astype(np.float32), sigma=3.0,
                                         maxiters=3, cenfunc="median")
    # the spec's three iterations: same median, rms = max(std, floors)
    assert model.median == float(median)
    assert float(std) <= model.rms_value < 1.03 * SKY_RMS


def test_stage_flags_features_and_keeps_the_star_with_flag_4_only():
    from astropy.table import Table

    from hapcore.catalogs.saturated_features import flag_saturated_light

    image, sat = _saturated_scene(faint=[(175.0, 130.0, 3.0)])

    product, options, background = saturated_flagging_inputs(image, sky_rms=SKY_RMS)

    # the star (its row flagged faint + cosmic ray by the CI test), a plateau-edge detection,
    # the bleed end, a halo knot, a spike knot, the faint star
    table = Table({"X": [150.2, 153.5, 150.0, 140.0, 150.0, 175.0],
                   "Y": [149.9, 152.0, 178.0, 150.0, 90.0, 130.0],
                   "FluxAp2": [900.0, 1200.0, 1500.0, 60.0, 5.0, 3.0],
                   "Flags": [29, 5, 5, 1, 1, 0]})
    n = flag_saturated_light(table, "X", "Y", "FluxAp2", product, sat, options,
                              background)
    assert n == 4
    assert table["Flags"].tolist() == [5, 37, 37, 33, 33, 0]


def test_segments_in_one_inner_halo_are_merged_into_the_brightest():
    """Issue #15: the lumps of a saturated star's inner halo are one row, not 3-4."""
    from types import SimpleNamespace

    from photutils.segmentation import SegmentationImage

    from hapcore.catalogs.segment import _merge_in_zones

    segm = SegmentationImage(np.array([[1, 0, 2, 0, 3],
                                       [1, 0, 2, 0, 3]], dtype=np.int32))
    catalog = SimpleNamespace(labels=np.array([1, 2, 3]), xcentroid=np.array([0.0, 2.0, 4.0]),
                              ycentroid=np.array([0.5, 0.5, 0.5]),
                              segment_flux=np.array([1.0, 9.0, 5.0]))
    zones = np.zeros((2, 5), bool)
    zones[:, :3] = True        # labels 1 and 2 lie on one inner halo, 3 outside
    _merge_in_zones(segm, catalog, np.ones(3, bool), zones)
    assert sorted(segm.labels) == [2, 3]
    assert (segm.data[:, 0] == 2).all()


def test_point_like_star_on_the_halo_is_kept_its_features_are_not():
    """A star fainter than the halo light in its aperture (30%: within the model error) was
    "explained" by the ring and by its rotated copies on the same halo; told it is point-like
    (a star's CI), it stands out of the ring's light and keeps its row (issue #15: 13 stars of
    S/N >= 10 of the saturated preset). Halo and spike features called point-like stay
    features: their light does not stand out of the ring, or their copies' does."""
    star = (150.0 + 12.0, 150.0 + 9.0, 10.0)              # r = 15 px: halo ~26 e/s in aperture
    image, sat = _saturated_scene(faint=[star])
    x = np.array([star[0], 150.0 + 10.0, 150.0 - 40.0, 150.0, 150.0 - 12.7])
    y = np.array([star[1], 150.0, 150.0, 150.0 - 70.0, 150.0 + 12.7])
    kwargs = dict(aperture_radius=3.75, max_distance=150.0, background=np.zeros(SHAPE),
                  background_rms=SKY_RMS, exptime=1000.0)
    plain = saturated_star_features(image, x, y, sat, **kwargs)
    assert plain.tolist() == [True, True, True, True, True]
    told = saturated_star_features(image, x, y, sat, point_like=np.ones(x.size, bool), **kwargs)
    assert told.tolist() == [False, True, True, True, True]
