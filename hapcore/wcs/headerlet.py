"""Headerlets: a fitted WCS solution as a FITS file of its own (stwcs layout, spec §4.6).

A headerlet ``<pb>_hlet.fits`` holds

* a primary header describing the solution: DESTIM, HDRNAME, DATE, WCSNAME, DISTNAME, SIPNAME,
  NPOLFILE, D2IMFILE, IDCTAB, AUTHOR, DESCRIP, RMS_RA, RMS_DEC, NMATCH, CATALOG, UPWCSVER, PYWCSVER,
  FITMETH, FIT_RMS and ``HISTORY`` lines with the fit parameters;
* one data-less ``SIPWCS`` extension per chip (EXTVER = the SCI EXTVER, TG_ENAME/TG_EVER naming the
  target) with the chip's WCS keywords: linear WCS, SIP, lookup-table references, IDC terms;
* the ``WCSDVARR``/``D2IMARR`` lookup tables those keywords reference (same EXTVERs as in the copy).

``WCS(headerlet['SIPWCS', n].header, fobj=headerlet)`` reproduces the copy's primary WCS of chip n.
The headerlet may be attached to the SVM copy as an ``HDRLET`` extension: a non-standard extension
whose data are the bytes of the headerlet file, as stwcs does.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from hap_models.alignment import ExposureAlignment
from hapcore.atomic import atomic_output
from hapcore.wcs.files import open_readonly, sci_extensions, software_versions
from hapcore.wcs.header import make_card
from hapcore.wcs.names import headerlet_name
from hapcore.wcs.solution import solution_kind

__all__ = ["build_headerlet", "write_headerlet", "write_headerlet_of", "attach_headerlet",
           "attached_hdrnames", "next_hdrlet_extver", "hdrlet_extension_bytes"]

log = logging.getLogger(f"hapsvm.{__name__}")

_FITS_BLOCK = 2880

#: WCS keywords of a SCI header copied into its SIPWCS extension (record-valued cards such as
#: ``DP1 = 'EXTVER: 1'`` match by their base keyword).
_SIPWCS_KEYWORDS = re.compile(
    r"^(?:WCSAXES|CRPIX[12]|CUNIT[12]|CTYPE[12]|CRVAL[12]|CRDER[12]|CSYER[12]|WCSNAME|MJDREF"
    r"|RADESYS|EQUINOX|LONPOLE|LATPOLE|CD[12]_[12]|PC[12]_[12]|CDELT[12]"
    r"|A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_DMAX|B_DMAX|(?:A|B|AP|BP)_\d+_\d+"
    r"|D2IMDIS[12]|D2IM[12]|D2IMERR[12]|D2IMEXT|CPDIS[12]|DP[12]|CPERR[12]|NPOLEXT"
    r"|OC[XY]\d\d|IDCSCALE|IDCTHETA|IDCXREF|IDCYREF|IDCV2REF|IDCV3REF|ORIENTAT|VAFACTOR)$")

#: Lookup-table references: record-valued keyword -> extension name holding the table.
_LOOKUP_REFERENCES = {"DP1.EXTVER": "WCSDVARR", "DP2.EXTVER": "WCSDVARR",
                      "D2IM1.EXTVER": "D2IMARR", "D2IM2.EXTVER": "D2IMARR"}

#: Primary keywords of the headerlet describing the distortion model, copied from the SVM copy's
#: primary header when present (stwcs writes 'NOMODEL' for a missing model).
_MODEL_KEYWORDS = (
    ("DISTNAME", "Distortion model name", "NOMODEL"),
    ("SIPNAME", "origin of SIP polynomial distortion model", "NOMODEL"),
    ("NPOLFILE", "origin of non-polynmial distortion model", "NOMODEL"),
    ("D2IMFILE", "origin of detector to image correction", "NOMODEL"),
    ("IDCTAB", "origin of Polynomial Distortion", "N/A"),
)


def _put(header: fits.Header, keyword: str, value, comment: str) -> None:
    header.append(make_card(keyword, value, comment), end=True)


def _sipwcs_header(sci_header: fits.Header, extver: int) -> fits.Header:
    header = fits.Header()
    for card in sci_header.cards:
        if _SIPWCS_KEYWORDS.match(card.keyword.split(".")[0]):
            header.append(fits.Card.fromstring(card.image), end=True)
    header["TG_ENAME"] = ("SCI", "Target science data extname")
    header["TG_EVER"] = (extver, "Target science data extver")
    header["EXTNAME"] = ("SIPWCS", "extension name")
    header["EXTVER"] = (extver, "extension value")
    return header


def _lookup_tables(sci_header: fits.Header) -> list[tuple[str, int]]:
    """``(EXTNAME, EXTVER)`` of the lookup tables a SCI header references, in reference order."""
    tables = []
    for card in sci_header.cards:
        name = _LOOKUP_REFERENCES.get(card.keyword)
        if name is not None:
            tables.append((name, int(float(card.value))))
    return list(dict.fromkeys(tables))


def _history_lines(alignment: ExposureAlignment, platescale_arcsec: float) -> list[str]:
    """The fit-parameter HISTORY block, formatted as stwcs writes it."""
    record = alignment.record
    rows = [("platescale", platescale_arcsec, ' "/pixels'), ("x_shift", record.x_shift_px, " pixels"),
            ("y_shift", record.y_shift_px, " pixels"), ("rotation", record.rotation_deg, " degrees"),
            ("scale", record.scale, ""), ("skew", record.skew_deg, "")]
    return ["~~~~~ FIT PARAMETERS ~~~~~"] + [f"{name:>15s} : {value:9.4f}{unit}"
                                           for name, value, unit in rows]


def build_headerlet(copy_hdul: fits.HDUList, alignment: ExposureAlignment, *,
                    copy_name: str) -> fits.HDUList:
    """Build the headerlet of the primary WCS recorded in an (open) SVM copy.

    Parameters
    ----------
    copy_hdul : `astropy.io.fits.HDUList`
        The SVM copy written by `~hapcore.wcs.records.write_svm_copy`.
    alignment : `~hap_models.alignment.ExposureAlignment`
        The alignment whose solution the copy carries (for the fit record).
    copy_name : str
        File name of the copy (HDRNAME is derived from it).

    Returns
    -------
    `astropy.io.fits.HDUList`

    Raises
    ------
    ValueError
        If the alignment carries no new solution (``kept``/``no_reference``), or a SCI header's
        HDRNAME does not name its WCSNAME (the copy does not carry this solution).
    """
    kind = solution_kind(alignment)
    if kind not in ("fit", "relative"):
        raise ValueError(f"{copy_name}: no fitted solution to record in a headerlet ({kind})")
    sci = sci_extensions(copy_hdul)
    if not sci:
        raise ValueError(f"{copy_name} has no SCI extension")
    names = set()
    for extver, hdu in sci.items():
        wcsname = str(hdu.header.get("WCSNAME", "")).strip()
        hdrname = str(hdu.header.get("HDRNAME", "")).strip()
        if hdrname != headerlet_name(copy_name, wcsname):
            raise ValueError(f"{copy_name}[SCI,{extver}] carries no recorded solution "
                             f"(WCSNAME {wcsname!r}, HDRNAME {hdrname!r})")
        names.add((wcsname, hdrname))
    if len(names) != 1:
        raise ValueError(f"{copy_name}: chips carry different solutions {sorted(names)}")
    (wcsname, hdrname), = names

    record = alignment.record
    source_primary = copy_hdul[0].header
    first_sci = sci[min(sci)].header
    upwcsver, pywcsver = software_versions()
    cd = np.array([[first_sci.get("CD1_1", 0.0), first_sci.get("CD1_2", 0.0)],
                   [first_sci.get("CD2_1", 0.0), first_sci.get("CD2_2", 0.0)]], dtype=float)
    platescale = math.sqrt(abs(np.linalg.det(cd))) * 3600.0

    primary = fits.Header()
    _put(primary, "DESTIM", str(source_primary.get("ROOTNAME", "")).strip(),
         "Destination observation root name")
    _put(primary, "HDRNAME", hdrname, "Headerlet name")
    _put(primary, "DATE", Time.now().utc.isot[:19], "Date FITS file was generated")
    _put(primary, "WCSNAME", wcsname, "Coordinate system title")
    for keyword, comment, default in _MODEL_KEYWORDS:
        _put(primary, keyword, str(source_primary.get(keyword, default)).strip() or default, comment)
    _put(primary, "AUTHOR", "hapsvm", "headerlet created by this user")
    _put(primary, "DESCRIP", f"{record.fit_label} alignment solution",
         "Short description of headerlet solution")
    _put(primary, "RMS_RA", float(record.rms_ra_mas), "RMS in RA of WCS fit(mas)")
    _put(primary, "RMS_DEC", float(record.rms_dec_mas), "RMS in Dec of WCS fit(mas)")
    _put(primary, "NMATCH", int(record.nmatches), "Number of sources used for headerlet solution")
    _put(primary, "CATALOG", (record.catalog or "").strip() or "N/A",
         "Astrometric catalog used for headerlet solution")
    _put(primary, "UPWCSVER", upwcsver, "Version of hapsvm used to update the WCS")
    _put(primary, "PYWCSVER", pywcsver, "Version of Astropy used to update the WCS")
    _put(primary, "FITMETH", record.fit_label, "Fit method of the headerlet solution")
    _put(primary, "FIT_RMS", float(record.fit_rms_mas),
         "RMS (mas) of the 2D fit of the headerlet solution")
    for line in _history_lines(alignment, platescale):
        primary.add_history(line)

    hdus: list[fits.hdu.base.ExtensionHDU] = []
    copied_tables: set[tuple[str, int]] = set()
    for extver, hdu in sorted(sci.items()):
        hdus.append(fits.ImageHDU(header=_sipwcs_header(hdu.header, extver)))
        for table in _lookup_tables(hdu.header):
            if table in copied_tables:
                continue
            source = copy_hdul[table]
            hdus.append(fits.ImageHDU(data=np.array(source.data), header=source.header.copy()))
            copied_tables.add(table)
    return fits.HDUList([fits.PrimaryHDU(header=primary), *hdus])


def write_headerlet(svm_copy_path: str | os.PathLike, headerlet_path: str | os.PathLike,
                    alignment: ExposureAlignment, *, attach: bool = True) -> Path:
    """Write the headerlet of the solution recorded in an SVM copy, and attach it to the copy.

    Parameters
    ----------
    svm_copy_path : path-like
        The SVM copy written by `~hapcore.wcs.records.write_svm_copy` for ``alignment``.
    headerlet_path : path-like
        The headerlet file to write (``ExposureProduct.headerlet_filename``).
    alignment : `~hap_models.alignment.ExposureAlignment`
        The alignment whose solution the copy carries.
    attach : bool, optional
        Also append the headerlet to the copy as an ``HDRLET`` extension (see
        :func:`attach_headerlet`; skipped when one with the same HDRNAME is attached already).

    Returns
    -------
    `pathlib.Path`
        ``headerlet_path``.
    """
    copy_path = Path(svm_copy_path)
    target = Path(headerlet_path)
    with open_readonly(copy_path) as copy_hdul:
        write_headerlet_of(copy_hdul, target, alignment, copy_name=copy_path.name)
    if attach:
        attach_headerlet(copy_path, target)
    return target


def write_headerlet_of(copy_hdul: fits.HDUList, headerlet_path: str | os.PathLike,
                       alignment: ExposureAlignment, *, copy_name: str) -> bytes:
    """Write the headerlet of an open SVM copy (see :func:`build_headerlet`); return its bytes.

    The bytes are those of the file written, ready for :func:`hdrlet_extension_bytes`.
    """
    target = Path(headerlet_path)
    headerlet = build_headerlet(copy_hdul, alignment, copy_name=copy_name)
    stream = io.BytesIO()
    headerlet.writeto(stream)
    payload = stream.getvalue()
    with atomic_output(target) as tmp:
        tmp.write_bytes(payload)
    log.debug("wrote headerlet %s (%s)", target.name, headerlet[0].header["HDRNAME"])
    return payload


def attached_hdrnames(hdul: fits.HDUList) -> list[str]:
    """HDRNAMEs of the HDRLET extensions of an open file."""
    return [str(hdu.header.get("HDRNAME", "")).strip() for hdu in hdul[1:]
            if str(hdu.header.get("EXTNAME", hdu.header.get("XTENSION", ""))).strip() == "HDRLET"]


def next_hdrlet_extver(hdul: fits.HDUList) -> int:
    """EXTVER for one more HDRLET extension of an open file: one above the highest present."""
    extvers = [int(hdu.header.get("EXTVER", 1)) for hdu in hdul[1:]
               if str(hdu.header.get("EXTNAME", "")).strip() == "HDRLET"]
    return max(extvers, default=0) + 1


def hdrlet_extension_bytes(payload: bytes, extver: int) -> bytes:
    """A complete HDRLET extension (header and padded data) wrapping a headerlet file's bytes.

    A FITS file is a sequence of HDUs: appended to a file these bytes are its last extension
    (astropy cannot build such a non-standard extension in memory).
    """
    with fits.open(io.BytesIO(payload)) as headerlet:
        offsets = [headerlet.fileinfo(i)["hdrLoc"] for i in range(1, len(headerlet))]
        hl_primary = headerlet[0].header
        header = fits.Header()
        header["XTENSION"] = ("HDRLET", "FITS extension")
        header["BITPIX"] = (8, "array data type")
        header["NAXIS"] = (1, "number of array dimensions")
        header["NAXIS1"] = (len(payload), "Axis length")
        header["PCOUNT"] = (0, "number of parameters")
        header["GCOUNT"] = (1, "number of groups")
        for index, offset in enumerate(offsets, start=1):
            header[f"XIND{index}"] = (offset, f"byte offset of extension {index}")
        header["COMPRESS"] = (False, "Uses gzip compression")
        for keyword in ("HDRNAME", "DATE", "SIPNAME", "WCSNAME", "DISTNAME", "NPOLFILE", "D2IMFILE"):
            if keyword in hl_primary:
                _put(header, keyword, hl_primary[keyword], hl_primary.comments[keyword])
        header["EXTNAME"] = ("HDRLET", "Extension name")
        header["EXTVER"] = extver
    padding = (-len(payload)) % _FITS_BLOCK
    return header.tostring(padding=True).encode("ascii") + payload + b"\0" * padding


def attach_headerlet(svm_copy_path: str | os.PathLike, headerlet_path: str | os.PathLike) -> bool:
    """Append a headerlet file to an SVM copy as an ``HDRLET`` extension, unless already attached.

    The copy (our own output, never an original) is rewritten atomically: its HDUs unchanged, NEXTEND
    incremented, the new extension last with EXTVER one above the highest HDRLET EXTVER.

    Returns
    -------
    bool
        True if attached, False if an HDRLET with the same HDRNAME was present.
    """
    copy_path = Path(svm_copy_path)
    payload = Path(headerlet_path).read_bytes()
    with fits.open(io.BytesIO(payload)) as headerlet:
        hdrname = str(headerlet[0].header["HDRNAME"]).strip()
    with open_readonly(copy_path) as copy_hdul:
        attached = attached_hdrnames(copy_hdul)
        if hdrname in attached:
            log.debug("%s: headerlet %s already attached", copy_path.name, hdrname)
            return False
        extension = hdrlet_extension_bytes(payload, next_hdrlet_extver(copy_hdul))
        if "NEXTEND" in copy_hdul[0].header:
            copy_hdul[0].header["NEXTEND"] = len(copy_hdul)  # existing extensions + the new one
        had_checksum = any("CHECKSUM" in hdu.header for hdu in copy_hdul)
        with atomic_output(copy_path) as tmp:
            copy_hdul.writeto(tmp, overwrite=True, output_verify="silentfix", checksum=had_checksum)
            # astropy cannot build a non-standard extension in memory; a FITS file is a sequence
            # of HDUs, so appending the complete extension's bytes is a valid file.
            with open(tmp, "ab") as stream:
                stream.write(extension)
    log.debug("attached headerlet %s to %s", hdrname, copy_path.name)
    return True
