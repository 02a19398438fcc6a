"""timm heads that average F and apply one Linear: :class:`TimmHead`, the reads they share, and their readers.

A :class:`TimmHead` names where a timm model's F comes from (a map, channels-last, or tokens after
their prefix) and each step after the pool that folds into F exactly: a LayerNorm, a held-gate
pointwise head (:mod:`.timm_gated`), two distillation heads averaged, and the classifier. The
readers here serve the heads that are an average and a Linear (with at most a LayerNorm between):
timm's ``ClassifierHead`` and ``NormMlpClassifierHead``, a ``SelectAdaptivePool2d`` beside a
classifier, the patch-token mean of ViT-like models, and the mean a ``forward_head`` writes itself.
timm is never imported (an optional extra): classes are named by their qualified names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import batchnorm_affine, fold_post_pool_layernorm, linear_head, tokens_to_grid
from .gated import GatedPointwise
from .timm_readers import POOL_REASONS, TimmReader, Where, check_pool_type, qualified, register_head_reader

SELECT_POOL = "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d"
#: LeViT's and EfficientViT MSRA's classifier: a BatchNorm1d, dropout, then a Linear (``bn``, ``drop``, ``linear``).
NORM_LINEARS = ("timm.models.levit.NormLinear", "timm.models.efficientvit_msra.NormLinear")


@dataclass
class TimmHead:
    """Where a timm model's F comes from and what sits between its pool and its classifier.

    ``forward_features`` gives a (B, C, H, W) map, a (B, H, W, C) one (``channels_last``), or (B, N, C)
    tokens, of which the first ``prefix_tokens`` (class, register tokens) are not on the image: the
    features' own rank says which (3 dims: tokens), the reader declares the rest.
    """

    fc: nn.Linear | nn.Conv2d  # a Linear, or a 1x1 convolution on the pooled (B, D, 1, 1) map
    norm: nn.LayerNorm | None = None  # LayerNorm applied after the pool, folded into F
    channels_last: bool = False  # a 4-dim forward_features output is (B, H, W, C)
    prefix_tokens: int = 0  # a 3-dim output: class/register tokens dropped before the grid
    gated: GatedPointwise | None = None  # conv_head [+ norm] + activation after the pool, gates held
    pre_pool: nn.Module | None = None  # a module the head runs on the map cell by cell before its pool
    head_modules: tuple[nn.Module, ...] = ()  # the modules of a folded or gated head, allowed in forward_head

    def to_map(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """forward_features output to F (B, D, H, W): each step after the pool made one F's mean commutes with.

        The head's cell-by-cell module runs first, then the post-pool norm is folded in, then the
        gated head's hidden units (gates held, its norms folded): each step is a per-image affine map
        whose spatial mean is exactly the head's value. ``grid`` places tokens (ignored for a map).
        """
        if features.ndim == 3:
            fmap = tokens_to_grid(features[:, self.prefix_tokens:, :], grid[0], grid[1])
        else:
            fmap = features.permute(0, 3, 1, 2) if self.channels_last else features
        if self.pre_pool is not None:
            fmap = self.pre_pool(fmap)
        if self.norm is not None:
            fmap = fold_post_pool_layernorm(fmap, self.norm)
        if self.gated is not None:
            fmap = self.gated.apply(fmap)
        return fmap


class HeadReader(TimmReader):
    """A reader whose head is read as a :class:`TimmHead` (every timm reader but the held split of a CLS token)."""

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        raise NotImplementedError


def child(owner: nn.Module, name: str, where: Where) -> nn.Module:
    """A direct child module by name, or the refusal that names it and the reader."""
    found = owner._modules.get(name)
    if found is None:
        raise where.refuse(f"has no module {name!r} in its {type(owner).__name__}, which the reader reads")
    return found


def linear(fc: nn.Module, where: Where) -> nn.Linear | nn.Conv2d:
    """The classifier: one Linear, or a 1x1 convolution without groups (the same map on a 1x1 input)."""
    if isinstance(fc, nn.Linear):
        return fc
    if isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1:
        return fc
    raise where.refuse(f"classifies with a {type(fc).__name__}, not one Linear layer "
                       "(was it loaded without a classification head?)")


def post_pool_norm(norm: nn.Module, where: Where) -> nn.LayerNorm | None:
    """A norm after the pool: none, or a LayerNorm over channels (which folds into F exactly)."""
    if isinstance(norm, nn.Identity):
        return None
    if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1:
        return norm
    raise where.refuse(f"applies a {type(norm).__name__} after the pool, and only a "
                       "LayerNorm over channels folds into the feature map exactly")


def average_pool_dims(pool: nn.Module, where: Where) -> tuple[int, ...]:
    """The dims a timm ``SelectAdaptivePool2d`` averages over ((1, 2): channels-last); refuses any other pool."""
    if qualified(pool) != SELECT_POOL:
        raise where.refuse(f"pools with a {type(pool).__name__}, not timm's SelectAdaptivePool2d")
    pool_type = getattr(pool, "pool_type", None)
    check_pool_type(pool_type if isinstance(pool_type, str) else "?", where)
    return tuple(getattr(child(pool, "pool", where), "dim", (2, 3)))  # nn.AdaptiveAvgPool2d: (B, C, H, W)


def _affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(W, b) of a Linear, or of a NormLinear with its eval-mode BatchNorm1d folded in; else None."""
    if isinstance(module, nn.Linear):
        head = linear_head(module)
        return head.weight, head.bias
    inner, norm = module._modules.get("linear"), module._modules.get("bn")
    if qualified(module) in NORM_LINEARS and isinstance(inner, nn.Linear) and isinstance(norm, nn.BatchNorm1d) \
            and not norm.training:
        head, (scale, shift) = linear_head(inner), batchnorm_affine(norm)
        return head.weight * scale.to(head.weight)[None, :], head.bias + head.weight @ shift.to(head.weight)
    return None


def folded_linear(heads: list[nn.Module], where: Where) -> nn.Linear:
    """One new frozen Linear computing the average of ``heads`` (each a Linear or an eval-mode NormLinear)."""
    maps = [_affine(m) for m in heads]
    if not maps or any(m is None for m in maps):
        raise where.refuse(f"classifies with {' and '.join(type(m).__name__ for m in heads) or 'nothing'}, not "
                           "Linear layers (or BatchNorm1d and Linear in eval mode) on one pooled vector")
    weight = torch.stack([m[0] for m in maps if m is not None]).mean(dim=0)
    bias = torch.stack([m[1] for m in maps if m is not None]).mean(dim=0)
    fc = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    return fc.requires_grad_(False)


@register_head_reader
class ClassifierHeadReader(HeadReader):
    name = "ClassifierHead"
    serves = "timm's ClassifierHead: an average pool (channels-first or last), then a Linear"
    how = "forward_features map ((B, H, W, C) permuted); head.global_pool an average; head.fc"
    checked = ("regnety_008", "cspresnet50", "rexnet_100", "nfnet_l0", "tresnet_m", "xception41", "repvgg_a0",
               "fastvit_t8", "coatnet_0_rw_224", "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224")
    tested = {
        "regnetx_002 (RegNet)": "forward_features map; ClassifierHead (avg pool, fc)",
        "swin_tiny_patch4_window7_224 (SwinTransformer)": "forward_features (B, H, W, C) map, permuted; ClassifierHead",
    }

    def matches(self, timm_model: nn.Module) -> bool:
        return qualified(getattr(timm_model, "head", None)) == "timm.layers.classifier.ClassifierHead"

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        head = child(timm_model, "head", where)
        dims = average_pool_dims(child(head, "global_pool", where), where)
        return TimmHead(fc=linear(child(head, "fc", where), where), channels_last=dims == (1, 2))


@register_head_reader
class NormMlpHeadReader(HeadReader):
    name = "NormMlpClassifierHead"
    serves = "timm's NormMlpClassifierHead without a hidden layer: an average pool, a LayerNorm, a Linear"
    how = "forward_features map; head.norm (a LayerNorm after the pool) folded into F; head.fc"
    checked = ("convnext_tiny", "convnextv2_atto", "edgenext_xx_small")
    tested = {"convnext_atto (ConvNeXt)": "forward_features map, head.norm (LayerNorm2d after the pool) folded into F"}
    refused = {"MaxViT (maxvit_*)": "NormMlpClassifierHead with head_hidden_size: a hidden Linear and tanh after the pool"}

    def matches(self, timm_model: nn.Module) -> bool:
        return qualified(getattr(timm_model, "head", None)) == "timm.layers.classifier.NormMlpClassifierHead"

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        head = child(timm_model, "head", where)
        if not isinstance(child(head, "pre_logits", where), nn.Identity):
            raise where.refuse("applies a hidden Linear and tanh after the pool (NormMlpClassifierHead with "
                               "head_hidden_size)")
        dims = average_pool_dims(child(head, "global_pool", where), where)
        return TimmHead(fc=linear(child(head, "fc", where), where), norm=post_pool_norm(child(head, "norm", where), where),
                        channels_last=dims == (1, 2))


@register_head_reader
class SelectPoolReader(HeadReader):
    name = "SelectAdaptivePool2d"
    serves = ("a global_pool='avg' (a SelectAdaptivePool2d) beside the classifier get_classifier() names: a Linear, "
              "a 1x1 convolution, or EfficientViT MSRA's NormLinear (its BatchNorm1d folded)")
    how = "forward_features map; global_pool an average; the classifier (a 1x1 convolution read as its matrix)"
    specific = False
    checked = ("resnet50", "resnet18d", "seresnext26d_32x4d", "res2net50_26w_4s", "efficientnet_b0",
               "tf_efficientnetv2_b0", "mixnet_s", "mobilenetv2_100", "mnasnet_100", "densenet121", "inception_v3",
               "hrnet_w18_small", "dla34", "visformer_tiny", "efficientvit_m0")
    tested = {
        "resnet18 (ResNet)": "forward_features map; global_pool='avg' then fc",
        "test_efficientnet (EfficientNet)": "forward_features map (conv_head and bn2 come before the pool); classifier",
        "dla34 (DLA)": "forward_features map; global_pool='avg' then a 1x1 convolution, read as its (out, in) matrix",
        "efficientvit_m0 (EfficientVitMsra)": (
            "forward_features map; SelectAdaptivePool2d; its NormLinear head (BatchNorm1d, Linear) folded into one Linear"),
    }
    refused = {"global_pool='max', 'avgmax', 'catavgmax' (any reader)": "a maximum over space is not linear in F"}

    def matches(self, timm_model: nn.Module) -> bool:
        return qualified(getattr(timm_model, "global_pool", None)) == SELECT_POOL

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        dims = average_pool_dims(child(timm_model, "global_pool", where), where)
        get_classifier = getattr(timm_model, "get_classifier", None)
        fc = get_classifier() if callable(get_classifier) else None
        head = timm_model._modules.get("head")
        if head is not None and qualified(head) in NORM_LINEARS:  # get_classifier names the Linear inside it
            return TimmHead(fc=folded_linear([head], where), channels_last=dims == (1, 2),
                            head_modules=tuple(head.modules()))
        if not isinstance(fc, nn.Module):
            raise where.refuse("names no classifier module (get_classifier)")
        return TimmHead(fc=linear(fc, where), channels_last=dims == (1, 2))


@register_head_reader
class PatchTokenMeanReader(HeadReader):
    name = "patch-token mean"
    serves = ("the mean of the patch tokens (global_pool='avg'), fc_norm, then head, whatever the blocks compute: "
              "VisionTransformer, Eva, BEiT, the relpos ViTs")
    how = "patch tokens (num_prefix_tokens dropped) on the patch grid; fc_norm folded into F"
    checked = ("vit_small_patch16_224 (global_pool='avg')", "vit_medium_patch16_gap_256", "eva02_tiny_patch14_224",
               "eva02_small_patch14_336", "eva02_base_patch14_224", "eva_giant_patch14_224",
               "beit_base_patch16_224", "beitv2_base_patch16_224", "vit_relpos_base_patch16_224",
               "vit_srelpos_small_patch16_224")
    tested = {
        "vit_tiny_patch16_224 with global_pool='avg' (VisionTransformer)": (
            "patch tokens (num_prefix_tokens: class and register tokens dropped) on the patch grid; fc_norm "
            "folded into F, or nothing to fold with fc_norm=False (the per-token norm comes before the mean)"),
        "eva02_tiny_patch14_224 with global_pool='avg' (Eva: rotary attention, SwiGLU MLP)": (
            "patch tokens (the class token dropped) on the patch grid, fc_norm folded into F: the blocks compute "
            "whatever they compute, the head is a mean, a LayerNorm and a Linear"),
        "beit_base_patch16_224 and vit_relpos_base_patch16_224 with global_pool='avg' (Beit, "
        "VisionTransformerRelPos)": (
            "patch tokens on the patch grid, fc_norm folded into F, as for Eva: relative position biases change "
            "the blocks, not the head"),
    }
    refused = {
        "ViT with global_pool='map' (SigLIP-style attention pooling)": "the pooling weights depend on the input",
        "Eva with global_pool='token'": (
            "its CLS token passes Eva blocks (rotary attention, SwiGLU MLP, norms inside), which the held split does "
            "not read; Eva with global_pool='avg' is exact"),
    }
    #: Their global_pool='avg' head is the mean of the patch tokens, fc_norm, then head; a VisionTransformer
    #: with global_pool='token' is the held split's (:mod:`.timm_vit`), not this reader's.
    classes = ("timm.models.vision_transformer.VisionTransformer", "timm.models.eva.Eva",
               "timm.models.beit.Beit", "timm.models.vision_transformer_relpos.VisionTransformerRelPos")

    def matches(self, timm_model: nn.Module) -> bool:
        name = qualified(timm_model)
        return name in self.classes and not (name == self.classes[0] and getattr(timm_model, "global_pool", None)
                                             == "token")

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        pool = getattr(timm_model, "global_pool", None)
        if getattr(timm_model, "attn_pool", None) is not None:
            raise where.refuse(POOL_REASONS["map"])
        if qualified(timm_model) == "timm.models.eva.Eva" and pool == "token":
            raise where.refuse(f"{POOL_REASONS['token']}, through Eva blocks (rotary attention, SwiGLU MLP, norms "
                               "inside) that the held split of a CLS token does not read; an Eva with "
                               "global_pool='avg' (EVA-02's default) is supported")
        check_pool_type(pool if isinstance(pool, str) else "?", where)
        if getattr(timm_model, "pool_include_prefix", False):
            raise where.refuse("averages its class/register tokens together with the patch tokens "
                               "(pool_include_prefix=True), and those have no place on the image grid")
        prefix = getattr(timm_model, "num_prefix_tokens", None)
        if not isinstance(prefix, int):
            raise where.refuse(f"says {prefix!r} tokens come before its patches (num_prefix_tokens), not a count")
        return TimmHead(fc=linear(child(timm_model, "head", where), where),
                        norm=post_pool_norm(child(timm_model, "fc_norm", where), where), prefix_tokens=prefix)


@register_head_reader
class ForwardHeadMeanReader(HeadReader):
    name = "forward_head's own mean"
    serves = ("the mean a forward_head writes itself (global_pool='avg' named by a string) over a map or tokens, "
              "then head, or head and head_dist averaged (PVT v2, Twins, MLP-Mixer, LeViT, EfficientFormer)")
    how = ("the mean forward_head writes over a (B, C, H, W) map or (B, N, C) tokens (forward_features' own rank "
           "says which), then the Linear head, or head and head_dist averaged")
    specific = False
    checked = ("pvt_v2_b0", "twins_svt_small", "twins_pcpvt_small", "mixer_b16_224", "resmlp_12_224",
               "gmlp_ti16_224", "levit_128s", "levit_256", "levit_conv_128s", "efficientformer_l1",
               "efficientformerv2_s0")
    tested = {
        "pvt_v2_b0 and twins_svt_small (PyramidVisionTransformerV2, Twins)": (
            "the mean forward_head writes itself (global_pool='avg'), over a (B, C, H, W) map (PVT v2) or over "
            "(B, N, C) tokens (Twins, MLP-Mixer), as forward_features' output has 4 or 3 dims, the token grid from "
            "the last stage's reduction; then the Linear head"),
        "LevitDistilled and EfficientFormerV2 built from their classes (two heads averaged)": (
            "the mean forward_head writes over tokens (LeViT) or a map (EfficientFormerV2); head and head_dist act "
            "on the same pooled vector and are averaged, one affine map folded into one frozen Linear (LeViT's "
            "BatchNorm1d before each Linear folded in); the token grid of a square input is square"),
    }
    refused = {"CaiT, XCiT (class-attention blocks on the CLS token)": (
        "global_pool='token' through blocks other than timm's plain Block, which the held split does not read")}

    def matches(self, timm_model: nn.Module) -> bool:
        return isinstance(getattr(timm_model, "global_pool", None), str)

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        check_pool_type(str(getattr(timm_model, "global_pool", "?")), where)
        heads = [m for m in (timm_model._modules.get("head"), timm_model._modules.get("head_dist"))
                 if m is not None and not isinstance(m, nn.Identity)]
        prefix = getattr(timm_model, "num_prefix_tokens", 0)  # tokens before the patches, where a model has any
        if len(heads) == 1 and isinstance(heads[0], nn.Linear):
            return TimmHead(fc=heads[0], prefix_tokens=prefix if isinstance(prefix, int) else 0)
        # a distilled model (LeViT, EfficientFormer, EfficientFormerV2) averages head and head_dist on one
        # pooled vector in eval: one affine map, folded into a new frozen Linear (LeViT's BatchNorm1d too)
        return TimmHead(fc=folded_linear(heads, where), prefix_tokens=prefix if isinstance(prefix, int) else 0,
                        head_modules=tuple(module for head in heads for module in head.modules()))
