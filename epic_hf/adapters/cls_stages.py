"""CvT and PVT: hierarchical transformers that add a CLS token in their last stage and classify from it.

Both run the same held linearisation as ViT (:mod:`.held`) over the blocks of their last stage,
the only ones that carry a CLS token; the stages before it are the patch tokens' own streams. PVT
attends to every token of the last stage, so F is on that stage's grid. CvT computes keys and
values by a strided depthwise convolution of the token map, so the CLS attends to a coarser grid
of key/value positions: each position's attention message is one part, and F is on that key/value
grid (half the stage's resolution for ``stride_kv=2``), still an exact split of the logit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import UnsupportedModelError
from .base import activation, attribute, layers, submodule
from .held import HeldBlock, HeldStack
from .registry import register_adapter
from .vit import HeldTokenAdapter


def _last(model: nn.Module, path: str) -> nn.Module:
    """The last module of the ModuleList (or Sequential) at ``path``: the stage that carries the CLS token."""
    modules = layers(model, path)
    if not modules:
        raise UnsupportedModelError(f"{type(model).__name__} has no stages at {path!r}")
    return modules[-1]


def _bias(linear: nn.Linear) -> torch.Tensor:
    return linear.bias.detach() if linear.bias is not None else torch.zeros(linear.weight.shape[0])


def _linear(layer: nn.Module, path: str) -> nn.Linear:
    """A projection the split reads weights from, so it must be a Linear."""
    return submodule(layer, path, nn.Linear)


def _cvt_blocks(blocks: Iterable[nn.Module]) -> list[HeldBlock]:
    return [_cvt_block(layer) for layer in blocks]


def _cvt_block(layer: nn.Module) -> HeldBlock:
    """One CvT layer: its hooked query/key/value Linears follow the convolutional projections, as attention uses."""
    attention = submodule(layer, "attention.attention", nn.Module)
    q, k, v = (_linear(attention, f"projection_{name}") for name in ("query", "key", "value"))
    return HeldBlock(
        module=layer, norm1=submodule(layer, "layernorm_before", nn.LayerNorm), qkv={"q": q, "k": k, "v": v},
        value=(v.weight.detach(), _bias(v)), out=_linear(layer, "attention.output.dense"),
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
        value=(v.weight.detach(), _bias(v)), out=_linear(layer, "attention.output.dense"),
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
        "position's attention messages on the key/value grid (the stage's grid after the strided depthwise "
        "convolution, so half its resolution for `stride_kv=2`); head: `model.layernorm` then "
        "`model.classifier`; the CLS's own part and the biases' share are the exact extra term"
    )

    @classmethod
    def check_config(cls, config: Any) -> None:
        if not config.cls_token[-1]:
            raise UnsupportedModelError(
                "this CvT has no CLS token in its last stage (cls_token[-1]=False); transformers' "
                "CvtForImageClassification then reads outputs[1], the absent CLS token, and fails, so "
                "there is no classifier to explain")

    def build_stack(self) -> HeldStack:
        stage = _last(self.model, "cvt.encoder.stages")
        return HeldStack(_cvt_blocks(layers(stage, "layers")), submodule(self.model, "layernorm", nn.LayerNorm))

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
