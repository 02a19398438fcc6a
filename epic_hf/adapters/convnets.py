"""Convolutional families whose head is ``Linear(AdaptiveAvgPool(F))``: F is ``last_hidden_state``."""

from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class ConvNetAdapter(ModelAdapter):
    """Convolutional families whose head is ``Linear(AdaptiveAvgPool(F))``."""

    model_types = ("resnet", "regnet", "mobilenet_v2")
    family = "ResNet, RegNet, MobileNetV2"


@register_adapter
class EfficientNetAdapter(ModelAdapter):
    model_types = ("efficientnet",)
    family = "EfficientNet (pooling_type='mean')"

    def check_config(self, config) -> None:
        if getattr(config, "pooling_type", "mean") != "mean":
            raise UnsupportedModelError(
                f"EfficientNet with pooling_type={config.pooling_type!r} max-pools its features; "
                "EPIC needs an average pool to decompose the logits. Use pooling_type='mean'."
            )
