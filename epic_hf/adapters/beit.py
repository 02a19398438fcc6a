"""BEiT and Data2Vec-Vision with ``use_mean_pooling=True``: LayerNorm(mean of patch tokens)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import ModelAdapter, fold_post_pool_layernorm, patch_grid, patch_size, submodule, tokens_to_grid
from .registry import refusal_message, register_adapter

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@register_adapter
class MeanPooledViTAdapter(ModelAdapter):
    """BEiT and Data2Vec-Vision with ``use_mean_pooling=True``: LN(mean of patch tokens)."""

    model_types = ("beit", "data2vec-vision")
    family = "BEiT, Data2Vec-Vision (use_mean_pooling=True)"
    doc = (
        "patch tokens (CLS dropped) reshaped to `(H/patch, W/patch)`, the pooler's LayerNorm folded in "
        "as for ConvNeXt; head: `model.classifier`. `use_mean_pooling=False` (CLS token) is refused"
    )

    @classmethod
    def check_config(cls, config: PretrainedConfig) -> None:
        if not getattr(config, "use_mean_pooling", False):
            raise UnsupportedModelError(refusal_message(
                config.model_type,
                "with use_mean_pooling=False it classifies from its CLS token, which is not an average "
                "of a spatial feature map, so EPIC cannot decompose its logits",
            ))

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.base_model()
        tokens = self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state[:, 1:, :]
        grid = tokens_to_grid(tokens, *patch_grid(pixel_values, patch_size(self.config)))
        return fold_post_pool_layernorm(grid, submodule(base, "pooler.layernorm", nn.LayerNorm))
