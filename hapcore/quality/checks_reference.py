"""Quality checks against the reference catalog (spec §7.2, §7.5), one JSON file each.

Both take the product first and a :class:`~hapcore.quality.checks.QualityContext` whose
``reference_catalog`` is the catalog alignment used (never re-queried); without one they raise
``LookupError("no reference catalog")``, which the stage records as ``skipped``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from hap_models.quality import CheckOutcome
from hapcore.quality.checks import QualityContext, _document, json_stem

__all__ = [
    "reference_sources_in_image",
    "check_reference_sources",
    "check_reference_distribution",
]


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
