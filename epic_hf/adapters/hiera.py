"""Hiera: tokens kept in an *unrolled* order, a mean, then a LayerNorm after the pool.

Hiera reorders its tokens so that pooling windows are contiguous (``unroll``); strides that the
query pooling has not consumed by the last stage leave the final tokens out of row-major order.
``HieraEncoder.reroll`` for the last stage undoes exactly that, giving the true H x W layout, so
heatmaps and boxes land where the evidence is. The pooler's LayerNorm after the mean is folded
into F as for ConvNeXt.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import ModelAdapter, attribute, fold_post_pool_layernorm, method, submodule
from .registry import refusal_message, register_adapter


@register_adapter
class HieraAdapter(ModelAdapter):
    model_types = ("hiera",)
    family = "Hiera"
    doc = (
        "last-stage tokens put back in spatial order with `encoder.reroll` (Hiera's token order is "
        "unrolled, not row-major), then the pooler's post-pool LayerNorm folded into F; head: `model.classifier`"
    )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        norm = submodule(self.base_model(), "pooler.layernorm", nn.LayerNorm)
        return fold_post_pool_layernorm(self.token_grid(pixel_values), norm)

    def token_grid(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last stage's tokens in their true spatial layout, (B, D, H, W), before the norm fold."""
        expected = tuple(attribute(self.config, "image_size", (list, tuple)))
        if tuple(pixel_values.shape[-2:]) != expected:
            raise UnsupportedModelError(refusal_message(
                "hiera",
                f"its token layout is fixed by config.image_size {expected}, and the input is "
                f"{tuple(pixel_values.shape[-2:])}; resize inputs to the configured size",
            ))
        hiera = self.base_model()
        tokens = self.trunk_output(hiera, lambda: hiera(pixel_values=pixel_values)).last_hidden_state
        reroll = method(submodule(hiera, "encoder", nn.Module), "reroll")
        grid = reroll(tokens, stage_idx=len(attribute(self.config, "depths", (list, tuple))) - 1)  # (B, H, W, D)
        return grid.permute(0, 3, 1, 2)
