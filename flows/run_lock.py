"""The output directory's lock: one run at a time writes into an output directory.

Two runs of the same visit into the same directory (an operator's retry while the first still
runs, two workers given the same event) would interleave their products and the second would
truncate the first's log and delete its temporary files. The run holds an exclusive
:func:`fcntl.flock` on ``<output_dir>/.hapsvm.lock`` from before it writes anything until it has
finished; a second run finds it taken and stops at once with
:class:`~hap_models.errors.OutputLockedError` (exit 75), naming the holder (host, pid, start
time) written in the file.

The kernel releases a flock when its holder's process ends, however it ends (SIGKILL, out of
memory): the lock file a killed run leaves behind is stale and the next run simply takes it over.
A run that ends removes the file (while still holding the lock; a run that opened it meanwhile
sees that the path no longer names the file it locked and opens it again).

Importing this module imports no Prefect (:func:`flows.svm.run_hap_processing` takes the lock
before the flow is imported).
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path

from hap_models.errors import OutputLockedError

try:
    import fcntl
except ImportError:         # not POSIX: no lock (hapsvm's archive hosts are Linux)
    fcntl = None

__all__ = ["LOCK_NAME", "OutputDirLock"]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: The lock file's name in the output directory.
LOCK_NAME = ".hapsvm.lock"

# a file system without flock support (some NFS set-ups) answers with one of these: run unlocked
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class OutputDirLock:
    """Exclusive lock of an output directory, as a context manager.

    Parameters
    ----------
    output_dir : path-like
        The run's output directory (made if missing).

    Raises
    ------
    OutputLockedError
        On entering, when another process (or another run in this process) holds the lock.

    Examples
    --------
    >>> with OutputDirLock(out):          # doctest: +SKIP
    ...     run_the_visit()
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> OutputDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock now or raise :class:`OutputLockedError` (never waits)."""
        if fcntl is None or self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{self.path.parent}: another hapsvm run is writing to this output "
                    f"directory ({holder}); wait for it to end, or give another -o") from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _NO_LOCKING:
                    raise
                logger.warning("%s: the file system does not support locks (%s): a second run "
                               "into this directory would not be detected", self.path.parent,
                               exc.strerror)
                return
            # the last holder may have removed the file between our open and our lock: then
            # the lock is on a file nobody else will ever see; open the path again
            if _same_file(fd, self.path):
                break
            os.close(fd)
        self._fd = fd
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        # a killed holder's record may be there: ours replaces it
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)

    def release(self) -> None:
        """Remove the lock file and release the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)       # before unlocking: see the module docstring
        except OSError:
            pass            # a read-only directory now: the stale file is harmless
        finally:
            os.close(fd)    # releases the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _read_holder(fd: int) -> str:
    """The holder as ``host H, pid P, started T`` from the lock file (it writes that right
    after taking the lock: wait a moment for it)."""
    for _ in range(20):
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        except (OSError, ValueError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict):
            return (f"host {record.get('host', '?')}, pid {record.get('pid', '?')}, "
                    f"started {record.get('started', '?')}")
        time.sleep(0.05)
    return "its host and pid are not recorded yet"
