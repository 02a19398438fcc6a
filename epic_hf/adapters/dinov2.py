"""DINOv2 (with or without registers): ``Linear(concat(cls, mean(patch tokens)))``.

The classifier's weight splits into ``[A_cls | A_patch]``, so the logits are exactly
``A_patch . avg_hw(F) + A_cls . cls + b`` with F the patch tokens on their grid. The CLS share
``A_cls . cls`` is not spatial: it travels as ``SpatialFeatures.extra_logits`` (the explainer's
``cls_contribution``), and :meth:`head` is the patch half with the full bias.
"""

from __future__ import annotations

import torch

from .base import (
    LinearHead,
    ModelAdapter,
    SpatialFeatures,
    find_linear,
    linear_head,
    patch_grid,
    patch_size,
    tokens_to_grid,
)
from .registry import register_adapter


@register_adapter
class Dinov2Adapter(ModelAdapter):
    model_types = ("dinov2", "dinov2_with_registers")
    family = "DINOv2, DINOv2 with registers"
    doc = (
        "patch tokens (CLS and register tokens dropped; per-token LayerNorm applied) row-major on "
        "`(H/patch, W/patch)`; head: the patch half of `model.classifier` and its bias; the CLS half times "
        "the CLS token is the exact extra term (`cls_contribution`)"
    )
    has_extra_logits = True

    def _full_head(self) -> LinearHead:
        return linear_head(find_linear(self.classifier(), self.model_type))

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        config = self.config
        tokens = self.base_model()(pixel_values=pixel_values).last_hidden_state
        prefix = 1 + getattr(config, "num_register_tokens", 0)
        fmap = tokens_to_grid(tokens[:, prefix:, :], *patch_grid(pixel_values, patch_size(config)))
        cls_weight = self._full_head().weight[:, : tokens.shape[-1]]
        return SpatialFeatures(fmap=fmap, extra_logits=tokens[:, 0, :] @ cls_weight.T.to(tokens))

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.features(pixel_values).fmap

    def head(self) -> LinearHead:
        full = self._full_head()
        dim = full.weight.shape[1] // 2
        return LinearHead(weight=full.weight[:, dim:], bias=full.bias)
