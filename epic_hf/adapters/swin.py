"""Swin (v1, v2): per-token LayerNorm, then an average over the last stage's token grid."""

from __future__ import annotations

import math

import torch

from .base import ModelAdapter, tokens_to_grid
from .registry import register_adapter


@register_adapter
class SwinAdapter(ModelAdapter):
    """Swin (v1, v2): per-token LayerNorm, then an average over the final token grid."""

    model_types = ("swin", "swinv2")
    family = "Swin, Swin V2"

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.model.base_model(pixel_values=pixel_values).last_hidden_state
        height, width = self.grid_size(pixel_values.shape[-2:], tokens.shape[1])
        return tokens_to_grid(tokens, height, width)

    def grid_size(self, input_hw: torch.Size, length: int) -> tuple[int, int]:
        config = self.model.config
        height = math.ceil(input_hw[0] / config.patch_size)
        width = math.ceil(input_hw[1] / config.patch_size)
        for _ in range(len(config.depths) - 1):  # each patch merging halves, padding odd sides
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        return height, width
