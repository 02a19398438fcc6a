"""DINOv2 (with or without registers): ``Linear(concat(cls, mean(patch tokens)))``.

The classifier's weight splits into ``[A_cls | A_patch]``, so the logits are exactly
``A_patch . avg_hw(F) + A_cls . cls + b`` with F the patch tokens on their grid. The CLS share
``A_cls . cls`` is not spatial: it travels as ``SpatialFeatures.extra_logits`` (the explainer's
``cls_contribution``), and :meth:`head` is the patch half with the full bias.

``split_cls=True`` (:class:`Dinov2HeldAdapter`) splits that CLS half too, by the held
linearisation that explains ViT: the normed CLS token is, for one image, an exact sum of per-token
parts, and the patches' parts become D more channels beside the patch tokens (F has 2D channels,
A is ``[A_patch | A_cls]``). Only the CLS's own part, the registers' and the constants stay in
``cls_contribution``. It is opt-in because it doubles D: the bank, U (4 D^2) and the fit grow with it,
and the extra channels are not the backbone's own features but their share in the CLS token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import (
    LinearHead,
    ModelAdapter,
    ModelForward,
    PooledFeatures,
    SpatialFeatures,
    activation,
    attribute,
    bias_of,
    find_linear,
    linear_head,
    patch_grid,
    patch_size,
    submodule,
    tokens_to_grid,
)
from .held import HeldBlock, HeldStack, held_linearisation
from .registry import register_adapter
from .vit import HeldTokenAdapter, read_forward


def _linear(owner: nn.Module, name: str) -> nn.Linear:
    return submodule(owner, name, nn.Linear)


def dinov2_blocks(layers: nn.Module) -> list[HeldBlock]:
    """transformers' DINOv2 layers (``norm1``, ``attention.{q,k,v,o}_proj``, layer scales, ``mlp.fc1/fc2``)."""
    blocks = []
    for layer in layers.children():
        attention, mlp = submodule(layer, "attention", nn.Module), submodule(layer, "mlp", nn.Module)
        if not hasattr(mlp, "fc1"):
            raise UnsupportedModelError(
                f"split_cls reads DINOv2's plain MLP (fc1, activation, fc2), and this layer has a "
                f"{type(mlp).__name__} (SwiGLU): load it without split_cls (its CLS half is then the exact CLS term)")
        value = _linear(attention, "v_proj")
        blocks.append(HeldBlock(
            module=layer, norm1=submodule(layer, "norm1", nn.LayerNorm),
            qkv={"q": _linear(attention, "q_proj"), "k": _linear(attention, "k_proj"), "v": value},
            value=(value.weight.detach(), bias_of(value)), out=_linear(attention, "o_proj"),
            heads=attribute(attention, "num_attention_heads", int), scale=float(attribute(attention, "scaling", float)),
            norm2=submodule(layer, "norm2", nn.LayerNorm), fc1=_linear(mlp, "fc1"),
            act=activation(mlp, "activation_fn"), fc2=_linear(mlp, "fc2"),
            scale1=attribute(submodule(layer, "layer_scale1", nn.Module), "lambda1", torch.Tensor),
            scale2=attribute(submodule(layer, "layer_scale2", nn.Module), "lambda1", torch.Tensor),
        ))
    return blocks


@register_adapter
class Dinov2Adapter(ModelAdapter):
    model_types = ("dinov2", "dinov2_with_registers")
    family = "DINOv2, DINOv2 with registers"
    doc = (
        "patch tokens (CLS and register tokens dropped; per-token LayerNorm applied) row-major on "
        "`(H/patch, W/patch)`; head: the patch half of `model.classifier` and its bias; the CLS half times "
        "the CLS token is the exact extra term (`cls_contribution`)"
    )
    has_extra_logits = True

    @classmethod
    def cls_split_variant(cls) -> type[ModelAdapter]:
        return Dinov2HeldAdapter

    @property
    def prefix(self) -> int:
        """The CLS token and the registers: the tokens before the patches."""
        return 1 + int(getattr(self.config, "num_register_tokens", 0) or 0)

    def _full_head(self) -> LinearHead:
        return linear_head(find_linear(self.classifier(), self.model_type))

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        base = self.base_model()
        tokens = self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state
        fmap = tokens_to_grid(tokens[:, self.prefix:, :], *patch_grid(pixel_values, patch_size(self.config)))
        cls_weight = self._full_head().weight[:, : tokens.shape[-1]]
        return SpatialFeatures(fmap=fmap, extra_logits=tokens[:, 0, :] @ cls_weight.T.to(tokens))

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.features(pixel_values).fmap

    def head(self) -> LinearHead:
        full = self._full_head()
        dim = full.weight.shape[1] // 2
        return LinearHead(weight=full.weight[:, dim:], bias=full.bias)


class Dinov2HeldAdapter(HeldTokenAdapter):
    """DINOv2 with the CLS half of its head split over the tokens too (``split_cls=True``): 2D channels.

    F stacks the patch tokens (channels 0..D-1, read by ``A_patch``) and the patches' parts of the
    normed CLS token (channels D..2D-1, read by ``A_cls``); the extra term is ``A_cls`` on the CLS's own
    part, the registers' and the constants. Not registered: :func:`~epic_hf.adapters.adapter_for` picks
    it through :meth:`Dinov2Adapter.cls_split_variant`.
    """

    model_types = Dinov2Adapter.model_types
    family = "DINOv2 with its CLS half split (split_cls=True)"
    doc = Dinov2Adapter.doc

    @property
    def prefix(self) -> int:
        return 1 + int(getattr(self.config, "num_register_tokens", 0) or 0)

    def prefix_tokens(self) -> int:
        return self.prefix

    def _halves(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        full = linear_head(find_linear(self.classifier(), self.model_type))
        dim = full.weight.shape[1] // 2
        return full.weight[:, :dim], full.weight[:, dim:], full.bias

    def _readout_heads(self) -> list[tuple[LinearHead, float]]:
        cls_weight, _, bias = self._halves()
        return [(LinearHead(weight=cls_weight, bias=bias), 1.0)]

    def build_stack(self) -> HeldStack:
        base = self.base_model()
        layers = submodule(submodule(base, "encoder", nn.Module), "layer", nn.Module)
        return HeldStack(dinov2_blocks(layers), submodule(base, "layernorm", nn.LayerNorm), readouts=(0,))

    def forward(self, pixel_values: torch.Tensor, pooled: bool = False) -> ModelForward:
        """The model's own forward, once: the held split of the CLS half, and the patch tokens from the same run."""
        base = self.base_model()
        recorded: list[Any] = []  # Any: whatever the backbone returns (a ModelOutput)
        handle = base.register_forward_hook(lambda _m, _a, out: recorded.append(out))
        try:
            with held_linearisation(self.stack, track=self.prefix if pooled else None) as split:
                logits = self.model_logits(pixel_values)
        finally:
            handle.remove()
        if len(recorded) != 1:
            raise UnsupportedModelError(f"the DINOv2 backbone ran {len(recorded)} times in one forward, not once")
        tokens = recorded[0].last_hidden_state
        grid = patch_grid(pixel_values, patch_size(self.config))
        cls_half = read_forward(logits, split, self._weights(), grid, pooled)
        if pooled:
            patches = tokens[:, self.prefix:, :].mean(dim=1).to(cls_half.pooled.pooled)
            return ModelForward(logits, PooledFeatures(torch.cat([patches, cls_half.pooled.pooled], dim=1),
                                                       cls_half.pooled.extra_logits, grid))
        assert cls_half.fmap is not None
        fmap = torch.cat([tokens_to_grid(tokens[:, self.prefix:, :], *grid).to(cls_half.fmap), cls_half.fmap], dim=1)
        return ModelForward(logits, SpatialFeatures(fmap, cls_half.pooled.extra_logits).pooled(), fmap)

    def head(self) -> LinearHead:
        cls_weight, patch_weight, bias = self._halves()
        return LinearHead(weight=torch.cat([patch_weight, cls_weight], dim=1), bias=bias)

