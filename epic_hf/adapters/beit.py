"""BEiT and Data2Vec-Vision with ``use_mean_pooling=True``: LayerNorm(mean of patch tokens)."""

from __future__ import annotations

import torch

from ..errors import UnsupportedModelError
from .base import ModelAdapter, fold_post_pool_layernorm, tokens_to_grid
from .registry import register_adapter, supported_families_text


@register_adapter
class MeanPooledViTAdapter(ModelAdapter):
    """BEiT and Data2Vec-Vision with ``use_mean_pooling=True``: LN(mean of patch tokens)."""

    model_types = ("beit", "data2vec-vision")
    family = "BEiT, Data2Vec-Vision (use_mean_pooling=True)"

    def check_config(self, config) -> None:
        if not getattr(config, "use_mean_pooling", False):
            raise UnsupportedModelError(
                f"{config.model_type} with use_mean_pooling=False classifies from its CLS token, "
                "which is not an average of a spatial feature map, so EPIC cannot decompose its "
                f"logits. Supported families: {supported_families_text()}."
            )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.model.base_model
        tokens = base(pixel_values=pixel_values).last_hidden_state[:, 1:, :]
        patch = self.model.config.patch_size
        grid = tokens_to_grid(tokens, pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        return fold_post_pool_layernorm(grid, base.pooler.layernorm)
