"""PSF features among the segment rows (hapcore.catalogs.segment_features)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from astropy.table import Table

from hapcore.catalogs.segment_features import (
    flag_segment_psf_features,
    segment_psf_features,
)

RING_RADIUS = 7.0


def _psf(xx, yy, x0, y0, flux):
    """A core (sigma 1.2 px) and an Airy-like ring at RING_RADIUS holding 8% of the light."""
    r2 = (xx - x0) ** 2 + (yy - y0) ** 2
    core = np.exp(-0.5 * r2 / 1.2 ** 2)
    ring = np.exp(-0.5 * (np.sqrt(r2) - RING_RADIUS) ** 2 / 0.8 ** 2)
    return flux * (0.92 * core / core.sum() + 0.08 * ring / ring.sum())


def _field(seed=3):
    """Ten bright isolated stars with rings, ring pieces on three of them, a real companion
    (20x fainter, 11 px away) of a fourth, isolated faint sources; noise 1 e-/s."""
    rng = np.random.default_rng(seed)
    ny, nx = 360, 420
    yy, xx = np.mgrid[:ny, :nx]
    image = rng.normal(0.0, 1.0, (ny, nx))
    stars = np.array([(60.0 + 100 * i + 0.3 * j, 60.0 + 120 * j + 0.2 * i)
                      for i in range(4) for j in range(3)])[:10]
    for sx, sy in stars:
        image += _psf(xx, yy, sx, sy, 6.0e4)
    companion = (stars[3][0] + 11.0, stars[3][1])
    image += _psf(xx, yy, *companion, 3.0e3)
    faint = [(110.0, 120.0), (310.0, 300.0)]
    for fx, fy in faint:
        image += _psf(xx, yy, fx, fy, 400.0)
    angles = (0.3, 2.1, 4.0)
    ring_rows = [(stars[k][0] + RING_RADIUS * np.cos(a), stars[k][1] + RING_RADIUS * np.sin(a))
                 for k, a in zip((0, 1, 2), angles)]
    return image, stars, ring_rows, [companion], faint


def test_ring_pieces_flagged_real_neighbours_kept():
    image, stars, ring_rows, companions, faint = _field()
    rows = np.array(ring_rows + companions + faint + [tuple(s) for s in stars[:2]])
    out = segment_psf_features(image, rows[:, 0], rows[:, 1], stars[:, 0], stars[:, 1],
                               aperture_radius=3.75, small_radius=2.5, swarm_radius=25.0,
                               psf_radius=30.0, background=np.zeros_like(image),
                               background_rms=1.0, exptime=1000.0)
    n_ring = len(ring_rows)
    # every ring piece is a feature; the companion, the faint isolated sources and the stars'
    # own rows are not
    assert out[:n_ring].all()
    assert not out[n_ring:].any()
    # no neighbours, or both tests off: nothing flagged
    assert not segment_psf_features(image, rows[:, 0], rows[:, 1], [], [], aperture_radius=3.75,
                                     small_radius=2.5, swarm_radius=25.0,
                                     psf_radius=30.0).any()
    assert not segment_psf_features(image, rows[:, 0], rows[:, 1], stars[:, 0], stars[:, 1],
                                     aperture_radius=3.75, small_radius=2.5, swarm_radius=25.0,
                                     psf_radius=30.0, swarm_nsigma=None,
                                     psf_nsigma=None).any()


def test_flag_in_every_filter_and_point_verdict_kept():
    image, stars, ring_rows, companions, faint = _field()
    rows = np.array(ring_rows + companions + faint)
    cat = SimpleNamespace(aperture_1=0.05, aperture_2=0.15, tweak_fwhmpsf=0.076, swarm_nsigma=3.0,
                          swarm_radius_arcsec=1.0, swarm_min_ratio=10.0, psf_feature_nsigma=3.0,
                          psf_feature_radius_arcsec=1.2, psf_feature_model_error=0.2)
    quality = SimpleNamespace(ci_filter=SimpleNamespace(aperture=SimpleNamespace(
        ci_lower_limit=0.5, ci_upper_limit=1.5)))
    image_obj = SimpleNamespace(data=image, plate_scale=0.04, exptime=1000.0,
                                weight=np.ones_like(image))
    # the first ring piece is also a point source the detection's tests kept: it keeps its row
    points = Table({"xcentroid": np.r_[stars[:, 0], ring_rows[0][0]],
                    "ycentroid": np.r_[stars[:, 1], ring_rows[0][1]]})
    ids = np.arange(1, len(rows) + 1)
    detection = SimpleNamespace(
        total_image=image_obj, total_parameters=SimpleNamespace(catalog=cat, quality=quality),
        segments=SimpleNamespace(sources=Table({"ID": ids, "X-Centroid": rows[:, 0],
                                                "Y-Centroid": rows[:, 1]})),
        point_sources=points, point_swarm=np.zeros(len(points), bool),
        background=SimpleNamespace(background=np.zeros_like(image), rms=1.0))
    tables = [Table({"ID": ids, "Flags": np.zeros(len(ids), np.int64)}),
              Table({"ID": ids[::-1], "Flags": np.ones(len(ids), np.int64)})]
    n = flag_segment_psf_features(detection, tables)
    assert n == len(ring_rows) - 1
    expected = np.isin(ids, [2, 3])
    assert ((tables[0]["Flags"] & 32) != 0).tolist() == expected.tolist()
    assert ((tables[1]["Flags"] & 32) != 0).tolist() == expected[::-1].tolist()
    assert (tables[1]["Flags"] & 1).all()
    # a detection without pixels (the filter tasks' headers-only total image): nothing done
    detection.total_image = SimpleNamespace(plate_scale=0.04, exptime=1000.0)
    assert flag_segment_psf_features(detection, tables) == 0
