"""What every ``epic-hf`` command shares: argument checks, output on stdout, logging on stderr."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..aliases import JSONValue
from ..bank_format import CONFIG_NAME
from ..loading import looks_like_path

PROG = "epic-hf"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

logger = logging.getLogger("epic_hf.cli")


class CliError(Exception):
    """A problem with the command line's arguments, reported as one line."""


def check_local(value: str, what: str) -> None:
    """A value that is clearly a local path must exist (and not be sent to the Hub as an id)."""
    if (looks_like_path(value) or value in (".", "..")) and not Path(value).expanduser().exists():
        raise FileNotFoundError(f"{what} {value!r} does not exist")


def model_reference(value: str) -> str:
    """A local model or bank folder becomes absolute; a fit's output dir becomes its bank."""
    check_local(value, "model")
    path = Path(value).expanduser()
    if path.is_dir():
        nested = path / "bank"
        if not (path / CONFIG_NAME).is_file() and (nested / CONFIG_NAME).is_file():
            path = nested  # a fit's output_dir: use its bank
        return str(path.resolve())
    if path.exists():
        raise ValueError(f"model {value!r} is a file; pass a model directory, an EPIC bank directory or a Hub id")
    return value


def parse_target(value: str | None) -> int | str | None:
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def image_paths(values: Sequence[str]) -> list[Path]:
    """Image files from files and folders (a folder's images, sorted; class subfolders one level down)."""
    paths: list[Path] = []
    for value in values:
        path = Path(value).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                           and len(p.relative_to(path).parts) <= 2)
            if not found:
                raise FileNotFoundError(f"the folder {value!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"image file {value!r} does not exist")
    if not paths:
        raise CliError("no images given")
    return paths


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") in ("", "0") and os.environ.get("LOCAL_RANK", "0") in ("", "0")


def emit(text: str) -> None:
    """What the command reports to the user, on stdout (main process only under accelerate)."""
    if is_main_process():
        print(text, flush=True)


def json_default(value: object) -> JSONValue:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is at the time, so output redirected around ``main()`` gets them."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ assigns it; sys.stderr wins
        pass


def configure_logging(level: int) -> None:
    """INFO for epic_hf on stderr; the library itself never configures logging."""
    package = logging.getLogger("epic_hf")
    package.setLevel(level if is_main_process() else max(level, logging.WARNING))
    if not any(getattr(h, "_epic_hf_cli", False) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._epic_hf_cli = True  # type: ignore[attr-defined]
        package.addHandler(handler)
    package.propagate = False
