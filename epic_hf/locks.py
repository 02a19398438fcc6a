"""One writer per output directory: a lock file that names its holder, and notices when the holder is gone.

Two fits (or evaluations) into one directory would both redo the work and overwrite each
other's checkpoints. The first takes ``.epic.lock`` (holding its host, process id, start time
and command); a second names the holder and stops. A lock whose process no longer runs on this
host (killed, or the machine rebooted) is stale: it is taken over with a warning. A lock held on
another host cannot be checked from here, so it is only reported.

Why there is no window between two starters:

* the lock file never exists half-written: the holder's record is written (and synced) to a
  temporary file first, then ``os.link``-ed to ``.epic.lock`` (:func:`epic_hf.atomic.create_exclusive`),
  which creates the name with its content in one step and fails if the name exists. A reader
  never sees an empty lock and takes a live one for stale;
* deciding that a lock is stale, removing it and linking one's own is one step for every
  starter on this host: it happens under ``fcntl.flock`` on the directory itself, so two
  starters cannot both find the same stale lock and then each remove the other's new one. The
  flock is held for microseconds, never while the run works, and needs no extra file. Where
  the file system refuses ``flock`` (some network mounts), the link still keeps creation atomic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from .aliases import JSONDict
from .atomic import create_exclusive
from .errors import OutputDirLockedError

try:
    import fcntl
except ImportError:  # Windows: no flock; creation by link is still atomic
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_NAME = ".epic.lock"


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


@contextlib.contextmanager
def _starters_one_at_a_time(directory: Path) -> Iterator[None]:
    """Hold ``flock`` on ``directory`` for the block: the lock's check-and-take is one step on this host."""
    try:
        handle = os.open(directory, os.O_RDONLY) if fcntl is not None else None
    except OSError as error:  # a folder this user may write but not read: creation by link still holds
        logger.debug("cannot open %s to flock it (%s): taking the lock without it", directory, error)
        handle = None
    if handle is None or fcntl is None:
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:  # a file system without flock: creation by link still holds
            logger.debug("cannot flock %s (%s): taking the lock without it", directory, error)
        yield
    finally:
        os.close(handle)  # closing the descriptor releases the flock


class DirectoryLock:
    """``with DirectoryLock(directory, "fit"):`` holds ``directory/.epic.lock`` for the block."""

    def __init__(self, directory: str | Path, what: str) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.what = what
        self.held = False
        self.token = secrets.token_hex(8)  # tells this lock from a later one of the same process

    def _holder(self) -> JSONDict | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _stale(self, holder: JSONDict | None) -> bool:
        if holder is None:  # unreadable: damaged, or left half-written by an epic_hf older than the link
            return True
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _process_runs(pid)

    def _link(self) -> bool:
        """Create the lock file, whole, in one step; False if it exists."""
        record = {"what": self.what, "host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:500],
                  "token": self.token}
        return create_exclusive(self.path, json.dumps(record))

    def acquire(self) -> DirectoryLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _starters_one_at_a_time(self.path.parent):
            if self._link():
                self.held = True
                return self
            holder = self._holder()
            if not self._stale(holder):
                assert holder is not None
                raise OutputDirLockedError(
                    f"{self.path.parent} is in use by another epic-hf {holder.get('what', 'run')} (process "
                    f"{holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}): wait for it "
                    f"to finish or use another output dir; if that process is gone, delete {self.path}")
            logger.warning("taking over the stale lock %s (its process %s is gone)", self.path,
                           (holder or {}).get("pid", "unknown"))
            self.path.unlink(missing_ok=True)
            if not self._link():  # only a starter on another host, which this flock does not reach
                raise OutputDirLockedError(f"could not take the lock {self.path}: another run took it first; "
                                           "wait for it to finish or use another output dir")
        self.held = True
        return self

    def release(self) -> None:
        """Remove the lock file if it is still this lock's (never a lock someone took over meanwhile)."""
        if not self.held:
            return
        self.held = False
        with _starters_one_at_a_time(self.path.parent):
            holder = self._holder()
            if holder is not None and holder.get("token") == self.token:
                self.path.unlink(missing_ok=True)
            elif self.path.exists():
                logger.warning("%s is no longer this run's lock (taken over meanwhile): left in place", self.path)

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()
