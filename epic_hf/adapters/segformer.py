"""SegFormer (MiT) classification: a mean over the last stage's map into one Linear."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import ModelAdapter, submodule, tokens_to_grid
from .registry import register_adapter


def _conv_out(size: int, conv: nn.Conv2d, axis: int) -> int:
    if isinstance(conv.padding, str):
        raise UnsupportedModelError(f"a SegFormer patch embedding pads with padding={conv.padding!r}, not by a size")
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
        base = self.base_model()
        hidden = self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state
        if hidden.ndim == 4:
            return hidden
        height, width = pixel_values.shape[-2:]
        for stage in submodule(base, "stages", nn.ModuleList):
            conv = submodule(stage, "patch_embeddings.proj", nn.Conv2d)
            height, width = _conv_out(height, conv, 0), _conv_out(width, conv, 1)
        return tokens_to_grid(hidden, height, width)
