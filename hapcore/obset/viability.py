"""Viability filter for single-visit processing (spec §1.3).

Each exposure is judged from its primary header (and whether its SCI arrays hold any data, and
whether any chip has a usable pixel); the first failing test gives the reason it is not
processed. A damaged file (:mod:`hapcore.obset.integrity`: truncated, an unreadable header
card, a missing SCI or DQ extension) is rejected before these tests. Grism/prism exposures with
a non-zero exposure time are always accepted (they are needed for WCS reconciliation).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["CALIBRATION_TARGETS", "WFPC2_CALIBRATION_TARGETS", "rejection_reason"]

logger = logging.getLogger(f"hapsvm.{__name__}")

CALIBRATION_TARGETS = ("DARK", "TUNG", "BIAS", "FLAT", "DEUT", "EARTH-CAL")
WFPC2_CALIBRATION_TARGETS = ("INTFLAT", "UVFLAT", "VISFLAT", "KSPOTS", "DARK", "BIAS", "EARTH-CALIB")


def _text(header: Mapping, key: str) -> str:
    value = header.get(key)
    return "" if value is None else str(value).strip().upper()


def rejection_reason(header: Mapping, *, instrument: str, detector: str,
                     sci_all_zero: bool = False, no_usable_chip: str | None = None,
                     filename: str = "") -> str | None:
    """Return why an exposure must not be processed, or ``None`` if it is viable.

    Parameters
    ----------
    header : mapping
        Primary header of the exposure.
    instrument, detector : str
        Lower-case instrument and detector.
    sci_all_zero : bool, optional
        Whether every SCI array of the file is all zeros.
    no_usable_chip : str, optional
        Why no chip has a usable pixel (finite, non-zero, DQ 0): all NaN, every pixel flagged
        in DQ (:func:`hapcore.obset.poller.read_exposure_header`); None when one has.
    filename : str, optional
        Only used in the FGSLOCK warning.
    """
    instrument = instrument.lower()
    exptime = float(header.get("EXPTIME", 0.0) or 0.0)
    zero_exptime = abs(exptime) <= 1e-5
    reason = None

    if instrument == "wfpc2":
        obstype = "IMAGING" if _text(header, "IMAGETYP") == "EXT" else "CAL"
    else:
        obstype = _text(header, "OBSTYPE")
    targname = _text(header, "TARGNAME")

    if obstype != "IMAGING":
        reason = f"OBSTYPE is {obstype or 'missing'}, not IMAGING"
    elif _text(header, "DRIZCORR") in ("OMIT", "SKIPPED"):
        reason = f"DRIZCORR is {_text(header, 'DRIZCORR')}"
    elif _text(header, "MTFLAG") == "T":
        reason = "moving target (MTFLAG = T)"
    elif instrument == "wfc3" and _text(header, "SCAN_TYP") in ("C", "D"):
        reason = f"spatial scan (SCAN_TYP = {_text(header, 'SCAN_TYP')})"
    elif instrument != "wfpc2" and any(t in targname for t in CALIBRATION_TARGETS):
        reason = f"calibration target (TARGNAME = {targname})"
    elif (instrument == "wfpc2" and any(t in targname for t in WFPC2_CALIBRATION_TARGETS)
          and _text(header, "IMAGETYP") != "EXT"):
        reason = f"calibration target (TARGNAME = {targname})"
    elif zero_exptime:
        reason = f"zero exposure time (EXPTIME = {exptime})"
    elif instrument == "wfc3" and detector == "uvis" and _text(header, "CHINJECT") not in ("NONE", ""):
        reason = f"charge injection (CHINJECT = {_text(header, 'CHINJECT')})"

    fgslock = _text(header, "FGSLOCK")
    if reason is None and ("GY" in fgslock or "COARSE" in fgslock):
        logger.warning("%s: guiding was %s (FGSLOCK); processing it anyway", filename, fgslock)

    # Filter tokens: grism/prism exposures are kept (for WCS reconciliation), BLOCK filters dropped.
    if instrument == "wfc3":
        tokens = [_text(header, "FILTER")]
    elif instrument == "acs":
        joined = "_".join(v for v in (_text(header, "FILTER1"), _text(header, "FILTER2")) if v)
        tokens = joined.split("_")
    else:
        tokens = []
    for token in tokens:
        if token.startswith(("G", "PR")):
            if not zero_exptime:
                reason = None
        elif token.startswith("BLOCK"):
            reason = f"internal BLOCK filter ({token})"

    if reason is None and sci_all_zero:
        reason = "SCI data all zeros"
    elif reason is None and no_usable_chip:
        reason = no_usable_chip
    return reason
