"""SegFormer (MiT) classification: a mean over the last stage's map into one Linear."""

from __future__ import annotations

import torch

from .base import ModelAdapter, tokens_to_grid
from .registry import register_adapter


def _conv_out(size: int, conv: torch.nn.Conv2d, axis: int) -> int:
    reach = conv.dilation[axis] * (conv.kernel_size[axis] - 1) + 1
    return (size + 2 * conv.padding[axis] - reach) // conv.stride[axis] + 1


@register_adapter
class SegformerAdapter(ModelAdapter):
    model_types = ("segformer",)
    family = "SegFormer (MiT)"
    doc = (
        "the last stage's map (per-token LayerNorm already applied); with `reshape_last_stage=False` the "
        "tokens are put row-major on the grid of the last overlapping patch embedding; head: `model.classifier`"
    )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.model.base_model(pixel_values=pixel_values).last_hidden_state
        if hidden.ndim == 4:
            return hidden
        height, width = pixel_values.shape[-2:]
        for stage in self.model.base_model.stages:
            conv = stage.patch_embeddings.proj
            height, width = _conv_out(height, conv, 0), _conv_out(width, conv, 1)
        return tokens_to_grid(hidden, height, width)
