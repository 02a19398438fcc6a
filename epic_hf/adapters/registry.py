"""The adapter registry: which ``config.model_type`` values EPIC can decompose, and why not the rest.

This module holds data only (no adapter code), so that the contract in ``base`` and every
family module can import it without a cycle. Importing :mod:`epic_hf.adapters` fills it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UnsupportedModelError

if TYPE_CHECKING:  # annotations only: base imports this module, not the other way round
    from torch import nn

    from .base import ModelAdapter

#: ``config.model_type`` -> the adapter class that serves it.
ADAPTERS: dict[str, type["ModelAdapter"]] = {}

#: Families whose logits read a CLS (or distillation) token: not an average of a spatial map.
CLS_TOKEN_FAMILIES = ("vit", "deit", "dinov2", "dinov2_with_registers", "vit_hybrid", "vit_msn", "cvt")


def register_adapter(cls: type["ModelAdapter"]) -> type["ModelAdapter"]:
    """Add an adapter class to the registry under each of its ``model_types``."""
    for model_type in cls.model_types:
        ADAPTERS[model_type] = cls
    return cls


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def supported_families_text() -> str:
    return ", ".join(supported_model_types())


def adapter_class_for(model_type: str | None) -> type["ModelAdapter"]:
    """The adapter class for ``model_type``, or :class:`UnsupportedModelError` naming the supported ones."""
    cls = ADAPTERS.get(model_type)  # type: ignore[arg-type]
    if cls is not None:
        return cls
    if model_type in CLS_TOKEN_FAMILIES:
        why = (
            "its logits read a CLS token, which is not an average of a spatial feature map, so "
            "they cannot be decomposed exactly into channel contributions"
        )
    else:
        why = (
            "no adapter knows how to read its spatial feature map and linear head yet (a family whose "
            "logits are a linear map of an average-pooled feature map can be added with register_adapter)"
        )
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported by EPIC: {why}. "
        f"Supported model types: {supported_families_text()}."
    )


def adapter_for(model: "nn.Module") -> "ModelAdapter":
    """The adapter for a loaded model; it checks the model's configuration too."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return adapter_class_for(model_type)(model)
