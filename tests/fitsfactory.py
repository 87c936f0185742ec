"""Tiny FITS exposures with chosen header keywords, for poller and tree tests (no pixels needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = ["write_exposure", "poller_line"]

_DEFAULTS = {
    ("wfc3", "uvis"): dict(INSTRUME="WFC3", DETECTOR="UVIS", CHINJECT="NONE", SCAN_TYP="N"),
    ("wfc3", "ir"): dict(INSTRUME="WFC3", DETECTOR="IR", SCAN_TYP="N"),
    ("acs", "wfc"): dict(INSTRUME="ACS", DETECTOR="WFC"),
    ("acs", "hrc"): dict(INSTRUME="ACS", DETECTOR="HRC"),
    ("acs", "sbc"): dict(INSTRUME="ACS", DETECTOR="SBC"),
}


def write_exposure(directory: Path, filename: str, *, detector: str = "uvis", filters: str = "F606W",
                   exptime: float = 100.0, expstart: float = 58000.0, photflam: float = 1e-19,
                   proposid: int = 11665, nsci: int = 1, zero_data: bool = False,
                   drop: tuple[str, ...] = (), without: tuple[str, ...] = (),
                   **keywords) -> Path:
    """Write a minimal calibrated exposure ``directory/filename`` and return its path.

    ``filters`` is the ``;``-joined FILTER1;FILTER2 for ACS, FILTER for WFC3. ``keywords`` override
    primary keywords; ``drop`` removes keywords from the primary header. Every chip has its SCI,
    ERR and DQ extensions (DQ all 0), but those named in ``without``.
    """
    instrument = {"i": "wfc3", "j": "acs", "u": "wfpc2"}.get(filename[0], "wfc3")
    primary = fits.Header()
    values = dict(_DEFAULTS.get((instrument, detector.lower()), {"INSTRUME": instrument.upper(),
                                                                  "DETECTOR": detector.upper()}))
    values.update(ROOTNAME=filename.split("_")[0], PROPOSID=proposid, OBSTYPE="IMAGING",
                  DRIZCORR="PERFORM", MTFLAG="", TARGNAME="NGC-TEST", FGSLOCK="FINE",
                  EXPTIME=exptime, EXPSTART=expstart, EXPEND=expstart + exptime / 86400.0)
    if instrument == "acs":
        f1, _, f2 = filters.partition(";")
        values.update(FILTER1=f1, FILTER2=f2 or "CLEAR2L")
    else:
        values.update(FILTER=filters)
    values.update(keywords)
    for key, value in values.items():
        if key not in drop:
            primary[key] = value
    hdus = [fits.PrimaryHDU(header=primary)]
    data = np.zeros((4, 4), np.float32) if zero_data else np.ones((4, 4), np.float32)
    for ver in range(1, nsci + 1):
        sci = fits.Header([("PHOTFLAM", photflam)])
        # a small north-up TAN WCS, so the stages after parsing have a sky to work with
        sci.update(dict(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0 + ver * 1e-3,
                        CRPIX1=2.5, CRPIX2=2.5, CD1_1=-1.1e-5, CD1_2=0.0, CD2_1=0.0, CD2_2=1.1e-5,
                        WCSNAME="IDC_test"))
        if "SCI" not in without:
            hdus.append(fits.ImageHDU(data=data, name="SCI", ver=ver, header=sci))
        if "ERR" not in without:
            hdus.append(fits.ImageHDU(data=np.ones_like(data), name="ERR", ver=ver))
        if "DQ" not in without:
            hdus.append(fits.ImageHDU(data=np.zeros(data.shape, np.int16), name="DQ", ver=ver))
    path = Path(directory) / filename
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def poller_line(filename: str, *, proposal: str = "11665", exptime: float = 100.0,
                filters: str = "F606W", detector: str = "UVIS", pathname: str = "/nonexistent") -> str:
    """An 8-field poller line for ``filename``."""
    root = filename.split("_")[0]
    return (f"{filename},{proposal},{root[1:4].upper()},{root[4:6].upper()},{exptime},{filters},"
            f"{detector},{pathname}/{filename}")
