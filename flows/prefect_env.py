"""Prefect's environment: offline-friendly defaults, whether an API is configured, and the
temporary API server started early (spec prefect_notes §2, §8; issue #16).

* :data:`PREFECT_DEFAULTS` are set (as defaults only: a value already in the environment wins)
  when this module is imported, before Prefect is.
* :func:`prefect_api_configured` tells, without importing Prefect, whether runs would report to
  a server of one's own (``PREFECT_API_URL``): the ``auto`` engine is Prefect then, direct
  otherwise (:func:`flows.options.resolve_engine`).
* :func:`start_temporary_api` starts Prefect's temporary API server (no ``PREFECT_API_URL``) in
  a background thread, so that its start-up (5-15 s, in a process of its own) overlaps work
  that does not need it; :meth:`TemporaryApi.wait` joins it before the flow starts.

Importing this module imports no Prefect.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PREFECT_DEFAULTS", "prefect_api_configured", "TemporaryApi", "start_temporary_api"]

logger = logging.getLogger(f"hapsvm.{__name__}")

PREFECT_DEFAULTS = {
    # Offline hosts: telemetry only produces errors ("Name or service not known").
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A fresh ephemeral server on a slow 2-core machine can take 15 s to start (default limit 20 s).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Our package logger reaches the Prefect API (and so the dashboard) too.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "hapsvm",
    # Lines logged outside a flow run (the entry points' last words) stay local, without a warning.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}

for _key, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


def _profile_api_url(env: Mapping[str, str]) -> str | None:
    """``PREFECT_API_URL`` of the active Prefect profile (``prefect config set ...``), read
    from the profiles file as Prefect would find it; None when there is none or it is
    unreadable."""
    import tomllib

    home = Path(env.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(env.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        with open(path, "rb") as handle:
            profiles = tomllib.load(handle)
    except (OSError, ValueError):
        return None
    active = env.get("PREFECT_PROFILE") or profiles.get("active")
    settings = (profiles.get("profiles") or {}).get(active) or {}
    value = settings.get("PREFECT_API_URL")
    return str(value) if value else None


def prefect_api_configured(env: Mapping[str, str] | None = None) -> str | None:
    """The Prefect API runs would report to, if one is configured; None otherwise.

    Looked up, without importing Prefect: ``PREFECT_API_URL`` in ``env`` (default the
    process environment), then Prefect's own settings if Prefect is already imported (a
    test harness or ``temporary_settings``), then the active Prefect profile.
    """
    env = os.environ if env is None else env
    if env.get("PREFECT_API_URL"):
        return env["PREFECT_API_URL"]
    if "prefect.settings" in sys.modules:
        try:
            from prefect.settings import PREFECT_API_URL

            value = PREFECT_API_URL.value()
            if value:
                return str(value)
        except Exception:  # settings that do not load: as if none
            logger.debug("Prefect settings not readable", exc_info=True)
    return _profile_api_url(env)


class TemporaryApi:
    """Prefect's temporary API server, being started in a background thread.

    Prefect starts the server (a ``uvicorn`` process) the first time a client needs an API
    and none is configured, and keeps it for the process (one instance per process,
    ``SubprocessASGIServer``): started here first, it is the server the flow's clients use.
    """

    def __init__(self) -> None:
        self.error: BaseException | None = None
        # in a copy of this thread's context: Prefect's settings (temporary_settings, a test
        # harness) are context variables, and the server must start with the caller's
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._start,),
                                        name="hapsvm-temporary-api", daemon=True)

    def _start(self) -> None:
        try:
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start()
        except BaseException as exc:  # handed to the main thread by wait()
            self.error = exc

    def wait(self) -> None:
        """Block until the server answers; raise what its start raised.

        Prefect marks the server running as soon as its process is launched, before it
        answers: a client created before this returns would fail to connect.
        """
        self._thread.join()
        if self.error is not None:
            raise self.error


def start_temporary_api() -> TemporaryApi | None:
    """Start Prefect's temporary API server in the background if runs need one.

    Imports Prefect (and its server module) in the calling thread -- concurrent imports of
    the same package from two threads can deadlock on the import locks -- then launches the
    server from a background thread, in a session of its own
    (:func:`flows.interrupts.keep_prefect_server_apart`).

    Returns
    -------
    TemporaryApi or None
        None when an API is configured (nothing to start).
    """
    from prefect.settings import PREFECT_API_URL

    from flows.interrupts import keep_prefect_server_apart

    keep_prefect_server_apart()
    if PREFECT_API_URL.value():
        return None
    import prefect.server.api.server  # noqa: F401  (see the docstring: imported here)

    api = TemporaryApi()
    api._thread.start()
    return api
