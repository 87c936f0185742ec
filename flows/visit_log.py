"""The per-visit run log ``<poller stem>.log``: everything the console and Prefect show.

The log is written to ``<name>.log.part`` while the visit runs and renamed to ``<name>.log`` when it
ends (success or failure), so a ``.log`` file is always a complete record of one run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hap_models.errors import HapError

__all__ = ["LOG_FORMAT", "PACKAGE_LOGGER", "VisitLog", "HideUserErrorTracebacks"]

PACKAGE_LOGGER = "hapsvm"
LOG_FORMAT = "%(asctime)s %(levelname)-7s src=%(name)s- %(message)s"


class HideUserErrorTracebacks(logging.Filter):
    """Drop the traceback of records about a :class:`HapError`: user errors are one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HapError):
            record.exc_info = None
            record.exc_text = None
        return True


class VisitLog:
    """Context manager that routes the package and Prefect loggers to the visit's log file.

    Parameters
    ----------
    log_path : Path
        Final name of the log file.
    level : int
        Level of the ``hapsvm`` logger for this run (``-l``).
    """

    def __init__(self, log_path: Path, *, level: int = logging.INFO):
        self.log_path = Path(log_path)
        self.part_path = self.log_path.with_name(self.log_path.name + ".part")
        self.level = level
        self._handler: logging.FileHandler | None = None
        self._filter = HideUserErrorTracebacks()
        self._saved_level: int | None = None
        self._filtered_handlers: list[logging.Handler] = []

    def __enter__(self) -> VisitLog:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.part_path, mode="w", encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.DEBUG)
        handler.addFilter(self._filter)
        self._handler = handler
        package = logging.getLogger(PACKAGE_LOGGER)
        self._saved_level = package.level
        package.setLevel(self.level)
        for name in (PACKAGE_LOGGER, "prefect"):
            logging.getLogger(name).addHandler(handler)
        # Prefect's console handler lives on the root logger: keep user errors one line there too.
        for existing in logging.getLogger().handlers:
            if self._filter not in existing.filters:
                existing.addFilter(self._filter)
                self._filtered_handlers.append(existing)
        return self

    def __exit__(self, *exc) -> None:
        handler = self._handler
        if handler is None:
            return
        for name in (PACKAGE_LOGGER, "prefect"):
            logging.getLogger(name).removeHandler(handler)
        for existing in self._filtered_handlers:
            existing.removeFilter(self._filter)
        handler.close()
        logging.getLogger(PACKAGE_LOGGER).setLevel(self._saved_level or logging.NOTSET)
        os.replace(self.part_path, self.log_path)
        self._handler = None
