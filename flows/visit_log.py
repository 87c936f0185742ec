"""The per-visit run log ``<poller stem>.log``: everything the console and Prefect show.

The log is written to ``<name>.log.part`` while the visit runs and renamed to ``<name>.log`` when it
ends (success or failure), so a ``.log`` file is always a complete record of one run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hap_models.errors import HapError, RunInterrupted

__all__ = ["LOG_FORMAT", "PACKAGE_LOGGER", "VisitLog", "HideUserErrorTracebacks",
           "KeepUserErrorsOffConsole", "FILE_ONLY"]

#: ``extra=`` of a record that goes to the visit log but not to the console (a user error the
#: command prints itself, as one line).
FILE_ONLY = {"hapsvm_file_only": True}

PACKAGE_LOGGER = "hapsvm"
LOG_FORMAT = "%(asctime)s %(levelname)-7s src=%(name)s- %(message)s"


class HideUserErrorTracebacks(logging.Filter):
    """Drop the traceback of records about a :class:`HapError`: user errors are one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HapError):
            record.exc_info = None
            record.exc_text = None
        return True


def _user_error_names() -> set[str]:
    names, todo = set(), [HapError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class KeepUserErrorsOffConsole(logging.Filter):
    """On console handlers: drop records the entry point reports itself as one line.

    These are records logged with :data:`FILE_ONLY`, and Prefect's own lines about a user error
    raised inside the flow ("Encountered exception during execution: HapInputError(...)",
    "Finished in state Failed(...HapInputError...)") or about a write that failed because the
    output file system (``output_dir``) is full: the command's one line says it, the visit log
    keeps them all.
    """

    def __init__(self, output_dir: Path | None = None):
        super().__init__()
        self.output_dir = output_dir

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "hapsvm_file_only", False):
            return False
        if not record.name.startswith("prefect") or record.levelno < logging.ERROR:
            return True
        if record.exc_info and isinstance(record.exc_info[1], (HapError, RunInterrupted)):
            return False
        message = record.getMessage()
        if "RunInterrupted" in message or message.startswith("Crash detected"):
            return False        # a stopped run: the command's one line and exit code say it
        if any(f"{name}(" in message or f"{name}:" in message for name in _user_error_names()):
            return False
        return not self._disk_full(record, message)

    def _disk_full(self, record: logging.LogRecord, message: str) -> bool:
        if self.output_dir is None:
            return False
        from flows.preflight import output_space_error

        if record.exc_info and record.exc_info[1] is not None:
            return output_space_error(record.exc_info[1], self.output_dir) is not None
        if not any(word in message for word in ("OSError", "BrokenProcessPool", "No space")):
            return False
        return output_space_error(OSError(message), self.output_dir) is not None


class _LogFileHandler(logging.FileHandler):
    """The visit log's handler: a log line that cannot be written (a full disk) is dropped
    quietly, so logging's own tracebacks never bury the run's one-line answer."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


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
        self._console_filter = KeepUserErrorsOffConsole(self.log_path.parent)
        self._saved_level: int | None = None
        self._saved_prefect_level: int | None = None
        self._saved_astropy_level: int | None = None
        self._filtered_handlers: list[logging.Handler] = []

    def __enter__(self) -> VisitLog:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = self._file_handler(mode="w")
        package = logging.getLogger(PACKAGE_LOGGER)
        self._saved_level = package.level
        package.setLevel(self.level)
        self._saved_prefect_level = logging.getLogger("prefect").level
        # astropy's INFO notes (e.g. "Inconsistent SIP distortion information", ~25 lines each
        # time a product WCS is read) are not the run's to show, except at DEBUG
        from astropy import log as astropy_log

        self._saved_astropy_level = astropy_log.level
        astropy_log.setLevel(max(logging.WARNING, self.level) if self.level > logging.DEBUG
                             else logging.DEBUG)
        self.attach()
        return self

    def _file_handler(self, *, mode: str) -> logging.FileHandler:
        handler = _LogFileHandler(self.part_path, mode=mode, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.DEBUG)
        handler.addFilter(self._filter)
        return handler

    def attach(self) -> None:
        """(Re)connect the log file and the console filters to the loggers and handlers as they
        are now.

        Prefect configures logging when it is first imported, replacing the root logger's
        console handler and the ``prefect`` logger's handlers: an entry point that imports the
        flow only once the inputs have been checked calls this again after the import.
        Prefect's own lines follow ``-l`` from WARNING up (INFO at most: its DEBUG is noise).
        """
        handler = self._handler
        if handler is None:
            return
        if getattr(handler, "_closed", False) or handler.stream is None:
            # logging.config.dictConfig (Prefect's set-up) closes every existing handler: go on
            # in a new one, appending to the same file
            for name in (PACKAGE_LOGGER, "prefect"):
                logging.getLogger(name).removeHandler(handler)
            handler = self._handler = self._file_handler(mode="a")
        for name in (PACKAGE_LOGGER, "prefect"):
            target = logging.getLogger(name)
            if handler not in target.handlers:
                target.addHandler(handler)
        logging.getLogger("prefect").setLevel(max(logging.INFO, self.level))
        # Prefect's console handler lives on the root logger: keep user errors one line there too.
        for existing in logging.getLogger().handlers:
            if self._filter not in existing.filters:
                existing.addFilter(self._filter)
                existing.addFilter(self._console_filter)
                self._filtered_handlers.append(existing)

    def __exit__(self, *exc) -> None:
        handler = self._handler
        if handler is None:
            return
        for name in (PACKAGE_LOGGER, "prefect"):
            logging.getLogger(name).removeHandler(handler)
        for existing in self._filtered_handlers:
            existing.removeFilter(self._filter)
            existing.removeFilter(self._console_filter)
        handler.close()
        logging.getLogger(PACKAGE_LOGGER).setLevel(self._saved_level or logging.NOTSET)
        logging.getLogger("prefect").setLevel(self._saved_prefect_level or logging.NOTSET)
        from astropy import log as astropy_log

        astropy_log.setLevel(self._saved_astropy_level or logging.NOTSET)
        os.replace(self.part_path, self.log_path)
        self._handler = None
