"""timm classifiers loaded through transformers' ``TimmWrapperForImageClassification``.

A timm classifier computes ``forward_head(forward_features(x))``. EPIC decomposes it exactly when
the head is an average over space, optionally followed by a LayerNorm (folded into F exactly like
ConvNeXt's post-pool LayerNorm), and then one Linear. The structure is read off the timm module
itself, without importing timm (an optional extra that the core package must not need); token
models (VisionTransformer, Eva) with ``global_pool='avg'`` give F as their patch tokens. Two more
heads are read exactly per image: a VisionTransformer's (or distilled DeiT's) CLS token
(``global_pool='token'``), split by the held linearisation (:mod:`.timm_vit`), and a 1x1 convolution with an activation after the
pool (MobileNetV3/V4, LCNet, FBNetV3, GhostNet), its gate held (:mod:`.gated`). A head that pools
with a maximum or attention is refused at load time with the reason, before it could be explained
wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import (
    LinearHead,
    ModelAdapter,
    PooledFeatures,
    SpatialFeatures,
    attribute,
    fold_post_pool_layernorm,
    method,
    submodule,
    tokens_to_grid,
)
from .gated import GatedPointwise, eval_norm, pointwise
from .registry import register_adapter
from .timm_coverage import CHECKED_ARCHITECTURES, REFUSED_HEADS, VERIFIED_ARCHITECTURES
from .timm_tokens import token_grid, token_layout
from .timm_vit import TimmTokenViT, is_token_vision_transformer

#: timm classes (module.qualname, compared by name: timm is never imported here) that apply a 1x1
#: convolution and an activation after the global pool: read with the activation's gate held.
_POST_POOL_CLASSES = {"timm.models.mobilenetv3.MobileNetV3": "MobileNetV3", "timm.models.ghostnet.GhostNet": "GhostNet"}

_POOL_REASONS = {
    "token": "classifies from its CLS token (global_pool='token'), which is not an average of the patch tokens",
    "map": "pools its tokens with attention (global_pool='map'), whose weights depend on the input",
    "": "has no global pool (global_pool='')",
}

_SUPPORTED = (
    "an average over space (global_pool='avg'), optionally followed by a LayerNorm, then one Linear; "
    "tested for ResNet, EfficientNet, RegNet, ConvNeXt, DLA, Swin, and for VisionTransformer, Eva, BEiT and "
    "the relpos ViTs with global_pool='avg'; "
    "a VisionTransformer or distilled DeiT with global_pool='token' is split by the held linearisation"
)


@dataclass
class TimmHead:
    """Where a timm model's F comes from and what sits between its pool and its classifier."""

    fc: nn.Linear | nn.Conv2d  # a Linear, or a 1x1 convolution on the pooled (B, D, 1, 1) map
    norm: nn.LayerNorm | None = None  # LayerNorm applied after the pool, folded into F
    channels_last: bool = False  # forward_features gives (B, H, W, C)
    prefix_tokens: int | None = None  # token models: class/register tokens dropped before the grid
    gated: GatedPointwise | None = None  # conv_head [+ norm] + activation after the pool, gates held
    head_modules: tuple[nn.Module, ...] = ()  # the modules of that gated head, allowed in forward_head

    def to_map(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """forward_features output to F (B, D, H, W), the post-pool norm folded in."""
        if self.prefix_tokens is not None:
            fmap = tokens_to_grid(features[:, self.prefix_tokens:, :], grid[0], grid[1])
        elif self.channels_last:
            fmap = features.permute(0, 3, 1, 2)
        else:
            fmap = features
        if self.gated is not None:
            return self.gated.apply(fmap)
        return fold_post_pool_layernorm(fmap, self.norm) if self.norm is not None else fmap

    @property
    def input_width(self) -> int:
        """Channels of forward_features' output (the gated head's input, else the classifier's)."""
        return int(self.gated.weight.shape[1]) if self.gated is not None else int(self.fc.weight.shape[1])


@register_adapter
class TimmWrapperAdapter(ModelAdapter):
    """timm classifiers (``model_type='timm_wrapper'``) whose head is avg pool [+ LayerNorm] + Linear."""

    model_types = ("timm_wrapper",)
    family = "timm via TimmWrapper: ResNet, EfficientNet, RegNet, ConvNeXt, DLA, Swin, ViT (avg or token pool)"
    doc = (
        "`timm_model.forward_features(x)`: the (B, D, H, W) map (a channels-last map permuted), or for a "
        "ViT the patch tokens (num_prefix_tokens dropped) on the patch grid; a LayerNorm after the pool "
        "(ConvNeXt's `head.norm`, ViT's `fc_norm`) folded in as for ConvNeXt; head: the timm classifier "
        "(a Linear, or a 1x1 convolution read as its matrix). At load, forward hooks list every module "
        "timm's `forward_head` runs (anything but the pool, a LayerNorm, dropout and the classifier is "
        "refused by name), and on random features its logits must equal the classifier of the mean of F. A "
        "VisionTransformer with global_pool='token' is split by the held linearisation (the CLS term); max and "
        "attention pooling are refused; MobileNetV3's conv_head and activation after the pool are read with "
        "the activation's gate held per image (F = its hidden units)"
    )

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        architecture = str(getattr(self.config, "architecture", "?"))
        self.token_vit: TimmTokenViT | None = None
        if is_token_vision_transformer(self.base_model()):  # the CLS token, split by the held linearisation
            self.token_vit = TimmTokenViT(self.base_model(), architecture)
            self.timm_head = TimmHead(fc=self.token_vit.linear)
            self.has_extra_logits = True
            self.pooled_is_cheaper = True
            return
        self.timm_head = read_timm_head(self.base_model(), architecture)
        check_head_is_pool_then_linear(self.base_model(), self.timm_head, architecture)

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Refuse from config.json alone what it already tells: a pool that is not an average or the CLS token."""
        architecture = str(getattr(config, "architecture", "?"))
        pool = (getattr(config, "model_args", None) or {}).get("global_pool", getattr(config, "global_pool", None))
        if isinstance(pool, str) and pool != "token":  # a token-pooled ViT is read by the held split
            _check_pool_type(pool, architecture, "")

    @classmethod
    def doc_rows(cls) -> list[tuple[str, str, str]]:
        rows = [(name, "exact (tested)", how) for name, how in VERIFIED_ARCHITECTURES.items()]
        rows.append((", ".join(CHECKED_ARCHITECTURES), "exact (checked once at full size, timm 1.0.31)",
                     "the same readers: an average-pooled map, a channels-last map (Swin), ViT patch tokens, the "
                     "held split of a ViT's CLS token, or a gated conv_head (MobileNetV3/V4, LCNet, FBNetV3, GhostNet)"))
        return rows + [(name, "refused", why) for name, why in REFUSED_HEADS.items()]

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        if self.token_vit is not None:
            return self.token_vit.features(self.model, pixel_values.to(attribute(self.model, "dtype", torch.dtype)))
        return SpatialFeatures(self.feature_map(pixel_values))

    def pooled_features(self, pixel_values: torch.Tensor) -> PooledFeatures:
        if self.token_vit is not None:
            return self.token_vit.pooled_features(self.model, pixel_values.to(attribute(self.model, "dtype", torch.dtype)))
        return super().pooled_features(pixel_values)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.token_vit is not None:
            return self.features(pixel_values).fmap
        timm_model = self.base_model()
        features = method(timm_model, "forward_features")(pixel_values.to(attribute(self.model, "dtype", torch.dtype)))
        grid = (0, 0)
        if self.timm_head.prefix_tokens is not None:
            grid = token_grid(timm_model, tuple(pixel_values.shape[-2:]), features.shape[1] - self.timm_head.prefix_tokens)
        return self.timm_head.to_map(features, grid)

    def classifier(self) -> nn.Module:
        return self.timm_head.fc

    def head(self) -> LinearHead:
        """(A, b) of the classifier; a 1x1 convolution's (out, in, 1, 1) kernel is the same matrix."""
        if self.token_vit is not None:  # the CLS head, or a distilled DeiT's two heads side by side
            return self.token_vit.head()
        fc = self.timm_head.fc
        weight = fc.weight.detach().flatten(1)
        bias = fc.bias.detach() if fc.bias is not None else torch.zeros(weight.shape[0])
        return LinearHead(weight=weight, bias=bias.to(weight))


def refusal(architecture: str, class_name: str, what: str, hint: str = "") -> UnsupportedModelError:
    """The error for a timm head EPIC cannot decompose: the architecture, what breaks, what works."""
    who = f"{architecture!r} ({class_name})" if class_name else repr(architecture)
    return UnsupportedModelError(
        f"timm architecture {who} {what}, so its logits are not "
        f"A . avg_hw(F) + b and EPIC cannot decompose them exactly.{' ' + hint if hint else ''} "
        f"Supported timm heads: {_SUPPORTED}."
    )


def _refuse(architecture: str, timm_model: nn.Module, what: str) -> UnsupportedModelError:
    return refusal(architecture, type(timm_model).__name__, what)


def _check_pool_type(pool_type: str, architecture: str, class_name: str) -> None:
    """Refuse every global pool but an average (timm spells it 'avg', 'fast' or 'fastavg').

    ``class_name`` is empty when only config.json is known (the model is not built yet).
    """
    if pool_type.lower() in ("avg", "fast", "fastavg"):
        return
    what = _POOL_REASONS.get(pool_type, f"pools with global_pool={pool_type!r}: a maximum over space is "
                             "not linear in the feature map")
    hint = "A plain VisionTransformer with global_pool='token' is supported." if pool_type == "token" else ""
    raise refusal(architecture, class_name, what, hint)


def read_timm_head(timm_model: nn.Module, architecture: str) -> TimmHead:
    """Read the pool, post-pool norm and classifier of a timm model, or refuse it with the reason."""
    name = _qualified(timm_model)
    if name in _POST_POOL_CLASSES:
        return _gated_head(timm_model, architecture)
    if name in _TOKEN_AVERAGE_CLASSES:
        return _vit_head(timm_model, architecture)
    head = getattr(timm_model, "head", None)
    norm: nn.LayerNorm | None = None
    try:  # get_submodule raises AttributeError, as a missing attribute does: "no known head"
        if isinstance(head, nn.Module) and _qualified(head) == "timm.layers.classifier.ClassifierHead":
            pool, fc = head.get_submodule("global_pool"), head.get_submodule("fc")
        elif isinstance(head, nn.Module) and _qualified(head) == "timm.layers.classifier.NormMlpClassifierHead":
            if not isinstance(head.get_submodule("pre_logits"), nn.Identity):
                raise _refuse(architecture, timm_model, "applies a hidden Linear and tanh after the pool "
                              "(NormMlpClassifierHead with head_hidden_size)")
            pool, fc = head.get_submodule("global_pool"), head.get_submodule("fc")
            norm = _post_pool_norm(head.get_submodule("norm"), architecture, timm_model)
        elif _qualified(getattr(timm_model, "global_pool", None)) == _SELECT_POOL:
            pool, fc = timm_model.get_submodule("global_pool"), method(timm_model, "get_classifier")()
        elif isinstance(getattr(timm_model, "global_pool", None), str) and isinstance(head, nn.Linear):
            # the mean written in forward_head itself, over a (B, C, H, W) map (PVT v2, Visformer) or over
            # (B, N, C) tokens (MLP-Mixer, ResMLP, Twins); check_head_is_pool_then_linear proves it is one
            _check_pool_type(str(timm_model.global_pool), architecture, type(timm_model).__name__)
            return TimmHead(fc=head, prefix_tokens=token_layout(timm_model, head))
        else:
            raise AttributeError("no known head")
        pool_dims = _average_pool_dims(pool, architecture, timm_model)
    except AttributeError:
        raise _refuse(architecture, timm_model, "has a head EPIC does not know how to read (none of timm's "
                      "ClassifierHead, NormMlpClassifierHead, or a global_pool and a classifier)") from None
    return TimmHead(fc=_linear(fc, architecture, timm_model), norm=norm, channels_last=pool_dims == (1, 2))


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
            raise _refuse(architecture, timm_model, "has a head norm and a second activation after the pool")
        act = getattr(norm_head, "act", nn.Identity())
    scale, shift = eval_norm(norm_head, weight.shape[0], where)
    return TimmHead(fc=_linear(submodule(timm_model, "classifier", nn.Module), architecture, timm_model),
                    gated=GatedPointwise(weight, bias, scale, shift, act),
                    head_modules=(conv_head, norm_head, act2, *norm_head.modules()))


def _qualified(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


_SELECT_POOL = "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d"
#: Token models whose global_pool='avg' head is the mean of the patch tokens, fc_norm, then head:
#: whatever their blocks compute (Eva's rotary attention and SwiGLU, BEiT's and the relpos ViTs'
#: relative position biases included), F is the patch tokens.
_TOKEN_AVERAGE_CLASSES = ("timm.models.vision_transformer.VisionTransformer", "timm.models.eva.Eva",
                          "timm.models.beit.Beit", "timm.models.vision_transformer_relpos.VisionTransformerRelPos")


def _vit_head(timm_model: nn.Module, architecture: str) -> TimmHead:
    """VisionTransformer or Eva: an average of the patch tokens (global_pool='avg'), then fc_norm and head."""
    if getattr(timm_model, "attn_pool", None) is not None:
        raise _refuse(architecture, timm_model, _POOL_REASONS["map"])
    if _qualified(timm_model) == "timm.models.eva.Eva" and timm_model.global_pool == "token":
        raise _refuse(architecture, timm_model, f"{_POOL_REASONS['token']}, through Eva blocks (rotary attention, "
                      "SwiGLU MLP, norms inside) that the held split of a CLS token does not read; an Eva with "
                      "global_pool='avg' (EVA-02's default) is supported")
    _check_pool_type(str(timm_model.global_pool), architecture, type(timm_model).__name__)
    if getattr(timm_model, "pool_include_prefix", False):
        raise _refuse(architecture, timm_model, "averages its class/register tokens together with the "
                      "patch tokens (pool_include_prefix=True), and those have no place on the image grid")
    norm = _post_pool_norm(submodule(timm_model, "fc_norm", nn.Module), architecture, timm_model)
    fc = _linear(submodule(timm_model, "head", nn.Module), architecture, timm_model)
    return TimmHead(fc=fc, norm=norm, prefix_tokens=attribute(timm_model, "num_prefix_tokens", int))


def _average_pool_dims(pool: nn.Module, architecture: str, timm_model: nn.Module) -> tuple[int, int]:
    """The spatial dims a timm SelectAdaptivePool2d averages over; refuses any other pooling."""
    _check_pool_type(str(getattr(pool, "pool_type", "?")), architecture, type(timm_model).__name__)
    return tuple(getattr(pool.pool, "dim", (2, 3)))


def _post_pool_norm(norm: nn.Module, architecture: str, timm_model: nn.Module) -> nn.LayerNorm | None:
    """A norm after the pool: none, or a LayerNorm over channels (which folds into F exactly)."""
    if isinstance(norm, nn.Identity):
        return None
    if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1:
        return norm
    raise _refuse(architecture, timm_model, f"applies a {type(norm).__name__} after the pool, and only a "
                  "LayerNorm over channels folds into the feature map exactly")


def _linear(fc: nn.Module, architecture: str, timm_model: nn.Module) -> nn.Linear | nn.Conv2d:
    """The classifier: one Linear, or a 1x1 convolution without groups (the same map on a 1x1 input)."""
    if isinstance(fc, nn.Linear):
        return fc
    if isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1:
        return fc
    raise _refuse(architecture, timm_model, f"classifies with a {type(fc).__name__}, not one Linear layer "
                  "(was it loaded without a classification head?)")


def check_head_is_pool_then_linear(timm_model: nn.Module, head: TimmHead, architecture: str) -> None:
    """Run timm's own ``forward_head`` on random features and compare with the pool [+ norm] + Linear EPIC uses.

    The structural reading names a pool, a norm and a classifier; this proves that nothing else
    runs between them. Forward hooks list every module ``forward_head`` calls (a BatchNorm1d
    before the Linear, a conv_head, an activation module are refused by name), and on signed
    random features the logits must equal ``fc(avg_hw(F))``, which also catches functional
    activations that no hook sees.
    """
    width = head.input_width
    if getattr(timm_model, "num_features", width) != width:
        raise _refuse(architecture, timm_model, f"changes the width after the pool ({timm_model.num_features} "
                      f"features, {width} at the classifier), so a layer sits between the pool and the Linear")
    shape: tuple[int, ...]
    if head.prefix_tokens is not None:
        shape = (2, head.prefix_tokens + 9, width)
    else:
        shape = (2, 3, 3, width) if head.channels_last else (2, width, 3, 3)
    features = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(next(timm_model.parameters()))
    try:
        ran, logits = _run_head_with_hooks(timm_model, features)
    except (RuntimeError, ValueError, IndexError) as error:  # its head reads another layout (tokens, say)
        raise _refuse(architecture, timm_model, "does not read a (B, C, H, W) feature map in forward_head as "
                      f"EPIC averages it ({type(error).__name__}: {str(error).splitlines()[0][:120]})") from None
    allowed = _allowed_head_modules(timm_model, head)
    extra = [f"{name} ({type(module).__name__})" for name, module in ran if module not in allowed]
    if extra:
        raise _refuse(architecture, timm_model, f"applies {', '.join(extra)} between the global pool and its "
                      "classifier, which EPIC does not fold")
    with torch.no_grad():
        expected = head.to_map(features, (3, 3)).float().mean(dim=(2, 3)) @ head.fc.weight.float().flatten(1).T
        if head.fc.bias is not None:
            expected = expected + head.fc.bias.float()
    if logits.shape != expected.shape or not torch.allclose(logits, expected, rtol=1e-4, atol=1e-5):
        raise _refuse(architecture, timm_model, "computes something other than an average pool (and a "
                      "LayerNorm) and one Linear after forward_features")


def _run_head_with_hooks(timm_model: nn.Module, features: torch.Tensor) -> tuple[list, torch.Tensor]:
    """``forward_head(features)`` as (name, module) of each leaf module it ran, and its logits."""
    names = {module: name for name, module in timm_model.named_modules() if not list(module.children())}
    ran: list[tuple[str, nn.Module]] = []
    hooks = [module.register_forward_hook(lambda mod, _args, _out: ran.append((names[mod], mod))) for module in names]
    try:
        with torch.no_grad():
            logits = method(timm_model, "forward_head")(features).float().flatten(1)
    finally:
        for hook in hooks:
            hook.remove()
    return ran, logits


def _allowed_head_modules(timm_model: nn.Module, head: TimmHead) -> set[nn.Module]:
    """The modules a decomposable head may run: its pool, dropouts, flattens, identities, norm and fc."""
    allowed: set[nn.Module] = {head.fc, *head.head_modules}
    if head.norm is not None:
        allowed.add(head.norm)
    for module in timm_model.modules():
        if isinstance(module, (nn.Dropout, nn.Flatten, nn.Identity)):
            allowed.add(module)
        elif _qualified(module) == _SELECT_POOL:  # its pool type was checked: an average
            allowed.update(module.modules())
    return allowed
