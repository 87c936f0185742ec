"""Offline-friendly Prefect defaults, set before Prefect is imported (spec prefect_notes §2, §8).

Only defaults: a value already in the environment wins.
"""

from __future__ import annotations

import os

__all__ = ["PREFECT_DEFAULTS"]

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
