"""Where a timm model's tokens lie on the image: the grid of the (B, N, C) tokens ``forward_features`` gives.

Token models (ViT-likes, Twins, MLP-Mixer, LeViT) say their grid in the patch embedding, or in the
last stage's reduction; a square input's tokens lie on a square grid.
"""

from __future__ import annotations

import math

from torch import nn

from ..errors import UnsupportedModelError
from .base import method


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
