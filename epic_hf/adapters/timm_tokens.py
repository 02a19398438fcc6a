"""Where a timm model's features lie: the layout its ``forward_head`` reads, and the grid of its tokens.

Families that write their mean in ``forward_head`` itself (PVT v2, Visformer, Twins, MLP-Mixer)
say nothing of their layout in a module EPIC could name: it is read by trying, and the tokens are
placed on the image by the patch embedding or the last stage's reduction.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import method


def token_layout(timm_model: nn.Module, fc: nn.Linear) -> int | None:
    """None when ``forward_head`` takes a (B, C, H, W) map; its prefix-token count when it takes (B, N, C) tokens.

    Read by trying both shapes on random features: a head written for the other layout fails on
    the width (or gives logits of the wrong shape). Neither working leaves None, and the probe
    that follows refuses the model with the error.
    """
    width, prefix = int(fc.weight.shape[1]), int(getattr(timm_model, "num_prefix_tokens", 0) or 0)
    like = next(timm_model.parameters())
    for layout, shape in ((None, (2, width, 3, 3)), (prefix, (2, prefix + 9, width))):
        features = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(like)
        try:
            with torch.no_grad():
                logits = method(timm_model, "forward_head")(features)
        except (RuntimeError, ValueError, IndexError, TypeError, AssertionError):  # written for the other layout
            continue
        if tuple(logits.shape) == (2, fc.out_features):
            return layout
    return None


def token_grid(timm_model: nn.Module, size: tuple[int, ...], tokens: int) -> tuple[int, int]:
    """The (rows, columns) of the ``tokens`` spatial tokens a timm model gives for an input of ``size``.

    The patch embedding says it where there is one (``dynamic_feat_size``); otherwise the last
    stage's reduction (``feature_info``) does, or, for a square input, the square root of the token
    count. A grid that does not hold ``tokens`` is refused.
    """
    patch_embed = getattr(timm_model, "patch_embed", None)
    if isinstance(patch_embed, nn.Module) and callable(getattr(patch_embed, "dynamic_feat_size", None)):
        height, width = method(patch_embed, "dynamic_feat_size")(size)
    else:
        info = getattr(timm_model, "feature_info", None) or [{}]
        reduction = int(info[-1].get("reduction", 0) or 0) if isinstance(info[-1], dict) else 0
        height, width = (size[0] // reduction, size[1] // reduction) if reduction else (0, 0)
    side = math.isqrt(tokens)
    if height * width != tokens and size[0] == size[1] and side * side == tokens:
        height = width = side  # a square input gives a square grid (LeViT rounds its strides up)
    if height * width != tokens:
        raise UnsupportedModelError(f"{type(timm_model).__name__} gives {tokens} tokens for a {size[0]} x {size[1]} "
                                    f"input, not a {height} x {width} grid, so EPIC cannot place them on the image")
    return int(height), int(width)
