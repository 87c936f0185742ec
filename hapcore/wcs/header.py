"""Keyword-level operations on one SCI header: alternate WCSs, the primary WCS, fit records, S_REGION.

These functions change an in-memory `astropy.io.fits.Header` only; writing files is the business of
:mod:`hapcore.wcs.records`. Floating-point WCS values are written with all 17 significant digits (a
free-format FITS real may extend beyond column 30), so a value read back equals the value written;
astropy's default formatting keeps at most 20 characters and would drop the last digits.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Iterable, Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from hapcore.wcs.files import fits_fixes_ignored

__all__ = [
    "RESERVED_WCS_KEYS",
    "MAS_PER_DEG",
    "make_card",
    "set_exact",
    "alternate_wcs_keys",
    "alternate_wcsnames",
    "next_free_wcs_key",
    "archive_primary_wcs",
    "set_primary_linear_wcs",
    "orientat_from_cd",
    "write_fit_keywords",
    "write_no_reference_keywords",
    "footprint_s_region",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Alternate-WCS letters never chosen automatically: ``O`` holds the original OPUS WCS by HST
#: convention (stwcs and the HST pipeline write it there).
RESERVED_WCS_KEYS = frozenset("O")

MAS_PER_DEG = 3.6e6

#: Keywords of a primary WCS that are archived under an alternate key (``CRVAL1`` -> ``CRVAL1A``),
#: in the order stwcs writes them. Absent ones are skipped. RMS_RA/RMS_DEC/WCSTYPE/HDRNAME describe
#: the solution and travel with it (e.g. ``RMS_RAC``, ``HDRNAMEC`` in real HST headers).
_ARCHIVED_KEYWORDS = (
    "WCSNAME", "WCSAXES", "CRPIX1", "CRPIX2", "CUNIT1", "CUNIT2", "CTYPE1", "CTYPE2",
    "CRVAL1", "CRVAL2", "CRDER1", "CRDER2", "LONPOLE", "LATPOLE", "RADESYS",
    "CD1_1", "CD1_2", "CD2_1", "CD2_2",
    "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2",
    "WCSTYPE", "RMS_RA", "RMS_DEC", "HDRNAME",
)
_CD_KEYWORDS = ("CD1_1", "CD1_2", "CD2_1", "CD2_2")
_PC_KEYWORDS = ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2")
_KEY_MARKERS = re.compile(r"^(?:WCSNAME|CTYPE1|CRVAL1|CRPIX1|CD1_1|PC1_1|CDELT1)([A-Z])$")

_CRPIX_TOLERANCE_PX = 1e-6
_SAME_WCS_RTOL = 1e-12

_COMMENTS = {
    "CRVAL1": "[deg] Coordinate value at reference point",
    "CRVAL2": "[deg] Coordinate value at reference point",
    "CD1_1": "partial of first axis coordinate w.r.t. x",
    "CD1_2": "partial of first axis coordinate w.r.t. y",
    "CD2_1": "partial of second axis coordinate w.r.t. x",
    "CD2_2": "partial of second axis coordinate w.r.t. y",
    "WCSNAME": "Coordinate system title",
    "ORIENTAT": "position angle of image y axis (deg. e of n)",
    "RMS_RA": "RMS in RA of WCS fit(mas)",
    "RMS_DEC": "RMS in Dec of WCS fit(mas)",
    "CRDER1": "RMS in RA of WCS fit(deg)",
    "CRDER2": "RMS in Dec of WCS fit(deg)",
    "NMATCHES": "number of sources used in the fit",
    "FITGEOM": "geometry of the fit",
    "RELGEOM": "geometry of the relative fit",
    "RELMATCH": "number of sources used in the relative fit",
    "RELRMS_R": "RMS in RA of relative fit(mas)",
    "RELRMS_D": "RMS in Dec of relative fit(mas)",
    "RELREFIM": "reference image of the relative fit",
    "HDRNAME": "name of the headerlet of the primary WCS",
    "S_REGION": "spatial footprint",
}


def make_card(keyword: str, value, comment: str = "") -> fits.Card:
    """A card whose float value reads back bit-identical, its comment shortened to fit 80 columns.

    astropy keeps at most 20 characters of a float (losing the last digits) and truncates long
    comments with a warning; HST comments are informative only, so they are cut silently.
    """
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        text = repr(float(value)).upper()
        if len(text) > 20:
            image = f"{keyword:<8s}= {text:>20s}"
            room = 80 - len(image) - 3
            if comment and room > 0:
                image += f" / {comment[:room]}"
            return fits.Card.fromstring(image)
        value = float(value)
    bare = fits.Card(keyword, value)
    if not comment or len(bare.image) > 80:
        # a long string continues over CONTINUE cards, which carry the comment at their end
        return fits.Card(keyword, value, comment) if comment else bare
    room = 80 - len(bare.image.rstrip()) - 3
    return fits.Card(keyword, value, comment[:room]) if room > 0 else bare


def set_exact(header: fits.Header, keyword: str, value, comment: str | None = None, *,
              after: str | None = None) -> None:
    """Set ``keyword`` in place (or append it, or insert it after ``after``), keeping full precision.

    Parameters
    ----------
    header : `astropy.io.fits.Header`
        The header to change.
    keyword : str
        The keyword; an existing card keeps its position and, if ``comment`` is `None`, its comment.
    value : float, int, str or bool
        The new value.
    comment : str, optional
        The card comment; by default the existing one, else a standard one for known keywords.
    after : str, optional
        Where to insert the keyword when it is absent (appended when ``after`` is absent too).
    """
    if comment is None:
        comment = header.comments[keyword] if keyword in header else _COMMENTS.get(keyword, "")
    card = make_card(keyword, value, comment)
    if keyword in header:
        index = header.index(keyword)
        del header[index]
        header.insert(index, card)
    elif after is not None and after in header:
        header.insert(header.index(after) + 1, card)
    else:
        header.append(card, end=True)


def alternate_wcs_keys(header: fits.Header) -> list[str]:
    """Letters of the alternate WCSs present in ``header`` (any of WCSNAMEa, CTYPE1a, CRVAL1a...)."""
    keys = {m.group(1) for m in map(_KEY_MARKERS.match, header.keys()) if m}
    return sorted(keys)


def alternate_wcsnames(header: fits.Header) -> dict[str, str]:
    """``{letter: WCSNAMEa}`` of the alternate WCSs in ``header`` (blank for unnamed ones)."""
    return {key: str(header.get(f"WCSNAME{key}", "")).strip() for key in alternate_wcs_keys(header)}


def next_free_wcs_key(header: fits.Header) -> str:
    """The first unused alternate-WCS letter ``A``..``Z``, skipping :data:`RESERVED_WCS_KEYS`.

    Raises
    ------
    ValueError
        If all 25 usable letters are taken.
    """
    used = set(alternate_wcs_keys(header)) | RESERVED_WCS_KEYS
    for key in string.ascii_uppercase:
        if key not in used:
            return key
    raise ValueError("no free alternate WCS key left (A..Z all used)")


def _linear_terms(header: fits.Header, key: str = "") -> np.ndarray | None:
    """CRPIX, CRVAL and the CD matrix of WCS ``key`` as one vector (None if incomplete)."""
    names = [f"CRPIX1{key}", f"CRPIX2{key}", f"CRVAL1{key}", f"CRVAL2{key}"]
    if all(f"{cd}{key}" in header for cd in _CD_KEYWORDS):
        names += [f"{cd}{key}" for cd in _CD_KEYWORDS]
    try:
        return np.array([float(header[name]) for name in names])
    except (KeyError, TypeError, ValueError):
        return None


def _same_linear_wcs(header: fits.Header, key: str) -> bool:
    primary, alternate = _linear_terms(header), _linear_terms(header, key)
    if primary is None or alternate is None or primary.shape != alternate.shape:
        return False
    return bool(np.allclose(primary, alternate, rtol=_SAME_WCS_RTOL, atol=0.0))


def _unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name_<n>`` with the smallest free n (drizzlepac's ``create_unique_wcsname``)."""
    taken_upper = {t.upper() for t in taken}
    if name.upper() not in taken_upper:
        return name
    index = 1
    while f"{name}_{index}".upper() in taken_upper:
        index += 1
    return f"{name}_{index}"


def archive_primary_wcs(header: fits.Header, *, new_primary_wcsname: str = "") -> str | None:
    """Copy the primary WCS of ``header`` into the next free alternate WCS.

    Parameters
    ----------
    header : `astropy.io.fits.Header`
        A SCI header; changed in place.
    new_primary_wcsname : str, optional
        The name the primary WCS is about to get; an archive may not take it.

    Returns
    -------
    str or None
        The alternate letter used, or `None` when an alternate with the primary's WCSNAME and the
        same CRPIX/CRVAL/CD already exists (nothing is duplicated). A same-named alternate with a
        different WCS, or a clash with ``new_primary_wcsname``, archives the primary under
        ``<name>_<n>`` instead so that no solution is lost or shadowed.

    Notes
    -----
    SIP (``A_*``, ``B_*``) and lookup-table distortions are keyword-less with respect to the
    alternate letter: they are shared by all WCSs of the header, which is the HST convention and
    how astropy reads ``WCS(header, key='A')``.
    """
    name = str(header.get("WCSNAME", "")).strip()
    existing = alternate_wcsnames(header)
    if name:
        for key, alt_name in existing.items():
            if alt_name.upper() == name.upper() and _same_linear_wcs(header, key):
                log.debug("primary WCS %r already archived as alternate %s", name, key)
                return None
        taken = list(existing.values()) + ([new_primary_wcsname] if new_primary_wcsname else [])
        archive_name = _unique_name(name, taken)
        if archive_name != name:
            log.warning("alternate WCS name %r is taken; archiving the primary WCS as %r",
                        name, archive_name)
    else:
        archive_name = ""
    key = next_free_wcs_key(header)
    for keyword in _ARCHIVED_KEYWORDS:
        if keyword == "WCSNAME":
            set_exact(header, f"WCSNAME{key}", archive_name, _COMMENTS["WCSNAME"])
        elif keyword == "WCSTYPE" and "WCSTYPE" not in header:
            continue
        elif keyword in header:
            set_exact(header, f"{keyword}{key}", header[keyword], header.comments[keyword])
    return key


def orientat_from_cd(cd: Sequence[Sequence[float]]) -> float:
    """Position angle of the image +Y axis (degrees East of North) of a CD matrix.

    The +Y pixel axis points along (dRA, dDec) = (CD1_2, CD2_2); its angle from North through East
    is ``atan2(CD1_2, CD2_2)`` (the convention of stwcs and of ORIENTAT in HST headers).
    """
    return math.degrees(math.atan2(float(cd[0][1]), float(cd[1][1])))


def set_primary_linear_wcs(header: fits.Header, *, crpix: Sequence[float], crval: Sequence[float],
                           cd: Sequence[Sequence[float]]) -> None:
    """Replace CRVAL and the CD matrix of the primary WCS; CRPIX and distortion stay as they are.

    Raises
    ------
    ValueError
        If ``crpix`` differs from the header's CRPIX: SIP is defined about CRPIX, so a solution
        computed about another reference pixel cannot be written as CRVAL/CD alone.
    """
    header_crpix = (float(header.get("CRPIX1", np.nan)), float(header.get("CRPIX2", np.nan)))
    if not np.allclose(header_crpix, crpix, rtol=0.0, atol=_CRPIX_TOLERANCE_PX):
        raise ValueError(f"ChipWCS CRPIX {tuple(crpix)} differs from the header CRPIX {header_crpix}")
    set_exact(header, "CRVAL1", float(crval[0]), _COMMENTS["CRVAL1"])
    set_exact(header, "CRVAL2", float(crval[1]), _COMMENTS["CRVAL2"])
    if "CD1_1" not in header:
        # A PC/CDELT header: the CD matrix replaces both (a WCS may not carry CD and PC together).
        for keyword in _PC_KEYWORDS:
            header.remove(keyword, ignore_missing=True, remove_all=True)
    anchor = "CRVAL2"
    for keyword, value in zip(_CD_KEYWORDS, (cd[0][0], cd[0][1], cd[1][0], cd[1][1])):
        set_exact(header, keyword, float(value), _COMMENTS[keyword], after=anchor)
        anchor = keyword


def write_fit_keywords(header: fits.Header, *, rms_ra_mas: float, rms_dec_mas: float,
                       nmatches: int, fitgeom: str, relgeom: str = "N/A", relmatch: int = 0,
                       relrms_ra_mas: float = 0.0, relrms_dec_mas: float = 0.0,
                       relrefim: str = "N/A", write_crder: bool = True) -> None:
    """Write RMS_RA, RMS_DEC, CRDER1/2, NMATCHES, FITGEOM and the REL* keywords (spec §4.6).

    CRDER1/CRDER2 (the FITS random error of the coordinates) are the RMS in degrees. A negative RMS
    means unknown: CRDER is then removed (with ``write_crder`` true) rather than set to a negative
    error, and left alone with ``write_crder`` false. The REL* keywords follow FITGEOM.
    """
    set_exact(header, "RMS_RA", float(rms_ra_mas), _COMMENTS["RMS_RA"])
    set_exact(header, "RMS_DEC", float(rms_dec_mas), _COMMENTS["RMS_DEC"])
    if write_crder:
        for keyword, rms in (("CRDER1", rms_ra_mas), ("CRDER2", rms_dec_mas)):
            if rms >= 0:
                set_exact(header, keyword, float(rms) / MAS_PER_DEG, _COMMENTS[keyword])
            else:
                header.remove(keyword, ignore_missing=True)
    set_exact(header, "NMATCHES", int(nmatches), _COMMENTS["NMATCHES"])
    set_exact(header, "FITGEOM", fitgeom, _COMMENTS["FITGEOM"])
    anchor = "FITGEOM"
    for keyword, value in (("RELGEOM", relgeom), ("RELMATCH", int(relmatch)),
                           ("RELRMS_R", float(relrms_ra_mas)), ("RELRMS_D", float(relrms_dec_mas)),
                           ("RELREFIM", relrefim)):
        set_exact(header, keyword, value, _COMMENTS[keyword], after=anchor)
        anchor = keyword


def write_no_reference_keywords(header: fits.Header) -> None:
    """The records of a fit without a reference catalog: RMS_* = -1, NMATCHES 0, FITGEOM N/A.

    The WCS itself (and CRDER, which belongs to it) is not touched.
    """
    write_fit_keywords(header, rms_ra_mas=-1.0, rms_dec_mas=-1.0, nmatches=0, fitgeom="N/A",
                       write_crder=False)


def footprint_s_region(wcs: WCS, shape: tuple[int, int]) -> str:
    """``POLYGON ICRS ra1 dec1 ... ra4 dec4 ra1 dec1`` of a chip through its full WCS.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        The chip's full WCS (SIP and lookup tables included).
    shape : tuple of int
        The chip's data shape ``(ny, nx)``.

    Notes
    -----
    The corners are the centres of the corner pixels, in the order of
    `astropy.wcs.WCS.calc_footprint` (1,1), (1,ny), (nx,ny), (nx,1), as drizzlepac writes them; the
    first corner is repeated to close the polygon.
    """
    ny, nx = shape
    corners = np.array([[1, 1], [1, ny], [nx, ny], [nx, 1]], dtype=np.float64)
    with fits_fixes_ignored():
        sky = wcs.all_pix2world(corners, 1)
    sky = np.vstack([sky, sky[:1]])
    return "POLYGON ICRS " + " ".join(f"{float(ra)!r} {float(dec)!r}" for ra, dec in sky)
