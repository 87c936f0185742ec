"""Reading poller files into validated exposure records (spec §1.2).

The three poller forms are told apart per line by their number of comma-separated fields (8, 1
or 2). Exposures are looked up beside the poller file, then in the working directory, then at the
line's ``pathname`` field; nothing is copied and the originals are only ever opened read-only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from pydantic import ValidationError

from hap_models.errors import HapInputError
from hap_models.instruments import instrument_from_filename, normalise_detector
from hap_models.poller import EMPTY_APERTURE, ExposureRecord, PollerLine
from hapcore.obset.filters import determine_filter_name
from hapcore.obset.integrity import NotFitsError, check_exposure_file

__all__ = [
    "POLLER_FIELDS",
    "ExposureHeader",
    "read_poller_lines",
    "locate_exposure",
    "read_exposure_header",
    "complete_poller_line",
]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: Names of the 8 fields of a full poller line, in order.
POLLER_FIELDS = ("filename", "proposal_id", "program_id", "obset_id", "exptime", "filters",
                 "detector", "pathname")


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    fld = ".".join(str(x) for x in err.get("loc", ())) or "line"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"field '{fld}': {msg}"


def read_poller_lines(poller_file: str | os.PathLike) -> list[PollerLine]:
    """Parse a poller file into validated :class:`~hap_models.poller.PollerLine` objects.

    Blank lines and lines starting with ``#`` are skipped.

    Raises
    ------
    HapInputError
        If the file cannot be read, is empty, or a line has the wrong number of fields or a bad
        field; the message names ``file:line`` and the field.
    """
    path = Path(poller_file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HapInputError(f"{path}: poller file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HapInputError(f"{path}: cannot read poller file ({exc.__class__.__name__}: {exc})") from None

    lines: list[PollerLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [f.strip() for f in stripped.split(",")]
        where = f"{path}:{number}"
        if len(fields) == 8:
            values = dict(zip(POLLER_FIELDS, fields))
            try:
                values["exptime"] = float(values["exptime"])
            except ValueError:
                raise HapInputError(
                    f"{where}: field 'exptime': '{fields[4]}' is not a number") from None
            if not values["filters"]:
                raise HapInputError(f"{where}: field 'filters': empty")
            if not values["detector"]:
                raise HapInputError(f"{where}: field 'detector': empty")
        elif len(fields) == 1:
            values = {"filename": fields[0]}
        elif len(fields) == 2:
            values = {"filename": fields[0], "aperture": fields[1]}
        else:
            raise HapInputError(
                f"{where}: expected 1, 2 or 8 comma-separated fields, found {len(fields)}")
        try:
            lines.append(PollerLine(source=str(path), line_number=number, **values))
        except ValidationError as exc:
            raise HapInputError(f"{where}: {_one_line(exc)}") from None

    if not lines:
        raise HapInputError(f"{path}: poller file lists no exposures (empty or only comments)")
    return lines


def locate_exposure(line: PollerLine, *, cwd: Path | None = None) -> Path:
    """Find the file a poller line names: beside the poller, in ``cwd``, then at ``pathname``.

    Raises
    ------
    HapInputError
        If none of those places holds the file; the message lists where it looked.
    """
    name = Path(line.filename).name
    candidates = [Path(line.source).resolve().parent / name, (cwd or Path.cwd()) / name]
    if line.pathname:
        pathname = Path(line.pathname)
        candidates.append(pathname / name if pathname.is_dir() else pathname)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise HapInputError(
        f"{line.source}:{line.line_number}: exposure '{name}' not found (looked in {looked})")


@dataclass
class ExposureHeader:
    """What the poller, the viability filter and the sort need from one exposure's file.

    ``damage`` (:func:`hapcore.obset.integrity.check_exposure_file`) is why the file cannot be
    used at all -- then nothing else is filled in; ``notes`` what it lacks but can be processed
    without; ``no_usable_chip`` why no chip has a usable pixel (finite, non-zero, DQ 0).
    """

    path: Path
    primary: dict = field(default_factory=dict)
    photflam: float = 0.0
    sci_all_zero: bool = False
    n_sci: int = 0
    damage: str | None = None
    notes: list[str] = field(default_factory=list)
    no_usable_chip: str | None = None


def read_exposure_header(path: Path, *, where: str = "") -> ExposureHeader:
    """Open an exposure read-only and collect its primary header, PHOTFLAM and SCI emptiness.

    The file's structure is checked first (:func:`~hapcore.obset.integrity.check_exposure_file`,
    headers only): a damaged file -- truncated, an unreadable header card, a missing SCI or DQ
    extension -- comes back with ``damage`` set, to be rejected with that reason.

    Raises
    ------
    HapInputError
        If the file is not FITS, or lacks INSTRUME, DETECTOR (not WFPC2) or EXPTIME.
    """
    prefix = f"{where}: " if where else ""
    try:
        check = check_exposure_file(path)
    except NotFitsError as exc:
        raise HapInputError(f"{prefix}{path.name} is not a readable FITS file ({exc})") from None
    except OSError as exc:
        raise HapInputError(f"{prefix}{path.name} cannot be read ({exc.strerror or exc})") from None
    if check.damage is not None:
        return ExposureHeader(path=path, damage=check.damage)
    try:
        hdul = fits.open(path, mode="readonly", memmap=True, lazy_load_hdus=True)
    except Exception as exc:  # astropy raises OSError/TypeError/ValueError for non-FITS files
        raise HapInputError(f"{prefix}{path.name} is not a readable FITS file ({exc})") from None
    with hdul:
        try:
            primary = dict(hdul[0].header)
        except Exception as exc:
            raise HapInputError(f"{prefix}{path.name} is not a readable FITS file ({exc})") from None
        instrument = str(primary.get("INSTRUME", "")).strip().upper()
        required = ["INSTRUME", "EXPTIME"] + ([] if instrument == "WFPC2" else ["DETECTOR"])
        for key in required:
            if key not in primary or primary[key] is None or str(primary[key]).strip() == "":
                raise HapInputError(f"{prefix}{path.name}: primary header lacks keyword {key}")
        try:
            float(primary["EXPTIME"])
        except (TypeError, ValueError):
            raise HapInputError(
                f"{prefix}{path.name}: keyword EXPTIME = {primary['EXPTIME']!r} is not a number"
            ) from None

        photflam = primary.get("PHOTFLAM")
        dq_by_ver = {int(h.header.get("EXTVER", 1)): h for h in hdul[1:] if h.name == "DQ"}
        any_data = False
        usable = False
        problems: list[str] = []
        n_sci = 0
        for hdu in hdul:
            if hdu.name != "SCI":
                continue
            n_sci += 1
            if photflam is None or float(photflam or 0.0) == 0.0:
                photflam = hdu.header.get("PHOTFLAM", photflam)
            if usable:
                # one usable chip keeps the exposure; the others are judged where their
                # pixels are read (alignment, drizzling), which exclude an unusable chip
                continue
            ver = int(hdu.header.get("EXTVER", 1))
            problem = _chip_problem(hdu.data, dq_by_ver[ver].data if ver in dq_by_ver else None)
            # drizzlepac's test is "all zeros": NaN counts as data there
            any_data = any_data or problem not in ("all zeros", "has no data")
            if problem is None:
                usable = True
            else:
                problems.append(f"SCI,{ver} {problem}")
    return ExposureHeader(path=path, primary=primary, photflam=float(photflam or 0.0),
                          sci_all_zero=(n_sci > 0 and not any_data), n_sci=n_sci,
                          notes=list(check.notes),
                          no_usable_chip=None if usable or not n_sci else
                          f"no usable chip ({'; '.join(problems)})")


def _chip_problem(sci, dq) -> str | None:
    """Why a chip has no usable pixel (finite, non-zero, DQ 0), or None if it has one."""
    if sci is None or not sci.size:
        return "has no data"
    data = np.isfinite(sci) & (sci != 0)
    if not data.any():
        if np.isnan(sci).all():
            return "all NaN"
        return "all zeros" if not np.any(sci) else "all zero or NaN"
    if dq is not None and np.shape(dq) == np.shape(sci) and not np.any(np.asarray(dq)[data] == 0):
        return "every pixel flagged in DQ"
    return None


def _header_filters(instrument: str, primary: dict) -> str:
    if instrument == "acs":
        return f"{primary.get('FILTER1', '')};{primary.get('FILTER2', '')}"
    if instrument == "wfpc2":
        return f"{primary.get('FILTNAM1', '')};{primary.get('FILTNAM2', '')}"
    return str(primary.get("FILTER", ""))


def complete_poller_line(line: PollerLine, header: ExposureHeader) -> ExposureRecord:
    """Fill the fields a short poller line lacks from the headers and check the full ones.

    Raises
    ------
    HapInputError
        If the instrument or detector is unknown, or the poller and the header disagree on them.
    """
    where = f"{line.source}:{line.line_number}"
    name = Path(line.filename).name.lower()
    primary = header.primary
    try:
        instrument = instrument_from_filename(name)
    except ValueError as exc:
        raise HapInputError(f"{where}: {name}: {exc}") from None
    header_instrument = str(primary.get("INSTRUME", "")).strip().lower()
    if header_instrument != instrument:
        raise HapInputError(
            f"{where}: {name}: INSTRUME = '{primary.get('INSTRUME')}' is not a supported instrument "
            f"matching the rootname (expected {instrument.upper()})")
    detector_value = line.detector if line.detector else primary.get("DETECTOR", "")
    try:
        detector = normalise_detector(instrument, detector_value)
        if line.detector and instrument != "wfpc2":
            header_det = normalise_detector(instrument, primary.get("DETECTOR", ""))
            if header_det != detector:
                raise ValueError(
                    f"poller detector '{line.detector}' disagrees with DETECTOR = "
                    f"'{primary.get('DETECTOR')}' in the file")
    except ValueError as exc:
        raise HapInputError(f"{where}: {name}: {exc}") from None

    rootname = name.split("_")[0]
    proposal = line.proposal_id or str(primary.get("PROPOSID", "")).strip()
    if not proposal.isdigit():
        raise HapInputError(f"{where}: {name}: keyword PROPOSID = {primary.get('PROPOSID')!r} "
                            "is not a proposal number")
    filters = line.filters or _header_filters(instrument, primary)
    program_id = line.program_id or rootname[1:4].upper()
    obset_id = line.obset_id or rootname[4:6].upper()
    if program_id != rootname[1:4].upper():
        raise HapInputError(f"{where}: field 'program_id': '{program_id}' does not match "
                            f"the rootname {rootname} (expected {rootname[1:4].upper()})")
    if obset_id != rootname[4:6].upper():
        raise HapInputError(f"{where}: field 'obset_id': '{obset_id}' does not match "
                            f"the rootname {rootname} (expected {rootname[4:6].upper()})")
    expstart = primary.get("EXPSTART")
    return ExposureRecord(
        source=line.source,
        line_number=line.line_number,
        filename=name,
        input_path=header.path,
        rootname=rootname,
        instrument=instrument,
        detector=detector,
        proposal_id=proposal,
        program_id=program_id,
        obset_id=obset_id,
        exptime=float(primary["EXPTIME"]) if line.exptime is None else line.exptime,
        expstart=float(expstart) if expstart not in (None, "") else None,
        photflam=header.photflam,
        filters=filters,
        filter_name=determine_filter_name(filters),
        aperture=line.aperture or EMPTY_APERTURE,
        filetype=name.rsplit("_", 1)[1].split(".")[0],
    )
