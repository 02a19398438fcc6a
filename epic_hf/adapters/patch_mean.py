"""Plain ViTs whose classifier reads the mean of their patch tokens (no norm after the mean).

CLIP and MetaCLIP 2 drop the CLS token and average the rest of ``last_hidden_state`` (which is
*before* the vision model's post-LayerNorm); SigLIP and I-JEPA have no CLS token and average
all tokens (already LayerNorm-ed per token). The CLS token still mixes into the patches through
attention, but the logits are a linear map of the patch mean, which is all exactness needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from .base import ModelAdapter, patch_grid, patch_size, submodule, tokens_to_grid
from .registry import register_adapter


class PatchMeanAdapter(ModelAdapter):
    """Tokens after ``num_prefix_tokens`` reshaped row-major to the ``(H/patch, W/patch)`` grid."""

    num_prefix_tokens: ClassVar[int] = 0

    def backbone(self) -> nn.Module:
        has_vision_model = getattr(self.model, "vision_model", None) is not None
        return submodule(self.model, "vision_model" if has_vision_model else "base_model", nn.Module)

    def patch_size(self) -> int | Sequence[int]:
        config = self.config
        return patch_size(getattr(config, "vision_config", config))

    def trunk(self) -> nn.Module:
        return self.backbone()

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone()
        output = self.trunk_output(backbone, lambda: backbone(pixel_values=pixel_values))
        tokens = output.last_hidden_state[:, self.num_prefix_tokens:, :]
        return tokens_to_grid(tokens, *patch_grid(pixel_values, self.patch_size()))


@register_adapter
class ClipAdapter(PatchMeanAdapter):
    model_types = ("clip", "metaclip_2")
    family = "CLIP, MetaCLIP 2 (image classification head)"
    doc = (
        "`vision_model(...).last_hidden_state` without the CLS token (before the post-LayerNorm, which "
        "only the CLS pooler uses), row-major on `(H/patch, W/patch)`; head: `model.classifier`"
    )
    num_prefix_tokens = 1


@register_adapter
class SiglipAdapter(PatchMeanAdapter):
    model_types = ("siglip", "ijepa")
    family = "SigLIP, I-JEPA"
    doc = (
        "all tokens of `last_hidden_state` (post-LayerNorm per token; there is no CLS token), row-major on "
        "`(H/patch, W/patch)`; head: `model.classifier` (SigLIP's attention-pooling head is not used by it)"
    )
