"""Records of the alignment stage: the SVM copy of an exposure with its fitted WCS (spec §2.2, §4.6).

The original FLT/FLC is opened read-only and never written (drizzlepac updates its copies in place,
spec §12.1). Every file is written through `hapcore.atomic.atomic_output`: it appears complete under
its final name or not at all.

What the SVM copy receives
--------------------------
* primary: ``HAPLEVEL``, ``IPPPSSOO`` (= ROOTNAME), ``FILENAME`` (= the copy's name); when the WCS
  records are written also ``UPWCSVER`` (``hapsvm <version>``) and ``PYWCSVER`` (astropy's version);
* every SCI extension: ``S_REGION`` of the chip footprint through the WCS written to the copy (the
  aligned one after a fit; drizzlepac writes it before aligning, from the input WCS);
* after a fit (see :func:`solution_kind`): per SCI chip the old primary WCS archived as an alternate
  WCS, the new CRVAL/CD, WCSNAME, WCSTYPE, ORIENTAT, RMS_RA, RMS_DEC, CRDER1/2, NMATCHES, FITGEOM,
  RELGEOM, RELMATCH, RELRMS_R, RELRMS_D, RELREFIM and HDRNAME.

Existing ``HDRLET`` and ``WCSCORR`` extensions are copied unchanged: they are the exposure's WCS
history (the grism reconciliation of §4.7 looks up WCS names in headerlets), and dropping them would
lose solutions that exist nowhere else in the copy. Their data are loaded before writing (astropy
writes truncated HDRLET extensions otherwise). ERR and DQ headers keep their own (old) WCS
keywords, as in drizzlepac's copies.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from astropy.io import fits

from hap_models.alignment import ChipWCS, ExposureAlignment
from hapcore.atomic import atomic_output
from hapcore.wcs.files import (
    chip_wcs,
    open_readonly,
    read_chip_wcs,
    sci_extensions,
    software_versions,
)
from hapcore.wcs.header import (
    archive_primary_wcs,
    footprint_s_region,
    orientat_from_cd,
    set_exact,
    set_primary_linear_wcs,
    write_fit_keywords,
    write_no_reference_keywords,
)
from hapcore.wcs.headerlet import (
    attach_headerlet,
    attached_hdrnames,
    hdrlet_extension_bytes,
    next_hdrlet_extver,
    write_headerlet,
    write_headerlet_of,
)
from hapcore.wcs.names import (
    NO_CATALOG_TOKEN,
    headerlet_name,
    wcsname_after_fit,
    wcstype_from_wcsname,
)
from hapcore.wcs.solution import SolutionKind, solution_kind

__all__ = [
    "SolutionKind",
    "solution_kind",
    "software_versions",
    "write_svm_copy",
    # re-exported so that callers need one import
    "read_chip_wcs",
    "headerlet_name",
    "NO_CATALOG_TOKEN",
    "wcsname_after_fit",
    "wcstype_from_wcsname",
    "write_headerlet",
    "attach_headerlet",
]

log = logging.getLogger(f"hapsvm.{__name__}")

_HAPLEVEL_COMMENT = "Classification level of this product"


def _chips_by_extver(chips: list[ChipWCS], sci_extvers: set[int], source: Path) -> dict[int, ChipWCS]:
    by_extver: dict[int, ChipWCS] = {}
    for chip in chips:
        if chip.extver in by_extver:
            raise ValueError(f"two ChipWCS entries for SCI,{chip.extver} of {source.name}")
        if chip.extver not in sci_extvers:
            raise ValueError(f"ChipWCS extver {chip.extver} has no SCI extension in {source.name} "
                             f"(SCI extvers: {sorted(sci_extvers)})")
        by_extver[chip.extver] = chip
    missing = sci_extvers - set(by_extver)
    if missing:
        # Updating some chips only would leave the exposure with two inconsistent solutions.
        raise ValueError(f"no ChipWCS for SCI extvers {sorted(missing)} of {source.name}")
    return by_extver


def _apply_solution(header: fits.Header, chip: ChipWCS, alignment: ExposureAlignment,
                    copy_name: str) -> str:
    """Archive the primary WCS of one SCI header, install the chip's solution and its records."""
    record = alignment.record
    current = str(header.get("WCSNAME", "")).strip()
    new_wcsname = wcsname_after_fit(current, record.fit_label, record.catalog)
    archived_as = archive_primary_wcs(header, new_primary_wcsname=new_wcsname)
    set_primary_linear_wcs(header, crpix=chip.crpix, crval=chip.crval, cd=chip.cd)
    set_exact(header, "WCSNAME", new_wcsname)
    set_exact(header, "WCSTYPE", wcstype_from_wcsname(new_wcsname), "", after="WCSNAME")
    set_exact(header, "ORIENTAT", orientat_from_cd(chip.cd))
    write_fit_keywords(
        header, rms_ra_mas=record.rms_ra_mas, rms_dec_mas=record.rms_dec_mas,
        nmatches=record.nmatches, fitgeom=record.fitgeom or "N/A", relgeom=record.relgeom,
        relmatch=record.relmatch, relrms_ra_mas=record.relrms_ra_mas,
        relrms_dec_mas=record.relrms_dec_mas, relrefim=record.relrefim)
    set_exact(header, "HDRNAME", headerlet_name(copy_name, new_wcsname))
    log.debug("SCI,%d: %r -> %r (old WCS archived as %s)", chip.extver, current, new_wcsname,
              archived_as or "existing alternate")
    return new_wcsname


def write_svm_copy(input_path: str | os.PathLike, output_path: str | os.PathLike,
                   alignment: ExposureAlignment, *, haplevel: int = 1,
                   headerlet_path: str | os.PathLike | None = None) -> Path:
    """Write the SVM copy of an input exposure, with the alignment's WCS and header records.

    Parameters
    ----------
    input_path : path-like
        The original FLT/FLC; opened read-only, never changed.
    output_path : path-like
        The copy to write (``ExposureProduct.full_filename`` in the output directory). Replaced
        atomically if it exists; must not be the input.
    alignment : `~hap_models.alignment.ExposureAlignment`
        The chips' solution and its record; see :func:`solution_kind` for what is written when.
    haplevel : int, optional
        Value of HAPLEVEL.
    headerlet_path : path-like, optional
        Also write the headerlet of the solution there and attach it to the copy: the same files
        as :func:`~hapcore.wcs.headerlet.write_headerlet` on the finished copy, without reading
        the copy back and writing it a second time. Only for a solution that replaces the WCS
        (``fit``/``relative``).

    Returns
    -------
    `pathlib.Path`
        ``output_path``.

    Raises
    ------
    ValueError
        If ``output_path`` is the input, if the chips do not match the SCI extensions one to one
        (unknown, duplicate or missing EXTVER), or a chip's CRPIX differs from the header's. No
        file is left behind then.
    """
    source = Path(input_path)
    target = Path(output_path)
    if target.resolve() == source.resolve():
        raise ValueError(f"refusing to overwrite the original input {source}")
    if target.name != alignment.svm_copy_filename:
        log.warning("SVM copy written as %s, but the alignment names it %s", target.name,
                    alignment.svm_copy_filename)
    kind = solution_kind(alignment)
    upwcsver, pywcsver = software_versions()

    with open_readonly(source) as hdul:
        had_checksum = any("CHECKSUM" in hdu.header for hdu in hdul)
        sci = sci_extensions(hdul)
        if not sci:
            raise ValueError(f"{source.name} has no SCI extension")
        chips = (_chips_by_extver(alignment.chips, set(sci), source)
                 if kind in ("fit", "relative") else {})
        if headerlet_path is not None and not chips:
            raise ValueError(f"{source.name}: no fitted solution to record in a headerlet ({kind})")
        if kind == "no_reference" and alignment.chips:
            log.info("%s: SVM record without a catalog; the input WCS is kept", source.name)

        primary = hdul[0].header
        set_exact(primary, "HAPLEVEL", int(haplevel), _HAPLEVEL_COMMENT)
        rootname = str(primary.get("ROOTNAME", source.name.split("_")[0])).strip()
        set_exact(primary, "IPPPSSOO", rootname, "rootname of the input exposure")
        set_exact(primary, "FILENAME", target.name, "name of file")
        if kind != "kept":
            # Provenance of the WCS: a kept WCS keeps the versions of the software that made it.
            set_exact(primary, "UPWCSVER", upwcsver, "Version of hapsvm used to update the WCS")
            set_exact(primary, "PYWCSVER", pywcsver, "Version of Astropy used to update the WCS")

        for extver, hdu in sorted(sci.items()):
            if extver in chips:
                _apply_solution(hdu.header, chips[extver], alignment, target.name)
            elif kind == "no_reference":
                write_no_reference_keywords(hdu.header)
            shape = (hdu.header["NAXIS2"], hdu.header["NAXIS1"])
            set_exact(hdu.header, "S_REGION", footprint_s_region(chip_wcs(hdu.header, hdul), shape))

        attach_as = None
        if headerlet_path is not None:
            hdrname = str(sci[min(sci)].header.get("HDRNAME", "")).strip()
            if hdrname in attached_hdrnames(hdul):
                log.debug("%s: headerlet %s already attached", target.name, hdrname)
            else:
                attach_as = next_hdrlet_extver(hdul)
                if "NEXTEND" in primary:
                    primary["NEXTEND"] = len(hdul)  # existing extensions + the headerlet

        with atomic_output(target) as tmp:
            hdul.writeto(tmp, overwrite=True, output_verify="silentfix", checksum=had_checksum)
            if headerlet_path is not None:
                # built from the headers as written (after any output fix), like a reread copy
                payload = write_headerlet_of(hdul, headerlet_path, alignment,
                                             copy_name=target.name)
                if attach_as is not None:
                    with open(tmp, "ab") as stream:
                        stream.write(hdrlet_extension_bytes(payload, attach_as))
                    log.debug("attached headerlet %s to %s", hdrname, target.name)
    log.debug("wrote SVM copy %s (%s)", target.name, kind)
    return target


