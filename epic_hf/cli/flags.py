"""Command-line flags generated from a settings dataclass (`FitConfig`, `EvaluationConfig`): one source for every setting.

Each field becomes ``--field-name`` in the argument group its metadata names, with its type,
choices and help text, and exactly one default in the help (none for settings without one). A
section (``data``, a :class:`~epic_hf.config.DataConfig`) contributes its own fields the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from ..config import is_section, setting_fields

GROUP_TITLES = {"data": "data", "method": "EPIC method (paper defaults marked)", "compute": "compute",
                "bank": "bank", "metrics": "metrics", "audit": "audit (definitions: docs/audit.md)"}

Settings = TypeVar("Settings")


def _scalar_type(annotation: Any) -> type:  # Any: a type form (int, str | None), as get_type_hints gives it
    """The Python type of a field annotation such as ``int`` or ``str | None``."""
    candidates = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return candidates[0] if candidates[0] in (bool, int, float) else str


def _leaves(cls: type) -> list[tuple[dataclasses.Field, Any]]:  # Any: as in _scalar_type
    """(field, its type annotation) of every setting of ``cls``, a section's fields in its place."""
    hints: dict[str, Any] = {}  # Any: as in _scalar_type
    for spec in dataclasses.fields(cls):
        hints.update(typing.get_type_hints(spec.metadata["section"]) if is_section(spec) else {})
    hints.update(typing.get_type_hints(cls))
    return [(spec, hints[spec.name]) for spec in setting_fields(cls)]


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per setting of ``cls``, grouped as the config groups them."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec, annotation in _leaves(cls):
        meta = spec.metadata
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(GROUP_TITLES.get(meta["group"], meta["group"])))
        flag = "--" + spec.name.replace("_", "-")
        kind = _scalar_type(annotation)
        help_text = meta["help"]
        if kind is bool:
            group.add_argument(flag, action="store_true", default=spec.default, help=help_text)
            continue
        if spec.default is not None:
            paper = ", the paper's" if meta["paper"] else ""
            help_text += f" (default: {spec.default}{paper})"
        group.add_argument(flag, type=kind, default=spec.default, choices=meta["choices"], help=help_text,
                           metavar=None if meta["choices"] else spec.name.upper())


def config_from_args(cls: type[Settings], args: argparse.Namespace) -> Settings:
    """The ``cls`` instance that the parsed flags describe (validated by its constructor)."""
    values: dict[str, object] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        values[spec.name] = (config_from_args(spec.metadata["section"], args) if is_section(spec)
                             else getattr(args, spec.name))
    return cls(**values)
