"""timm heads with layers after the pool, read exactly per image: their readers.

MobileNetV3/V4, LCNet, FBNetV3 and GhostNet put a 1x1 convolution and an activation between the
pool and the classifier; MetaFormer's ConvFormer and CAFormer an MlpHead (fc1, activation,
LayerNorm, fc2); EfficientViT (MIT) a Linear, LayerNorm and hard-swish. With the activation's gate
held at the pooled value (:mod:`.gated`), each is a per-image affine map that commutes with the
spatial mean: F is the head's hidden units. MetaFormer's plain head (PoolFormer: pool, LayerNorm2d,
Linear) is read here too, beside its MlpHead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import activation, linear_head
from .gated import GatedPointwise, eval_norm, pointwise
from .timm_heads import HeadReader, TimmHead, average_pool_dims, child, linear, post_pool_norm
from .timm_readers import Where, qualified, register_head_reader


def linear_gate(fc: nn.Linear, act: Callable[[torch.Tensor], torch.Tensor], norm: nn.LayerNorm | None = None,
                after: nn.LayerNorm | None = None) -> GatedPointwise:
    """A Linear after the pool, [a LayerNorm,] ``act`` [, a LayerNorm], as a pointwise map of F, the gate held."""
    head = linear_head(fc)
    ones, zeros = torch.ones_like(head.bias), torch.zeros_like(head.bias)
    return GatedPointwise(head.weight, head.bias, ones, zeros, act, norm=norm, norm_after=after)


@register_head_reader
class GatedConvHeadReader(HeadReader):
    name = "conv_head after the pool"
    serves = ("a 1x1 conv_head, [norm_head,] and an activation after an average pool, its gate held per image "
              "(MobileNetV3/V4, LCNet, FBNetV3, GhostNet)")
    how = "forward_features map through conv_head cell by cell, the activation's gate held: F = its hidden units"
    checked = ("mobilenetv3_large_100", "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium", "lcnet_050",
               "fbnetv3_b", "ghostnet_100")
    tested = {
        "mobilenetv3_small_050 (MobileNetV3; LCNet and FBNetV3 are the same class)": (
            "forward_features map through conv_head cell by cell, times the held gate of its activation at the "
            "pooled input: F = the head's hidden units, whose mean is exactly what the classifier reads"),
        "ghostnet_050 built from its registry name (GhostNet: conv_head with a bias, ReLU)": (
            "as MobileNetV3: conv_head cell by cell, the ReLU's gate held at the pooled input"),
    }
    classes = ("timm.models.mobilenetv3.MobileNetV3", "timm.models.ghostnet.GhostNet")

    def matches(self, timm_model: nn.Module) -> bool:
        return qualified(timm_model) in self.classes

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        """avg pool, conv_head, [norm_head], activation, classifier; F = conv_head's units cell by cell, gated."""
        conv_head, act2 = child(timm_model, "conv_head", where), child(timm_model, "act2", where)
        average_pool_dims(child(timm_model, "global_pool", where), where)
        weight, bias = pointwise(conv_head, str(where))
        found = timm_model._modules.get("norm_head")
        norm_head = found if found is not None else nn.Identity()
        act: nn.Module = act2
        if not isinstance(norm_head, nn.Identity):  # MobileNetV4: a BatchNormAct2d holds the norm and the activation
            if not isinstance(act, nn.Identity) or not isinstance(norm_head._modules.get("drop", nn.Identity()),
                                                                  nn.Identity):
                raise where.refuse("has a head norm and a second activation after the pool")
            inner = norm_head._modules.get("act")
            act = inner if inner is not None else nn.Identity()
        scale, shift = eval_norm(norm_head, weight.shape[0], str(where))
        return TimmHead(fc=linear(child(timm_model, "classifier", where), where),
                        gated=GatedPointwise(weight, bias, scale, shift, act),
                        head_modules=(conv_head, norm_head, act2, *norm_head.modules()))


@register_head_reader
class MetaFormerHeadReader(HeadReader):
    name = "MetaFormer head"
    serves = ("MetaFormer's head: an average pool, a LayerNorm2d, then a Linear (PoolFormer) or an MlpHead with "
              "its activation's gate held (ConvFormer, CAFormer)")
    how = ("forward_features map; pool, LayerNorm2d folded into F, then the Linear, or MlpHead's fc1 and activation "
           "cell by cell with the gate held and its LayerNorm folded: F = the head's hidden units")
    checked = ("poolformer_s12", "poolformerv2_s12", "convformer_s18", "caformer_s18")
    tested = {"MetaFormer built from its class (PoolFormer's head; ConvFormer's and CAFormer's MlpHead)": how}

    def matches(self, timm_model: nn.Module) -> bool:
        head = getattr(timm_model, "head", None)
        return isinstance(head, nn.Sequential) and {"global_pool", "norm", "fc"} <= set(head._modules)

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        head = child(timm_model, "head", where)
        dims = average_pool_dims(child(head, "global_pool", where), where)
        norm, fc = post_pool_norm(child(head, "norm", where), where), child(head, "fc", where)
        if qualified(fc) != "timm.models.metaformer.MlpHead":  # PoolFormer: the Linear
            return TimmHead(fc=linear(fc, where), norm=norm, channels_last=dims == (1, 2))
        # ConvFormer, CAFormer: fc1, activation, LayerNorm, fc2 after the pool and its norm; fc1 is a pointwise
        # map of F cell by cell, the activation's gate is held, the LayerNorm after it folds in as a post-pool norm
        fc1 = child(fc, "fc1", where)
        if not isinstance(fc1, nn.Linear):
            raise where.refuse(f"has an MlpHead whose fc1 is a {type(fc1).__name__}, not a Linear")
        hidden_norm = post_pool_norm(child(fc, "norm", where), where)
        return TimmHead(fc=linear(child(fc, "fc2", where), where), norm=norm,
                        gated=linear_gate(fc1, activation(fc, "act"), after=hidden_norm), head_modules=tuple(fc.modules()))


@register_head_reader
class EfficientVitMitHeadReader(HeadReader):
    name = "EfficientViT (MIT) head"
    serves = ("EfficientViT (MIT)'s head: in_conv before the pool, then a Linear, LayerNorm and activation, its "
              "gate held")
    how = ("forward_features map through the head's in_conv cell by cell; after the pool, the Linear, its LayerNorm "
           "(folded, scale held) and hard-swish (gate held): F = the head's hidden units, per image")
    checked = ("efficientvit_b0", "efficientvit_b1", "efficientvit_l1")
    tested = {"efficientvit_b0 (EfficientVit, MIT)": how}

    def matches(self, timm_model: nn.Module) -> bool:
        return qualified(getattr(timm_model, "head", None)) == "timm.models.efficientvit_mit.ClassifierHead"

    def read(self, timm_model: nn.Module, where: Where) -> TimmHead:
        """in_conv (1x1 conv, BatchNorm, activation) on every cell, the pool, then Linear (no bias), LayerNorm,
        activation, dropout, Linear: in_conv is part of F, the rest is read as the other gated heads are."""
        head = child(timm_model, "head", where)
        average = average_pool_dims(child(head, "global_pool", where), where)
        classifier = child(head, "classifier", where)
        layers = list(classifier) if isinstance(classifier, nn.Sequential) else []
        if average != (2, 3) or len(layers) != 5 or not isinstance(layers[0], nn.Linear) \
                or not isinstance(layers[1], nn.LayerNorm) or not isinstance(layers[3], nn.Dropout):
            raise where.refuse("has an EfficientViT head laid out other than in_conv, pool, Linear, LayerNorm, "
                               "activation, dropout, Linear")
        return TimmHead(fc=linear(layers[4], where), gated=linear_gate(layers[0], layers[2], norm=layers[1]),
                        pre_pool=child(head, "in_conv", where), head_modules=tuple(head.modules()))
