"""PoolFormer and SwiftFormer: a norm over the whole map before the mean, then the head(s).

PoolFormer's GroupNorm (one group) normalises each image's map with its own mean and variance
over (C, H, W): a per-image affine map of F, so ``F' = norm(F)`` is itself a spatial map whose
mean the head reads. SwiftFormer's eval-mode BatchNorm2d is a per-channel affine map, and its
two heads (classification and distillation) are averaged, which is one linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LinearHead, ModelAdapter, average_heads, find_linear, linear_head, submodule
from .registry import register_adapter


@register_adapter
class PoolFormerAdapter(ModelAdapter):
    model_types = ("poolformer",)
    family = "PoolFormer"
    doc = (
        "`model.norm(last_hidden_state)`: the final GroupNorm normalises the whole map before the mean, "
        "so the normed map is F; head: `model.classifier`"
    )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        norm = submodule(self.model, "norm", nn.Module)
        base = self.base_model()
        return norm(self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state)


@register_adapter
class SwiftFormerAdapter(PoolFormerAdapter):
    """The same normed map as PoolFormer (``model.norm`` over the last map); two heads, averaged."""

    model_types = ("swiftformer",)
    family = "SwiftFormer"
    doc = (
        "`model.norm(last_hidden_state)` (an eval-mode BatchNorm2d, per location); head: the mean of "
        "`model.head` and `model.dist_head`, which the model averages"
    )

    def head(self) -> LinearHead:
        model_type = self.model_type
        heads = [submodule(self.model, name, nn.Module) for name in ("head", "dist_head")]
        return average_heads([linear_head(find_linear(m, model_type)) for m in heads])
