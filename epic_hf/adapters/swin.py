"""Swin-like hierarchical token models: per-token LayerNorm, then a mean over the last stage's grid.

Swin (v1, v2), Donut-Swin and FocalNet pad odd sides before every patch merging, so the last
grid is ``ceil(input / patch)`` halved (rounding up) once per merging; tokens are row-major.
"""

from __future__ import annotations

import math

import torch

from .base import ModelAdapter, attribute, tokens_to_grid
from .registry import register_adapter


@register_adapter
class SwinAdapter(ModelAdapter):
    """Final tokens (already LayerNorm-ed per token, or not normed at all) averaged over the grid."""

    model_types = ("swin", "swinv2", "donut-swin", "focalnet")
    family = "Swin, Swin V2, Donut-Swin, FocalNet"
    doc = (
        "final tokens (LayerNorm-ed per token; Donut-Swin has no final norm) reshaped row-major to the "
        "H x W grid of the last stage (`ceil(input/patch)`, halved per patch merging); head: `model.classifier`"
    )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.base_model()
        tokens = self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state
        height, width = self.grid_size(pixel_values.shape[-2:], tokens.shape[1])
        return tokens_to_grid(tokens, height, width)

    def grid_size(self, input_hw: torch.Size, length: int) -> tuple[int, int]:
        patch = attribute(self.config, "patch_size", int)
        height = math.ceil(input_hw[0] / patch)
        width = math.ceil(input_hw[1] / patch)
        merges = len(attribute(self.config, "depths", (list, tuple))) - 1
        for _ in range(merges):  # each patch merging halves, padding odd sides
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        return height, width
