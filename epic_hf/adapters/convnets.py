"""Convolutional (and conv-stage hybrid) families whose head is ``Linear(mean_hw(F))``.

For these, ``last_hidden_state`` of the base model *is* the map that the head average-pools,
with every norm already applied per location, so F needs no folding at all.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import ModelAdapter, submodule
from .registry import register_adapter


@register_adapter
class ConvNetAdapter(ModelAdapter):
    """The base model's ``last_hidden_state`` (B, D, H, W) is average-pooled into one Linear."""

    model_types = ("resnet", "regnet", "mobilenet_v1", "mobilenet_v2", "bit", "mobilevit", "mobilevitv2", "pvt_v2")
    family = "ResNet, RegNet, MobileNet V1/V2, BiT, MobileViT V1/V2, PVT v2"
    doc = (
        "`base_model(...).last_hidden_state`, the (B, D, H, W) map before the average pool (BiT's "
        "pre-activation norm and MobileViT's 1x1 expansion are already in it); head: the single "
        "`nn.Linear` of `model.classifier`"
    )


@register_adapter
class FcHeadConvNetAdapter(ModelAdapter):
    """HGNet V2 and TextNet keep their Linear as ``model.fc`` after an average pool of the map."""

    model_types = ("hgnet_v2", "textnet")
    family = "HGNet V2, TextNet"
    doc = (
        "the encoder's last map (HGNet V2: `encoder(embedder(x))`; TextNet: `textnet(x).last_hidden_state`), "
        "which `model.classifier` (AdaptiveAvgPool2d + Flatten) pools; head: `model.fc`. TextNet's own "
        "2x2 `pooler_output` is not what the classifier reads"
    )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.model_type == "hgnet_v2":  # no base model: embedder and encoder sit on the classifier
            embedder = submodule(self.model, "embedder", nn.Module)
            encoder = submodule(self.model, "encoder", nn.Module)
            return self.trunk_output(encoder, lambda: encoder(embedder(pixel_values))).last_hidden_state
        return super().feature_map(pixel_values)

    def trunk(self) -> nn.Module | None:
        return submodule(self.model, "encoder", nn.Module) if self.model_type == "hgnet_v2" else super().trunk()

    def classifier(self) -> nn.Module:
        return submodule(self.model, "fc", nn.Module)
