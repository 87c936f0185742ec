"""Exit codes and the exceptions that carry them.

Library code never calls :func:`sys.exit`; it raises one of these exceptions and the entry points
(:func:`flows.svm.run_hap_processing`, the ``runsinglehap`` command) turn it into an exit code.

Exit codes (compatible with drizzlepac's ``runsinglehap``):

====  ===========================  ==============================================================
code  name                         meaning
====  ===========================  ==============================================================
0     OK                           the visit was processed
1     ERROR                        bad input (poller line, missing/unreadable file, bad keyword,
                                   bad parameter file, exposures whose footprints do not form
                                   one field) or an unexpected failure
15    KEYWORD_UPDATE_PROBLEM       reserved, never returned (drizzlepac's code for a header it
                                   could not update; hapsvm writes every header whole, under a
                                   temporary name, and reports a failure to write as 1)
55    SBCHRC_DATA                  reserved, never returned (drizzlepac's code for SBC/HRC-only
                                   data, which hapsvm processes)
65    NO_VIABLE_DATA               every exposure of the visit was rejected, or only grism/prism
                                   exposures remain
74    OUTPUT_ERROR                 an output could not be written: no space left on the device or
                                   over quota (the message names the directory and the space
                                   left); nothing is left half-written under a final name, and
                                   the same command resumes once there is space
66    NOT_ALIGNED                  with ``--require-alignment``: a detector could not be aligned
                                   to a reference catalog (its products were written with the
                                   input or relative WCS)
75    OUTPUT_LOCKED                another run is writing to the output directory (a retry while
                                   the first still runs, two workers given the same visit): the
                                   message names its host, pid and start time; nothing was
                                   written (EX_TEMPFAIL: try again once it has ended)
130   INTERRUPTED                  stopped by SIGINT (Ctrl-C); 143 TERMINATED: stopped by SIGTERM.
143   TERMINATED                   The log is written, no file is left half-written under a final
                                   name (temporary files removed), and the same command resumes:
                                   only unfinished stages are recomputed
====  ===========================  ==============================================================
"""

from __future__ import annotations

import signal
from enum import IntEnum

__all__ = [
    "ExitCode",
    "HapError",
    "HapInputError",
    "NoViableDataError",
    "NotAlignedError",
    "OutputLockedError",
    "RunInterrupted",
    "OutputWriteError",
]


class ExitCode(IntEnum):
    """Documented process exit codes of ``runsinglehap`` and ``python -m flows.svm``."""

    OK = 0
    ERROR = 1
    KEYWORD_UPDATE_PROBLEM = 15
    SBCHRC_DATA = 55
    NO_VIABLE_DATA = 65
    NOT_ALIGNED = 66
    OUTPUT_ERROR = 74
    OUTPUT_LOCKED = 75
    INTERRUPTED = 130
    TERMINATED = 143


class HapError(Exception):
    """Base class of the errors a user can cause; the message is one line, no traceback is shown."""

    exit_code: ExitCode = ExitCode.ERROR


class HapInputError(HapError, ValueError):
    """Bad input: a poller line, a missing or unreadable exposure, a missing header keyword."""

    exit_code = ExitCode.ERROR


class NoViableDataError(HapError):
    """No exposure of the visit can be processed (all rejected, or grism/prism only)."""

    exit_code = ExitCode.NO_VIABLE_DATA


class NotAlignedError(HapError):
    """``--require-alignment``: a detector of the visit was not aligned to a reference catalog."""

    exit_code = ExitCode.NOT_ALIGNED


class OutputWriteError(HapError):
    """An output could not be written (disk full, quota exceeded)."""

    exit_code = ExitCode.OUTPUT_ERROR


class OutputLockedError(HapError):
    """Another run holds the output directory's lock (:mod:`flows.run_lock`)."""

    exit_code = ExitCode.OUTPUT_LOCKED


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM stopped the run (raised by :mod:`flows.interrupts`' handlers).

    A ``BaseException``, like :class:`KeyboardInterrupt`: the ``except Exception`` that isolates
    a failing quality check, and Prefect's task engine, let it through (the engine records the
    task as crashed); worker pools see it and stop their workers.

    Parameters
    ----------
    signum : int
        The signal received.
    """

    def __init__(self, signum: int):
        super().__init__(int(signum))       # args: what pickling rebuilds it from
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}"

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process a signal ended: 130 for
        SIGINT, 143 for SIGTERM."""
        return 128 + self.signum
