"""The quality checks of spec §7, one function per check, each writing one JSON file.

Every check takes the product first and a :class:`QualityContext` (output directory, shared
timestamp, thresholds, reference catalog, image cache) and returns a
:class:`~hap_models.quality.CheckOutcome`. Checks raise on bad input (missing or empty
catalogs, unreadable files); :func:`hapcore.quality.stage.run_quality_analysis` isolates them, so a
raising check is recorded as ``error`` and the run goes on.

Differences from drizzlepac (spec §12):

* No network query: the reference-catalog checks use the catalog alignment used (a
  :class:`~hapcore.align.refcat.ReferenceCatalog`, fetched once per visit from the local provider).
  No ``footprint.reg`` is written into the working directory.
* ``report_wcs`` opens the SVM copies read-only and reads the alternate WCSs directly
  (drizzlepac archives/restores/deletes alternate keys in the FLT files).
* Point/segment and inter-filter matching use :func:`hapcore.align.match.match_sources`
  (offset histogram with a rotation search, then tolerance matching); no temporary catalog
  files are written.
* Besides the descriptive figures, each check reports pass/fail against
  :class:`~hap_models.quality.QualityThresholds` for our summary (``done`` when descriptive).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy import ndimage
from scipy.spatial import cKDTree

from hap_models.catalogs import FILL_VALUE
from hap_models.quality import CheckOutcome, QualityThresholds
from hapcore.align.match import match_sources
from hapcore.catalogs.image import CatalogImage
from hapcore.quality.report import DiagnosticDocument, QualityTimestamp

__all__ = [
    "QualityContext",
    "read_catalog",
    "separation_statistics",
    "tangent_plane_arcsec",
    "reference_sources_in_image",
    "match_point_segment",
    "check_num_sources",
    "check_reference_sources",
    "check_point_segment_crossmatch",
    "check_reference_distribution",
    "check_photometry",
    "check_interfilter_crossmatch",
    "check_wcs_report",
    "json_stem",
]

log = logging.getLogger("hapsvm")


@dataclass
class QualityContext:
    """What every check of one run shares.

    Attributes
    ----------
    output_dir : pathlib.Path
        Where the products are and the quality files go.
    timestamp : QualityTimestamp
        One generation time for every file.
    thresholds : QualityThresholds
    reference_catalog : hapcore.align.refcat.ReferenceCatalog or None
        The catalog alignment used, already covering the visit (never re-queried).
    make_plots : bool
        Write PNG plots next to the JSON files.
    """

    output_dir: Path
    timestamp: QualityTimestamp = field(default_factory=QualityTimestamp.now)
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    reference_catalog: object | None = None
    make_plots: bool = True
    _images: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)

    def image(self, product) -> CatalogImage:
        """The drizzled product of ``product`` (read once per run)."""
        path = self.output_dir / product.drizzle_filename
        if path not in self._images:
            self._images[path] = CatalogImage.from_fits(path)
        return self._images[path]

    def relative(self, path) -> str:
        """``path`` relative to the output directory (as the JSON files reference it)."""
        try:
            return str(Path(path).relative_to(self.output_dir))
        except ValueError:
            return str(path)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def json_stem(drizzle_filename: str) -> str:
    """``<drizzle file name minus its last 9 characters>`` (``_drc.fits``), spec §7."""
    return drizzle_filename[:-9]


def read_catalog(path) -> Table:
    """Read an ECSV catalog; float fill values (-9999) become NaN.

    Raises
    ------
    FileNotFoundError
    ValueError
        If the catalog has no rows.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"catalog {path.name} does not exist")
    table = Table.read(path, format="ascii.ecsv")
    if len(table) == 0:
        raise ValueError(f"catalog {path.name} is empty")
    for name in table.colnames:
        if table[name].dtype.kind == "f":
            values = np.array(table[name], dtype=float)
            values[values == FILL_VALUE] = np.nan
            table[name] = values
    return table


def tangent_plane_arcsec(ra, dec, ra0, dec0) -> np.ndarray:
    """Gnomonic projection of (ra, dec) about (ra0, dec0), as an (N, 2) array in arcsec."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    ra0, dec0 = np.radians(ra0), np.radians(dec0)
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return np.degrees(np.column_stack([xi, eta])) * 3600.0


def separation_statistics(values) -> dict[str, float]:
    """Non-clipped min/max/mean/median/std and 3x3 sigma-clipped mean/median/std."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite values to summarise")
    mean, median, std = sigma_clipped_stats(values, sigma=3, maxiters=3)
    return {"Non-clipped minimum": float(values.min()), "Non-clipped maximum": float(values.max()),
            "Non-clipped mean": float(values.mean()), "Non-clipped median": float(np.median(values)),
            "Non-clipped standard deviation": float(values.std()),
            "3x3 sigma-clipped mean": float(mean), "3x3 sigma-clipped median": float(median),
            "3x3 sigma-clipped standard deviation": float(std)}


def _document(product, ctx: QualityContext, *, filename: str, description: str,
              primary_header=None) -> DiagnosticDocument:
    if primary_header is None:
        primary_header = ctx.image(product).primary_header
    return DiagnosticDocument(primary_header, filename=filename, filter_name=product.filters,
                              description=description, timestamp=ctx.timestamp)


def _plot(ctx: QualityContext, outcome: CheckOutcome, func, *args, **kwargs) -> None:
    """Run a plot function; a plotting failure is logged and noted, never fatal."""
    if not ctx.make_plots:
        return
    try:
        path = func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a plot must not fail the check
        log.warning("%s %s: plot failed: %s: %s", outcome.check, outcome.product,
                    type(exc).__name__, exc)
        outcome.message = (outcome.message + "; " if outcome.message else "") + \
            f"plot failed: {type(exc).__name__}: {exc}"
        return
    if path is not None:
        outcome.files.append(ctx.relative(path))


# --------------------------------------------------------------------------------------------
# 1. number of sources
# --------------------------------------------------------------------------------------------

def check_num_sources(total, ctx: QualityContext) -> CheckOutcome:
    """Number of sources of the total point and segment catalogs (``_svm_num_sources.json``).

    Reads the ``Number of sources`` metadata of both ECSV files (a catalog may be empty).
    Passes when each has at least ``thresholds.min_total_sources``.
    """
    counts = {}
    for kind, name in (("point", total.point_cat_filename),
                       ("segment", total.segment_cat_filename)):
        path = ctx.output_dir / name
        if not path.exists():
            raise FileNotFoundError(f"catalog {name} does not exist")
        table = Table.read(path, format="ascii.ecsv")
        counts[kind] = int(table.meta.get("Number of sources", len(table)))
    item = {"detector": total.detector.upper(), **counts}
    doc = _document(total, ctx, filename=total.drizzle_filename,
                    description="Number of sources in the total point and segment catalogs")
    doc.add_item("number_of_sources", item, description="Number of detected sources",
                 descriptions={"detector": "Detector", "point": "Point catalog sources",
                               "segment": "Segment catalog sources"},
                 units={"detector": "unitless", "point": "unitless", "segment": "unitless"})
    path = doc.write(ctx.output_dir / f"{json_stem(total.drizzle_filename)}_svm_num_sources.json")
    low = [k for k, n in counts.items() if n < ctx.thresholds.min_total_sources]
    return CheckOutcome(
        check="num_sources", product=total.product_basename,
        status="failed" if low else "passed",
        message=(f"{', '.join(low)} catalog below {ctx.thresholds.min_total_sources} sources"
                 if low else ""),
        files=[ctx.relative(path)], metrics=counts)


# --------------------------------------------------------------------------------------------
# 2. reference ("GAIA") sources in each footprint
# --------------------------------------------------------------------------------------------

def _reference_table(ctx: QualityContext) -> Table:
    if ctx.reference_catalog is None:
        raise LookupError("no reference catalog")
    return ctx.reference_catalog.table


def reference_sources_in_image(table: Table, wcs, weight) -> tuple[Table, np.ndarray]:
    """Reference rows falling on pixels with non-zero weight.

    Returns
    -------
    rows : Table
        RA, DEC, mag of the rows kept.
    xy : (N, 2) ndarray
        Their 0-based pixel positions.
    """
    if len(table) == 0:
        return Table({"RA": [], "DEC": [], "mag": []}), np.zeros((0, 2))
    x, y = wcs.all_world2pix(np.asarray(table["RA"], float), np.asarray(table["DEC"], float), 0)
    ny, nx = weight.shape
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    inside = np.isfinite(x) & np.isfinite(y) & (ix >= 0) & (iy >= 0) & (ix < nx) & (iy < ny)
    keep = np.zeros(len(table), bool)
    keep[inside] = weight[iy[inside], ix[inside]] > 0
    mag = table["mag"] if "mag" in table.colnames else np.full(len(table), np.nan)
    rows = Table({"RA": np.asarray(table["RA"], float)[keep],
                  "DEC": np.asarray(table["DEC"], float)[keep],
                  "mag": np.asarray(mag, float)[keep]})
    rows["RA"].unit = rows["DEC"].unit = "deg"
    return rows, np.column_stack([x[keep], y[keep]])


def _exposure_reference_rows(table: Table, path: Path) -> Table:
    """Reference rows on any chip of an SVM copy (opened read-only)."""
    from hapcore.wcs.files import read_chip_wcs

    keep = np.zeros(len(table), bool)
    ra, dec = np.asarray(table["RA"], float), np.asarray(table["DEC"], float)
    for wcs in read_chip_wcs(path).values():
        nx, ny = wcs.pixel_shape
        x, y = wcs.all_world2pix(ra, dec, 0, quiet=True)
        keep |= np.isfinite(x) & (x >= -0.5) & (y >= -0.5) & (x < nx - 0.5) & (y < ny - 0.5)
    mag = table["mag"] if "mag" in table.colnames else np.full(len(table), np.nan)
    return Table({"RA": ra[keep], "DEC": dec[keep], "mag": np.asarray(mag, float)[keep]})


def check_reference_sources(product, ctx: QualityContext) -> CheckOutcome:
    """Reference-catalog sources on a product's footprint (``_svm_gaia_sources.json``).

    Total and filter products: sources on non-zero WHT pixels; exposures: sources on any chip
    of the SVM copy (read-only). The total product passes with at least
    ``thresholds.min_reference_sources``; the others are descriptive.
    """
    table = _reference_table(ctx)
    catalog_name = getattr(ctx.reference_catalog, "name", "")
    is_exposure = product.haplevel == 1
    if is_exposure:
        path = ctx.output_dir / product.full_filename
        rows = _exposure_reference_rows(table, path)
        with fits.open(path, mode="readonly", memmap=False) as hdul:
            header = hdul[0].header.copy()
        filename = product.full_filename
    else:
        image = ctx.image(product)
        rows, _ = reference_sources_in_image(table, image.wcs, image.weight)
        header, filename = image.primary_header, product.drizzle_filename
    doc = _document(product, ctx, filename=filename, primary_header=header,
                    description=f"{catalog_name} reference sources on the footprint")
    doc.add_item("GAIA sources", rows, description=f"{catalog_name} sources on the footprint",
                 descriptions={"RA": "Right ascension", "DEC": "Declination",
                               "mag": "Catalog magnitude"},
                 units={"RA": "degrees", "DEC": "degrees", "mag": "unitless"})
    doc.add_item("Number of GAIA sources", {"Number of GAIA sources": len(rows),
                                            "catalog": catalog_name},
                 description="Number of reference sources on the footprint",
                 descriptions={"Number of GAIA sources": "Number of reference sources",
                               "catalog": "Reference catalog name"},
                 units={"Number of GAIA sources": "unitless", "catalog": "unitless"})
    stem = product.product_basename if is_exposure else json_stem(product.drizzle_filename)
    path = doc.write(ctx.output_dir / f"{stem}_svm_gaia_sources.json")
    n = len(rows)
    if product.haplevel == 2 and product.filters == "total":
        status = "passed" if n >= ctx.thresholds.min_reference_sources else "failed"
        message = "" if status == "passed" else \
            f"{n} reference sources < {ctx.thresholds.min_reference_sources}"
    else:
        status, message = "done", ""
    return CheckOutcome(check="gaia_sources", product=product.product_basename, status=status,
                        message=message, files=[ctx.relative(path)],
                        metrics={"n_reference_sources": n, "catalog": catalog_name})


# --------------------------------------------------------------------------------------------
# 4. point vs segment cross-match, 6. photometry
# --------------------------------------------------------------------------------------------

@dataclass
class PointSegmentMatch:
    """Point and segment catalogs of a filter product and their matched rows."""

    point: Table
    segment: Table
    point_index: np.ndarray
    segment_index: np.ndarray
    separation_arcsec: np.ndarray


def match_point_segment(fdp, ctx: QualityContext) -> PointSegmentMatch:
    """Match the point and segment catalogs of a filter product on the sky.

    Raises
    ------
    ValueError
        If a catalog is empty or nothing matches.
    """
    point = read_catalog(ctx.output_dir / fdp.point_cat_filename)
    segment = read_catalog(ctx.output_dir / fdp.segment_cat_filename)
    image = ctx.image(fdp)
    ra0, dec0 = image.wcs.wcs.crval
    scale = image.plate_scale
    p_xy = tangent_plane_arcsec(point["RA"], point["DEC"], ra0, dec0)
    s_xy = tangent_plane_arcsec(segment["RA"], segment["DEC"], ra0, dec0)
    ok_p, ok_s = np.all(np.isfinite(p_xy), axis=1), np.all(np.isfinite(s_xy), axis=1)
    ip, is_ = np.flatnonzero(ok_p), np.flatnonzero(ok_s)
    match = match_sources(s_xy[is_], p_xy[ip], searchrad=10 * scale, tolerance=1.0 * scale,
                          max_rotation_deg=0.0)
    if len(match) == 0:
        raise ValueError(f"{fdp.product_basename}: no point/segment cross-matches")
    pi, si = ip[match.ref_index], is_[match.src_index]
    sep = np.hypot(*(p_xy[pi] - s_xy[si]).T)
    return PointSegmentMatch(point, segment, pi, si, sep)


def _magnitude_table(table: Table, index, extra=None) -> Table:
    out = Table({"RA": np.asarray(table["RA"], float)[index],
                 "DEC": np.asarray(table["DEC"], float)[index]})
    if extra is not None:
        out["Separation"] = extra
    for name in ("MagAp1", "MagAp2"):
        out[name] = np.asarray(table[name], float)[index]
    return out


def _delta_photometry(match: PointSegmentMatch) -> dict[str, dict[str, float]]:
    out = {}
    for name in ("MagAp1", "MagAp2"):
        diff = (np.asarray(match.point[name], float)[match.point_index]
                - np.asarray(match.segment[name], float)[match.segment_index])
        diff = diff[np.isfinite(diff)]
        if diff.size == 0:
            out[name] = {"Mean": None, "StdDev": None, "Median": None}
        else:
            out[name] = {"Mean": float(diff.mean()), "StdDev": float(diff.std()),
                         "Median": float(np.median(diff))}
    return out


def check_point_segment_crossmatch(fdp, ctx: QualityContext) -> CheckOutcome:
    """Point vs segment catalog cross-match (``_svm_point_segment_crossmatch.json``).

    Passes when matches / shorter catalog >= ``min_point_segment_match_fraction`` and the
    |clipped mean separation| <= ``max_point_segment_separation_arcsec``.
    """
    match = match_point_segment(fdp, ctx)
    n_match = len(match.point_index)
    stats = separation_statistics(match.separation_arcsec)
    doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                    description="Point vs segment catalog cross-match")
    details = {"point catalog filename": fdp.point_cat_filename,
               "segment catalog filename": fdp.segment_cat_filename,
               "point catalog length": len(match.point),
               "segment catalog length": len(match.segment),
               "number of cross-matches": n_match,
               "point frame": "RA/DEC (tangent plane about CRVAL)",
               "segment frame": "RA/DEC (tangent plane about CRVAL)"}
    doc.add_item("Cross-match details", details, description="Cross-match details",
                 descriptions={k: k for k in details}, units={k: "unitless" for k in details})
    doc.add_item("Cross-matched point catalog", _magnitude_table(match.point, match.point_index),
                 description="Cross-matched point catalog",
                 units={"RA": "degrees", "DEC": "degrees", "MagAp1": "ABMag", "MagAp2": "ABMag"})
    doc.add_item("Cross-matched segment catalog",
                 _magnitude_table(match.segment, match.segment_index, match.separation_arcsec),
                 description="Cross-matched segment catalog",
                 units={"RA": "degrees", "DEC": "degrees", "Separation": "arcseconds",
                        "MagAp1": "ABMag", "MagAp2": "ABMag"})
    doc.add_item("Segment - point on-sky separation statistics", stats,
                 description="Segment - point on-sky separation statistics",
                 descriptions={k: k for k in stats}, units={k: "arcseconds" for k in stats})
    delta = _delta_photometry(match)
    doc.add_item("Delta_Photometry", delta, description="Point - segment magnitude differences",
                 units={"MagAp1": "ABMag", "MagAp2": "ABMag"})
    path = doc.write(ctx.output_dir
                     / f"{json_stem(fdp.drizzle_filename)}_svm_point_segment_crossmatch.json")
    fraction = n_match / max(1, min(len(match.point), len(match.segment)))
    clipped = stats["3x3 sigma-clipped mean"]
    th = ctx.thresholds
    problems = []
    if fraction < th.min_point_segment_match_fraction:
        problems.append(f"match fraction {fraction:.3f} < {th.min_point_segment_match_fraction}")
    if abs(clipped) > th.max_point_segment_separation_arcsec:
        problems.append(f"clipped mean separation {clipped:.4f}\" > "
                        f"{th.max_point_segment_separation_arcsec}\"")
    return CheckOutcome(check="point_segment_crossmatch", product=fdp.product_basename,
                        status="failed" if problems else "passed", message="; ".join(problems),
                        files=[ctx.relative(path)],
                        metrics={"n_matches": n_match, "match_fraction": round(fraction, 4),
                                 "clipped_mean_separation_arcsec": clipped})


def check_photometry(fdp, ctx: QualityContext) -> CheckOutcome:
    """Point - segment photometry of matched sources (``<ipppss>_<det>_svm_<filter>_photometry``).

    Passes when |median difference| of MagAp1 and MagAp2 <= ``max_point_segment_delta_mag``.
    """
    match = match_point_segment(fdp, ctx)
    delta = _delta_photometry(match)
    doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                    description="Point - segment photometry of matched sources")
    for name, values in delta.items():
        doc.add_item(f"{name} delta", values, description=f"Point - segment {name}",
                     descriptions={"Mean": "mean", "StdDev": "standard deviation",
                                   "Median": "median"},
                     units={k: "ABMag" for k in values})
    path = doc.write(ctx.output_dir / f"{fdp.exposure_name}_{fdp.detector}_svm_{fdp.filters}"
                                      f"_photometry.json")
    outcome = CheckOutcome(check="photometry", product=fdp.product_basename, status="passed",
                           files=[ctx.relative(path)],
                           metrics={f"median_delta_{k}": v["Median"] for k, v in delta.items()})
    limit = ctx.thresholds.max_point_segment_delta_mag
    bad = [k for k, v in delta.items() if v["Median"] is None or abs(v["Median"]) > limit]
    if bad:
        outcome.status = "failed"
        outcome.message = f"|median point - segment| of {', '.join(bad)} > {limit} mag"
    from hapcore.quality.plots import plot_photometry_differences

    _plot(ctx, outcome, plot_photometry_differences, match.point, match.segment,
          match.point_index, match.segment_index,
          ctx.output_dir / f"{json_stem(fdp.drizzle_filename)}_svm_photometry.png",
          title=fdp.product_basename)
    return outcome


# --------------------------------------------------------------------------------------------
# 5. reference-catalog distribution
# --------------------------------------------------------------------------------------------

def check_reference_distribution(fdp, ctx: QualityContext) -> CheckOutcome:
    """Distribution of the reference sources on a filter product
    (``_svm_gaia_distribution_characterization.json``; descriptive).

    Raises
    ------
    ValueError
        Fewer than 2 reference sources on the footprint.
    """
    table = _reference_table(ctx)
    image = ctx.image(fdp)
    rows, xy = reference_sources_in_image(table, image.wcs, image.weight)
    if len(rows) < 2:
        raise ValueError(f"{fdp.product_basename}: {len(rows)} reference sources on the "
                         "footprint (need 2)")
    crpix = np.asarray(image.wcs.wcs.crpix, float) - 1.0  # 0-based
    centroid = xy.mean(axis=0)
    dist, _ = cKDTree(xy).query(xy, k=2)
    nn = dist[:, 1]
    values = {"X centroid": float(centroid[0]), "Y centroid": float(centroid[1]),
              "X offset": float(centroid[0] - crpix[0]),
              "Y offset": float(centroid[1] - crpix[1]),
              "X standard deviation": float(xy[:, 0].std()),
              "Y standard deviation": float(xy[:, 1].std()),
              "Minimum neighbor distance": float(nn.min()),
              "Maximum neighbor distance": float(nn.max()),
              "Mean neighbor distance": float(nn.mean()),
              "Standard deviation of neighbor distances": float(nn.std())}
    doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                    description="Reference-catalog source distribution on the footprint")
    doc.add_item("distribution characterization statistics", values,
                 description="Centroid, spread and nearest-neighbour distances of the "
                             "reference sources (0-based pixels; offsets from CRPIX)",
                 descriptions={k: k for k in values}, units={k: "pixels" for k in values})
    path = doc.write(ctx.output_dir / f"{json_stem(fdp.drizzle_filename)}"
                                      f"_svm_gaia_distribution_characterization.json")
    return CheckOutcome(check="gaia_distribution", product=fdp.product_basename, status="done",
                        files=[ctx.relative(path)],
                        metrics={"n_reference_sources": len(rows),
                                 "mean_neighbor_distance_px": values["Mean neighbor distance"]})


# --------------------------------------------------------------------------------------------
# 7. inter-filter cross-match
# --------------------------------------------------------------------------------------------

def _find_stars(image: CatalogImage, *, nsigma: float, fwhm_px: float) -> np.ndarray:
    """DAOStarFinder positions (0-based x, y) on a filter image; zero pixels dilated by 10 px
    are excluded."""
    from photutils.detection import DAOStarFinder

    data = np.nan_to_num(np.asarray(image.data, float), nan=0.0)
    zero = ndimage.binary_dilation(data == 0, iterations=10)
    good = data[~zero]
    if good.size == 0:
        return np.zeros((0, 2))
    _, median, rms = sigma_clipped_stats(good, sigma=3, maxiters=5)
    finder = DAOStarFinder(threshold=nsigma * max(rms, 1e-12), fwhm=fwhm_px)
    sources = finder(data - median, mask=zero)
    if sources is None or len(sources) == 0:
        return np.zeros((0, 2))
    return np.column_stack([np.asarray(sources["xcentroid"], float),
                            np.asarray(sources["ycentroid"], float)])


def _interfilter_settings(fdp, image, thresholds):
    params = getattr(fdp, "parameters", None)
    nsigma = thresholds.interfilter_nsigma
    fwhm_arcsec = 0.076
    try:
        nsigma = float(params.alignment.generate_source_catalogs.nsigma)
    except AttributeError:
        pass
    try:
        fwhm_arcsec = float(params.catalog.tweak_fwhmpsf)
    except AttributeError:
        pass
    return nsigma, max(fwhm_arcsec / image.plate_scale, 1.0)


def check_interfilter_crossmatch(total, ctx: QualityContext) -> list[CheckOutcome]:
    """Cross-match of the filter images (``<comparison>_svm_interfilter_crossmatch.json``).

    Stars are found on every filter image (DAOStarFinder), the filter with most sources is the
    reference, every other filter's positions are transformed into the reference frame through
    the sky and matched. Each comparison filter passes with at least
    ``min_interfilter_matches`` matches and |clipped mean offset| <= ``max_interfilter_offset_px``
    per axis.

    Raises
    ------
    ValueError
        Fewer than 2 filter products.
    """
    if len(total.fdp_list) < 2:
        raise ValueError(f"{total.product_basename}: inter-filter cross-match needs >= 2 "
                         f"filters, have {len(total.fdp_list)}")
    found = {}
    for fdp in total.fdp_list:
        image = ctx.image(fdp)
        nsigma, fwhm = _interfilter_settings(fdp, image, ctx.thresholds)
        found[fdp.filters] = (fdp, image, _find_stars(image, nsigma=nsigma, fwhm_px=fwhm))
    ref_name = max(found, key=lambda k: len(found[k][2]))
    ref_fdp, ref_image, ref_xy = found[ref_name]
    outcomes = []
    th = ctx.thresholds
    for name, (fdp, image, xy) in found.items():
        if name == ref_name:
            continue
        outcome = CheckOutcome(check="interfilter_crossmatch", product=fdp.product_basename,
                               status="passed")
        try:
            ra, dec = image.wcs.all_pix2world(xy[:, 0], xy[:, 1], 0) if len(xy) else ([], [])
            comp_xy = (np.column_stack(ref_image.wcs.all_world2pix(ra, dec, 0)) if len(xy)
                       else np.zeros((0, 2)))
            match = match_sources(comp_xy, ref_xy, searchrad=10.0, tolerance=1.0,
                                  max_rotation_deg=0.0)
            if len(match) == 0:
                raise ValueError(f"no matches between {ref_name} and {name}")
            r_xy, c_xy = ref_xy[match.ref_index], comp_xy[match.src_index]
            dx, dy = c_xy[:, 0] - r_xy[:, 0], c_xy[:, 1] - r_xy[:, 1]
            sx, sy = separation_statistics(dx), separation_statistics(dy)
            n = len(match)
            details = {"reference image": ref_fdp.drizzle_filename,
                       "comparison image": fdp.drizzle_filename,
                       "reference catalog length": len(ref_xy),
                       "comparison catalog length": len(xy),
                       "number of cross-matches": n,
                       "percent of all identified reference sources crossmatched":
                           100.0 * n / max(1, len(ref_xy)),
                       "percent of all identified comparison sources crossmatched":
                           100.0 * n / max(1, len(xy)),
                       "reference image platescale": ref_image.plate_scale}
            doc = _document(fdp, ctx, filename=fdp.drizzle_filename,
                            description="Inter-filter cross-match in the reference frame")
            doc.add_item("Interfilter cross-match details", details,
                         description="Inter-filter cross-match details",
                         descriptions={k: k for k in details},
                         units={k: ("arcseconds/pixel" if "platescale" in k else "unitless")
                                for k in details})
            doc.add_item("Interfilter cross-matched reference catalog",
                         Table({"xcentroid_ref": r_xy[:, 0], "ycentroid_ref": r_xy[:, 1]}),
                         description="Matched reference positions", units={"": "pixels"})
            doc.add_item("Interfilter cross-matched comparison catalog",
                         Table({"xcentroid_comp": c_xy[:, 0], "ycentroid_comp": c_xy[:, 1]}),
                         description="Matched comparison positions (reference frame)",
                         units={"": "pixels"})
            doc.add_item("Interfilter cross-matched X axis statistics", sx,
                         description="Comparison - reference X", units={k: "pixels" for k in sx})
            doc.add_item("Interfilter cross-matched Y axis statistics", sy,
                         description="Comparison - reference Y", units={k: "pixels" for k in sy})
            doc.add_item("Interfilter cross-matched separations",
                         Table({"X separation": dx, "Y separation": dy,
                                "separation": np.hypot(dx, dy)}),
                         description="Comparison - reference separations",
                         units={"": "pixels"})
            path = doc.write(ctx.output_dir / f"{json_stem(fdp.drizzle_filename)}"
                                              f"_svm_interfilter_crossmatch.json")
            outcome.files.append(ctx.relative(path))
            mx, my = sx["3x3 sigma-clipped mean"], sy["3x3 sigma-clipped mean"]
            outcome.metrics = {"reference_filter": ref_name, "n_matches": n,
                               "clipped_mean_dx_px": mx, "clipped_mean_dy_px": my}
            problems = []
            if n < th.min_interfilter_matches:
                problems.append(f"{n} matches < {th.min_interfilter_matches}")
            if max(abs(mx), abs(my)) > th.max_interfilter_offset_px:
                problems.append(f"clipped mean offset ({mx:.3f}, {my:.3f}) px > "
                                f"{th.max_interfilter_offset_px}")
            if problems:
                outcome.status, outcome.message = "failed", "; ".join(problems)
        except Exception as exc:  # noqa: BLE001 - one comparison filter must not stop the others
            log.error("interfilter_crossmatch %s: %s: %s", fdp.product_basename,
                      type(exc).__name__, exc)
            outcome.status, outcome.message = "error", f"{type(exc).__name__}: {exc}"
        outcomes.append(outcome)
    return outcomes


# --------------------------------------------------------------------------------------------
# 8. WCS report (read-only)
# --------------------------------------------------------------------------------------------

def _wcs_summary(header: fits.Header, key: str = "") -> dict:
    from astropy.wcs import WCS

    k = key.strip()
    wcs = WCS(header, key=k or " ", relax=True)
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.wcs.get_pc() * wcs.wcs.cdelt[:, None]
    scale = float(np.sqrt(abs(np.linalg.det(cd))) * 3600.0)
    orient = float(np.degrees(np.arctan2(cd[0, 1], cd[1, 1])))
    return {"WCSNAME": str(header.get(f"WCSNAME{k}", "")).strip(),
            "CRPIX1": float(wcs.wcs.crpix[0]), "CRPIX2": float(wcs.wcs.crpix[1]),
            "CRVAL1": float(wcs.wcs.crval[0]), "CRVAL2": float(wcs.wcs.crval[1]),
            "Scale": scale, "Orientation": orient}


def _wcs_kind(name: str) -> str:
    if "-" not in name:
        return "default"
    return "aposteriori" if "FIT" in name.split("-", 1)[1].upper() else "apriori"


def check_wcs_report(edp, ctx: QualityContext) -> CheckOutcome:
    """Active and alternate WCSs of an exposure's SVM copy (``<exposure pb>_svm_wcs.json``).

    The SVM copy is opened read-only (SCI,1). For alternate WCSs whose name shares the IDC
    root of the active one (duplicate names dropped), the first of each kind (default =
    no ``-``, a priori, a posteriori = ``FIT`` after the ``-``) is reported with
    ``DeltaWCS_<kind>`` = active minus alternate. Descriptive.
    """
    path = ctx.output_dir / edp.full_filename
    with fits.open(path, mode="readonly", memmap=False) as hdul:
        primary = hdul[0].header.copy()
        sci = hdul["SCI", 1].header.copy() if ("SCI", 1) in hdul else hdul[1].header.copy()
    active = _wcs_summary(sci)
    active.update({"exposure": edp.exposure_name, "WCSTYPE": str(sci.get("WCSTYPE", "")),
                   "RMS_RA": sci.get("RMS_RA"), "RMS_DEC": sci.get("RMS_DEC"),
                   "NMATCHES": sci.get("NMATCHES"), "FITGEOM": sci.get("FITGEOM"),
                   "EXPTIME": primary.get("EXPTIME")})
    root = active["WCSNAME"].split("-")[0]
    doc = _document(edp, ctx, filename=edp.full_filename, primary_header=primary,
                    description="Active and alternate WCS solutions of the SVM copy")
    doc.add_item("PrimaryWCS", active, description="Active WCS",
                 units={"CRPIX1": "pixels", "CRPIX2": "pixels", "CRVAL1": "degrees",
                        "CRVAL2": "degrees", "Scale": "arcseconds/pixel",
                        "Orientation": "degrees"})
    seen, kinds = {active["WCSNAME"]}, {}
    for key in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        name = str(sci.get(f"WCSNAME{key}", "")).strip()
        if not name or name in seen or name.split("-")[0] != root:
            continue
        seen.add(name)
        kind = _wcs_kind(name)
        if kind in kinds:
            continue
        alt = _wcs_summary(sci, key)
        alt["key"] = key
        kinds[kind] = alt
        delta = {"CRPIX1": active["CRPIX1"] - alt["CRPIX1"],
                 "CRPIX2": active["CRPIX2"] - alt["CRPIX2"],
                 "CRVAL1": (active["CRVAL1"] - alt["CRVAL1"]) * 3600.0
                 * np.cos(np.radians(active["CRVAL2"])),
                 "CRVAL2": (active["CRVAL2"] - alt["CRVAL2"]) * 3600.0,
                 "Scale": active["Scale"] - alt["Scale"],
                 "Orientation": active["Orientation"] - alt["Orientation"]}
        doc.add_item(f"AlternateWCS_{kind}", alt, description=f"Alternate WCS ({kind})")
        doc.add_item(f"DeltaWCS_{kind}", delta, description=f"Active minus {kind} WCS",
                     units={"CRPIX1": "pixels", "CRPIX2": "pixels", "CRVAL1": "arcseconds",
                            "CRVAL2": "arcseconds", "Scale": "arcseconds/pixel",
                            "Orientation": "degrees"})
    out = doc.write(ctx.output_dir / f"{edp.product_basename}_svm_wcs.json")
    return CheckOutcome(check="wcs_report", product=edp.product_basename, status="done",
                        files=[ctx.relative(out)],
                        metrics={"wcsname": active["WCSNAME"],
                                 "alternates": ",".join(sorted(kinds)) or "none"})
