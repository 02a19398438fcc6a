"""EfficientNet: an average pool over the top convolution's map (max pooling is refused)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UnsupportedModelError
from .base import ModelAdapter
from .registry import refusal_message, register_adapter

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@register_adapter
class EfficientNetAdapter(ModelAdapter):
    model_types = ("efficientnet",)
    family = "EfficientNet (pooling_type='mean')"
    doc = (
        "`last_hidden_state`, the map before the pool; head: `model.classifier`. "
        "`pooling_type='max'` is refused (a max is not linear)"
    )

    @classmethod
    def check_config(cls, config: PretrainedConfig) -> None:
        if getattr(config, "pooling_type", "mean") != "mean":
            raise UnsupportedModelError(refusal_message(
                config.model_type,
                f"EfficientNet with pooling_type={config.pooling_type!r} max-pools its features; "
                "EPIC needs an average pool to decompose the logits. Use pooling_type='mean'",
            ))
