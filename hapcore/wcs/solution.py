"""What an alignment record means for the WCS of an exposure's SVM copy (spec §4.4, §4.6)."""

from __future__ import annotations

from typing import Literal

from hap_models.alignment import ExposureAlignment

__all__ = ["SolutionKind", "solution_kind"]

SolutionKind = Literal["fit", "relative", "no_reference", "kept"]


def solution_kind(alignment: ExposureAlignment) -> SolutionKind:
    """Classify the alignment outcome of one exposure.

    Parameters
    ----------
    alignment : `~hap_models.alignment.ExposureAlignment`
        The exposure's chips and fit record.

    Returns
    -------
    {'fit', 'relative', 'no_reference', 'kept'}
        * ``fit``: an ``SVM`` fit to a catalog, with chips; the WCS is replaced.
        * ``relative``: a ``REL`` solution (with or without a catalog), with chips; the WCS is replaced.
        * ``no_reference``: an ``SVM`` record without a catalog; the WCS stays as it was, and
          RMS_* = -1, NMATCHES 0, FITGEOM N/A are recorded (drizzlepac's empty-catalog case).
        * ``kept``: no fit (``fit_label`` None, or no chips); WCS and records stay as they came.
    """
    record = alignment.record
    if record.fit_label is None:
        return "kept"
    if record.fit_label == "SVM" and not (record.catalog or "").strip():
        return "no_reference"
    return ("fit" if record.fit_label == "SVM" else "relative") if alignment.chips else "kept"
