"""From a poller file to the product tree of a visit (spec §1.3–§1.6).

:func:`interpret_obset_input` reads the poller, opens every exposure read-only, drops the ones the
viability filter rejects (each logged with its reason), sorts the rest and groups them by detector
and filter into an :class:`~hap_models.poller.ObsetTree`. :func:`parse_obset_tree` turns that tree
into :class:`~hap_models.products.TotalProduct` objects with their filter and exposure products.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hap_models.errors import HapInputError, NoViableDataError
from hap_models.poller import ExposureRecord, ObsetTree, ObsetTreeEntry, RejectedExposure
from hap_models.products import (
    ExposureProduct,
    FilterProduct,
    GrismExposureProduct,
    TotalProduct,
)
from hapcore.obset.filters import is_grism_filter
from hapcore.obset.poller import (
    complete_poller_line,
    locate_exposure,
    read_exposure_header,
    read_poller_lines,
)
from hapcore.obset.viability import rejection_reason

__all__ = ["interpret_obset_input", "sort_exposures", "build_obset_tree", "parse_obset_tree"]

logger = logging.getLogger(f"hapsvm.{__name__}")


def sort_exposures(records: list[ExposureRecord]) -> list[ExposureRecord]:
    """Sort by EXPTIME ascending, then PHOTFLAM descending (what drizzlepac's code does, §1.5).

    The sort is stable, so equal keys keep the poller order.
    """
    return sorted(records, key=lambda r: (r.exptime, -r.photflam))


def _info_string(record: ExposureRecord, filetype: str) -> str:
    return " ".join([record.proposal_id, record.obset_id, record.instrument, record.detector,
                     record.aperture, record.rootname, record.filter_name, filetype]).lower()


def build_obset_tree(records: list[ExposureRecord], *, poller_file: Path,
                     rejected: list[RejectedExposure] | None = None) -> ObsetTree:
    """Group sorted, viable records by detector and normalised filter (spec §1.6).

    Per (detector, filter) group the product type is ``drc`` if any member is an FLC file, and
    then only FLC files are members; FLT files beside them are left out with a warning.
    """
    first = records[0]
    tree = ObsetTree(poller_file=str(poller_file), instrument=first.instrument,
                     proposal_id=first.proposal_id, program_id=first.program_id,
                     obset_id=first.obset_id, ipppss=first.ipppss, rejected=rejected or [])
    for record in records:
        det = tree.tree.setdefault(record.detector, {})
        det.setdefault(record.filter_name, [])
    for det, groups in tree.tree.items():
        tree.group_filetypes[det] = {}
        for filt in groups:
            members = [r for r in records if r.detector == det and r.filter_name == filt]
            filetype = "drc" if any(r.filetype == "flc" for r in members) else "drz"
            wanted = "flc" if filetype == "drc" else "flt"
            tree.group_filetypes[det][filt] = filetype
            for record in members:
                if record.filetype != wanted:
                    msg = (f"{record.filename}: FLT file ignored because filter {filt} of "
                           f"{det.upper()} has FLC files")
                    logger.warning(msg)
                    tree.warnings.append(msg)
                    continue
                groups[filt].append(ObsetTreeEntry(record=record, info=_info_string(record, filetype)))
    return tree


def interpret_obset_input(input_filename: str | os.PathLike, *, cwd: Path | None = None) -> ObsetTree:
    """Read a poller file and return the visit's tree of viable exposures.

    Parameters
    ----------
    input_filename : path-like
        Poller file (8-, 1- or 2-field lines).
    cwd : Path, optional
        Working directory searched after the poller's own directory (default: the current one).

    Raises
    ------
    HapInputError
        For a bad poller line, a missing or unreadable exposure, a missing keyword, an unknown
        instrument or detector, an exposure listed twice, or exposures of different visits.
    NoViableDataError
        If every exposure is rejected by the viability filter (a damaged file -- see
        :mod:`hapcore.obset.integrity` -- is rejected too, with its reason).
    """
    poller_file = Path(input_filename).resolve()
    lines = read_poller_lines(poller_file)

    viable: list[ExposureRecord] = []
    rejected: list[RejectedExposure] = []
    first: ExposureRecord | None = None
    seen: dict[str, int] = {}
    for line in lines:
        where = f"{line.source}:{line.line_number}"
        rootname = Path(line.filename).name.split("_")[0].lower()
        if rootname in seen:
            raise HapInputError(
                f"{where}: exposure {rootname} is listed twice (first at line {seen[rootname]})")
        seen[rootname] = line.line_number
        path = locate_exposure(line, cwd=cwd)
        header = read_exposure_header(path, where=where)
        if header.damage is not None:
            # a damaged file (truncated, unreadable header card, missing extension): rejected
            # before its headers are trusted for anything else
            name = Path(line.filename).name.lower()
            rejected.append(RejectedExposure(filename=name, line_number=line.line_number,
                                             reason=header.damage))
            logger.warning("%s: %s not processed: %s", where, name, header.damage)
            continue
        record = complete_poller_line(line, header)
        if first is None:
            first = record
        elif record.ipppss != first.ipppss:
            raise HapInputError(
                f"{where}: exposure {record.rootname} belongs to visit {record.ipppss}, but "
                f"line {first.line_number} is from visit {first.ipppss}: "
                "one poller file must hold one visit")
        reason = rejection_reason(header.primary, instrument=record.instrument,
                                  detector=record.detector, sci_all_zero=header.sci_all_zero,
                                  no_usable_chip=header.no_usable_chip,
                                  filename=record.filename)
        if reason is None:
            viable.append(record)
            for note in header.notes:
                logger.warning("%s: %s: %s", where, record.filename, note)
        else:
            rejected.append(RejectedExposure(filename=record.filename,
                                             line_number=line.line_number, reason=reason))
            logger.warning("%s: %s not processed: %s", where, record.filename, reason)

    if not viable:
        raise NoViableDataError(
            f"{poller_file}: no viable exposures: all {len(rejected)} were rejected "
            f"({'; '.join(f'{r.filename}: {r.reason}' for r in rejected)})")
    ordered = sort_exposures(viable)
    tree = build_obset_tree(ordered, poller_file=poller_file, rejected=rejected)
    logger.info("%s: %d exposure(s) of visit %s accepted, %d rejected; detectors: %s",
                poller_file.name, len(viable), tree.ipppss, len(rejected),
                ", ".join(d.upper() for d in tree.detectors))
    return tree


def parse_obset_tree(tree: ObsetTree, *, log_level: int = logging.INFO) -> list[TotalProduct]:
    """Build the product objects of a visit from its tree (one TotalProduct per detector).

    Grism/prism exposures only go to the total product's ``grism_edp_list``. A filter with one
    exposure marks it ``is_singleton`` and, except on WFC3/IR, ``crclean``.

    Raises
    ------
    NoViableDataError
        If no detector has a direct (non-grism) exposure.
    """
    totals: list[TotalProduct] = []
    for det, groups in tree.tree.items():
        total: TotalProduct | None = None
        for filt, entries in groups.items():
            if not entries:
                continue
            filetype = tree.group_filetypes[det][filt]
            first = entries[0].record
            if total is None:
                total = TotalProduct(first.proposal_id, first.obset_id, first.instrument, det,
                                     first.filename, filetype, log_level)
            if is_grism_filter(filt):
                for entry in entries:
                    rec = entry.record
                    total.grism_edp_list.append(GrismExposureProduct(
                        rec.proposal_id, rec.obset_id, rec.instrument, det, rec.filename, filt,
                        filetype, log_level, input_path=rec.input_path, exptime=rec.exptime,
                        expstart=rec.expstart, aperture_from_poller=rec.aperture))
                continue
            fdp = FilterProduct(first.proposal_id, first.obset_id, first.instrument, det,
                                first.filename, filt, filetype, log_level,
                                aperture_from_poller=first.aperture)
            singleton = len(entries) == 1
            for entry in entries:
                rec = entry.record
                edp = ExposureProduct(
                    rec.proposal_id, rec.obset_id, rec.instrument, det, rec.filename, filt,
                    filetype, log_level, input_path=rec.input_path, exptime=rec.exptime,
                    expstart=rec.expstart, aperture_from_poller=rec.aperture,
                    is_singleton=singleton, crclean=singleton and det != "ir")
                fdp.add_member(edp)
                total.add_member(edp)
            total.add_product(fdp)
        if total is not None:
            if not total.has_direct_exposures:
                logger.warning("%s has only grism/prism exposures: nothing to drizzle for it",
                               det.upper())
            totals.append(total)
    if not any(t.has_direct_exposures for t in totals):
        raise NoViableDataError(
            f"{tree.poller_file}: only grism/prism exposures in visit {tree.ipppss}: "
            "no direct image to align or drizzle")
    return totals
