"""A lock contender for tests/test_locks.py, in a module of its own so that spawned processes import only this.

Each contender is a separate process. For every trial, all of them (and the test) meet at a
barrier, then each tries to take the same directory's lock at once, reports whether it won, and
meets the others again before a winner lets go: so a second winner can only be a race, never
a run that started after the first had finished.
"""

from __future__ import annotations

import os
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from epic_hf.errors import OutputDirLockedError
from epic_hf.locks import DirectoryLock

#: How long a contender waits at a barrier before the trial is called hung (seconds).
BARRIER_SECONDS = 60


def contend(root: str, trials: int, start: Barrier, done: Barrier, results: Queue) -> None:
    for trial in range(trials):
        start.wait(BARRIER_SECONDS)
        lock = DirectoryLock(Path(root) / str(trial), "fit")
        try:
            lock.acquire()
            won = True
        except OutputDirLockedError:
            won = False
        results.put((trial, os.getpid(), won))
        done.wait(BARRIER_SECONDS)
        if won:
            lock.release()
