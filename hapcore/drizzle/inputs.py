"""Reading one input chip for drizzling: SCI in e-/s, ERR, DQ and the detector noise model.

Files are opened read-only and every array is copied into memory, so nothing done to the arrays
can reach the file (spec §12.1: drizzlepac writes CR flags into its inputs' DQ; we never do).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

__all__ = [
    "ChipData",
    "chip_wcs_of",
    "exposure_keywords",
    "good_pixel_mask",
    "read_chip",
    "sci_extvers",
]

log = logging.getLogger(f"hapsvm.{__name__}")

_GAIN_KEYS = ("ATODGNA", "ATODGNB", "ATODGNC", "ATODGND")
_READNOISE_KEYS = ("READNSEA", "READNSEB", "READNSEC", "READNSED")


@dataclass
class ChipData:
    """One SCI chip in count-rate units with its noise model.

    Attributes
    ----------
    sci : ndarray, float32
        Count rate (e-/s); non-finite input values are set to 0 and marked in ``finite``.
    err : ndarray or None, float32
        1-sigma error (e-/s).
    dq : ndarray, uint16
        Data-quality flags.
    finite : ndarray of bool
        False where the input SCI was NaN/inf.
    exptime : float
        Exposure time (s).
    gain : float
        e-/DN (the data are already in electrons; used only for the noise model).
    readnoise : float
        Read noise (e-).
    extver : int
    """

    sci: np.ndarray
    err: np.ndarray | None
    dq: np.ndarray
    finite: np.ndarray
    exptime: float
    gain: float
    readnoise: float
    extver: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.sci.shape

    @property
    def is_empty(self) -> bool:
        """True when no pixel carries data (all zero or non-finite)."""
        return not np.any(self.finite & (self.sci != 0))


def _mean_of_keys(headers, keys, default):
    values = []
    for key in keys:
        for header in headers:
            value = header.get(key)
            if isinstance(value, (int, float)) and value > 0:
                values.append(float(value))
                break
    return float(np.mean(values)) if values else default


def _find_ext(hdul: fits.HDUList, extname: str, extver: int):
    for hdu in hdul[1:]:
        if (str(hdu.header.get("EXTNAME", "")).strip().upper() == extname
                and int(hdu.header.get("EXTVER", 1)) == extver):
            return hdu
    return None


def read_chip(path: str | os.PathLike, extver: int, *, err: bool = True) -> ChipData:
    """Read ``path[SCI, extver]`` (with ERR and DQ) as count rates.

    Electrons (or counts) are divided by EXPTIME; rates (``BUNIT`` ending in ``/S``) are kept.
    ``err=False`` skips the ERR array (``ChipData.err`` is None), for callers that never use it.
    """
    want_err = err
    with fits.open(path, mode="readonly", memmap=False) as hdul:
        primary = hdul[0].header
        sci_hdu = _find_ext(hdul, "SCI", extver)
        if sci_hdu is None:
            raise KeyError(f"{os.fspath(path)} has no SCI,{extver}")
        header = sci_hdu.header
        exptime = float(primary.get("EXPTIME", header.get("EXPTIME", 0.0)) or 0.0)
        bunit = str(header.get("BUNIT", primary.get("BUNIT", "ELECTRONS"))).strip().upper()
        is_rate = bunit.endswith("/S")
        sci = np.array(sci_hdu.data, dtype=np.float32)
        err_hdu = _find_ext(hdul, "ERR", extver) if want_err else None
        err = np.array(err_hdu.data, dtype=np.float32) if err_hdu is not None and \
            err_hdu.data is not None else None
        dq_hdu = _find_ext(hdul, "DQ", extver)
        if dq_hdu is not None and dq_hdu.data is not None:
            dq = np.asarray(dq_hdu.data)
            # the 16 flag bits, as uint16: integer casts wrap like C, so the cast keeps the
            # low 16 bits (``dq & 0xFFFF``) of any integer type; half the memory of uint32
            # (17 MB of a UVIS chip job's peak)
            if dq.dtype.kind in "iu":
                dq = dq.astype(np.uint16)
            else:
                dq = dq.astype(np.int64).astype(np.uint16)
        else:
            dq = np.zeros(sci.shape, np.uint16)
        gain = _mean_of_keys((primary, header), _GAIN_KEYS,
                             float(primary.get("CCDGAIN", 1.0) or 1.0))
        readnoise = _mean_of_keys((primary, header), _READNOISE_KEYS, 0.0)
    finite = np.isfinite(sci)
    sci[~finite] = 0.0
    if not is_rate:
        if exptime <= 0:
            raise ValueError(f"{os.fspath(path)}: EXPTIME {exptime} cannot convert "
                             f"{bunit} to a rate")
        sci /= np.float32(exptime)
        if err is not None:
            err /= np.float32(exptime)
    if err is not None:
        err[~np.isfinite(err)] = 0.0
    return ChipData(sci=sci, err=err, dq=dq, finite=finite, exptime=exptime,
                    gain=gain, readnoise=readnoise, extver=int(extver))


def good_pixel_mask(dq: np.ndarray, good_bits: int) -> np.ndarray:
    """True where every set DQ flag is among ``good_bits`` (drizzlepac's bits convention)."""
    bad = ~np.uint32(good_bits)
    if dq.dtype == np.uint16:
        # the mask in the flags' own type (they have no higher bits): no uint32 copy of the chip
        bad = np.uint16(bad & 0xFFFF)
    return (dq & bad) == 0


#: Files whose headers a process keeps parsed (`chip_wcs_of`, `exposure_keywords`).
_CACHED_FILES = 16
_WCS_CACHE: OrderedDict = OrderedDict()
_KEYWORD_CACHE: OrderedDict = OrderedDict()


def _file_key(path: str | os.PathLike) -> tuple:
    """A file's identity: a rewritten file (a new alignment) is another key."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return (real, stat.st_size, stat.st_mtime_ns)


def _cached(cache: OrderedDict, key, make):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    while len(cache) > _CACHED_FILES:
        cache.popitem(last=False)
    return value


def chip_wcs_of(path: str | os.PathLike) -> dict:
    """`hapcore.wcs.files.read_chip_wcs` of ``path``, parsed once per process and file
    version: a drizzle stage asks for an exposure's chip WCSs a dozen times, and parsing the
    headers of a full-frame file costs ~0.1 s. The WCS objects are shared: do not modify them.
    """
    from hapcore.wcs.files import read_chip_wcs

    return dict(_cached(_WCS_CACHE, _file_key(path), lambda: read_chip_wcs(path)))


def sci_extvers(path: str | os.PathLike) -> list[int]:
    """The EXTVERs of the SCI extensions of ``path`` (sorted)."""
    return sorted(chip_wcs_of(path))


def exposure_keywords(path: str | os.PathLike) -> dict:
    """Header keywords a product header is built from (parsed once per process and file
    version; the headers returned are copies).

    Returns
    -------
    dict
        ``primary`` (Header), ``sci`` (SCI,1 header, empty if there is none), ``chips``
        (``{extver: SCI header}`` of every SCI extension) and ``filename`` (the file's name).
    """
    cached = _cached(_KEYWORD_CACHE, _file_key(path), lambda: _exposure_keywords(path))
    chips = {k: h.copy() for k, h in cached["chips"].items()}
    return {"primary": cached["primary"].copy(), "sci": chips.get(1, fits.Header()),
            "chips": chips, "filename": os.path.basename(os.fspath(path))}


def _exposure_keywords(path: str | os.PathLike) -> dict:
    with fits.open(path, mode="readonly", memmap=False) as hdul:
        primary = hdul[0].header.copy()
        chips = {}
        for hdu in hdul[1:]:
            if str(hdu.header.get("EXTNAME", "")).strip().upper() == "SCI":
                chips[int(hdu.header.get("EXTVER", 1))] = hdu.header.copy()
    sci_header = chips.get(1, fits.Header())
    return {"primary": primary, "sci": sci_header, "chips": chips,
            "filename": os.path.basename(os.fspath(path))}
