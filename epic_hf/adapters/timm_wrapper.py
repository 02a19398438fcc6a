"""timm classifiers loaded through transformers' ``TimmWrapperForImageClassification``.

A timm classifier computes ``forward_head(forward_features(x))``. EPIC decomposes it exactly when
the head is an average over space, optionally followed by a LayerNorm (folded into F exactly like
ConvNeXt's post-pool LayerNorm), and then one Linear; token models (VisionTransformer, Eva, BEiT,
Twins, MLP-Mixer) with ``global_pool='avg'`` give F as their patch tokens. Two more heads are read
exactly per image: a VisionTransformer's (or distilled DeiT's) CLS token (``global_pool='token'``),
split by the held linearisation (:mod:`.timm_vit`), and a pointwise layer with an activation after
the pool (MobileNetV3/V4, LCNet, FBNetV3, GhostNet, MetaFormer's MlpHead), its gate held. The head
is read in :mod:`.timm_heads`, without importing timm (an optional extra the core must not need);
here the reading is proved on random features at load time, before a head that pools with a
maximum or attention could be explained wrongly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import (
    LinearHead,
    ModelAdapter,
    ModelForward,
    PooledFeatures,
    SpatialFeatures,
    attribute,
    method,
)
from .registry import register_adapter
from .timm_coverage import CHECKED_ARCHITECTURES, REFUSED_HEADS, VERIFIED_ARCHITECTURES
from .timm_heads import (
    SELECT_POOL,
    TimmHead,
    check_pool_type,
    qualified,
    read_timm_head,
    refuse,
)
from .timm_tokens import token_grid
from .timm_vit import TimmTokenViT, is_token_vision_transformer

__all__ = ["TimmHead", "TimmWrapperAdapter", "check_head_is_pool_then_linear", "read_timm_head"]


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
            check_pool_type(pool, architecture, "")

    @classmethod
    def doc_rows(cls) -> list[tuple[str, str, str]]:
        rows = [(name, "exact (tested)", how) for name, how in VERIFIED_ARCHITECTURES.items()]
        rows.append((", ".join(CHECKED_ARCHITECTURES), "exact (checked once at full size, timm 1.0.31)",
                     "the same readers: an average-pooled map, a channels-last map (Swin), ViT patch tokens, the "
                     "held split of a ViT's CLS token, or a gated head (MobileNetV3/V4, LCNet, FBNetV3, GhostNet, ConvFormer, "
                     "CAFormer)"))
        return rows + [(name, "refused", why) for name, why in REFUSED_HEADS.items()]

    def trunk(self) -> None:
        """None: timm's ``forward_features`` is a method, not a module whose output a hook can record, so a
        non-token timm model's F is read by a pass of its own (token ViTs ride the held split on the forward)."""
        return None

    def forward(self, pixel_values: torch.Tensor, pooled: bool = False) -> ModelForward:
        if self.token_vit is not None:
            values = pixel_values.to(attribute(self.model, "dtype", torch.dtype))
            return self.token_vit.forward(lambda: self.model_logits(values), values, pooled)
        return super().forward(pixel_values, pooled)

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        if self.token_vit is not None:
            return self.forward(pixel_values).spatial()
        return SpatialFeatures(self.feature_map(pixel_values))

    def pooled_features(self, pixel_values: torch.Tensor) -> PooledFeatures:
        if self.token_vit is not None:
            return self.forward(pixel_values, pooled=True).pooled
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
        raise refuse(architecture, timm_model, f"changes the width after the pool ({timm_model.num_features} "
                      f"features, {width} at the classifier), so a layer sits between the pool and the Linear")
    shape: tuple[int, ...]
    if head.prefix_tokens is not None:
        shape = (2, head.prefix_tokens + 9, width)
    else:
        shape = (2, 3, 3, width) if head.channels_last else (2, width, 3, 3)
    features = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(next(timm_model.parameters()))
    try:
        ran, logits = _run_head_with_hooks(timm_model, features)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as error:  # another layout
        raise refuse(architecture, timm_model, "does not read a (B, C, H, W) feature map in forward_head as "
                      f"EPIC averages it ({type(error).__name__}: {str(error).splitlines()[0][:120]})") from None
    allowed = _allowed_head_modules(timm_model, head)
    extra = [f"{name} ({type(module).__name__})" for name, module in ran if module not in allowed]
    if extra:
        raise refuse(architecture, timm_model, f"applies {', '.join(extra)} between the global pool and its "
                      "classifier, which EPIC does not fold")
    with torch.no_grad():
        expected = head.to_map(features, (3, 3)).float().mean(dim=(2, 3)) @ head.fc.weight.float().flatten(1).T
        if head.fc.bias is not None:
            expected = expected + head.fc.bias.float()
    if logits.shape != expected.shape or not torch.allclose(logits, expected, rtol=1e-4, atol=1e-5):
        raise refuse(architecture, timm_model, "computes something other than an average pool (and a "
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
        elif qualified(module) == SELECT_POOL:  # its pool type was checked: an average
            allowed.update(module.modules())
    return allowed
