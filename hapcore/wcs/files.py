"""Reading the WCSs of HST exposures and SVM copies (read-only access only).

Every reader opens files with ``mode='readonly'`` and ``memmap=False``: nothing here can change a
file, and the returned objects stay valid after the file is closed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Iterator

import astropy
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

__all__ = [
    "open_readonly",
    "fits_fixes_ignored",
    "sci_extensions",
    "chip_wcs",
    "read_chip_wcs",
    "software_versions",
]


#: ``warnings.catch_warnings`` swaps the process-wide filter list: two threads inside it at once
#: can leave a filter installed for good (the alignment reads and writes exposures in threads).
_WARNINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def fits_fixes_ignored() -> Iterator[None]:
    """Ignore astropy's ``FITSFixedWarning`` inside the block, one thread at a time.

    HST headers trigger harmless "fixes" (MJDREF, DATE-OBS formats, RADESYS defaults). The
    blocks are brief WCS constructions and evaluations; a lock makes them safe in threads.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        yield


def open_readonly(path: str | os.PathLike) -> fits.HDUList:
    """Open a FITS file read-only with every HDU and its data in memory, pixel values unscaled.

    Notes
    -----
    All data are loaded before returning: astropy writes truncated non-standard (``HDRLET``)
    extensions when their data are still lazy. ``do_not_scale_image_data`` keeps raw stored values
    (and BZERO/BSCALE), so a rewritten copy stores the same numbers.
    """
    hdul = fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=False,
                     do_not_scale_image_data=True)
    for hdu in hdul:
        _ = hdu.data
    return hdul


def sci_extensions(hdul: fits.HDUList) -> dict[int, fits.ImageHDU]:
    """The SCI extensions of an open file, keyed by EXTVER (1 when absent)."""
    return {int(hdu.header.get("EXTVER", 1)): hdu for hdu in hdul[1:]
            if str(hdu.header.get("EXTNAME", "")).strip().upper() == "SCI"}


def chip_wcs(header: fits.Header, hdul: fits.HDUList, *, key: str = " ") -> WCS:
    """The full WCS ``key`` of one extension header (SIP and lookup tables from ``hdul``)."""
    with fits_fixes_ignored():
        wcs = WCS(header, fobj=hdul, key=key)
    if wcs.pixel_shape is None and header.get("NAXIS", 0) == 2:
        wcs.pixel_shape = (header["NAXIS1"], header["NAXIS2"])
    return wcs


def read_chip_wcs(path: str | os.PathLike) -> dict[int, WCS]:
    """The full primary WCS (SIP and lookup-table distortion included) of every SCI extension.

    Parameters
    ----------
    path : path-like
        An FLT/FLC or SVM copy.

    Returns
    -------
    dict of int to `astropy.wcs.WCS`
        Keyed by SCI EXTVER, each built with ``WCS(header, fobj=hdulist)``, ``pixel_shape`` set.

    Examples
    --------
    >>> wcs_by_chip = read_chip_wcs("hst_11665_06_wfc3_uvis_f555w_ib4606c6_flc.fits")  # doctest: +SKIP
    >>> ra, dec = wcs_by_chip[1].all_pix2world(100.0, 200.0, 1)  # doctest: +SKIP
    """
    with fits.open(path, mode="readonly", memmap=False) as hdul:
        return {extver: chip_wcs(hdu.header, hdul)
                for extver, hdu in sorted(sci_extensions(hdul).items())}


def software_versions() -> tuple[str, str]:
    """``(UPWCSVER, PYWCSVER)`` values: ``'hapsvm <version>'`` and astropy's version."""
    try:
        ours = importlib.metadata.version("hapsvm")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        ours = "unknown"
    return f"hapsvm {ours}", astropy.__version__
