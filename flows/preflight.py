"""Checks of a run's inputs before any Prefect start-up: a bad input answers at once, in one line.

Importing this module imports no Prefect. The entry points (:func:`flows.svm.run_hap_processing`,
so ``runsinglehap``, ``python -m flows.svm`` and ``hapsvm run``) call :func:`check_output_dir`
before they open the visit log and :func:`check_visit_inputs` before the flow starts; every
problem is a :class:`~hap_models.errors.HapError` whose message is one line naming the file
(and line) at fault, and whose exit code is the README's.

:func:`user_error_line` is that line as a command prints it:
``runsinglehap: error: <file>:<line>: <what is wrong>``.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from hap_models.errors import HapError, HapInputError, OutputWriteError
from hap_models.run_options import VisitOptions

__all__ = ["check_output_dir", "check_visit_inputs", "check_custom_pars_options",
           "output_space_error", "remove_scratch", "user_error_line"]


def check_output_dir(output_dir: Path) -> None:
    """The output directory exists (it is made if missing) and can be written to.

    Raises
    ------
    HapInputError
        The path is a file, cannot be created, or is not writable.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise HapInputError(f"{out}: the output directory is a file; give a directory with -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        if exc.errno == errno.ENOTDIR:
            reason = "a parent of it is a file"
        raise HapInputError(f"{out}: cannot create the output directory ({reason})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise HapInputError(f"{out}: the output directory is not writable")


def check_visit_inputs(poller_file: Path, options: VisitOptions) -> None:
    """Parse the poller and its exposures' headers, and read the custom parameter file.

    What the flow's first tasks would find wrong, found here before Prefect starts: a bad poller
    line, a missing or unreadable exposure, a missing keyword, no viable exposure (exit 65), a
    missing, clashing or malformed custom parameter file.

    Raises
    ------
    HapError
        One line naming the file (and the poller line) at fault.
    """
    from hapcore.obset.custom_parameters import load_custom_pars_file
    from hapcore.obset.tree import interpret_obset_input

    check_custom_pars_options(options)
    custom_in = options.input_custom_pars_file
    if not Path(poller_file).is_file():
        raise HapInputError(f"{poller_file}: poller file not found")
    # the flow's first task parses the poller again and logs what it accepts and rejects; here
    # only the errors count, so the input stage's own lines are not logged twice
    obset_logger = logging.getLogger("hapsvm.hapcore.obset")
    saved = obset_logger.level
    obset_logger.setLevel(logging.ERROR)
    try:
        interpret_obset_input(Path(poller_file))
    finally:
        obset_logger.setLevel(saved)
    if custom_in is not None:
        load_custom_pars_file(custom_in)      # ParameterError: a HapError naming file and key


def check_custom_pars_options(options: VisitOptions) -> None:
    """The custom parameter file exists and is not also the file to record the parameters in."""
    custom_in, custom_out = options.input_custom_pars_file, options.output_custom_pars_file
    if custom_in is not None and not Path(custom_in).is_file():
        raise HapInputError(f"-c {custom_in}: parameter file not found")
    if (custom_in is not None and custom_out is not None
            and Path(custom_in).resolve() == Path(custom_out).resolve()):
        raise HapInputError(f"{custom_out}: input and output custom parameter files must differ")


#: Below this many free bytes an output file system counts as full: a short write there, or a
#: worker that died writing its memory-mapped scratch (SIGBUS), is a full disk
_FULL_BELOW_BYTES = 64 * 1024 * 1024


def output_space_error(exc: BaseException, output_dir: Path) -> OutputWriteError | None:
    """The one-line error for a failure caused by a full output file system, else None.

    A full disk shows as ``OSError`` ENOSPC/EDQUOT, as a short write (numpy: "N requested and
    M written", no errno) or as a worker process that died writing memory-mapped scratch
    (``BrokenProcessPool``): the last two count only when the output file system is nearly
    full.
    """
    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    try:
        free = shutil.disk_usage(output_dir).free
    except OSError:
        free = None
    nospace = [e for e in chain if isinstance(e, OSError) and e.errno in (errno.ENOSPC,
                                                                          errno.EDQUOT)]
    if not nospace and not (free is not None and free < _FULL_BELOW_BYTES and any(
            isinstance(e, OSError) or type(e).__name__ == "BrokenProcessPool" for e in chain)):
        return None
    where = next((e.filename for e in nospace if getattr(e, "filename", None)), output_dir)
    left = f", {free / 1e6:.1f} MB free" if free is not None else ""
    return OutputWriteError(f"{where}: no space left on the device{left}; nothing is left "
                            "half-written: free some space and run the same command again")


def remove_scratch(output_dir: Path) -> None:
    """Delete the scratch of an interrupted run (the catalog detection and any drizzle scratch
    in ``.hapsvm-work``, links to a killed run's tmpfs scratch; the CR masks, outputs of cached
    tasks, stay) and temporary files of unfinished writes."""
    from hapcore.drizzle.workspace import remove_work_files

    remove_work_files(output_dir)
    for stale in Path(output_dir).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def user_error_line(prog: str, error: HapError | str) -> str:
    """``<prog>: error: <message>``, one line (argparse's form)."""
    message = " ".join(str(error).split())
    return f"{prog}: error: {message}"
