"""ConvNeXt (v1, v2): a LayerNorm after the pool, folded exactly into F."""

from __future__ import annotations

import torch
from torch import nn

from .base import ModelAdapter, fold_post_pool_layernorm, submodule
from .registry import register_adapter


@register_adapter
class ConvNextAdapter(ModelAdapter):
    """ConvNeXt (v1, v2): LayerNorm after the pool, folded into F."""

    model_types = ("convnext", "convnextv2")
    family = "ConvNeXt, ConvNeXt V2"
    doc = (
        "`last_hidden_state`, then the post-pool LayerNorm folded into F: "
        "`F' = (F - mu)/sqrt(var + eps)·gamma + beta` (see "
        "[how_epic_works.md](how_epic_works.md#pooling-after-a-layernorm-convnext-beit)); head: `model.classifier`"
    )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.base_model()
        hidden = self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state
        return fold_post_pool_layernorm(hidden, submodule(base, "layernorm", nn.LayerNorm))
