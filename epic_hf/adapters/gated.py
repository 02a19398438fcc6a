"""Non-linear heads after the pool, made exact per image by holding their activation gates.

PP-LCNet, and timm's MobileNetV3/V4, LCNet, FBNetV3 and GhostNet, classify with
``Linear(act(norm(W . avg_hw(F) + c)))``: a 1x1 convolution and an activation between the pool and
the classifier, so the logits are not linear in ``avg_hw(F)``. For ONE image, hold the gate
``g = act(z) / z`` at the value the pooled input ``z`` gives it. Then ``act(z) = g * z``, and since the
convolution and an eval-mode norm are affine per cell,

    F'_hw = g * (scale * (W F_hw + c) + shift)   has   avg_hw(F') = g * z = act(z)

exactly: F' (the head's hidden units, one map per unit) is the spatial map, the classifier is
(A, b), and nothing is left over. The gate depends on the image, so the head that maps a region's
features to the logit is this image's own; the channels EPIC disentangles are the hidden units,
on which U acts as on any F.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import ModelAdapter, activation, attribute, batchnorm_affine, bias_of, fold_post_pool_layernorm, submodule
from .held import activation_gate
from .registry import register_adapter


@dataclass
class GatedPointwise:
    """``act(scale * (W x + c) + shift)`` on a pooled vector, evaluated cell by cell with the gate held."""

    weight: torch.Tensor  # (out, in)
    bias: torch.Tensor  # (out,): the convolution's bias (zeros without one)
    scale: torch.Tensor  # (out,): an eval-mode norm's scale (ones without one)
    shift: torch.Tensor  # (out,)
    act: Callable[[torch.Tensor], torch.Tensor]
    factor: float = 1.0  # a constant the model multiplies by after the activation (PP-LCNet's 1 - dropout)
    norm: nn.LayerNorm | None = None  # a LayerNorm between the map and the activation (EfficientViT MIT), folded
    norm_after: nn.LayerNorm | None = None  # a LayerNorm after the activation (MetaFormer's MlpHead), folded

    def apply(self, fmap: torch.Tensor) -> torch.Tensor:
        """F (B, in, H, W) -> F' (B, out, H, W) whose spatial mean is exactly the head's activation."""
        like = fmap.to(torch.float64 if fmap.dtype == torch.float64 else torch.float32)
        weight, bias, scale, shift = (t.to(like) for t in (self.weight, self.bias, self.scale, self.shift))
        cells = torch.einsum("oc,bchw->bohw", weight, like) + bias[None, :, None, None]
        cells = cells * scale[None, :, None, None] + shift[None, :, None, None]
        if self.norm is not None:  # its scale held at the pooled value: the mean of the cells is LN(z)
            cells = fold_post_pool_layernorm(cells, self.norm)
        gate = activation_gate(self.act, cells.mean(dim=(2, 3)))
        gated = cells * (gate * self.factor)[:, :, None, None]
        return fold_post_pool_layernorm(gated, self.norm_after) if self.norm_after is not None else gated


def pointwise(conv: nn.Module, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x1 convolution without groups as its (out, in) matrix and bias, or a refusal."""
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1):
        raise UnsupportedModelError(f"{where} has a {type(conv).__name__} after the pool, not a 1x1 convolution")
    return conv.weight.detach().flatten(1), bias_of(conv)


def eval_norm(norm: nn.Module | None, width: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of nothing or an eval-mode BatchNorm with running statistics."""
    if norm is None or isinstance(norm, nn.Identity):
        return torch.ones(width), torch.zeros(width)
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or norm.training or norm.running_var is None \
            or norm.running_mean is None:
        raise UnsupportedModelError(f"{where} normalises its head with a {type(norm).__name__} that is not an "
                                    "eval-mode BatchNorm with running statistics")
    return batchnorm_affine(norm)


@register_adapter
class PPLCNetAdapter(ModelAdapter):
    model_types = ("pp_lcnet",)
    family = "PP-LCNet (a 1x1 convolution and hard-swish after the pool, gates held)"
    doc = (
        "the encoder's map through `last_convolution` cell by cell, times the held hard-swish gate of the "
        "pooled input and the model's `1 - hidden_dropout_prob` factor: F = the head's `class_expand` hidden "
        "units, whose mean is exactly the activation the classifier reads; head: `model.head`. The gate is "
        "the image's own, so the map from a region to the logit is per image"
    )

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        where = "this PP-LCNet"
        weight, bias = pointwise(submodule(model, "last_convolution", nn.Module), where)
        scale, shift = eval_norm(None, weight.shape[0], where)
        dropout = attribute(model, "hidden_dropout_prob", (int, float))
        self.gated = GatedPointwise(weight, bias, scale, shift, activation(model, "act_fn"),
                                    factor=1.0 - float(dropout))

    def trunk(self) -> nn.Module:
        return submodule(self.model, "encoder", nn.Module)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        encoder = self.trunk()
        return self.gated.apply(self.trunk_output(encoder, lambda: encoder(pixel_values)).last_hidden_state)

    def classifier(self) -> nn.Module:
        return submodule(self.model, "head", nn.Module)

    def model_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """PP-LCNet returns its logits as ``last_hidden_state`` (transformers 5.25), not ``logits``."""
        return self.model(pixel_values=pixel_values).last_hidden_state
