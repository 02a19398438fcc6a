"""Command-line flags generated from :class:`~epic_hf.config.FitConfig`: one source for every setting.

Each field becomes ``--field-name`` in the argument group its metadata names, with its type,
choices and help text, and exactly one default in the help (none for settings without one).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from ..config import FitConfig

GROUP_TITLES = {"data": "data", "method": "EPIC method (paper defaults marked)", "compute": "compute",
                "bank": "bank"}


def _scalar_type(annotation: Any) -> type:
    """The Python type of a field annotation such as ``int`` or ``str | None``."""
    candidates = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return candidates[0] if candidates[0] in (bool, int, float) else str


def add_fit_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per FitConfig field, grouped as the config groups them."""
    groups: dict[str, Any] = {}
    hints = typing.get_type_hints(FitConfig)
    for spec in dataclasses.fields(FitConfig):
        meta = spec.metadata
        group = groups.get(meta["group"]) or groups.setdefault(
            meta["group"], parser.add_argument_group(GROUP_TITLES.get(meta["group"], meta["group"])))
        flag = "--" + spec.name.replace("_", "-")
        kind = _scalar_type(hints[spec.name])
        help_text = meta["help"]
        if kind is bool:
            group.add_argument(flag, action="store_true", default=spec.default, help=help_text)
            continue
        if spec.default is not None:
            paper = ", the paper's" if meta["paper"] else ""
            help_text += f" (default: {spec.default}{paper})"
        group.add_argument(flag, type=kind, default=spec.default, choices=meta["choices"], help=help_text,
                           metavar=None if meta["choices"] else spec.name.upper())


def fit_config_from_args(args: argparse.Namespace) -> FitConfig:
    """The FitConfig that the parsed flags describe."""
    return FitConfig(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(FitConfig)})
