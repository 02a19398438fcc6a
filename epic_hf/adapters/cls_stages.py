"""CvT and PVT: hierarchical transformers that add a CLS token in their last stage and classify from it.

Both run the same held linearisation as ViT (:mod:`.held`) over the blocks of their last stage,
the only ones that carry a CLS token; the stages before it are the patch tokens' own streams. PVT
attends to every token of the last stage, so F is on that stage's grid. CvT computes keys and
values by a strided depthwise convolution of the token map, so the CLS attends to a coarser grid
of key/value positions: each position's attention message is one part, and F is on that key/value
grid (half the stage's resolution for ``stride_kv=2``), still an exact split of the logit.

A part is what the tokens' centred, normalised streams carry (:mod:`.held`); every bias and beta is
the constant. For CvT a key/value position's value is ``W_V BN(conv(LN1 map))_m + b_V``; the
convolution (depthwise, no bias, zero padding) and the BatchNorm (running statistics) are affine,
so it is ``W_V alpha * conv(N)_m`` (N: the map of ``gamma_1 s_j centre(h_j)``, alpha: the BatchNorm's
scale), position m's part, plus ``W_V BN(conv(B))_m + b_V`` with B the map of ``beta_1``: the
constant, which differs at the border where the padding sees fewer taps of ``beta_1``
(:class:`ConvValueOffset`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as functional
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import UnsupportedModelError
from .base import ModelForward, activation, attribute, bias_of, layers, submodule
from .held import HeldBlock, HeldStack
from .registry import register_adapter
from .vit import HeldTokenAdapter

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def _last(model: nn.Module, path: str) -> nn.Module:
    """The last module of the ModuleList (or Sequential) at ``path``: the stage that carries the CLS token."""
    modules = layers(model, path)
    if not modules:
        raise UnsupportedModelError(f"{type(model).__name__} has no stages at {path!r}")
    return modules[-1]


def _linear(layer: nn.Module, path: str) -> nn.Linear:
    """A projection the split reads weights from, so it must be a Linear."""
    return submodule(layer, path, nn.Linear)


@dataclass
class StageGrid:
    """The (height, width) of the token map the last stage's layers see, recorded by each forward."""

    size: tuple[int, int] | None = None


class ConvValueOffset:
    """What LN1's beta becomes at each CvT key/value position: ``BN(conv(B))`` with B the map of ``beta_1``.

    CvT's values are the LN1 map through a depthwise convolution and a BatchNorm, then ``projection_value``;
    the CLS token skips the convolution (its value input is its own LN1 output, so ``beta_1``). Both maps
    are affine, so the convolution of the centred, normalised streams is the positions' parts and this
    is the rest, the model's constant (:attr:`HeldBlock.value_offset`). It is computed in the split's
    dtype from the layer's own weights and running statistics, on the map size this forward recorded.
    """

    def __init__(self, convolution: nn.Conv2d, norm: nn.BatchNorm2d, grid: StageGrid) -> None:
        self.convolution, self.norm, self.grid = convolution, norm, grid

    def __call__(self, beta: torch.Tensor) -> torch.Tensor:
        if self.grid.size is None:
            raise RuntimeError("CvT's key/value offset needs the token map's size, which no forward recorded")
        conv, norm = self.convolution, self.norm
        if norm.running_mean is None or norm.running_var is None:
            raise RuntimeError("CvT's key/value BatchNorm keeps no running statistics")
        beta_map = beta.view(1, -1, 1, 1).expand(1, beta.shape[0], *self.grid.size)
        mapped = functional.conv2d(beta_map, conv.weight.detach().to(beta),
                                   None if conv.bias is None else conv.bias.detach().to(beta),
                                   conv.stride, conv.padding, conv.dilation, conv.groups)
        mapped = functional.batch_norm(
            mapped, norm.running_mean.to(beta), norm.running_var.to(beta),
            None if norm.weight is None else norm.weight.detach().to(beta),
            None if norm.bias is None else norm.bias.detach().to(beta), training=False, eps=norm.eps)
        return torch.cat([beta.unsqueeze(0), mapped.flatten(2)[0].T])  # (1 + h' w', D): the CLS first


def _cvt_blocks(blocks: Iterable[nn.Module], grid: StageGrid) -> list[HeldBlock]:
    return [_cvt_block(layer, grid) for layer in blocks]


def _cvt_block(layer: nn.Module, grid: StageGrid) -> HeldBlock:
    """One CvT layer: its hooked query/key/value Linears follow the convolutional projections, as attention uses.

    Refused where its value projection is not the depthwise convolution and BatchNorm (``dw_bn``) with
    zero padding and running statistics whose constant :class:`ConvValueOffset` computes.
    """
    attention = submodule(layer, "attention.attention", nn.Module)
    q, k, v = (_linear(attention, f"projection_{name}") for name in ("query", "key", "value"))
    projection = "convolution_projection_value.convolution_projection"
    convolution = submodule(attention, f"{projection}.convolution", nn.Conv2d)
    norm = submodule(attention, f"{projection}.normalization", nn.BatchNorm2d)
    if convolution.padding_mode != "zeros" or not norm.track_running_stats:
        raise UnsupportedModelError(
            f"this CvT's value projection pads with {convolution.padding_mode!r} or normalises with batch "
            "statistics (track_running_stats=False), which the held split of its CLS token does not read")
    return HeldBlock(
        module=layer, norm1=submodule(layer, "layernorm_before", nn.LayerNorm), qkv={"q": q, "k": k, "v": v},
        value=(v.weight.detach(), bias_of(v)), out=_linear(layer, "attention.output.dense"),
        value_offset=ConvValueOffset(convolution, norm, grid),
        heads=attribute(attention, "num_heads", int), scale=attribute(attention, "scale", float),
        norm2=submodule(layer, "layernorm_after", nn.LayerNorm), fc1=_linear(layer, "intermediate.dense"),
        act=activation(submodule(layer, "intermediate", nn.Module), "activation"), fc2=_linear(layer, "output.dense"),
    )


def _pvt_blocks(blocks: Iterable[nn.Module]) -> list[HeldBlock]:
    return [_pvt_block(layer) for layer in blocks]


def _pvt_block(layer: nn.Module) -> HeldBlock:
    """One PVT layer of the last stage, refused where it reduces its keys and values (the CLS would see fewer)."""
    attention, mlp = submodule(layer, "attention.self", nn.Module), submodule(layer, "mlp", nn.Module)
    if attribute(attention, "sequences_reduction_ratio", (int, float)) > 1:
        raise UnsupportedModelError(
            "this PVT's last stage reduces its keys and values (sequence_reduction_ratios[-1] > 1) while it "
            "carries a CLS token, a layout EPIC does not split; PVT v1 checkpoints use 1 there")
    q, k, v = (_linear(attention, name) for name in ("query", "key", "value"))
    return HeldBlock(
        module=layer, norm1=submodule(layer, "layer_norm_1", nn.LayerNorm), qkv={"q": q, "k": k, "v": v},
        value=(v.weight.detach(), bias_of(v)), out=_linear(layer, "attention.output.dense"),
        heads=attribute(attention, "num_attention_heads", int),
        scale=float(attribute(attention, "attention_head_size", int)) ** -0.5,
        norm2=submodule(layer, "layer_norm_2", nn.LayerNorm), fc1=_linear(mlp, "dense1"),
        act=activation(mlp, "intermediate_act_fn"), fc2=_linear(mlp, "dense2"),
    )


@register_adapter
class CvtAdapter(HeldTokenAdapter):
    model_types = ("cvt",)
    family = "CvT (CLS token of the last stage, held linearisation)"
    doc = (
        "held linearisation of the last stage's blocks (the only ones with a CLS token); F = each key/value "
        "position's part (what the centred, normalised token streams in its convolution window carry) on the "
        "key/value grid (the stage's grid after the strided depthwise convolution, so half its resolution for "
        "`stride_kv=2`); head: `model.layernorm` then `model.classifier`; the CLS's own part and the share of "
        "the biases and LayerNorm betas (through the convolution, per position) are the exact extra term"
    )

    @classmethod
    def check_config(cls, config: PretrainedConfig) -> None:
        if not config.cls_token[-1]:
            raise UnsupportedModelError(
                "this CvT has no CLS token in its last stage (cls_token[-1]=False); transformers' "
                "CvtForImageClassification then reads outputs[1], the absent CLS token, and fails, so "
                "there is no classifier to explain")

    def build_stack(self) -> HeldStack:
        self.stage_grid = StageGrid()
        stage = _last(self.model, "cvt.encoder.stages")
        return HeldStack(_cvt_blocks(layers(stage, "layers"), self.stage_grid),
                         submodule(self.model, "layernorm", nn.LayerNorm))

    def forward(self, pixel_values: torch.Tensor, pooled: bool = False) -> ModelForward:
        """The split, with the last stage's token map size recorded for its key/value offsets (the adapter's
        state for one forward: FrozenClassifier runs one forward at a time per model)."""
        embedding = submodule(_last(self.model, "cvt.encoder.stages"), "embedding", nn.Module)

        def record(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:  # (B, C, h, w)
            self.stage_grid.size = (int(output.shape[-2]), int(output.shape[-1]))
        handle = embedding.register_forward_hook(record)
        try:
            return super().forward(pixel_values, pooled)
        finally:
            handle.remove()
            self.stage_grid.size = None

    def grid_hook(self, grid: list[tuple[int, int]]) -> RemovableHandle | None:
        last = _last(_last(self.model, "cvt.encoder.stages"), "layers")
        # sees the (B, C, h, w) key/value map
        flatten = submodule(last, "attention.attention.convolution_projection_key.linear_projection", nn.Module)

        def record(_module: nn.Module, args: tuple) -> None:
            grid.append((int(args[0].shape[-2]), int(args[0].shape[-1])))
        return flatten.register_forward_pre_hook(record)


@register_adapter
class PvtAdapter(HeldTokenAdapter):
    model_types = ("pvt",)
    family = "PVT v1 (CLS token of the last stage, held linearisation)"
    doc = (
        "held linearisation of the last stage's blocks (the only ones with a CLS token); F = the patch tokens' "
        "parts on the last stage's grid; head: `model.classifier` after the encoder's LayerNorm; the CLS's own "
        "part and the biases' share are the exact extra term"
    )

    def build_stack(self) -> HeldStack:
        encoder = submodule(self.model, "pvt.encoder", nn.Module)
        stage = layers(_last(encoder, "block"), "")  # the last stage is itself the list of its layers
        return HeldStack(_pvt_blocks(stage), submodule(encoder, "layer_norm", nn.LayerNorm))

    def grid_hook(self, grid: list[tuple[int, int]]) -> RemovableHandle | None:
        embedding = _last(self.model, "pvt.encoder.patch_embeddings")  # returns (tokens, height, width)

        def record(_module: nn.Module, _args: tuple, output: tuple) -> None:
            grid.append((int(output[1]), int(output[2])))
        return embedding.register_forward_hook(record)
