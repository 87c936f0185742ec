"""Schema of the SVM source catalogs: column names, order, formats, units and metadata keys.

Everything a catalog writer or reader needs to know about the layout of the ECSV files of
spec §6.3 (point catalogs), §6.4 (segmentation catalogs) and §6.8 (total catalogs, metadata)
lives here, so the layout is defined once and tests can compare files against it.

A column is described by a :class:`ColumnSpec` (name, format, unit, kind). The filter catalog
layouts are fixed tuples; the total catalog layouts depend on the filters of the visit and are
built by :func:`total_point_columns` / :func:`total_segment_columns`.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ColumnSpec",
    "FILL_VALUE",
    "FLAG_BITS",
    "FLAG_POINT_SOURCE",
    "FLAG_EXTENDED",
    "FLAG_SINGLE_PIXEL_SATURATION",
    "FLAG_SATURATION",
    "FLAG_FAINT",
    "FLAG_HOT_PIXEL",
    "FLAG_SWARM",
    "FLAG_LOW_COVERAGE",
    "FLAG_BLEEDING",
    "POINT_FILTER_COLUMNS",
    "SEGMENT_FILTER_COLUMNS",
    "POINT_TOTAL_BASE_COLUMNS",
    "SEGMENT_TOTAL_BASE_COLUMNS",
    "TOTAL_FILTER_COLUMN_PREFIXES",
    "METADATA_KEYS_HEAD",
    "METADATA_KEYS_TAIL",
    "REJECTION_KEY",
    "total_point_columns",
    "total_segment_columns",
    "total_filter_columns",
]

#: Value written for masked, NaN or otherwise missing entries (integers: -9999).
FILL_VALUE: float = -9999.0

# Flag bits (spec §6.7). 2, 32 and 128 are kept for compatibility; 2 and 128 are deprecated.
FLAG_POINT_SOURCE = 0
FLAG_EXTENDED = 1
FLAG_SINGLE_PIXEL_SATURATION = 2
FLAG_SATURATION = 4
FLAG_FAINT = 8
FLAG_HOT_PIXEL = 16
FLAG_SWARM = 32
FLAG_LOW_COVERAGE = 64
FLAG_BLEEDING = 128

#: Bit value -> meaning, in the order written to the catalog header.
FLAG_BITS: dict[int, str] = {
    FLAG_POINT_SOURCE: "point source",
    FLAG_EXTENDED: "extended source",
    FLAG_SINGLE_PIXEL_SATURATION: "single-pixel saturation (deprecated)",
    FLAG_SATURATION: "multi-pixel saturation",
    FLAG_FAINT: "faint detection limit",
    FLAG_HOT_PIXEL: "hot pixels / cosmic ray (low CI)",
    FLAG_SWARM: "swarm detection (a feature of a brighter neighbour)",
    FLAG_LOW_COVERAGE: "low exposure coverage / image edge",
    FLAG_BLEEDING: "bleeding / cosmic rays (deprecated)",
}


class ColumnSpec(NamedTuple):
    """One catalog column: name, Python format spec (without ``%``), unit, value kind."""

    name: str
    format: str
    unit: str | None
    kind: str = "float"  # "float" or "int"


_MAG = "mag(AB)"
_FLUX = "electron/s"
_SB = "electron/(s pixel)"

_POS = (
    ColumnSpec("X-Center", "10.3f", "pixel"),
    ColumnSpec("Y-Center", "10.3f", "pixel"),
    ColumnSpec("RA", "13.7f", "degree"),
    ColumnSpec("DEC", "13.7f", "degree"),
    ColumnSpec("ID", "7d", None, "int"),
)

#: Filter point (aperture) catalog, spec §6.3.
POINT_FILTER_COLUMNS: tuple[ColumnSpec, ...] = _POS + (
    ColumnSpec("MagAp1", "7.3f", _MAG),
    ColumnSpec("MagErrAp1", "7.3f", _MAG),
    ColumnSpec("FluxAp1", "10.4f", _FLUX),
    ColumnSpec("FluxErrAp1", "10.4f", _FLUX),
    ColumnSpec("MagAp2", "7.3f", _MAG),
    ColumnSpec("MagErrAp2", "7.3f", _MAG),
    ColumnSpec("MSkyAp2", "7.3f", _SB),
    ColumnSpec("StdevAp2", "7.3f", _SB),
    ColumnSpec("FluxAp2", "10.4f", _FLUX),
    ColumnSpec("FluxErrAp2", "10.4f", _FLUX),
    ColumnSpec("CI", "7.3f", _MAG),
    ColumnSpec("Flags", "5d", None, "int"),
)

#: Filter segmentation catalog, spec §6.4.
SEGMENT_FILTER_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("X-Centroid", "10.3f", "pixel"),
    ColumnSpec("Y-Centroid", "10.3f", "pixel"),
    ColumnSpec("RA", "13.7f", "degree"),
    ColumnSpec("DEC", "13.7f", "degree"),
    ColumnSpec("ID", "7d", None, "int"),
    ColumnSpec("CI", "7.3f", _MAG),
    ColumnSpec("Flags", "5d", None, "int"),
    ColumnSpec("MagAp1", "7.3f", _MAG),
    ColumnSpec("MagErrAp1", "7.3f", _MAG),
    ColumnSpec("FluxAp1", "10.4f", _FLUX),
    ColumnSpec("FluxErrAp1", "10.4f", _FLUX),
    ColumnSpec("MagAp2", "7.3f", _MAG),
    ColumnSpec("MagErrAp2", "7.3f", _MAG),
    ColumnSpec("FluxAp2", "10.4f", _FLUX),
    ColumnSpec("FluxErrAp2", "10.4f", _FLUX),
    ColumnSpec("MSkyAp2", "7.3f", _SB),
    ColumnSpec("Bck", "10.4f", _FLUX),
    ColumnSpec("Area", "10.4f", "pixel**2"),
    ColumnSpec("FWHM", "10.4f", "pixel"),
    ColumnSpec("MagSegment", "7.3f", _MAG),
    ColumnSpec("FluxSegment", "10.4f", _FLUX),
    ColumnSpec("FluxSegmentErr", "10.4f", _FLUX),
    ColumnSpec("KronRadius", "8.4f", "pixel"),
    ColumnSpec("Xmin", "8.0f", "pixel"),
    ColumnSpec("Ymin", "8.0f", "pixel"),
    ColumnSpec("Xmax", "8.0f", "pixel"),
    ColumnSpec("Ymax", "8.0f", "pixel"),
    ColumnSpec("X2", "9.5f", "pixel**2"),
    ColumnSpec("Y2", "9.5f", "pixel**2"),
    ColumnSpec("XY", "9.5f", "pixel**2"),
    ColumnSpec("CXX", "9.5f", "pixel**-2"),
    ColumnSpec("CYY", "9.5f", "pixel**-2"),
    ColumnSpec("CXY", "9.5f", "pixel**-2"),
    ColumnSpec("Elongation", "7.2f", None),
    ColumnSpec("Ellipticity", "7.2f", None),
    ColumnSpec("Theta", "8.3f", "radian"),
)

#: Leading columns of the total point catalog (spec §6.8).
POINT_TOTAL_BASE_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("ID", "7d", None, "int"),
    ColumnSpec("X-Center", "10.3f", "pixel"),
    ColumnSpec("Y-Center", "10.3f", "pixel"),
    ColumnSpec("RA", "13.7f", "degree"),
    ColumnSpec("DEC", "13.7f", "degree"),
)

#: Leading columns of the total segmentation catalog (spec §6.4, §6.8).
SEGMENT_TOTAL_BASE_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("ID", "7d", None, "int"),
    ColumnSpec("X-Centroid", "10.3f", "pixel"),
    ColumnSpec("Y-Centroid", "10.3f", "pixel"),
    ColumnSpec("RA", "13.7f", "degree"),
    ColumnSpec("DEC", "13.7f", "degree"),
)

#: Per-filter columns of a total catalog: (prefix, source column in the filter catalog).
#: The magnitude column keeps drizzlepac's spelling ``MagAP2_<filter>`` (capital P), which is
#: what the spec lists for the final total catalog and what real HAP total catalogs contain.
TOTAL_FILTER_COLUMN_PREFIXES: tuple[tuple[str, str], ...] = (
    ("MagAP2_", "MagAp2"),
    ("CI_", "CI"),
    ("Flags_", "Flags"),
)

#: Metadata keys written before the WCS keywords, in order (spec §6.8). ``h00``-``h08`` banner.
METADATA_KEYS_HEAD: tuple[str, ...] = tuple(f"h{i:02d}" for i in range(9)) + (
    "WCSNAME",
    "WCSTYPE",
    "Proposal ID",
    "Image File Name",
    "Target Name",
    "Date Observed",
    "Time Observed",
    "Instrument",
    "Detector",
    "Target RA",
    "Target DEC",
    "Orientation",
    "Aperture RA",
    "Aperture DEC",
    "Aperture PA",
    "Aper1 (arcsec)",
    "Aper2 (arcsec)",
    "Threshold (sigma)",
    "Exposure Start",
    "Total Exposure Time",
    "CCD Gain",
    "Filter 1",
    "Filter 2",
)

#: Metadata keys written after the WCS keywords; ``h19`` only in segmentation catalogs.
METADATA_KEYS_TAIL: tuple[str, ...] = ("Number of sources",) + tuple(
    f"h{i:02d}" for i in range(9, 19)
)

#: Extra metadata key (hapsvm addition) present only in rejected, zero-row catalogs.
REJECTION_KEY: str = "Catalog rejected"


def total_filter_columns(filter_name: str) -> tuple[ColumnSpec, ...]:
    """Return the three total-catalog columns of one filter (``MagAP2_f``, ``CI_f``, ``Flags_f``)."""
    return (
        ColumnSpec(f"MagAP2_{filter_name}", "7.3f", _MAG),
        ColumnSpec(f"CI_{filter_name}", "7.3f", _MAG),
        ColumnSpec(f"Flags_{filter_name}", "5d", None, "int"),
    )


def total_point_columns(filter_names) -> tuple[ColumnSpec, ...]:
    """Return the column layout of a total point catalog for ``filter_names`` (in order)."""
    cols = POINT_TOTAL_BASE_COLUMNS
    for name in filter_names:
        cols = cols + total_filter_columns(name)
    return cols


def total_segment_columns(filter_names) -> tuple[ColumnSpec, ...]:
    """Return the column layout of a total segmentation catalog for ``filter_names``."""
    cols = SEGMENT_TOTAL_BASE_COLUMNS
    for name in filter_names:
        cols = cols + total_filter_columns(name)
    return cols
