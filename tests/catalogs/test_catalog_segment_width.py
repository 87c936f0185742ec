"""Width test of segment rows: cosmic-ray tracks in 1-2 exposure areas get flag 16."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from astropy.table import Table

from hapcore.catalogs.flags import flag_catalog, narrow_segment_flags
from hapcore.catalogs.segment_width import local_exposures, narrow_rows, semi_minor_axis

NOISE = 1.0
SIGMA_PSF = 1.0   # pixels (FWHM 2.35 px, a drizzled UVIS star)


def _gaussian(shape, x0, y0, flux, sx, sy=None, theta=0.0, half=20):
    """An elliptical Gaussian of total ``flux`` on a ``shape`` image (drawn on a stamp)."""
    sy = sx if sy is None else sy
    image = np.zeros(shape)
    x_lo, y_lo = max(int(x0) - half, 0), max(int(y0) - half, 0)
    y, x = np.mgrid[y_lo:min(int(y0) + half, shape[0]), x_lo:min(int(x0) + half, shape[1])]
    c, s = np.cos(theta), np.sin(theta)
    u = (x - x0) * c + (y - y0) * s
    v = -(x - x0) * s + (y - y0) * c
    image[y, x] = flux / (2 * np.pi * sx * sy) * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return image


def _track(shape, x0, y0, flux, length, theta):
    """A cosmic-ray track: a line of ``length`` pixels, one pixel wide, not PSF-convolved."""
    image = np.zeros(shape)
    steps = np.linspace(-length / 2, length / 2, int(4 * length))
    for t in steps:
        xi = round(x0 + t * np.cos(theta))
        yi = round(y0 + t * np.sin(theta))
        image[yi, xi] += flux / steps.size
    return image


@functools.lru_cache(maxsize=1)
def _scene(seed=5):
    """Stars (S/N 6-200) and galaxies on a 600 x 600 image whose left strip (x < 120) has two
    exposures, the rest four; three cosmic-ray tracks in the strip, one in the 4-exposure area,
    and a faint star (S/N ~ 12, tested) in the strip."""
    photutils = pytest.importorskip("photutils.segmentation")
    rng = np.random.default_rng(seed)
    shape = (600, 600)
    image = rng.normal(0.0, NOISE, shape)
    ap2_noise = NOISE * np.sqrt(np.pi * 3.0 ** 2)   # aperture-2 radius 3 px
    truth = []   # (x, y, kind)
    grid = [(x, y) for x in range(20, 590, 30) for y in range(20, 590, 30)]
    rng.shuffle(grid)
    cr_places = [(40, 50), (70, 230), (100, 470), (350, 350)]
    faint_star = (60, 350)
    used = set(cr_places) | {faint_star}
    grid = [p for p in grid if all(abs(p[0] - q[0]) > 15 or abs(p[1] - q[1]) > 15 for q in used)]
    for k, (x, y) in enumerate(grid[:300]):
        x, y = x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)
        snr = 6.0 * 10 ** rng.uniform(0, 1.5)
        if k % 3:
            image += _gaussian(shape, x, y, snr * ap2_noise / 0.99, SIGMA_PSF)
            truth.append((x, y, "star"))
        else:   # a PSF-convolved galaxy: wider than a star on both axes
            size = rng.uniform(1.3, 3.0)
            image += _gaussian(shape, x, y, 1.5 * snr * ap2_noise, np.hypot(size * 1.6, SIGMA_PSF),
                               np.hypot(size, SIGMA_PSF), rng.uniform(0, np.pi))
            truth.append((x, y, "galaxy"))
    for x, y in cr_places:
        image += _track(shape, x, y, 14.0 * ap2_noise, 6.0, rng.uniform(0, np.pi))
        truth.append((x, y, "cr"))
    image += _gaussian(shape, *faint_star, 12.0 * ap2_noise / 0.99, SIGMA_PSF)
    truth.append((*faint_star, "faint star"))
    # the pipeline's segments: the image convolved with a PSF-like kernel, thresholded
    from scipy import ndimage

    convolved = ndimage.gaussian_filter(image, 1.0)
    segm = photutils.detect_sources(convolved, 4.0 * NOISE / (2 * np.sqrt(np.pi)), npixels=5)
    cat = photutils.SourceCatalog(image, segm, convolved_data=convolved)
    x, y = np.asarray(cat.xcentroid), np.asarray(cat.ycentroid)
    yy, xx = np.mgrid[-3:4, -3:4]
    disk = xx ** 2 + yy ** 2 <= 9
    flux = np.array([image[round(b) - 3:round(b) + 4,
                           round(a) - 3:round(a) + 4][disk].sum() for a, b in zip(x, y)])
    table = Table({"ID": np.arange(1, len(x) + 1), "X-Centroid": x, "Y-Centroid": y,
                   "X2": np.asarray(cat.covar_sigx2.value), "Y2": np.asarray(cat.covar_sigy2.value),
                   "XY": np.asarray(cat.covar_sigxy.value), "FluxAp2": flux,
                   "FluxErrAp2": np.full(len(x), NOISE * np.sqrt(disk.sum())),
                   "CI": np.full(len(x), 1.0), "MagErrAp1": np.full(len(x), 0.01),
                   "MagErrAp2": np.full(len(x), 0.01)})
    nexp = np.full(shape, 4, dtype=np.int16)
    nexp[:, :120] = 2
    # each truth object's row: the nearest segment centroid
    rows = {}
    for tx, ty, kind in truth:
        d = np.hypot(x - tx, y - ty)
        if d.min() < 4:
            rows.setdefault(kind, []).append(int(np.argmin(d)))
    return table, nexp, rows


def test_tracks_in_two_exposure_strip_flagged_stars_and_galaxies_kept():
    table, nexp, rows = _scene()
    table = table.copy()
    flags = narrow_segment_flags(table, x_column="X-Centroid", y_column="Y-Centroid", nexp=nexp)
    crs = rows["cr"]
    assert len(crs) == 4
    # the three tracks where two exposures cover them are flagged; the one in the
    # 4-exposure area is left to the cosmic-ray rejection (not tested)
    assert [bool(flags[i] & 16) for i in crs] == [True, True, True, False]
    assert not flags[rows["faint star"][0]]
    assert not np.any(flags[rows["star"]]) and not np.any(flags[rows["galaxy"]])


def test_flag_catalog_sets_16_on_segment_rows_only():
    table, nexp, rows = _scene()
    table = table.copy()
    common = {"x_column": "X-Centroid", "y_column": "Y-Centroid", "ci_lower": 0.5, "ci_upper": 2.0,
                  "bthresh": 5.0, "plate_scale": 0.04, "aperture_2": 0.12, "nexp": nexp}
    flags = flag_catalog(table, **common)
    assert all(flags[i] & 16 for i in rows["cr"][:3])
    # a point table (no second moments) is not tested
    point = table.copy()
    point.remove_columns(["X2", "Y2", "XY"])
    point_flags = flag_catalog(point, **common)
    assert not any(point_flags[i] & 16 for i in rows["cr"])


def test_narrow_rows_locus_by_snr():
    rng = np.random.default_rng(1)
    snr = 10 ** rng.uniform(0.7, 2.3, 400)
    # the width of a footprint-limited moment grows with S/N
    width = 0.4 + 0.5 * np.log10(snr) + rng.normal(0, 0.04, snr.size)
    extra_w, extra_snr = np.r_[0.6, 0.6, 0.9], np.r_[30.0, 4.0, 8.0]
    out = narrow_rows(np.r_[width, extra_w], np.r_[snr, extra_snr])
    # a narrow row at S/N 30 is flagged; one at S/N 4 is too faint to test; a width that is
    # normal at S/N 8 is kept
    assert out[-3:].tolist() == [True, False, False]
    assert out[:-3].mean() < 0.02
    # rows covered by more than max_exposures exposures are not tested
    exposures = np.r_[np.full(snr.size, 4), 2, 2, 2]
    assert narrow_rows(np.r_[width, extra_w], np.r_[snr, extra_snr],
                       exposures=exposures)[:-3].sum() == 0


def test_no_locus_no_test_and_missing_moments():
    assert not narrow_rows([0.1, 1.0], [50.0, 50.0]).any()
    assert np.isnan(semi_minor_axis([-9999.0], [-9999.0], [-9999.0])).all()
    assert semi_minor_axis([4.0], [1.0], [0.0])[0] == pytest.approx(1.0)
    nexp = np.arange(12).reshape(3, 4)
    assert local_exposures([1.2, 3.0, -5.0, np.nan], [0.9, 2.0, 0.0, 1.0], nexp).tolist() == \
        [5.0, 11.0, 0.0, 0.0]

