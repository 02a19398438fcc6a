"""ViT, ViT-MSN and DeiT: logits read from the final CLS token, split exactly over the tokens per image.

These classifiers compute ``Linear(LN_f(h_L)[cls])``: no spatial mean exists. The held
linearisation (:mod:`.held`) writes the normed CLS token, for one image, as an exact sum of
per-token parts; the patch tokens' parts on their grid are F (scaled by the number of patches, so
that ``avg_hw(F)`` is their sum), and the CLS's own part with the constants is the extra logit term
(``cls_contribution``). DeiT's teacher variant averages a CLS head and a distillation head: each
read-out token gets its own split, F stacks the two (2D channels) and A is ``[W_cls / 2 | W_dist / 2]``,
exactly the average the model takes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import UnsupportedModelError
from .base import (
    IDENTITY_TOLERANCE,
    LinearHead,
    ModelAdapter,
    ModelForward,
    PooledFeatures,
    SpatialFeatures,
    activation,
    attribute,
    bias_of,
    find_linear,
    layers,
    linear_head,
    patch_grid,
    patch_size,
    submodule,
    tokens_to_grid,
)
from .held import HeldBlock, HeldStack, TokenParts, held_linearisation
from .registry import register_adapter


def read_parts(parts: list[TokenParts], weights: list[torch.Tensor], grid: tuple[int, int]) -> SpatialFeatures:
    """F and the extra logits from each read-out token's split and the head weights acting on it.

    The last ``grid`` cells of the token axis are the patches; every token before them (CLS,
    distillation, registers) is not spatial. ``weights[i]`` (K, D) is the head's map of read-out i,
    already scaled by how the model combines its heads.
    """
    cells = grid[0] * grid[1]
    maps, extra = [], None
    for split, weight in zip(parts, weights, strict=True):  # one split per read-out head, never cut short
        prefix = split.parts.shape[1] - cells
        if prefix < 0:
            raise UnsupportedModelError(f"the model has {split.parts.shape[1]} tokens, fewer than its {cells} "
                                        "patches, so its token layout is not the patch grid EPIC expects")
        maps.append(tokens_to_grid(split.parts[:, prefix:] * cells, *grid))
        rest = split.parts[:, :prefix].sum(dim=1) + split.const
        term = rest @ weight.T.to(rest)
        extra = term if extra is None else extra + term
    return SpatialFeatures(fmap=torch.cat(maps, dim=1), extra_logits=extra)


def read_pooled(parts: list[TokenParts], weights: list[torch.Tensor], grid: tuple[int, int]) -> PooledFeatures:
    """``avg_hw(F)`` and the extra logits from splits that tracked the prefix tokens only.

    The untracked tokens are exactly the patches, so their summed share is the pooled F (F is the
    parts times the patch count, its mean their sum); the prefix parts and the constants are the extra term.
    """
    pooled, extra = [], None
    for split, weight in zip(parts, weights, strict=True):  # one split per read-out head, never cut short
        pooled.append(split.untracked)
        rest = split.parts.sum(dim=1) + split.const
        term = rest @ weight.T.to(rest)
        extra = term if extra is None else extra + term
    return PooledFeatures(torch.cat(pooled, dim=1), extra, grid)


def read_forward(logits: torch.Tensor, parts: list[TokenParts], weights: list[torch.Tensor], grid: tuple[int, int],
                 pooled: bool) -> ModelForward:
    """One held forward's logits with its split read as F (or, ``pooled``, as ``avg_hw F`` alone)."""
    if pooled:
        return ModelForward(logits, read_pooled(parts, weights, grid))
    features = read_parts(parts, weights, grid)
    return ModelForward(logits, features.pooled(), features.fmap)


def hf_vit_blocks(blocks: Iterable[nn.Module]) -> list[HeldBlock]:
    """transformers' ViT-style layers (``layernorm_before``, ``attention.{q,k,v,o}_proj``, ``mlp.fc1/fc2``)."""
    return [_hf_vit_block(layer) for layer in blocks]


def _hf_vit_block(layer: nn.Module) -> HeldBlock:
    """One layer's parts, each checked to be what the split computes with (a refusal by name otherwise)."""
    attention, mlp = submodule(layer, "attention", nn.Module), submodule(layer, "mlp", nn.Module)
    q, k, v, o = (submodule(attention, name, nn.Linear) for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
    return HeldBlock(
        module=layer, norm1=submodule(layer, "layernorm_before", nn.LayerNorm), qkv={"q": q, "k": k, "v": v},
        value=(v.weight.detach(), bias_of(v)), out=o, heads=attribute(attention, "num_attention_heads", int),
        scale=attribute(attention, "scaling", float), norm2=submodule(layer, "layernorm_after", nn.LayerNorm),
        fc1=submodule(mlp, "fc1", nn.Linear), act=activation(mlp, "activation_fn"),
        fc2=submodule(mlp, "fc2", nn.Linear),
    )


class HeldTokenAdapter(ModelAdapter):
    """A classifier whose head reads the final CLS token (and DeiT's distillation token), split per image.

    Subclasses give the :class:`HeldStack` (:meth:`build_stack`) and, where the patch grid is not
    ``(H/patch, W/patch)``, a hook that records it (:meth:`grid_hook`). The model's own forward
    runs once per batch, hooked: its token streams, keys and values are used as they are.
    """

    has_extra_logits = True
    pooled_is_cheaper = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.readouts = self._readout_heads()
        self.stack = self.build_stack()

    def build_stack(self) -> HeldStack:
        raise NotImplementedError

    def grid_hook(self, grid: list[tuple[int, int]]) -> RemovableHandle | None:
        """Register a hook that appends the patch grid of each forward to ``grid``; None: the patch-size grid."""
        return None

    def _readout_heads(self) -> list[tuple[LinearHead, float]]:
        """(head, weight in the model's combination) per read-out token: CLS, then distillation if read."""
        model_type = self.model_type
        if hasattr(self.model, "cls_classifier") and hasattr(self.model, "distillation_classifier"):
            return [(linear_head(find_linear(submodule(self.model, name, nn.Module), model_type)), 0.5)
                    for name in ("cls_classifier", "distillation_classifier")]
        return [(linear_head(find_linear(self.classifier(), model_type)), 1.0)]

    def prefix_tokens(self) -> int:
        """How many tokens come before the patches (CLS, distillation, registers): never spatial."""
        return 1

    def forward(self, pixel_values: torch.Tensor, pooled: bool = False) -> ModelForward:
        """The model's own forward, once, with the held split riding on it through hooks.

        ``pooled=True`` splits the prefix tokens one by one and sums the patches: about the cost of
        the forward alone, what the index pass needs.
        """
        grids: list[tuple[int, int]] = []
        handle = self.grid_hook(grids)
        try:
            with held_linearisation(self.stack, track=self.prefix_tokens() if pooled else None) as tokens:
                logits = self.model_logits(pixel_values)
        finally:
            if handle is not None:
                handle.remove()
        grid = grids[-1] if grids else patch_grid(pixel_values, patch_size(self.config))
        return read_forward(logits, tokens, self._weights(), grid, pooled)

    def _weights(self) -> list[torch.Tensor]:
        return [head.weight * share for head, share in self.readouts]

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        return self.forward(pixel_values).spatial()

    def pooled_features(self, pixel_values: torch.Tensor) -> PooledFeatures:
        """The prefix tokens split one by one, the patches summed: about the cost of the forward alone."""
        return self.forward(pixel_values, pooled=True).pooled

    def verify(self, pixel_values: torch.Tensor) -> float:
        """The identity on the full split, and the pooled path against it (the index pass uses the latter)."""
        error = super().verify(pixel_values)
        with torch.no_grad():
            full, pooled = self.features(pixel_values), self.pooled_features(pixel_values)
        scale = full.fmap.abs().amax().clamp_min(1e-6)
        gap = float((full.fmap.mean(dim=(2, 3)) - pooled.pooled).abs().max() / scale)
        if not gap <= IDENTITY_TOLERANCE or full.extra_logits is None or pooled.extra_logits is None \
                or not torch.allclose(full.extra_logits, pooled.extra_logits, rtol=1e-3, atol=1e-5):
            raise UnsupportedModelError(
                f"{type(self.model).__name__}: the pooled split of its CLS token differs from the full split "
                f"(relative gap {gap:.2e}), so its token layout is not the one the adapter expects")
        return error

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.features(pixel_values).fmap

    def head(self) -> LinearHead:
        weight = torch.cat([head.weight * share for head, share in self.readouts], dim=1)
        bias = torch.stack([head.bias * share for head, share in self.readouts]).sum(dim=0)
        return LinearHead(weight=weight, bias=bias)


@register_adapter
class ViTAdapter(HeldTokenAdapter):
    model_types = ("vit", "vit_msn", "deit")
    family = "ViT, ViT-MSN, DeiT (CLS token, held linearisation)"
    doc = (
        "held linearisation per image (LayerNorm scales, attention weights and MLP gates held): the normed CLS "
        "token is an exact sum of per-token parts; F = the patch tokens' parts on `(H/patch, W/patch)` "
        "(times the patch count); head: `model.classifier`; the CLS's (and DeiT's distillation token's) own "
        "parts and the biases' share are the exact extra term (`cls_contribution`). DeiT with teacher: both "
        "heads, each on its token's split, stacked (2D channels) and halved, as the model averages them"
    )

    def prefix_tokens(self) -> int:
        return 2 if self.model_type == "deit" else 1  # DeiT's embeddings add a distillation token

    def build_stack(self) -> HeldStack:
        base = self.base_model()
        return HeldStack(hf_vit_blocks(layers(base, "layers")), submodule(base, "layernorm", nn.LayerNorm),
                         readouts=tuple(range(len(self.readouts))))
