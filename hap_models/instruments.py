"""Instrument and detector facts shared by every layer (spec §1.2, §11)."""

from __future__ import annotations

__all__ = [
    "INSTRUMENT_BY_ROOTNAME_PREFIX",
    "UNSUPPORTED_INSTRUMENT_PREFIXES",
    "DETECTORS_BY_INSTRUMENT",
    "instrument_from_filename",
    "normalise_detector",
]

#: First character of an ipppssoot rootname -> instrument (lower case).
INSTRUMENT_BY_ROOTNAME_PREFIX = {"i": "wfc3", "j": "acs", "u": "wfpc2"}

#: Prefixes that name HST instruments which single-visit processing does not support.
UNSUPPORTED_INSTRUMENT_PREFIXES = {"o": "stis", "x": "foc", "w": "wfpc", "l": "cos", "n": "nicmos"}

#: Detectors each supported instrument can have (lower case, as used in product names).
DETECTORS_BY_INSTRUMENT = {
    "acs": ("wfc", "hrc", "sbc"),
    "wfc3": ("uvis", "ir"),
    "wfpc2": ("pc",),
}


def instrument_from_filename(filename: str) -> str:
    """Return the instrument (``acs``, ``wfc3``, ``wfpc2``) named by the first letter of a rootname.

    Raises
    ------
    ValueError
        If the letter names no instrument or an unsupported one; the message says which.
    """
    prefix = filename[:1].lower()
    if prefix in INSTRUMENT_BY_ROOTNAME_PREFIX:
        return INSTRUMENT_BY_ROOTNAME_PREFIX[prefix]
    if prefix in UNSUPPORTED_INSTRUMENT_PREFIXES:
        raise ValueError(
            f"instrument {UNSUPPORTED_INSTRUMENT_PREFIXES[prefix].upper()} (rootname prefix "
            f"'{prefix}') is not supported; supported: ACS (j), WFC3 (i), WFPC2 (u)"
        )
    raise ValueError(f"rootname prefix '{prefix}' names no HST instrument")


def normalise_detector(instrument: str, detector: str) -> str:
    """Return the detector name used in product names (lower case; WFPC2 is always ``pc``).

    Raises
    ------
    ValueError
        If the detector does not belong to the instrument.
    """
    instrument = instrument.lower()
    if instrument == "wfpc2":
        return "pc"
    det = str(detector).strip().lower()
    allowed = DETECTORS_BY_INSTRUMENT.get(instrument)
    if allowed is None:
        raise ValueError(f"unknown instrument '{instrument}'")
    if det not in allowed:
        raise ValueError(
            f"unknown detector '{detector}' for {instrument.upper()} "
            f"(expected one of {', '.join(d.upper() for d in allowed)})"
        )
    return det
