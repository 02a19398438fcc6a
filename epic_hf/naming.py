"""How names a person reads are made: a model or dataset shown without this machine's paths, a folder read as a label.

Two jobs, both about names that come from a user's disk:

* :func:`display_name`: a bank records a local classifier by its absolute path (so that it loads
  from anywhere), but a page title, an atlas or a model card that shows ``/home/ana/tmp/x/model``
  tells strangers about the author's disk and tells the reader nothing. Every place that shows a
  model or a dataset to a person names it through this one function: a Hub id as it is, a local
  folder or file by its own name.
* :func:`match_label`: people name class folders as file systems allow (``red_circle``,
  ``Blue-Square``) for labels written with spaces (``red circle``). A folder name matches a label
  ignoring case and treating spaces, underscores and hyphens alike, so that ``explain`` marks hits
  and misses instead of calling every image a miss; a folder that matches no label is named, with
  the closest labels (:func:`closest_labels`), instead of being reported as a miss.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import PurePath, PurePosixPath, PureWindowsPath

_SEPARATORS = re.compile(r"[\s_\-]+")


def looks_local(name: str) -> bool:
    """Whether ``name`` is a path on some machine rather than a Hub id (``org/name`` or ``name``).

    Absolute (POSIX or Windows), home-relative, ``./`` or ``../``, a backslash, or more than one
    slash: a Hub id has at most one.
    """
    return (name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in name or name.count("/") > 1
            or PureWindowsPath(name).is_absolute())


def display_name(name_or_path: object) -> str | None:
    """What a person is shown for a model or dataset reference: a Hub id as it is, a local path by its last part.

    ``/tmp/x/runs/resnet-50`` -> ``resnet-50``; ``microsoft/resnet-50`` -> ``microsoft/resnet-50``;
    None or an empty name -> None (the caller words the unknown case).
    """
    if name_or_path is None:
        return None
    text = str(name_or_path).strip()
    if not text:
        return None
    if not looks_local(text):
        return text
    path: PurePath = PureWindowsPath(text) if "\\" in text else PurePosixPath(text)
    return path.name or text.rstrip("/\\").rsplit("/", 1)[-1] or None


def label_key(name: str) -> str:
    """``name`` as labels are compared: case folded, runs of spaces, underscores and hyphens made one space."""
    return _SEPARATORS.sub(" ", name).strip().casefold()


def match_label(name: str, labels: Iterable[str]) -> str | None:
    """The label that folder name ``name`` stands for, or None when it stands for none.

    An exact match wins; else the one label equal to it under :func:`label_key`; else the one label
    that lists it among comma-separated synonyms (``tiger_shark`` is ``tiger shark, Galeocerdo
    cuvieri``). Two labels that both match (``a-b`` and ``a b`` in one model; ImageNet's two
    ``crane``) are ambiguous: None, rather than a guess.
    """
    labels = list(labels)
    if name in labels:
        return name
    key = label_key(name)
    found = [label for label in labels if label_key(label) == key]
    if not found:  # ImageNet-style labels list synonyms: folder "tabby" is label "tabby, tabby cat"
        found = [label for label in labels if key in (label_key(part) for part in label.split(","))]
    return found[0] if len(set(found)) == 1 else None


def closest_labels(name: str, labels: Iterable[str], count: int = 3) -> list[str]:
    """Up to ``count`` labels that look most like ``name`` (difflib's ratio on :func:`label_key`), best first."""
    by_key: dict[str, str] = {}
    for label in labels:
        by_key.setdefault(label_key(label), label)
    close = difflib.get_close_matches(label_key(name), list(by_key), n=count, cutoff=0.4)
    return [by_key[key] for key in close]
