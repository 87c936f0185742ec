"""Segment rows that are features of a brighter neighbour's PSF: rings, spikes, the halo.

The segmentation cuts the light around a bright star into "sources" as readily as the star
finder does: Airy-ring arcs and diffraction-spike knots 0.4-3" from the star, deblended
pieces of its wings, and -- where the star itself lies on the edge of the data and its own
rows are trimmed -- the visible part of its profile. The point catalog's rows get the swarm
flag (32) for those from the detection step (:func:`hapcore.catalogs.swarm.swarm_members`,
:func:`hapcore.catalogs.psf_features.psf_features` and
:func:`~hapcore.catalogs.psf_features.fourfold_features`: azimuthal symmetry, the product's own
stacked PSF, four-fold symmetry), but the segment catalog did not: its rows were flagged
filter by filter, by the saturated-star tests alone, so an unsaturated star's ring piece had
no flag and a saturated star's halo piece often had it in one filter only, which the total
catalog's trimming (a row goes only when every filter flags it) ignores.

:func:`segment_psf_features` applies the same three tests to the segment rows, on the total
(detection) image, with the point sources as the bright neighbours: the verdict is one for
every filter, and :func:`flag_segment_psf_features` sets flag 32 in each filter's segment
table. A segment row's brightest neighbour is any detection (point source or segment row) at
least ``min_ratio`` times brighter in the compared aperture; the PSF stack is built from the
point sources alone (point-like by their concentration on the total image), and only point
sources are scaled as the neighbours whose PSF may explain a row. A row within
:data:`SAME_SOURCE_FWHM` FWHM of a point source the detection's tests kept is that source and
keeps their verdict (a faint star, a saturated star's own segment). The four-fold test is off
by default (see :func:`segment_psf_features`).

Measured with bench_realism.py (hapsim truth), total segment catalog: ``ir-only`` seed 7
(WFC3/IR, three filters) 7 -> 5 spurious rows of 532 -> 530 (1.32% -> 0.94%; the two removed:
a diffraction-spike piece 1" from an 8000 e-/s star and a deblended piece between two close
stars), no row matched to a true source removed; on the ``saturated`` preset (with the tests
of :mod:`hapcore.catalogs.spike_segments`) 1 true faint star removed of 876 rows.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import cKDTree

from hap_models.catalogs import FLAG_SWARM
from hapcore.catalogs.psf_features import fourfold_features, point_like, psf_features
from hapcore.catalogs.swarm import aperture_sums, swarm_members

__all__ = ["SAME_SOURCE_FWHM", "flag_segment_psf_features", "segment_psf_features"]

log = logging.getLogger(f"hapsvm.{__name__}")


def segment_psf_features(data: np.ndarray, x, y, star_x, star_y, *, aperture_radius: float,
                         small_radius: float, swarm_radius: float, psf_radius: float,
                         background=None, background_rms=0.0, exptime: float = 0.0,
                         min_ratio: float = 10.0, swarm_nsigma: float | None = 3.0,
                         psf_nsigma: float | None = 3.0, model_error: float = 0.2,
                         ci_limits: tuple[float, float] | None = None, inner_radius=None,
                         valid=None, fourfold: bool = False) -> np.ndarray:
    """Segment rows explained by a brighter neighbour's PSF (see the module notes).

    Parameters
    ----------
    data : 2-D ndarray
        The total (detection) image, in rate units when ``exptime`` is given.
    x, y : array_like
        0-based centroids of the segment rows.
    star_x, star_y : array_like
        0-based positions of the point sources (the candidate bright neighbours).
    aperture_radius : float
        Radius (pixels) of the apertures of the swarm and four-fold tests (aperture 2).
    small_radius : float
        Radius (pixels) of the aperture compared with the PSF stack's prediction (1.5 FWHM or
        aperture 1); the PSF core is twice that.
    swarm_radius, psf_radius : float
        Largest distances (pixels) of the swarm test and of the PSF-stack and four-fold tests.
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
    exptime : float, optional
    min_ratio : float, optional
        A neighbour must be this many times brighter than the row.
    swarm_nsigma, psf_nsigma : float or None, optional
        Significance of the swarm test and of the PSF-stack and four-fold tests (None: the
        test is not run).
    model_error : float, optional
        Fractional error of the PSF prediction.
    ci_limits : tuple of float, optional
        Concentration-index limits of point-like sources (aperture ``inner_radius`` over
        ``aperture_radius``): only those are stacked into the PSF.
    inner_radius : float, optional
        Radius (pixels) of the concentration index's inner aperture (aperture 1).
    valid : 2-D bool ndarray, optional
        Pixels with data (for the PSF stack).
    fourfold : bool, optional
        Also run the four-fold symmetry test. Off: on the segment rows it removed more real
        sources than features (``saturated`` preset: 2 real faint stars and 1 spike piece that
        the ridge test of :mod:`hapcore.catalogs.spike_segments` takes anyway; ``ir-only``
        seed 7: a real star 2" from a 130 times brighter one).

    Returns
    -------
    ndarray of bool
        True for the segment rows that are PSF features.
    """
    x = np.asarray(x, float).ravel()
    y = np.asarray(y, float).ravel()
    star_x = np.asarray(star_x, float).ravel()
    star_y = np.asarray(star_y, float).ravel()
    n_seg, n_star = x.size, star_x.size
    out = np.zeros(n_seg, bool)
    if n_seg == 0 or n_star == 0 or (swarm_nsigma is None and psf_nsigma is None):
        return out
    # one list: the point sources first, then the segment rows
    ax = np.concatenate([star_x, x])
    ay = np.concatenate([star_y, y])
    is_star = np.arange(ax.size) < n_star
    good = np.isfinite(ax) & np.isfinite(ay)
    ax, ay = np.where(good, ax, -1e6), np.where(good, ay, -1e6)
    light = aperture_sums(data, ax, ay, aperture_radius, background=background)
    light = np.where(good, light, np.nan)
    found = np.zeros(ax.size, bool)
    if swarm_nsigma is not None:
        found |= swarm_members(data, ax, ay, light, aperture_radius=aperture_radius,
                               max_distance=swarm_radius, min_ratio=min_ratio,
                               nsigma=swarm_nsigma, background_rms=background_rms,
                               exptime=exptime, background=background)
    if psf_nsigma is not None:
        candidates = is_star.copy()
        if ci_limits is not None and inner_radius is not None:
            inner = aperture_sums(data, ax, ay, inner_radius, background=background)
            with np.errstate(invalid="ignore", divide="ignore"):
                ci = -2.5 * np.log10(inner / light)
            candidates &= point_like(ci, light, limits=ci_limits)
        # the segment rows are tested, never scaled as the neighbour: a galaxy is no PSF
        features, _ = psf_features(
            data, ax, ay, np.where(is_star, light, 0.0), aperture_radius=small_radius,
            core_radius=2.0 * small_radius, model_radius=int(np.ceil(psf_radius)),
            background=background, background_rms=background_rms, exptime=exptime,
            min_ratio=min_ratio, nsigma=psf_nsigma, model_error=model_error, valid=valid,
            stack_candidates=candidates)
        found |= features
    if psf_nsigma is not None and fourfold:
        found |= fourfold_features(
            data, ax, ay, aperture_radius=aperture_radius, min_distance=aperture_radius,
            max_distance=psf_radius, background=background, background_rms=background_rms,
            exptime=exptime, min_ratio=min_ratio, nsigma=psf_nsigma, model_error=model_error)
    out[:] = found[n_star:] & good[n_star:]
    log.debug("segment PSF features: %d of %d segment rows", int(out.sum()), n_seg)
    return out


#: A segment row within this many FWHM of a point source that the detection's own tests kept
#: (no swarm member) is that source, and keeps their verdict.
SAME_SOURCE_FWHM: float = 1.5


def _near(x, y, px, py, radius) -> np.ndarray:
    """Whether a point (``px``, ``py``) lies within ``radius`` of each (``x``, ``y``)."""
    good = np.isfinite(px) & np.isfinite(py)
    out = np.zeros(np.size(x), bool)
    if not good.any() or np.size(x) == 0:
        return out
    ok = np.isfinite(x) & np.isfinite(y)
    dist, _ = cKDTree(np.column_stack([px[good], py[good]])).query(
        np.column_stack([x[ok], y[ok]]), distance_upper_bound=radius)
    out[ok] = np.isfinite(dist)
    return out


def flag_segment_psf_features(detection, filter_tables) -> int:
    """Flag 32 in every filter's segment table for the rows of ``detection``'s segments that
    are PSF features (:func:`segment_psf_features`, on the total image with the detection's
    background and point sources, the total product's catalog parameters); returns how many.

    Nothing is done without the total image's pixels, the segments or the point sources, or
    when the parameters disable both the swarm and the PSF-feature tests.

    Parameters
    ----------
    detection : SourceDetection
    filter_tables : sequence of astropy.table.Table or None
        The filter segment tables (untrimmed, rows by ``ID``); modified in place.
    """
    image, seg, points = detection.total_image, detection.segments, detection.point_sources
    data = getattr(image, "data", None)
    if data is None or seg is None or points is None or not len(seg.sources) \
            or not len(points) or detection.background is None:
        return 0
    params = detection.total_parameters
    cat = params.catalog
    if cat.swarm_nsigma is None and cat.psf_feature_nsigma is None:
        return 0
    scale = image.plate_scale
    ci = params.quality.ci_filter.aperture
    weight = getattr(image, "weight", None)
    features = segment_psf_features(
        data, seg.sources["X-Centroid"], seg.sources["Y-Centroid"], points["xcentroid"],
        points["ycentroid"], aperture_radius=cat.aperture_2 / scale,
        small_radius=max(cat.aperture_1 / scale, 1.5 * cat.tweak_fwhmpsf / scale),
        swarm_radius=cat.swarm_radius_arcsec / scale,
        psf_radius=cat.psf_feature_radius_arcsec / scale,
        background=detection.background.background, background_rms=detection.background.rms,
        exptime=image.exptime, min_ratio=cat.swarm_min_ratio, swarm_nsigma=cat.swarm_nsigma,
        psf_nsigma=cat.psf_feature_nsigma, model_error=cat.psf_feature_model_error,
        ci_limits=(ci.ci_lower_limit, ci.ci_upper_limit), inner_radius=cat.aperture_1 / scale,
        valid=None if weight is None else weight > 0)
    # the point tests' verdict on the same object stands: a row on a point source that is no
    # swarm member is that source (a faint star, a saturated star's own segment)
    sx = np.asarray(seg.sources["X-Centroid"], float)
    sy = np.asarray(seg.sources["Y-Centroid"], float)
    real = np.ones(len(points), bool) if detection.point_swarm is None else \
        ~np.asarray(detection.point_swarm, bool)
    features &= ~_near(sx, sy, np.asarray(points["xcentroid"], float)[real],
                       np.asarray(points["ycentroid"], float)[real],
                       SAME_SOURCE_FWHM * cat.tweak_fwhmpsf / scale)
    ids = np.asarray(seg.sources["ID"])[features]
    for table in filter_tables:
        if table is None or not len(table):
            continue
        hit = np.isin(np.asarray(table["ID"]), ids)
        table["Flags"] = np.where(hit, np.asarray(table["Flags"], np.int64) | FLAG_SWARM,
                                  table["Flags"])
    log.debug("segment catalog: %d of %d segment(s) are features of a brighter neighbour's PSF "
             "(flag 32 in every filter)", ids.size, len(seg.sources))
    return int(ids.size)
