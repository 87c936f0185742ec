"""Quality JSON documents in drizzlepac's ``HapDiagnostic`` layout (spec §7).

Every quality JSON file has three top-level keys:

``header``
    The product's primary header as ``{keyword: value}``, without blank, HISTORY and COMMENT
    cards, without the filter keywords (``FILTER``, ``FILTER1``, ``FILTER2``; the normalised
    filter is in ``general information``) and without the per-input drizzle keywords
    ``D###VER/GEOM/DATA/DEXP/OUDA/OUWE/OUCO/MASK/WTSC/KERN/PIXF/COEF/OUUN/FVAL/WKEY/SCAL/ISCL``.
``general information``
    ``telescope, proposal_id, instrument, detector, visit, filter, dataset, dataframe_index,
    imgname, generation date (MM/DD/YYYY), generation time (HH:MM:SS), seconds since epoch,
    commit id, data_source, description``. ``visit`` is the 3rd ``_`` token of the SVM file
    name (chars 4-6 of a pipeline name), ``dataset`` the last ``_`` token of ROOTNAME (of the
    file name without its last token when ROOTNAME is absent), ``dataframe_index`` the file
    name minus its last 9 characters, ``commit id`` the hapsvm version.
``data``
    ``{title: {"original format", "description", "data", "descriptions", "units"[, "dtype"]}}``;
    an astropy Table is stored as ``{column: {"dtype", "unit", "format", "data": [...]}}``,
    numpy values as plain JSON numbers/lists, NaN and infinities as ``null``.

All files of one run share one timestamp (:class:`QualityTimestamp`). Files are written
atomically and replaced when they exist (drizzlepac appends a random suffix instead; a re-run
here gives the same names).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from hapcore.atomic import write_text_atomic

__all__ = [
    "QualityTimestamp",
    "DiagnosticDocument",
    "clean_header",
    "general_information",
    "jsonable",
    "table_to_json",
]

log = logging.getLogger(f"hapsvm.{__name__}")

_DRIZZLE_KEYWORD = re.compile(
    r"^D\d{3}(VER|GEOM|DATA|DEXP|OUDA|OUWE|OUCO|MASK|WTSC|KERN|PIXF|COEF|OUUN|FVAL|WKEY|SCAL|ISCL)$")
_FILTER_KEYWORDS = {"FILTER", "FILTER1", "FILTER2"}


@dataclass(frozen=True)
class QualityTimestamp:
    """One generation time shared by every file of a quality run."""

    when: _dt.datetime

    @classmethod
    def now(cls) -> QualityTimestamp:
        return cls(_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0))

    @property
    def date(self) -> str:
        return self.when.strftime("%m/%d/%Y")

    @property
    def time(self) -> str:
        return self.when.strftime("%H:%M:%S")

    @property
    def seconds(self) -> float:
        return self.when.timestamp()

    @property
    def iso(self) -> str:
        return self.when.isoformat()


def _version() -> str:
    try:
        return "hapsvm " + importlib.metadata.version("hapsvm")
    except importlib.metadata.PackageNotFoundError:  # source tree not installed
        return "hapsvm unknown"


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, Paths and tuples turned into JSON types.

    Non-finite floats become ``None`` (JSON has no NaN).
    """
    if isinstance(value, Table):
        return table_to_json(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.ma.core.MaskedConstant):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def table_to_json(table: Table) -> dict[str, dict[str, Any]]:
    """An astropy Table as ``{column: {"dtype", "unit", "format", "data": [...]}}``."""
    out = {}
    for name in table.colnames:
        column = table[name]
        data = column.filled(np.nan) if hasattr(column, "filled") and column.dtype.kind == "f" \
            else column
        if hasattr(data, "mask"):
            values = [None if m else jsonable(v) for v, m in zip(np.asarray(data), data.mask)]
        else:
            values = jsonable(np.asarray(data))
        out[name] = {"dtype": str(column.dtype),
                     "unit": str(column.unit) if column.unit is not None else None,
                     "format": column.format, "data": values}
    return out


def clean_header(header: fits.Header | Mapping | None) -> dict[str, Any]:
    """Primary header as a dict minus blank/HISTORY/COMMENT, filter and D### drizzle keywords."""
    if header is None:
        return {}
    items = header.items() if hasattr(header, "items") else []
    out = {}
    for key, value in items:
        key = str(key).strip()
        if not key or key in ("HISTORY", "COMMENT") or key in _FILTER_KEYWORDS:
            continue
        if _DRIZZLE_KEYWORD.match(key):
            continue
        out[key] = jsonable(value)
    return out


def _visit_token(filename: str) -> str:
    parts = filename.split("_")
    if filename.startswith("hst_") and len(parts) > 2:
        return parts[2]
    return filename[4:6]


def general_information(primary_header: fits.Header | Mapping | None, *, filename: str,
                        filter_name: str, description: str, timestamp: QualityTimestamp,
                        data_source: str = "hapsvm") -> dict[str, Any]:
    """The ``general information`` section of a quality JSON file (see module docstring).

    Parameters
    ----------
    primary_header : astropy.io.fits.Header or mapping or None
    filename : str
        The product's file name (drizzled product or SVM copy).
    filter_name : str
        Normalised filter name (``total`` / ``detection`` for total products).
    description : str
        What the file holds.
    timestamp : QualityTimestamp
    data_source : str, optional
    """
    header = primary_header if primary_header is not None else {}
    name = Path(filename).name
    rootname = str(header.get("ROOTNAME", "") or name.rsplit("_", 1)[0])
    return {
        "telescope": str(header.get("TELESCOP", "HST")),
        "proposal_id": str(header.get("PROPOSID", "")),
        "instrument": str(header.get("INSTRUME", "")).upper(),
        "detector": str(header.get("DETECTOR", "")).upper(),
        "visit": _visit_token(name),
        "filter": filter_name,
        "dataset": rootname.split("_")[-1],
        "dataframe_index": name[:-9],
        "imgname": name,
        "generation date": timestamp.date,
        "generation time": timestamp.time,
        "seconds since epoch": timestamp.seconds,
        "commit id": _version(),
        "data_source": data_source,
        "description": description,
    }


def _format_name(value: Any) -> str:
    if isinstance(value, Table):
        return "<class 'astropy.table.table.Table'>"
    return str(type(value))


class DiagnosticDocument:
    """One quality JSON file (``header`` / ``general information`` / ``data``).

    Parameters
    ----------
    primary_header : astropy.io.fits.Header or mapping or None
        Header of the product the file describes.
    filename : str
        The product's file name.
    filter_name : str
    description : str
    timestamp : QualityTimestamp

    Examples
    --------
    >>> doc = DiagnosticDocument(None, filename="hst_1_01_wfc3_uvis_total_i00001_drc.fits",
    ...                          filter_name="total", description="demo",
    ...                          timestamp=QualityTimestamp.now())
    >>> doc.add_item("number_of_sources", {"point": 3}, description="demo",
    ...              descriptions={"point": "rows"}, units={"point": "unitless"})
    >>> sorted(doc.to_dict())
    ['data', 'general information', 'header']
    """

    def __init__(self, primary_header, *, filename: str, filter_name: str, description: str,
                 timestamp: QualityTimestamp):
        self.header = clean_header(primary_header)
        self.general_information = general_information(
            primary_header, filename=filename, filter_name=filter_name,
            description=description, timestamp=timestamp)
        self.data: dict[str, dict[str, Any]] = {}

    def add_item(self, title: str, value: Any, *, description: str,
                 descriptions: Mapping[str, str] | None = None,
                 units: Mapping[str, str] | None = None) -> None:
        """Add one ``data`` item (a dict, Table, list or scalar)."""
        item = {"original format": _format_name(value), "description": description,
                "data": jsonable(value), "descriptions": dict(descriptions or {}),
                "units": dict(units or {})}
        if isinstance(value, np.ndarray):
            item["dtype"] = str(value.dtype)
        self.data[title] = item

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "general information": self.general_information,
                "data": self.data}

    def write(self, path: str | os.PathLike) -> Path:
        """Write the document atomically as indented JSON; return the path."""
        path = write_text_atomic(path, json.dumps(self.to_dict(), indent=2, allow_nan=False)
                                 + "\n")
        log.debug("Wrote %s", Path(path).name)
        return path
