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
66    NOT_ALIGNED                  with ``--require-alignment``: a detector could not be aligned
                                   to a reference catalog (its products were written with the
                                   input or relative WCS)
====  ===========================  ==============================================================
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ExitCode",
    "HapError",
    "HapInputError",
    "NoViableDataError",
    "NotAlignedError",
]


class ExitCode(IntEnum):
    """Documented process exit codes of ``runsinglehap`` and ``python -m flows.svm``."""

    OK = 0
    ERROR = 1
    KEYWORD_UPDATE_PROBLEM = 15
    SBCHRC_DATA = 55
    NO_VIABLE_DATA = 65
    NOT_ALIGNED = 66


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
