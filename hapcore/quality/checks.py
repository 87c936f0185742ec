"""The quality checks of spec §7, one function per check, each writing one JSON file.

Every check takes the product first and a :class:`QualityContext` (output directory, shared
timestamp, thresholds, reference catalog, image cache) and returns a
:class:`~hap_models.quality.CheckOutcome`. Checks raise on bad input (missing or empty
catalogs, unreadable files); :func:`hapcore.quality.stage.run_isolated` isolates them, so a
raising check is recorded as ``error`` and the run goes on.

This module holds the context, the shared helpers, the number of sources (§7.1) and the WCS
report (§7.8); the reference-catalog checks are in :mod:`hapcore.quality.checks_reference`,
the catalog cross-matches and photometry in :mod:`hapcore.quality.checks_catalogs`.

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

from hap_models.catalogs import FILL_VALUE
from hap_models.quality import CheckOutcome, QualityThresholds
from hapcore.catalogs.image import CatalogImage
from hapcore.quality.report import DiagnosticDocument, QualityTimestamp

__all__ = [
    "QualityContext",
    "read_catalog",
    "separation_statistics",
    "check_num_sources",
    "check_wcs_report",
    "json_stem",
]

log = logging.getLogger(f"hapsvm.{__name__}")


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
# 8. WCS report (read-only)
# --------------------------------------------------------------------------------------------

def _wcs_summary(header: fits.Header, key: str = "", hdul: fits.HDUList | None = None) -> dict:
    from astropy.wcs import WCS

    k = key.strip()
    # The file holds the NPOL/D2IM tables the header references (astropy refuses a header
    # with CPDISj/D2IMDISj = 'Lookup' without it); only the linear terms are reported.
    wcs = WCS(header, fobj=hdul, key=k or " ", relax=True)
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
        # the lookup tables, read into memory for the WCSs built after the file is closed
        tables = fits.HDUList([hdu for hdu in hdul if hdu.name in ("WCSDVARR", "D2IMARR")])
        for hdu in tables:
            _ = hdu.data
    active = _wcs_summary(sci, hdul=tables)
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
        alt = _wcs_summary(sci, key, hdul=tables)
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
