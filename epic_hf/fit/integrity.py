"""Checkpoint files that are what was written, or are redone: atomic writes, and a manifest of sizes and checksums.

Every checkpoint file is written through :mod:`epic_hf.atomic` (a synced temporary file renamed
into place), so a crash leaves the old file or the new one, never half of one. After each write,
``manifest.json`` (itself replaced atomically) records the file's size and SHA-256. A resume reads a file only if both
still match: a file that was cut, extended, overwritten or flipped by a bit is named in a
warning and redone, never read, padded or reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ..aliases import JSONDict
from ..atomic import write_atomic

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
#: Bytes read at a time while hashing: an index file may be larger than memory.
HASH_CHUNK_BYTES = 2**24


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, SHA-256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class Manifest:
    """The recorded size and checksum of each checkpoint file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.entries: dict[str, JSONDict] = {}
        path = directory / MANIFEST_NAME
        if path.is_file():
            try:
                entries = json.loads(path.read_bytes().decode("utf-8"))
                self.entries = entries if isinstance(entries, dict) else {}
            except (ValueError, UnicodeDecodeError):
                logger.warning("%s is damaged: every checkpoint file it covered will be redone", path)

    def record(self, name: str) -> None:
        """Record ``name`` as it is now on disk (called right after it was written)."""
        size, digest = file_digest(self.directory / name)
        self.entries[name] = {"bytes": size, "sha256": digest}
        write_atomic(self.directory / MANIFEST_NAME, json.dumps(self.entries, indent=2, sort_keys=True).encode())

    def forget(self, name: str) -> None:
        if self.entries.pop(name, None) is not None:
            write_atomic(self.directory / MANIFEST_NAME, json.dumps(self.entries, indent=2, sort_keys=True).encode())

    def problem(self, name: str) -> str | None:
        """Why ``name`` may not be read (None: it exists and matches what was recorded)."""
        path = self.directory / name
        entry = self.entries.get(name)
        if not path.is_file():
            return "it is missing"
        if not isinstance(entry, dict):
            return "no size and checksum were recorded for it (written by an older epic_hf, or never finished)"
        try:
            size, digest = file_digest(path)
        except OSError as error:
            return f"it cannot be read ({error})"
        if size != entry.get("bytes"):
            return f"it holds {size} bytes, not the {entry.get('bytes')} written"
        if digest != entry.get("sha256"):
            return "its checksum differs from the one recorded when it was written"
        return None
