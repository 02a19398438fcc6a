"""CvT and PVT: hierarchical transformers that add a CLS token in their last stage and classify from it.

Both run the same held linearisation as ViT (:mod:`.held`) over the blocks of their last stage,
the only ones that carry a CLS token; the stages before it are the patch tokens' own streams. PVT
attends to every token of the last stage, so F is on that stage's grid. CvT computes keys and
values by a strided depthwise convolution of the token map, so the CLS attends to a coarser grid
of key/value positions: each position's attention message is one part, and F is on that key/value
grid (half the stage's resolution for ``stride_kv=2``), still an exact split of the logit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import UnsupportedModelError
from .held import HeldBlock, HeldStack
from .registry import register_adapter
from .vit import HeldTokenAdapter


def _last(model: nn.Module, path: str) -> nn.Module:
    """The last module of the ModuleList (or Sequential) at ``path``: the stage that carries the CLS token."""
    modules = model.get_submodule(path)
    if not isinstance(modules, (nn.ModuleList, nn.Sequential)) or len(modules) == 0:
        raise UnsupportedModelError(f"{type(model).__name__} has no stages at {path!r}")
    return modules[len(modules) - 1]


def _bias(linear: nn.Linear) -> torch.Tensor:
    return linear.bias.detach() if linear.bias is not None else torch.zeros(linear.weight.shape[0])


def _cvt_blocks(layers: Any) -> list[HeldBlock]:
    blocks = []
    for layer in layers:
        attention = layer.attention.attention
        blocks.append(HeldBlock(
            module=layer, norm1=layer.layernorm_before,
            qkv={"q": attention.projection_query, "k": attention.projection_key, "v": attention.projection_value},
            value=(attention.projection_value.weight.detach(), _bias(attention.projection_value)),
            out=layer.attention.output.dense, heads=int(attention.num_heads), scale=float(attention.scale),
            norm2=layer.layernorm_after, fc1=layer.intermediate.dense, act=layer.intermediate.activation,
            fc2=layer.output.dense,
        ))
    return blocks


def _pvt_blocks(layers: Any) -> list[HeldBlock]:
    blocks = []
    for layer in layers:
        attention = layer.attention.self
        if attention.sequences_reduction_ratio > 1:
            raise UnsupportedModelError(
                "this PVT's last stage reduces its keys and values (sequence_reduction_ratios[-1] > 1) while it "
                "carries a CLS token, a layout EPIC does not split; PVT v1 checkpoints use 1 there")
        blocks.append(HeldBlock(
            module=layer, norm1=layer.layer_norm_1,
            qkv={"q": attention.query, "k": attention.key, "v": attention.value},
            value=(attention.value.weight.detach(), _bias(attention.value)), out=layer.attention.output.dense,
            heads=int(attention.num_attention_heads), scale=float(attention.attention_head_size) ** -0.5,
            norm2=layer.layer_norm_2, fc1=layer.mlp.dense1, act=layer.mlp.intermediate_act_fn, fc2=layer.mlp.dense2,
        ))
    return blocks


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
        return HeldStack(_cvt_blocks(_last(self.model, "cvt.encoder.stages").layers), self.model.layernorm)

    def grid_hook(self, grid: list[tuple[int, int]]) -> RemovableHandle | None:
        last = _last(_last(self.model, "cvt.encoder.stages"), "layers").attention.attention
        flatten = last.convolution_projection_key.linear_projection  # sees the (B, C, h, w) key/value map

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
        encoder = self.model.pvt.encoder
        return HeldStack(_pvt_blocks(_last(encoder, "block")), encoder.layer_norm)

    def grid_hook(self, grid: list[tuple[int, int]]) -> RemovableHandle | None:
        embedding = _last(self.model, "pvt.encoder.patch_embeddings")  # returns (tokens, height, width)

        def record(_module: nn.Module, _args: tuple, output: tuple) -> None:
            grid.append((int(output[1]), int(output[2])))
        return embedding.register_forward_hook(record)
