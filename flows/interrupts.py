"""SIGTERM and SIGINT stop a run cleanly: :class:`StopOnSignals`.

A worker being stopped (SIGTERM) or Ctrl-C (SIGINT) raises
:class:`~hap_models.errors.RunInterrupted` in the main thread, wherever it is: the stage that
runs unwinds (its worker pools are stopped, :mod:`hapcore.processes`; its unfinished writes are
temporary files, removed), the finished stages stay cached, and the entry point writes the log
and returns 130 (SIGINT) or 143 (SIGTERM). The same command then resumes.

While Prefect's flow engine runs it installs its own SIGTERM handler (raising Prefect's
``TerminationSignal``, which crashes the flow run on the server); when that exception leaves
the engine, the engine restores the previous handler -- ours -- and sends itself the signal
again, so the run still ends through :class:`RunInterrupted`.

Ctrl-C at a terminal signals the terminal's whole foreground process group: the run, its
workers (which ignore it, :func:`hapcore.processes.ignore_interrupts`) and Prefect's temporary
API server, which :func:`keep_prefect_server_apart` starts in a session of its own.

Importing this module imports no Prefect.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading

from hap_models.errors import RunInterrupted

__all__ = ["STOP_SIGNALS", "StopOnSignals", "keep_prefect_server_apart"]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: The signals that stop a run.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignals:
    """While active, SIGTERM and SIGINT raise :class:`RunInterrupted` once, in the main thread.

    Handlers are only installed when entered from the main thread (Python delivers signals
    there only; a run started from another thread keeps the process's handlers). The previous
    handlers are restored on exit. The first signal raises; signals after it, while the run
    unwinds and writes its log, are logged and otherwise ignored so that the clean-up finishes.
    A :class:`RunInterrupted` leaving the block is swallowed and kept in :attr:`caught`: the
    caller returns ``128 +`` :attr:`received` whatever it was doing when the signal came.

    Attributes
    ----------
    caught : RunInterrupted or None
        The interruption that ended the block, if any.
    """

    def __init__(self) -> None:
        self.caught: RunInterrupted | None = None
        self._received: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self._received is not None:
            logger.warning("%s received while stopping after %s: finishing the clean-up",
                           signal.Signals(signum).name, signal.Signals(self._received).name)
            return
        self._received = signum
        raise RunInterrupted(signum)

    @property
    def received(self) -> int | None:
        """The first signal received (None: none)."""
        return self._received

    def __exit__(self, exc_type, exc, tb) -> bool:
        for signum, previous in self._saved.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._saved.clear()
        if isinstance(exc, RunInterrupted):
            self.caught = exc
            return True
        return False


class _SubprocessInNewSession:
    """``subprocess`` as Prefect's server module sees it: ``Popen`` starts a new session."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(*args, **kwargs)


def keep_prefect_server_apart() -> None:
    """Start Prefect's temporary API server (no ``PREFECT_API_URL``) in a session of its own.

    Stopped by the same Ctrl-C as the run, the server would leave the run's flow engine unable
    to record the interruption: its client retries for minutes, then fails with a connection
    error instead of the run stopping in seconds. Apart, the server stops when the run has
    ended (Prefect stops it at exit). Call after Prefect is imported, before a flow runs; a
    no-op with a server of one's own (``PREFECT_API_URL``) or Prefect internals other than 3.x's
    (``prefect.server.api.server.SubprocessASGIServer`` starting it with ``subprocess.Popen``).
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    try:
        from prefect.server.api import server
    except ImportError:
        return
    if (hasattr(server, "SubprocessASGIServer")
            and getattr(server, "subprocess", None) is subprocess):
        server.subprocess = _SubprocessInNewSession()
