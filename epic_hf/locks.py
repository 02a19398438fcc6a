"""One writer per output directory: a lock file that names its holder, and notices when the holder is gone.

Two fits (or evaluations) into one directory would both redo the work and overwrite each
other's checkpoints. The first takes ``.epic.lock`` (created exclusively, holding its host,
process id, start time and command); a second names the holder and stops. A lock whose process
no longer runs on this host (killed, or the machine rebooted) is stale: it is taken over with a
warning. A lock held on another host cannot be checked from here, so it is only reported.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from .errors import OutputDirLockedError

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


class DirectoryLock:
    """``with DirectoryLock(directory, "fit"):`` holds ``directory/.epic.lock`` for the block."""

    def __init__(self, directory: str | Path, what: str) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.what = what
        self.held = False

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _stale(self, holder: dict | None) -> bool:
        if holder is None:  # unreadable: its writer died between creating and writing it
            return True
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _process_runs(pid)

    def acquire(self) -> DirectoryLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    assert holder is not None
                    raise OutputDirLockedError(
                        f"{self.path.parent} is in use by another epic-hf {holder.get('what', 'run')} (process "
                        f"{holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}): wait for it "
                        f"to finish or use another output dir; if that process is gone, delete {self.path}") from None
                logger.warning("taking over the stale lock %s (its process %s is gone)", self.path,
                               (holder or {}).get("pid", "unknown"))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(handle, "w") as lock_file:
                json.dump({"what": self.what, "host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:500]},
                          lock_file)
            self.held = True
            return self
        raise OutputDirLockedError(f"could not take the lock {self.path}: another run keeps taking it")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()
