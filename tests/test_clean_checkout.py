"""The check that keeps the suite out of the checkout (tests/clean_checkout.py), on a real git repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from clean_checkout import changes, git_status

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def test_a_write_into_the_checkout_is_seen_and_what_was_there_before_is_not(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "tracked.png").write_bytes(b"first")
    git(tmp_path, "add", "tracked.png")
    git(tmp_path, "commit", "-q", "-m", "one")
    (tmp_path / "notes.txt").write_text("an untracked file from before the run")
    before = git_status(tmp_path)
    assert before is not None and changes(before, git_status(tmp_path)) == []  # nothing written: nothing seen
    (tmp_path / "tracked.png").write_bytes(b"rewritten by a test")  # what test_app.py used to do to app.png
    found = changes(before, git_status(tmp_path))
    assert len(found) == 1 and found[0].startswith("+  M tracked.png")
    (tmp_path / "notes.txt").write_text("edited during the run")  # an untracked file changed: seen too
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "new.json").write_text("{}")
    found = changes(before, git_status(tmp_path))
    assert any(line.startswith("+ ?? out/new.json") for line in found)
    assert any(line.startswith("+ ?? notes.txt") for line in found) and any(
        line.startswith("- ?? notes.txt") for line in found)


def test_outside_a_checkout_there_is_nothing_to_compare(tmp_path: Path) -> None:
    assert git_status(tmp_path) is None and changes(None, frozenset({"?? x"})) == []
