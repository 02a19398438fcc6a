"""timm's VisionTransformer with ``global_pool='token'``: its CLS token, split exactly by the held linearisation.

timm is never imported (an optional extra): the blocks are recognised by their class names and
read by their attributes. What the split holds exactly is what a timm ``Block`` computes with
timm's ``Attention`` (one fused ``qkv`` projection) and ``Mlp``: pre-norm LayerNorms, layer scale
(``init_values``), register tokens (``reg_tokens``, any ``num_prefix_tokens``), the final
``norm`` or an ``fc_norm`` on the CLS token, and DeiT's distillation token (``VisionTransformerDistilled``
averages ``head`` on the CLS and ``head_dist`` on it: each token gets its own split, F stacks the two
and A is ``[W_cls / 2 | W_dist / 2]``, as for transformers' DeiT with teacher). Anything else that would change the block's algebra
(normalised queries and keys, a norm inside the attention or the MLP, gated attention, another
block or MLP class such as Eva's rotary SwiGLU blocks) is refused by name at load time.

:class:`TokenViTReader` is the timm head reader (:mod:`.timm_readers`) that matches these models;
:class:`TimmTokenViTAdapter` serves them through the held machinery transformers' ViT uses
(:class:`~.vit.HeldTokenAdapter`: one hooked forward per batch, the pooled split checked against
the full one at load).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import UnsupportedModelError
from .base import LinearHead, activation, attribute, layers, linear_head, method, submodule
from .held import HeldBlock, HeldStack
from .timm_readers import TimmReader, Where, check_timm_config, qualified, register_head_reader
from .vit import HeldTokenAdapter

if TYPE_CHECKING:
    from transformers import PretrainedConfig

VISION_TRANSFORMER = "timm.models.vision_transformer.VisionTransformer"
#: DeiT with a distillation token: ``forward_head`` averages ``head`` on the CLS token and
#: ``head_dist`` on the distillation token (in eval, and whenever ``distilled_training`` is off).
DISTILLED = "timm.models.deit.VisionTransformerDistilled"
_BLOCK = "timm.models.vision_transformer.Block"
_ATTENTION = "timm.layers.attention.Attention"
_MLP = "timm.layers.mlp.Mlp"


def _layer_scale(module: nn.Module) -> torch.Tensor | None:
    if isinstance(module, nn.Identity):
        return None
    gamma = getattr(module, "gamma", None)
    if not isinstance(gamma, torch.Tensor):
        raise UnsupportedModelError(f"a block scales its branch with a {type(module).__name__}, not timm's LayerScale")
    return gamma.detach()


def _problems(block: nn.Module) -> list[str]:
    """What a block holds that the split does not compute with: nothing for timm's plain Block, Attention and Mlp."""
    attention, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    problems = []
    if qualified(block) != _BLOCK:
        problems.append(f"the block class {type(block).__name__}")
    if qualified(attention) != _ATTENTION:
        problems.append(f"the attention class {type(attention).__name__}")
    else:
        for name in ("q_norm", "k_norm", "norm"):
            if not isinstance(getattr(attention, name), nn.Identity):
                problems.append(f"attn.{name} ({type(getattr(attention, name)).__name__})")
        if getattr(attention, "gate", None) is not None:
            problems.append("a gated attention (attn.gate)")
    if qualified(mlp) != _MLP:
        problems.append(f"the MLP class {type(mlp).__name__}")
    elif not isinstance(getattr(mlp, "norm", None), nn.Identity):
        problems.append(f"mlp.norm ({type(getattr(mlp, 'norm', None)).__name__})")
    for name in ("norm1", "norm2"):
        if not isinstance(getattr(block, name, None), nn.LayerNorm):
            problems.append(f"{name} ({type(getattr(block, name, None)).__name__}, not a LayerNorm)")
    return problems


def _block(block: nn.Module, where: str) -> HeldBlock:
    """One timm Block as a HeldBlock, or the refusal that names what it holds that the split does not."""
    problems = _problems(block)
    if problems:
        raise UnsupportedModelError(f"{where} holds {', '.join(problems)}, which the held linearisation of a "
                                    "CLS token does not split exactly")
    attention, mlp = submodule(block, "attn", nn.Module), submodule(block, "mlp", nn.Module)
    qkv = submodule(attention, "qkv", nn.Linear)
    width = qkv.weight.shape[0] // 3
    value_bias = qkv.bias.detach()[2 * width:] if qkv.bias is not None else torch.zeros(width)
    return HeldBlock(
        module=block, norm1=submodule(block, "norm1", nn.LayerNorm), qkv={"qkv": qkv},
        value=(qkv.weight.detach()[2 * width:], value_bias), out=submodule(attention, "proj", nn.Linear),
        heads=attribute(attention, "num_heads", int), scale=attribute(attention, "scale", float),
        norm2=submodule(block, "norm2", nn.LayerNorm), fc1=submodule(mlp, "fc1", nn.Linear),
        act=activation(mlp, "act"), fc2=submodule(mlp, "fc2", nn.Linear),
        scale1=_layer_scale(submodule(block, "ls1", nn.Module)),
        scale2=_layer_scale(submodule(block, "ls2", nn.Module)),
    )


@register_head_reader
class TokenViTReader(TimmReader):
    """A plain timm VisionTransformer (or distilled DeiT) that classifies from its CLS token: the held split's reader.

    Its models are served by :class:`TimmTokenViTAdapter` (not a :class:`~.timm_heads.TimmHead`): it reads
    the blocks as :class:`HeldBlock` s, the final norm and the read-out heads.
    """

    name = "held split of a CLS token"
    serves = ("a VisionTransformer or distilled DeiT with global_pool='token' (timm's plain Block, Attention and "
              "Mlp), its CLS token split over the tokens by the held linearisation")
    how = ("the CLS token (and a distilled DeiT's distillation token) split over the tokens per image by the held "
           "linearisation; F = the patch tokens' parts on the patch grid; the prefix tokens' own parts are the exact "
           "CLS term")
    checked = ("vit_small_patch16_224", "vit_base_patch16_224", "vit_base_patch16_clip_224",
               "deit_small_patch16_224", "deit_small_distilled_patch16_224")
    tested = {
        "vit_tiny_patch16_224 with global_pool='token' (VisionTransformer; also with reg_tokens, init_values, fc_norm)": (
            "the CLS token split over the tokens per image by the held linearisation (LayerNorm scales, attention "
            "weights, MLP gates held); F = the patch tokens' parts on the patch grid; the CLS's and register "
            "tokens' own parts are the exact CLS term"),
        "deit_tiny_distilled_patch16_224 (VisionTransformerDistilled)": (
            "the CLS and distillation tokens each split by the held linearisation; F stacks the two splits "
            "(2D channels) and A = [W_head / 2 | W_head_dist / 2], the average forward_head takes"),
    }
    refused = {"ViT with global_pool='token' and qk_norm, scale_norm, gated attention or another block class": (
        "the held split reads timm's plain Block, Attention and Mlp only; the rest is refused by name")}

    def matches(self, timm_model: nn.Module) -> bool:
        return (qualified(timm_model) in (VISION_TRANSFORMER, DISTILLED) and getattr(timm_model, "global_pool", None)
                == "token" and getattr(timm_model, "attn_pool", None) is None)

    def heads(self, timm_model: nn.Module, where: Where) -> list[tuple[LinearHead, float]]:
        """(head, its share in the model's combination) per read-out token: the CLS, then the distillation token."""
        names = ("head", "head_dist") if qualified(timm_model) == DISTILLED else ("head",)
        for name in names:
            if not isinstance(getattr(timm_model, name, None), nn.Linear):
                raise UnsupportedModelError(f"{where} classifies with a {type(getattr(timm_model, name, None)).__name__} "
                                            f"as {name}, not one Linear layer (was it loaded without a classification head?)")
        return [(linear_head(submodule(timm_model, name, nn.Linear)), 1 / len(names)) for name in names]

    def stack(self, timm_model: nn.Module, where: Where, readouts: int) -> HeldStack:
        """Every block as a :class:`HeldBlock` (or its refusal by name), and the final LayerNorm on the CLS token."""
        blocks = [_block(block, f"{where} block {index}") for index, block in enumerate(layers(timm_model, "blocks"))]
        fc_norm, norm = getattr(timm_model, "fc_norm", None), getattr(timm_model, "norm", None)
        final = fc_norm if isinstance(fc_norm, nn.LayerNorm) else norm
        if not isinstance(final, nn.LayerNorm):
            raise UnsupportedModelError(f"{where} has no final LayerNorm (norm and fc_norm are "
                                        f"{type(norm).__name__} and {type(fc_norm).__name__})")
        return HeldStack(blocks, final, readouts=tuple(range(readouts)))


class TimmTokenViTAdapter(HeldTokenAdapter):
    """A token-pooled timm VisionTransformer (or distilled DeiT) through TimmWrapper, split as transformers' ViT is.

    The same held machinery as :class:`~.vit.ViTAdapter` (one hooked forward per batch, the pooled split
    checked against the full one at load); :class:`TokenViTReader` reads the blocks and heads. Not
    registered under a model type: ``TimmWrapperAdapter.for_model`` picks it for the models that reader matches.
    """

    family = "timm VisionTransformer or distilled DeiT with global_pool='token' (CLS token, held linearisation)"
    doc = TokenViTReader.how
    reader = TokenViTReader()

    @classmethod
    def check_config(cls, config: PretrainedConfig) -> None:  # a TimmWrapperConfig, whose fields are timm's own
        check_timm_config(config)

    def where(self) -> Where:
        return Where(str(getattr(self.config, "architecture", "?")), type(self.base_model()).__name__, self.reader.name)

    def _readout_heads(self) -> list[tuple[LinearHead, float]]:
        return self.reader.heads(self.base_model(), self.where())

    def build_stack(self) -> HeldStack:
        return self.reader.stack(self.base_model(), self.where(), len(self.readouts))

    def classifier(self) -> nn.Module:
        return submodule(self.base_model(), "head", nn.Module)

    def prefix_tokens(self) -> int:
        """The class token, a distilled DeiT's distillation token and the register tokens."""
        return attribute(self.base_model(), "num_prefix_tokens", int)

    def grid_hook(self, grid: list[tuple[int, int]]) -> RemovableHandle:
        """The patch grid of each forward, as timm's patch embedding computes it for the input it gets."""
        embed = submodule(self.base_model(), "patch_embed", nn.Module)
        feat_size = method(embed, "dynamic_feat_size")

        def record(_module: nn.Module, args: tuple, _output: object) -> None:
            height, width = feat_size(tuple(args[0].shape[-2:]))
            grid.append((int(height), int(width)))

        return embed.register_forward_hook(record)
