"""The suite writes only into temporary folders: ``git status`` is the same after a run as before it.

Why: a test that rewrote the tracked docs/images/app.png left every clone dirty after
``pytest``. ``tests/conftest.py`` takes a snapshot when the session starts and compares it when
the session ends, so a test that writes into the checkout fails the run, wherever it writes.
Comparing two snapshots (rather than asking for a clean tree) lets the suite run in a checkout
that already has changes or untracked files, and in CI's fresh clone alike.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def git_status(root: Path) -> frozenset[str] | None:
    """``git status --porcelain`` entries of the checkout at ``root``, each with its file's content hash.

    Untracked files are listed one by one. The hash makes a test's edit of a file that was already
    modified or untracked before the run count as a change too. None where there is no git or
    ``root`` is not in a checkout (an unpacked sdist): then there is nothing to compare.
    """
    git = shutil.which("git")
    if git is None:
        return None
    completed = subprocess.run([git, "status", "--porcelain", "--untracked-files=all", "-z"], cwd=root,
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return None
    entries = [entry for entry in completed.stdout.split("\0") if len(entry) > 3 and entry[2] == " "]
    files = [entry for entry in entries if (root / entry[3:]).is_file()]
    hashed = subprocess.run([git, "hash-object", "--stdin-paths"], cwd=root, capture_output=True, text=True,
                            input="".join(entry[3:] + "\n" for entry in files), check=False)
    digests = dict(zip(files, hashed.stdout.split())) if hashed.returncode == 0 else {}
    return frozenset(f"{entry} {digests.get(entry, '')}".rstrip() for entry in entries)


def changes(before: frozenset[str] | None, after: frozenset[str] | None) -> list[str]:
    """What the run changed: entries that appeared (``+``) or went away (``-``); empty when either is unknown."""
    if before is None or after is None:
        return []
    return [f"+ {line}" for line in sorted(after - before)] + [f"- {line}" for line in sorted(before - after)]
