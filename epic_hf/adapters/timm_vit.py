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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import (
    LinearHead,
    ModelForward,
    activation,
    attribute,
    layers,
    linear_head,
    method,
    submodule,
)
from .held import HeldBlock, HeldStack, held_linearisation
from .vit import read_forward

VISION_TRANSFORMER = "timm.models.vision_transformer.VisionTransformer"
#: DeiT with a distillation token: ``forward_head`` averages ``head`` on the CLS token and
#: ``head_dist`` on the distillation token (in eval, and whenever ``distilled_training`` is off).
DISTILLED = "timm.models.deit.VisionTransformerDistilled"
_BLOCK = "timm.models.vision_transformer.Block"
_ATTENTION = "timm.layers.attention.Attention"
_MLP = "timm.layers.mlp.Mlp"


def _qualified(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def is_token_vision_transformer(timm_model: nn.Module) -> bool:
    """A plain timm VisionTransformer (or distilled DeiT) that classifies from its CLS token (no attention pool)."""
    return (_qualified(timm_model) in (VISION_TRANSFORMER, DISTILLED) and getattr(timm_model, "global_pool", None) == "token"
            and getattr(timm_model, "attn_pool", None) is None)


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
    if _qualified(block) != _BLOCK:
        problems.append(f"the block class {type(block).__name__}")
    if _qualified(attention) != _ATTENTION:
        problems.append(f"the attention class {type(attention).__name__}")
    else:
        for name in ("q_norm", "k_norm", "norm"):
            if not isinstance(getattr(attention, name), nn.Identity):
                problems.append(f"attn.{name} ({type(getattr(attention, name)).__name__})")
        if getattr(attention, "gate", None) is not None:
            problems.append("a gated attention (attn.gate)")
    if _qualified(mlp) != _MLP:
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


class TimmTokenViT:
    """The held split of a token-pooled timm VisionTransformer: its stack, its head, its patch grid."""

    def __init__(self, timm_model: nn.Module, architecture: str) -> None:
        where = f"timm architecture {architecture!r} (VisionTransformer, global_pool='token')"
        self.timm_model = timm_model
        blocks = [_block(block, f"{where}: block {index}") for index, block in enumerate(layers(timm_model, "blocks"))]
        final = timm_model.fc_norm if isinstance(timm_model.fc_norm, nn.LayerNorm) else timm_model.norm
        if not isinstance(final, nn.LayerNorm):
            raise UnsupportedModelError(f"{where} has no final LayerNorm (norm and fc_norm are "
                                        f"{type(timm_model.norm).__name__} and {type(timm_model.fc_norm).__name__})")
        names = ("head", "head_dist") if _qualified(timm_model) == DISTILLED else ("head",)
        for name in names:
            if not isinstance(getattr(timm_model, name, None), nn.Linear):
                raise UnsupportedModelError(f"{where} classifies with a {type(getattr(timm_model, name, None)).__name__} "
                                            f"as {name}, not one Linear layer (was it loaded without a classification head?)")
        # (head, its share in the model's combination) per read-out token: the CLS, then the distillation token
        self.readouts = [(linear_head(submodule(timm_model, name, nn.Linear)), 1 / len(names)) for name in names]
        self.stack = HeldStack(blocks, final, readouts=tuple(range(len(names))))
        self.linear = submodule(timm_model, "head", nn.Linear)

    def head(self) -> LinearHead:
        """A = [W_cls / 2 | W_dist / 2] for a distilled DeiT (F stacks the two tokens' splits), else the head."""
        weight = torch.cat([head.weight * share for head, share in self.readouts], dim=1)
        bias = torch.stack([head.bias * share for head, share in self.readouts]).sum(dim=0)
        return LinearHead(weight=weight, bias=bias)

    def _weights(self) -> list[torch.Tensor]:
        return [head.weight * share for head, share in self.readouts]

    def forward(self, run_model: Callable[[], torch.Tensor], pixel_values: torch.Tensor,
                pooled: bool = False) -> ModelForward:
        """``run_model()`` (the wrapper's own forward on ``pixel_values``) once, with the held split riding on it.

        ``pooled=True`` splits the class and register tokens one by one and sums the patches (the index pass's need).
        """
        track = attribute(self.timm_model, "num_prefix_tokens", int) if pooled else None
        with held_linearisation(self.stack, track=track) as tokens:
            logits = run_model()
        feat_size = method(submodule(self.timm_model, "patch_embed", nn.Module), "dynamic_feat_size")
        grid = tuple(feat_size(tuple(pixel_values.shape[-2:])))
        return read_forward(logits, tokens, self._weights(), (int(grid[0]), int(grid[1])), pooled)
