"""The detection step of the catalog stage: sources of the total image (spec §6.2-6.4).

* :func:`detect_sources` -- background, weight regions, point sources (with their swarm
  members) and segments of a total image: a :class:`SourceDetection`, which every filter
  measurement and the total catalogs use;
* :func:`load_total_detection` -- the same, reading the total product from ``output_dir``;
* :func:`save_detection` / :func:`load_detection` -- a detection in a small ``.npz`` file, so
  that the tasks measuring the filters and writing the catalogs get it without detecting again.
  The file holds only what cannot be re-read from the total product: the source tables, the
  compressed segmentation map, the kernel and the background model (scalars when constant);
  :func:`load_detection` rebuilds the convolved image and the detection catalog from the total
  image, exactly as :func:`~hapcore.catalogs.segment.detect_segments` made them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy.table import Table

from hapcore.atomic import atomic_output
from hapcore.catalogs.coverage_holes import fill_coverage_holes
from hapcore.catalogs.detection_catalog import freeze_detection_catalog
from hapcore.catalogs.image import (
    BackgroundModel,
    CatalogImage,
    compute_background,
    make_wht_masks,
    subtract_background,
)
from hapcore.catalogs.point import detect_point_sources
from hapcore.catalogs.saturated_features import (
    saturated_halo_model,
    saturated_star_rows,
)
from hapcore.catalogs.segment import SegmentationResult, detect_segments
from hapcore.catalogs.side_by_side import run_side_by_side
from hapcore.catalogs.swarm_flags import point_swarm

__all__ = ["PHOT_MODES", "SourceDetection", "catalog_background", "detect_sources",
           "load_total_detection", "save_detection", "load_detection"]

log = logging.getLogger(f"hapsvm.{__name__}")

PHOT_MODES: tuple[str, ...] = ("aperture", "segment", "both")

#: Version of the detection file layout (:func:`save_detection`).
_FILE_VERSION = 1


@dataclass(eq=False)
class SourceDetection:
    """The detection step's result on a total image, shared by every filter measurement.

    Attributes
    ----------
    total_image : CatalogImage
    total_parameters : ProductParameters
    phot_mode : str
    background : BackgroundModel
    point_sources : astropy.table.Table or None
        DAOStarFinder sources (None when point catalogs are not requested).
    segments : SegmentationResult or None
        Segmentation map, detection catalog and kernel (None when not requested).
    timings : dict
    """

    total_image: CatalogImage
    total_parameters: object
    phot_mode: str
    background: object
    point_sources: Table | None = None
    segments: object = None
    timings: dict = field(default_factory=dict)
    #: point sources that are features of a brighter neighbour's profile (flag 32 in every
    #: filter, :mod:`hapcore.catalogs.swarm_flags`); None when not evaluated
    point_swarm: np.ndarray | None = None

    @property
    def n_point(self) -> int:
        return 0 if self.point_sources is None else len(self.point_sources)

    @property
    def n_segment(self) -> int:
        return 0 if self.segments is None else len(self.segments.sources)


def catalog_background(image: CatalogImage, cat) -> BackgroundModel:
    """:func:`~hapcore.catalogs.image.compute_background` with the catalog parameters ``cat``."""
    return compute_background(image, nsigma_clip=cat.nsigma_clip, maxiters=cat.maxiters,
                              box_size=cat.bkg_box_size, filter_size=cat.bkg_filter_size,
                              skew_threshold=cat.bkg_skew_threshold,
                              negative_percent=cat.negative_percent, zero_percent=cat.zero_percent,
                              simple_bkg=cat.simple_bkg)


def detect_sources(total_image: CatalogImage, *, total_parameters, phot_mode="both",
                   deblend_limits=None, saturated_xy=None, threads=2) -> SourceDetection:
    """Background, weight regions, point sources and segments of the total image (§6.2-6.4).

    Parameters
    ----------
    total_image : CatalogImage
    total_parameters : ProductParameters
    phot_mode : {"aperture", "segment", "both"}, optional
    deblend_limits : mapping, optional
        Keyword overrides for :func:`~hapcore.catalogs.segment.detect_segments`
        (``max_deblend_segments``, ``max_deblend_area``, ``deblend_time_budget``).
    saturated_xy : (m, 2) array, optional
        Saturated input pixels of every exposure mapped to product pixels (0-based x, y): a
        saturated star that DAOStarFinder missed (its flat core is no star's shape) is added
        to the point sources at its plateau's centre
        (:func:`~hapcore.catalogs.saturated_features.saturated_star_rows`). Or a function
        without arguments that reads them (from the exposures: ~1 s on 3 UVIS exposures).
    threads : int, optional
        With 2 or more the saturated pixels are read and the detection image is prepared
        while the background is computed, and (with ``phot_mode`` "both") the point and
        segment detections run side by side in two threads; their results are the same as one
        after the other.

    Returns
    -------
    SourceDetection
    """
    if phot_mode not in PHOT_MODES:
        raise ValueError(f"phot_mode must be one of {PHOT_MODES}, not {phot_mode!r}")
    cat = total_parameters.catalog
    clock = time.perf_counter()
    if total_image.is_blank:
        log.warning("total image %s is blank (all zero/NaN): empty catalogs",
                    total_image.filename or "(in memory)")
    prepared = {}

    def prepare_inputs():
        prepared["saturated_xy"] = saturated_xy() if callable(saturated_xy) else saturated_xy
        # the detection image: small holes without data filled (the products keep them)
        prepared["image"] = detection_image(total_image)

    def prepare_background():
        prepared["background"] = catalog_background(total_image, cat)

    run_side_by_side([prepare_inputs, prepare_background], threads=threads)
    saturated_xy, background, image = (prepared["saturated_xy"], prepared["background"],
                                       prepared["image"])
    fwhm = cat.tweak_fwhmpsf / total_image.plate_scale
    regions = make_wht_masks(image.weight, image.illuminated, scale=cat.scale,
                             sensitivity=cat.sensitivity, ndrizim=image.ndrizim,
                             rms=background.rms)
    detection = SourceDetection(total_image, total_parameters, phot_mode, background)
    timings = detection.timings
    timings["total_background"] = time.perf_counter() - clock
    log.debug("total image: background %s (median %.4g, rms %.4g), %d weight region(s), kernel "
             "FWHM %.2f px", background.method, background.median, background.rms_value,
             len(regions), fwhm)

    def detect_points():
        clock = time.perf_counter()
        detection.point_sources = _drop_duplicates(detect_point_sources(
            image, background, regions, fwhm_pixels=fwhm, nsigma=cat.nsigma))
        ci = total_parameters.quality.ci_filter.aperture
        # the swarm and PSF-feature tests were tuned on windowed centroids; the PSF-fit ones
        # move their small-aperture CI and tipped borderline IR stars near bright ones into
        # flag 32
        swarm_sources = detection.point_sources
        if "xwindow" in swarm_sources.colnames:
            swarm_sources = swarm_sources.copy(copy_data=False)
            swarm_sources["xcentroid"] = swarm_sources["xwindow"]
            swarm_sources["ycentroid"] = swarm_sources["ywindow"]
        detection.point_swarm = point_swarm(image, background, swarm_sources, cat,
                                            (ci.ci_lower_limit, ci.ci_upper_limit),
                                            saturated_xy=saturated_xy)
        detection.point_sources, detection.point_swarm = _add_saturated_stars(
            image, detection.point_sources, detection.point_swarm, saturated_xy,
            radius=cat.aperture_2 / total_image.plate_scale)
        timings["point_detection"] = time.perf_counter() - clock
        log.info("point catalog: %d sources detected on the total image (%d swarm members, "
                 "flag 32)", len(detection.point_sources),
                 int(detection.point_swarm.sum()) if detection.point_swarm is not None else 0)

    def detect_segmentation():
        clock = time.perf_counter()
        halo_background, inner_halos = _with_saturated_halos(image, background,
                                                             saturated_xy, cat)
        detection.segments = detect_segments(
            image, halo_background, regions, params=cat, fwhm_pixels=fwhm,
            merge_zones=inner_halos, **(deblend_limits or {}))
        timings["segment_detection"] = time.perf_counter() - clock

    branches = [branch for branch, modes in ((detect_points, ("aperture", "both")),
                                             (detect_segmentation, ("segment", "both")))
                if phot_mode in modes]
    run_side_by_side(branches, threads=threads)
    return detection


#: Holes without data enclosed by data and no larger than a disk of this radius (arcsec) are
#: filled in the detection image of an IR product (:mod:`hapcore.catalogs.coverage_holes`): a
#: star's core saturated in every exposure left a one-pixel hole, whose 10-pixel footprint
#: erosion hid the star and cut its halo into four segments (3 x F160W visit: 4 of its 6
#: spurious segment rows).
MAX_HOLE_RADIUS_ARCSEC: float = 1.0
#: Point sources whose refined positions are closer than this (pixels) are one source: two
#: star-finder peaks on one star's noisy (low-weight) core converged to the same position.
DUPLICATE_SEPARATION: float = 0.25


def detection_image(image: CatalogImage) -> CatalogImage:
    """``image`` with its small enclosed holes without data filled, for detection only
    (:func:`~hapcore.catalogs.coverage_holes.fill_coverage_holes`); ``image`` itself when it
    has none.

    IR products only: there DQ saturation is not used (spec §6.7.2) and an empty core is the
    only trace of a saturated star. On UVIS, ACS and WFPC2 the saturated pixels of the inputs
    are known and their stars are handled by
    :mod:`hapcore.catalogs.saturated_features` (added at their plateau centres, their halos
    modelled); filling their holes too moved 7 saturated stars' point rows 0.1-0.15" off
    their centres on the ``saturated`` preset (point spurious 0.69% -> 1.48%) and gained no
    star.
    """
    scale = image.plate_scale
    if image.detector != "IR" or not scale or not np.isfinite(scale) or scale <= 0:
        return image
    return fill_coverage_holes(image, max_radius=MAX_HOLE_RADIUS_ARCSEC / scale)


def _drop_duplicates(sources: Table) -> Table:
    """The point sources without those at the refined position of an earlier (brighter)
    one, ids renumbered 1..N."""
    if sources is None or len(sources) < 2:
        return sources
    from scipy.spatial import cKDTree

    xy = np.column_stack([np.asarray(sources["xcentroid"], float),
                          np.asarray(sources["ycentroid"], float)])
    finite = np.all(np.isfinite(xy), axis=1)
    flux = np.asarray(sources["flux"], float) if "flux" in sources.colnames else np.zeros(len(xy))
    order = np.lexsort((np.arange(len(xy)), -np.nan_to_num(flux, nan=-np.inf)))
    rank = np.empty(len(xy), int)
    rank[order] = np.arange(len(xy))
    pairs = cKDTree(np.where(finite[:, None], xy, 1e12)).query_pairs(DUPLICATE_SEPARATION,
                                                                     output_type="ndarray")
    keep = np.ones(len(xy), bool)
    if len(pairs):
        first = np.where(rank[pairs[:, 0]] < rank[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
        second = pairs[:, 0] + pairs[:, 1] - first
        for k in np.argsort(rank[first], kind="stable"):
            if keep[first[k]]:
                keep[second[k]] = False
    if keep.all():
        return sources
    log.debug("point catalog: %d detection(s) at another's refined position dropped",
              int((~keep).sum()))
    sources = sources[keep]
    sources["id"] = np.arange(1, len(sources) + 1, dtype=sources["id"].dtype)
    return sources


#: Where a saturated star's round halo model exceeds this many times the background rms, the
#: residual lumps of its core and first rings are not sources: their segments are merged into
#: the star's (two-exposure preset: 9 such rows at 0.3-0.6" of 1.7e3-3.6e3 e/s stars, where
#: the model is 10-60 rms).
INNER_HALO_NSIGMA: float = 8.0
#: ... and where it lies within this distance (arcsec) of the star's saturated pixels.
INNER_HALO_RADIUS_ARCSEC: float = 1.0


def _with_saturated_halos(image: CatalogImage, background: BackgroundModel, saturated_xy,
                          cat) -> BackgroundModel:
    """The background of the segmentation: with the saturated stars' round halos
    (:func:`~hapcore.catalogs.saturated_features.saturated_halo_model`) when there are any;
    and the stars' inner halos (model above :data:`INNER_HALO_NSIGMA` times the rms within
    :data:`INNER_HALO_RADIUS_ARCSEC` of saturated pixels; None when there is no halo), whose
    segments are merged into their stars."""
    if saturated_xy is None or not len(saturated_xy) or cat.saturated_feature_nsigma is None:
        return background, None
    halo = saturated_halo_model(image.data, saturated_xy, background=background.background,
                                background_rms=background.rms,
                                max_radius=cat.saturated_feature_radius_arcsec / image.plate_scale)
    if halo is None:
        return background, None
    inner = halo > INNER_HALO_NSIGMA * np.asarray(background.rms, np.float32)
    # a heavily saturated star's model stays that high far out (100-160 px on the saturated
    # preset), where real galaxies are found: only its plateau's surroundings are merged
    zy, zx = np.nonzero(inner)
    if zx.size:
        from scipy.spatial import cKDTree

        sat = np.unique(np.rint(np.atleast_2d(np.asarray(saturated_xy, float))).astype(int),
                        axis=0)
        near, _ = cKDTree(sat).query(np.column_stack([zx, zy]),
                                     distance_upper_bound=INNER_HALO_RADIUS_ARCSEC
                                     / image.plate_scale)
        inner[zy[~np.isfinite(near)], zx[~np.isfinite(near)]] = False
    return (replace(background, background=np.asarray(background.background, np.float32) + halo),
            inner if inner.any() else None)


def _add_saturated_stars(image: CatalogImage, sources: Table, swarm, saturated_xy, *,
                         radius: float):
    """The point sources with the saturated stars DAOStarFinder missed appended (their
    DAOFIND columns NaN, not swarm members)."""
    if saturated_xy is None or not len(saturated_xy):
        return sources, swarm
    x, y = saturated_star_rows(sources["xcentroid"], sources["ycentroid"], saturated_xy,
                               shape=image.shape, radius=radius)
    if not x.size:
        return sources, swarm
    from astropy.table import vstack

    from hapcore.catalogs.point import pixel_to_sky

    ra, dec = pixel_to_sky(image.wcs, x, y)
    added = Table()
    for name in sources.colnames:
        column = sources[name]
        added[name] = np.full(x.size, np.nan if column.dtype.kind == "f" else 0,
                              dtype=column.dtype)
    added["xcentroid"], added["ycentroid"], added["RA"], added["DEC"] = x, y, ra, dec
    start = int(np.max(sources["id"])) if len(sources) else 0
    added["id"] = np.arange(start + 1, start + 1 + x.size, dtype=sources["id"].dtype)
    log.info("point catalog: %d saturated star(s) missed by the star finder added at their "
             "plateau centres", x.size)
    merged = vstack([sources, added], metadata_conflicts="silent")
    for name in sources.colnames:
        merged[name].format = sources[name].format
    if swarm is not None:
        swarm = np.concatenate([np.asarray(swarm, bool), np.zeros(x.size, bool)])
    return merged, swarm


def load_total_detection(total, *, output_dir, phot_mode="both",
                         deblend_limits=None, threads=2) -> SourceDetection:
    """Read a total product from ``output_dir`` and run :func:`detect_sources` on it
    (``threads`` >= 2: the saturated pixels of the exposures are read beside the background's
    computation)."""
    if total.parameters is None:
        raise ValueError(f"{total.product_basename}: parameters are not set")
    image = CatalogImage.from_fits(Path(output_dir) / total.drizzle_filename)

    def read_saturation():
        # the IR detector's saturation is not flagged (spec §6.7.2)
        if total.detector == "ir":
            return None
        from hapcore.catalogs.saturation import saturated_product_pixels

        copies = [Path(output_dir) / e.full_filename for e in total.edp_list
                  if (Path(output_dir) / e.full_filename).exists()]
        return saturated_product_pixels(copies, image.wcs)

    # read by `detect_sources` while it computes the background
    return detect_sources(image, total_parameters=total.parameters, phot_mode=phot_mode,
                          deblend_limits=deblend_limits, saturated_xy=read_saturation,
                          threads=threads)


# ---------------------------------------------------------------------------- detection files

def _put_map(arrays: dict, key: str, values) -> None:
    """A constant broadcast view (a constant background) as its one value, else the array."""
    values = np.asarray(values)
    if values.ndim and values.size and not any(values.strides):
        arrays[key] = np.array(values.flat[0])        # 0-d, same dtype
    else:
        arrays[key] = np.ascontiguousarray(values)


def _get_map(arrays, key: str, shape) -> np.ndarray:
    values = arrays[key]
    return np.broadcast_to(values, shape) if values.ndim == 0 else values


def _put_background(arrays: dict, name: str, model: BackgroundModel) -> dict:
    _put_map(arrays, f"bkg.{name}.background", model.background)
    _put_map(arrays, f"bkg.{name}.rms", model.rms)
    arrays[f"bkg.{name}.scalars"] = np.array(
        [model.median, model.rms_value, model.skew, model.sigma_clipped_rms], dtype=np.float64)
    return {"method": model.method}


def _get_background(arrays, name: str, spec: dict, shape) -> BackgroundModel:
    median, rms_value, skew, clipped_rms = (float(v) for v in arrays[f"bkg.{name}.scalars"])
    return BackgroundModel(_get_map(arrays, f"bkg.{name}.background", shape),
                           _get_map(arrays, f"bkg.{name}.rms", shape), median, rms_value,
                           spec["method"], skew, clipped_rms)


def _put_table(arrays: dict, name: str, table: Table) -> list:
    columns = []
    for k, column in enumerate(table.itercols()):
        if column.unit is not None:
            raise ValueError(f"detection table {name}: column {column.name} has a unit")
        arrays[f"{name}.{k}"] = np.asarray(column)
        columns.append([column.name, column.info.format])
    return columns


def _get_table(arrays, name: str, columns: list) -> Table:
    table = Table()
    for k, (column, fmt) in enumerate(columns):
        table[column] = arrays[f"{name}.{k}"]
        if fmt is not None:
            table[column].format = fmt
    return table


def _compact_labels(data: np.ndarray) -> np.ndarray:
    """Segmentation labels in the smallest unsigned type (the map compresses better)."""
    top = int(data.max()) if data.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return data.astype(dtype)
    return data


def save_detection(detection: SourceDetection, path) -> Path:
    """Write the parts of a detection that cannot be re-read from the total product.

    A compressed ``.npz`` written atomically (:func:`hapcore.atomic.atomic_output`): the point
    sources and swarm members, the background model (its value when constant, else its maps),
    the segmentation map (labels in the smallest integer type), the segment sources, the kernel,
    the convolved image (uncompressed), the threshold and notes. Read it with :func:`load_detection`.

    Returns
    -------
    pathlib.Path
    """
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"version": _FILE_VERSION, "phot_mode": detection.phot_mode,
                  "shape": list(detection.total_image.shape), "timings": detection.timings,
                  "background": _put_background(arrays, "detection", detection.background),
                  "point": None, "segments": None}
    if detection.point_sources is not None:
        meta["point"] = _put_table(arrays, "point", detection.point_sources)
    if detection.point_swarm is not None:
        arrays["point_swarm"] = np.asarray(detection.point_swarm)
    seg = detection.segments
    if seg is not None:
        spec = {"sources": _put_table(arrays, "segments.sources", seg.sources),
                "nsigma": float(seg.nsigma), "is_big_island": bool(seg.is_big_island),
                "notes": list(seg.notes), "map_dtype": None,
                "background": "detection" if seg.background is detection.background else None}
        if spec["background"] is None:
            spec["background"] = _put_background(arrays, "segments", seg.background)
        if seg.segm is not None:
            spec["map_dtype"] = np.asarray(seg.segm.data).dtype.str
            arrays["segments.map"] = _compact_labels(np.asarray(seg.segm.data))
            arrays["segments.kernel"] = np.asarray(seg.kernel)
            if seg.convolved is not None:
                # stored, not compressed: reading it back is ~10 times faster than convolving
                # the total image again in every filter task (noise does not compress)
                arrays["segments.convolved"] = np.asarray(seg.convolved)
        meta["segments"] = spec
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        _savez_fast(handle, arrays)
    return Path(path)


#: Members of a detection file written without compression.
_STORED_MEMBERS = frozenset({"segments.convolved"})


def _savez_fast(handle, arrays: dict) -> None:
    """``np.savez_compressed`` at zlib level 1: the same ``.npz`` content (:func:`np.load`
    reads it), written in half the time (level 6 spent ~0.5 s on the segmentation map); the
    members of ``_STORED_MEMBERS`` are stored as they are."""
    import zipfile

    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1,
                         allowZip64=True) as archive:
        for key, value in arrays.items():
            # a member named by a string takes the archive's current compression
            archive.compression = (zipfile.ZIP_STORED if key in _STORED_MEMBERS
                                   else zipfile.ZIP_DEFLATED)
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _segment_catalog(image: CatalogImage, segm, background: BackgroundModel, kernel, sx,
                     convolved=None):
    """The convolved image (``convolved`` when stored) and detection catalog of a segmentation
    map, exactly as :func:`~hapcore.catalogs.segment.detect_segments` makes them."""
    from photutils.segmentation import SourceCatalog

    from hapcore.catalogs.segment import _convolve

    residual = subtract_background(image.data, background.background)
    if convolved is None:
        convolved = _convolve(residual, kernel)
    catalog = SourceCatalog(residual, segm, convolved_data=convolved,
                            background=np.asarray(background.background, dtype=np.float32),
                            wcs=image.wcs, kron_params=(sx.kron_scaling_radius,
                                                        sx.kron_minimum_radius))
    return convolved, catalog


def load_detection(path, total_image: CatalogImage, *, total_parameters,
                   segment_catalog=True) -> SourceDetection:
    """The detection written by :func:`save_detection`, on its total image.

    Parameters
    ----------
    path : path-like
    total_image : CatalogImage
        The total product the detection was made on.
    total_parameters : ProductParameters
        Of the total product (the same as at detection).
    segment_catalog : bool, optional
        False leaves the detection catalog of the segments out (None): only the filter
        measurements need it. True rebuilds it on the total image and keeps only the values
        the filter catalogs take from it
        (:func:`~hapcore.catalogs.detection_catalog.freeze_detection_catalog`); the convolved
        image is read (or convolved again) for it, and not kept.

    Returns
    -------
    SourceDetection
        Equal to the saved one, but for ``segments.convolved`` (None) and the detection
        catalog (rebuilt on ``total_image`` with the convolved image read back, or convolved
        again from a file without it; then frozen).
    """
    from photutils.segmentation import SegmentationImage

    with np.load(path, allow_pickle=False) as stored:
        # the convolved image only when the segments' catalog is rebuilt
        arrays = {key: stored[key] for key in stored.files
                  if segment_catalog or key != "segments.convolved"}
    meta = json.loads(str(arrays["meta"]))
    if meta.get("version") != _FILE_VERSION:
        raise ValueError(f"{path}: detection file version {meta.get('version')}, expected "
                         f"{_FILE_VERSION}")
    shape = tuple(total_image.shape)
    if tuple(meta["shape"]) != shape:
        raise ValueError(f"{path}: detection of a {tuple(meta['shape'])} image, the total image "
                         f"is {shape}")
    background = _get_background(arrays, "detection", meta["background"], shape)
    detection = SourceDetection(total_image, total_parameters, meta["phot_mode"], background,
                                timings=dict(meta["timings"]))
    if meta["point"] is not None:
        detection.point_sources = _get_table(arrays, "point", meta["point"])
    if "point_swarm" in arrays:
        detection.point_swarm = arrays["point_swarm"]
    spec = meta["segments"]
    if spec is not None:
        bkg = (background if spec["background"] == "detection"
               else _get_background(arrays, "segments", spec["background"], shape))
        sources = _get_table(arrays, "segments.sources", spec["sources"])
        segm = catalog = convolved = kernel = None
        if spec["map_dtype"] is not None:
            segm = SegmentationImage(arrays["segments.map"].astype(np.dtype(spec["map_dtype"])))
            kernel = arrays["segments.kernel"]
            if segment_catalog:
                convolved, catalog = _segment_catalog(
                    detection_image(total_image), segm, bkg, kernel,
                    total_parameters.catalog.sourcex, arrays.pop("segments.convolved", None))
                # the filter catalogs take only the catalog's properties: its two full-frame
                # arrays go before any filter image is read
                catalog = freeze_detection_catalog(catalog)
                convolved = None
        detection.segments = SegmentationResult(segm, sources, catalog, convolved, kernel,
                                                spec["nsigma"], bkg,
                                                is_big_island=spec["is_big_island"],
                                                notes=list(spec["notes"]))
    return detection
