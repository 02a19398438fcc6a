"""Reading a timm classifier's head: what lies between ``forward_features`` and the logits, or why it is refused.

The structure is read off the timm module itself, without importing timm. A :class:`TimmHead`
names where F comes from (a map, channels-last, or tokens after their prefix) and each step after
the pool that folds into F exactly: a LayerNorm, a held-gate pointwise head (MobileNetV3/V4, LCNet,
FBNetV3, GhostNet, MetaFormer's MlpHead, EfficientViT MIT's head), two distillation heads averaged,
and the classifier. Anything else is refused here with
the reason; :func:`~epic_hf.adapters.timm_wrapper.check_head_is_pool_then_linear` then proves the
reading on random features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import (
    activation,
    attribute,
    batchnorm_affine,
    fold_post_pool_layernorm,
    linear_head,
    method,
    submodule,
    tokens_to_grid,
)
from .gated import GatedPointwise, eval_norm, pointwise
from .timm_tokens import token_layout

#: timm classes (module.qualname, compared by name: timm is never imported here) that apply a 1x1
#: convolution and an activation after the global pool: read with the activation's gate held.
_POST_POOL_CLASSES = {"timm.models.mobilenetv3.MobileNetV3": "MobileNetV3", "timm.models.ghostnet.GhostNet": "GhostNet"}

POOL_REASONS = {
    "token": "classifies from its CLS token (global_pool='token'), which is not an average of the patch tokens",
    "map": "pools its tokens with attention (global_pool='map'), whose weights depend on the input",
    "": "has no global pool (global_pool='')",
}

SUPPORTED = (
    "an average over space (global_pool='avg'), optionally followed by a LayerNorm, then one Linear; "
    "tested for ResNet, EfficientNet, RegNet, ConvNeXt, DLA, Swin, and for VisionTransformer, Eva, BEiT and "
    "the relpos ViTs with global_pool='avg'; "
    "a VisionTransformer or distilled DeiT with global_pool='token' is split by the held linearisation; "
    "a pointwise layer and activation after the pool is read with its gate held (MobileNetV3/V4, LCNet, "
    "GhostNet, ConvFormer, CAFormer, EfficientViT); two heads on one pooled vector are averaged (LeViT, "
    "EfficientFormer); docs/supported_models.md lists every architecture checked"
)


@dataclass
class TimmHead:
    """Where a timm model's F comes from and what sits between its pool and its classifier."""

    fc: nn.Linear | nn.Conv2d  # a Linear, or a 1x1 convolution on the pooled (B, D, 1, 1) map
    norm: nn.LayerNorm | None = None  # LayerNorm applied after the pool, folded into F
    channels_last: bool = False  # forward_features gives (B, H, W, C)
    prefix_tokens: int | None = None  # token models: class/register tokens dropped before the grid
    gated: GatedPointwise | None = None  # conv_head [+ norm] + activation after the pool, gates held
    pre_pool: nn.Module | None = None  # a module the head runs on the map cell by cell before its pool
    pre_pool_width: int | None = None  # forward_features' channels when pre_pool changes them
    head_modules: tuple[nn.Module, ...] = ()  # the modules of that gated head, allowed in forward_head

    def to_map(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """forward_features output to F (B, D, H, W): each step after the pool made one F's mean commutes with.

        The head's cell-by-cell module runs first, then the post-pool norm is folded in, then the
        gated head's hidden units (gates held, its norms folded): each step is a per-image affine map
        whose spatial mean is exactly the head's value.
        """
        if self.prefix_tokens is not None:
            fmap = tokens_to_grid(features[:, self.prefix_tokens:, :], grid[0], grid[1])
        elif self.channels_last:
            fmap = features.permute(0, 3, 1, 2)
        else:
            fmap = features
        if self.pre_pool is not None:
            fmap = self.pre_pool(fmap)
        if self.norm is not None:
            fmap = fold_post_pool_layernorm(fmap, self.norm)
        if self.gated is not None:
            fmap = self.gated.apply(fmap)
        return fmap

    @property
    def input_width(self) -> int:
        """Channels of forward_features' output (the gated head's input, else the classifier's)."""
        if self.pre_pool_width is not None:
            return self.pre_pool_width
        return int(self.gated.weight.shape[1]) if self.gated is not None else int(self.fc.weight.shape[1])


def refusal(architecture: str, class_name: str, what: str, hint: str = "") -> UnsupportedModelError:
    """The error for a timm head EPIC cannot decompose: the architecture, what breaks, what works."""
    who = f"{architecture!r} ({class_name})" if class_name else repr(architecture)
    return UnsupportedModelError(
        f"timm architecture {who} {what}, so its logits are not "
        f"A . avg_hw(F) + b and EPIC cannot decompose them exactly.{' ' + hint if hint else ''} "
        f"Supported timm heads: {SUPPORTED}."
    )


def refuse(architecture: str, timm_model: nn.Module, what: str) -> UnsupportedModelError:
    return refusal(architecture, type(timm_model).__name__, what)


def check_pool_type(pool_type: str, architecture: str, class_name: str) -> None:
    """Refuse every global pool but an average (timm spells it 'avg', 'fast' or 'fastavg').

    ``class_name`` is empty when only config.json is known (the model is not built yet).
    """
    if pool_type.lower() in ("avg", "fast", "fastavg"):
        return
    what = POOL_REASONS.get(pool_type, f"pools with global_pool={pool_type!r}: a maximum over space is "
                             "not linear in the feature map")
    hint = "A plain VisionTransformer with global_pool='token' is supported." if pool_type == "token" else ""
    raise refusal(architecture, class_name, what, hint)


def read_timm_head(timm_model: nn.Module, architecture: str) -> TimmHead:
    """Read the pool, post-pool norm and classifier of a timm model, or refuse it with the reason."""
    name = qualified(timm_model)
    if name in _POST_POOL_CLASSES:
        return _gated_head(timm_model, architecture)
    if name in _TOKEN_AVERAGE_CLASSES:
        return _vit_head(timm_model, architecture)
    head = getattr(timm_model, "head", None)
    if isinstance(head, nn.Module) and qualified(head) == _EFFICIENTVIT_MIT_HEAD:
        return _efficientvit_mit_head(head, architecture, timm_model)
    norm: nn.LayerNorm | None = None
    try:  # get_submodule raises AttributeError, as a missing attribute does: "no known head"
        if isinstance(head, nn.Module) and qualified(head) == "timm.layers.classifier.ClassifierHead":
            pool, fc = head.get_submodule("global_pool"), head.get_submodule("fc")
        elif isinstance(head, nn.Module) and qualified(head) == "timm.layers.classifier.NormMlpClassifierHead":
            if not isinstance(head.get_submodule("pre_logits"), nn.Identity):
                raise refuse(architecture, timm_model, "applies a hidden Linear and tanh after the pool "
                              "(NormMlpClassifierHead with head_hidden_size)")
            pool, fc = head.get_submodule("global_pool"), head.get_submodule("fc")
            norm = _post_pool_norm(head.get_submodule("norm"), architecture, timm_model)
        elif isinstance(head, nn.Sequential) and {"global_pool", "norm", "fc"} <= dict(head.named_children()).keys():
            # MetaFormer (PoolFormer, ConvFormer, CAFormer): pool, LayerNorm2d, flatten, dropout, classifier
            pool, fc = head.get_submodule("global_pool"), head.get_submodule("fc")
            norm = _post_pool_norm(head.get_submodule("norm"), architecture, timm_model)
            if qualified(fc) == "timm.models.metaformer.MlpHead":  # ConvFormer, CAFormer
                _average_pool_dims(pool, architecture, timm_model)
                return _mlp_head(fc, norm, architecture, timm_model)
        elif qualified(getattr(timm_model, "global_pool", None)) == SELECT_POOL:
            pool, fc = timm_model.get_submodule("global_pool"), method(timm_model, "get_classifier")()
            if isinstance(head, nn.Module) and qualified(head) in _NORM_LINEARS:
                fc = head  # get_classifier names the Linear inside it, not the BatchNorm1d before that
        elif isinstance(getattr(timm_model, "global_pool", None), str) and (classifier := _classifier(timm_model)):
            # the mean written in forward_head itself, over a (B, C, H, W) map (PVT v2, Visformer, EfficientFormerV2)
            # or over (B, N, C) tokens (MLP-Mixer, ResMLP, Twins, LeViT); check_head_is_pool_then_linear proves it
            check_pool_type(str(timm_model.global_pool), architecture, type(timm_model).__name__)
            fc, modules = classifier
            return TimmHead(fc=fc, prefix_tokens=token_layout(timm_model, fc), head_modules=modules)
        else:
            raise AttributeError("no known head")
        pool_dims = _average_pool_dims(pool, architecture, timm_model)
    except AttributeError:
        raise refuse(architecture, timm_model, "has a head EPIC does not know how to read (none of timm's "
                      "ClassifierHead, NormMlpClassifierHead, or a global_pool and a classifier)") from None
    if qualified(fc) in _NORM_LINEARS:  # EfficientViT MSRA: a BatchNorm1d before its Linear, folded in
        folded = _folded_linear([fc])
        if folded is not None:
            return TimmHead(fc=folded, norm=norm, channels_last=pool_dims == (1, 2), head_modules=tuple(fc.modules()))
    return TimmHead(fc=_linear(fc, architecture, timm_model), norm=norm, channels_last=pool_dims == (1, 2))


#: LeViT's and EfficientViT MSRA's classifier: a BatchNorm1d, dropout, then a Linear (``bn``, ``drop``, ``linear``).
_NORM_LINEARS = ("timm.models.levit.NormLinear", "timm.models.efficientvit_msra.NormLinear")


def _affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(W, b) of a Linear, or of LeViT's NormLinear with its eval-mode BatchNorm1d folded in; else None."""
    if isinstance(module, nn.Linear):
        head = linear_head(module)
        return head.weight, head.bias
    if qualified(module) in _NORM_LINEARS and isinstance(getattr(module, "bn", None), nn.BatchNorm1d):
        inner, norm = _affine(submodule(module, "linear", nn.Linear)), submodule(module, "bn", nn.BatchNorm1d)
        if inner is None or norm.training:
            return None
        scale, shift = batchnorm_affine(norm)
        return inner[0] * scale.to(inner[0])[None, :], inner[1] + inner[0] @ shift.to(inner[0])
    return None


def _classifier(timm_model: nn.Module) -> tuple[nn.Linear, tuple[nn.Module, ...]] | None:
    """The one Linear a pooled vector meets, and the modules it stands for; None if there is none.

    ``head`` itself when it is a Linear. A distilled model (LeViT, EfficientFormer, EfficientFormerV2)
    averages ``head`` and ``head_dist`` on the same pooled vector in eval: one affine map, folded here
    into a new frozen Linear, as is LeViT's BatchNorm1d before its Linear.
    """
    head = getattr(timm_model, "head", None)
    dist = getattr(timm_model, "head_dist", None)
    heads = [m for m in (head, dist) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    if isinstance(head, nn.Linear) and len(heads) == 1:
        return head, ()
    fc = _folded_linear(heads)
    return (fc, tuple(module for m in heads for module in m.modules())) if fc is not None else None


def _folded_linear(heads: list[nn.Module]) -> nn.Linear | None:
    """One new frozen Linear computing the average of ``heads`` (each a Linear or a NormLinear); None if one is not."""
    maps = [_affine(m) for m in heads]
    if not maps or any(m is None for m in maps):
        return None
    weight = torch.stack([m[0] for m in maps if m is not None]).mean(dim=0)
    bias = torch.stack([m[1] for m in maps if m is not None]).mean(dim=0)
    fc = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    return fc.requires_grad_(False)


def _gated_head(timm_model: nn.Module, architecture: str) -> TimmHead:
    """MobileNetV3/V4, LCNet, FBNetV3, GhostNet: avg pool, conv_head, [norm_head], activation, classifier.

    The activation's gate is held per image (:mod:`.gated`): F is the conv_head's hidden units cell by
    cell, gated, whose mean is exactly what the classifier reads.
    """
    where = f"timm architecture {architecture!r} ({type(timm_model).__name__})"
    conv_head, act2 = submodule(timm_model, "conv_head", nn.Module), submodule(timm_model, "act2", nn.Module)
    _average_pool_dims(submodule(timm_model, "global_pool", nn.Module), architecture, timm_model)
    weight, bias = pointwise(conv_head, where)
    norm_head = getattr(timm_model, "norm_head", nn.Identity())
    act: nn.Module = act2
    if not isinstance(norm_head, nn.Identity):  # MobileNetV4: a BatchNormAct2d holds the norm and the activation
        if not isinstance(act, nn.Identity) or not isinstance(getattr(norm_head, "drop", nn.Identity()), nn.Identity):
            raise refuse(architecture, timm_model, "has a head norm and a second activation after the pool")
        act = getattr(norm_head, "act", nn.Identity())
    scale, shift = eval_norm(norm_head, weight.shape[0], where)
    return TimmHead(fc=_linear(submodule(timm_model, "classifier", nn.Module), architecture, timm_model),
                    gated=GatedPointwise(weight, bias, scale, shift, act),
                    head_modules=(conv_head, norm_head, act2, *norm_head.modules()))


def _mlp_head(mlp: nn.Module, norm: nn.LayerNorm | None, architecture: str, timm_model: nn.Module) -> TimmHead:
    """MetaFormer's MlpHead after the pool and its norm: fc1, activation, LayerNorm, fc2.

    Read as the gated heads are: fc1 is a pointwise map of F cell by cell, the activation's gate
    is held at the pooled value, and the LayerNorm after it folds in as a post-pool norm; F is the
    head's hidden units, per image.
    """
    hidden_norm = _post_pool_norm(submodule(mlp, "norm", nn.Module), architecture, timm_model)
    return TimmHead(fc=_linear(submodule(mlp, "fc2", nn.Module), architecture, timm_model), norm=norm,
                    gated=_linear_gate(submodule(mlp, "fc1", nn.Linear), activation(mlp, "act"), after=hidden_norm),
                    head_modules=tuple(mlp.modules()))


def _linear_gate(linear: nn.Linear, act: Callable[[torch.Tensor], torch.Tensor], norm: nn.LayerNorm | None = None,
                 after: nn.LayerNorm | None = None) -> GatedPointwise:
    """A Linear after the pool, [a LayerNorm,] ``act`` [, a LayerNorm], as a pointwise map of F, the gate held."""
    head = linear_head(linear)
    ones, zeros = torch.ones_like(head.bias), torch.zeros_like(head.bias)
    return GatedPointwise(head.weight, head.bias, ones, zeros, act, norm=norm, norm_after=after)


_EFFICIENTVIT_MIT_HEAD = "timm.models.efficientvit_mit.ClassifierHead"


def _efficientvit_mit_head(head: nn.Module, architecture: str, timm_model: nn.Module) -> TimmHead:
    """EfficientViT MIT: in_conv (1x1 conv, BatchNorm, activation) on every cell, the pool, then
    Linear (no bias), LayerNorm, activation, dropout, Linear.

    in_conv acts cell by cell before the pool, so it is part of F. After the pool the first Linear
    is a pointwise map, the LayerNorm folds in with its scale held and the activation's gate is held:
    F = the hidden units of the head, per image, as for the other gated heads.
    """
    in_conv = submodule(head, "in_conv", nn.Module)
    average = _average_pool_dims(submodule(head, "global_pool", nn.Module), architecture, timm_model)
    layers = list(submodule(head, "classifier", nn.Sequential))
    if average != (2, 3) or len(layers) != 5 or not isinstance(layers[0], nn.Linear) \
            or not isinstance(layers[1], nn.LayerNorm) or not isinstance(layers[3], nn.Dropout):
        raise refuse(architecture, timm_model, "has an EfficientViT head laid out other than in_conv, pool, "
                     "Linear, LayerNorm, activation, dropout, Linear")
    conv = submodule(in_conv, "conv", nn.Conv2d)
    return TimmHead(fc=_linear(layers[4], architecture, timm_model),
                    gated=_linear_gate(layers[0], layers[2], norm=layers[1]),
                    pre_pool=in_conv, pre_pool_width=int(conv.in_channels), head_modules=tuple(head.modules()))


def qualified(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


SELECT_POOL = "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d"
#: Token models whose global_pool='avg' head is the mean of the patch tokens, fc_norm, then head:
#: whatever their blocks compute (Eva's rotary attention and SwiGLU, BEiT's and the relpos ViTs'
#: relative position biases included), F is the patch tokens.
_TOKEN_AVERAGE_CLASSES = ("timm.models.vision_transformer.VisionTransformer", "timm.models.eva.Eva",
                          "timm.models.beit.Beit", "timm.models.vision_transformer_relpos.VisionTransformerRelPos")


def _vit_head(timm_model: nn.Module, architecture: str) -> TimmHead:
    """VisionTransformer or Eva: an average of the patch tokens (global_pool='avg'), then fc_norm and head."""
    if getattr(timm_model, "attn_pool", None) is not None:
        raise refuse(architecture, timm_model, POOL_REASONS["map"])
    if qualified(timm_model) == "timm.models.eva.Eva" and timm_model.global_pool == "token":
        raise refuse(architecture, timm_model, f"{POOL_REASONS['token']}, through Eva blocks (rotary attention, "
                      "SwiGLU MLP, norms inside) that the held split of a CLS token does not read; an Eva with "
                      "global_pool='avg' (EVA-02's default) is supported")
    check_pool_type(str(timm_model.global_pool), architecture, type(timm_model).__name__)
    if getattr(timm_model, "pool_include_prefix", False):
        raise refuse(architecture, timm_model, "averages its class/register tokens together with the "
                      "patch tokens (pool_include_prefix=True), and those have no place on the image grid")
    norm = _post_pool_norm(submodule(timm_model, "fc_norm", nn.Module), architecture, timm_model)
    fc = _linear(submodule(timm_model, "head", nn.Module), architecture, timm_model)
    return TimmHead(fc=fc, norm=norm, prefix_tokens=attribute(timm_model, "num_prefix_tokens", int))


def _average_pool_dims(pool: nn.Module, architecture: str, timm_model: nn.Module) -> tuple[int, int]:
    """The spatial dims a timm SelectAdaptivePool2d averages over; refuses any other pooling."""
    check_pool_type(str(getattr(pool, "pool_type", "?")), architecture, type(timm_model).__name__)
    return tuple(getattr(pool.pool, "dim", (2, 3)))


def _post_pool_norm(norm: nn.Module, architecture: str, timm_model: nn.Module) -> nn.LayerNorm | None:
    """A norm after the pool: none, or a LayerNorm over channels (which folds into F exactly)."""
    if isinstance(norm, nn.Identity):
        return None
    if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1:
        return norm
    raise refuse(architecture, timm_model, f"applies a {type(norm).__name__} after the pool, and only a "
                  "LayerNorm over channels folds into the feature map exactly")


def _linear(fc: nn.Module, architecture: str, timm_model: nn.Module) -> nn.Linear | nn.Conv2d:
    """The classifier: one Linear, or a 1x1 convolution without groups (the same map on a 1x1 input)."""
    if isinstance(fc, nn.Linear):
        return fc
    if isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1:
        return fc
    raise refuse(architecture, timm_model, f"classifies with a {type(fc).__name__}, not one Linear layer "
                  "(was it loaded without a classification head?)")
