"""The one way epic_hf writes a file: whole or not at all, and still there after a power cut.

Every file the package writes (a bank's safetensors and config, checkpoints, the evaluation's
state, reports, pictures, the model card, atlas files) goes through this module, so that a
crash, a full disk or an exception half-way leaves the old file or the new one, never a cut one
that a later run would read as valid. The recipe: write a temporary file in the same folder
(a rename is atomic only within one file system), flush and ``fsync`` it (else the rename may
reach the disk before the data does), ``os.replace`` it over the target, then ``fsync`` the
folder (else the rename itself may be lost). On failure the temporary file is removed.

* :func:`write_atomic` writes ``bytes`` or ``str`` (UTF-8 unless told otherwise);
* :func:`atomic_path` yields a temporary path for writers that insist on a path of their own
  (safetensors ``save_file``, PIL ``Image.save``), and commits it when the block ends cleanly;
* :func:`atomic_stream` yields an open binary file, for data written in pieces (a large index);
* :func:`create_exclusive` creates a file that must not exist yet (a lock), whole, or says it exists.

``tests/test_atomic.py`` checks statically that no other module of the package writes a file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

#: What a temporary file's name starts with: hidden, and recognisable as epic_hf's own leftover.
TEMP_PREFIX = ".epic-partial-"
#: The most of the target's name a temporary name keeps (its end, so the suffix): names stay under NAME_MAX.
KEPT_NAME_CHARS = 100


def _ordinary_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (read without changing it where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def create_partial(target: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``target``, open for writing.

    Not ``tempfile.mkstemp``: that creates files readable by their owner only, and the rename
    would hand that mode to a bank or report meant to be shared; here the umask decides, as for
    any ordinary write.
    """
    while True:
        partial = target.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{target.name[-KEPT_NAME_CHARS:]}"
        try:
            return os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o666), partial
        except FileExistsError:
            continue


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable; a platform or file system that cannot open folders is skipped."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems refuse fsync on a folder; the data itself is already synced
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_stream(path: str | Path) -> Iterator[IO[bytes]]:
    """``with atomic_stream(path) as handle: handle.write(...)``: ``path`` appears whole when the block ends.

    An exception inside the block leaves ``path`` as it was (absent, or its old content) and no
    temporary file behind.
    """
    with atomic_path(path) as partial, open(partial, "wb") as stream:
        yield stream
        stream.flush()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(path) as partial: save_file(tensors, partial)``: what the block writes at ``partial``
    replaces ``path`` when the block ends cleanly.

    For writers that take a path rather than a file object. The temporary name keeps the
    target's suffix, for writers that pick a format from it (``Image.save``). ``partial`` exists
    (empty) when the block starts; an exception inside it leaves ``path`` as it was and no temporary file.
    """
    target = Path(path)
    handle, partial = create_partial(target)
    os.close(handle)
    try:
        yield partial
        partial.chmod(_ordinary_mode())  # writers that make their own file (safetensors) make it 0600
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def create_exclusive(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> bool:
    """Create ``path`` holding ``data`` in one step; False (and nothing changed) if ``path`` already exists.

    The data is written and synced to a temporary file, then ``os.link``-ed to ``path``: the
    name appears with its content or not at all, so no reader ever finds it empty. Where the
    file system has no hard links, ``path`` is created exclusively and written at once.
    """
    target = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else data
    handle, partial = create_partial(target)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(partial, target)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT mounts): exclusive creation
            try:
                descriptor = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
    finally:
        partial.unlink(missing_ok=True)
    _fsync_folder(target.parent)
    return True


def write_atomic(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text is encoded with ``encoding``) at ``path`` in one step; returns ``path``."""
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_stream(path) as stream:
        stream.write(payload)
    return Path(path)
