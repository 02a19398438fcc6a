"""Per-family access to a classifier's spatial feature map F and its linear head (A, b).

EPIC needs a classifier of the form ``logits = A . avg_hw(F) + b``. Each Hugging Face
family reaches that form differently (a plain average pool, a LayerNorm after the pool,
tokens that average over a grid), so each gets a small adapter. Every adapter is checked
at load time on a probe input: if ``A . avg_hw(F) + b`` does not reproduce the model's
own logits, the model is refused rather than explained wrongly.

The registry is keyed by ``config.model_type``; :func:`adapter_for` is the one entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .errors import UnsupportedModelError

#: Relative error above which the linear-head identity is considered broken.
IDENTITY_TOLERANCE = 1e-4

#: Families whose logits read a CLS (or distillation) token: not an average of a spatial map.
CLS_TOKEN_FAMILIES = ("vit", "deit", "dinov2", "dinov2_with_registers", "vit_hybrid", "vit_msn", "cvt")


@dataclass
class LinearHead:
    """The classifier's last linear map: ``logits = avg_hw(F) @ weight.T + bias``."""

    weight: torch.Tensor  # (num_classes, D)
    bias: torch.Tensor  # (num_classes,)


class ModelAdapter:
    """Contract: :meth:`feature_map` gives F (B, D, H, W) and :meth:`head` gives (A, b).

    Subclasses set ``model_types`` (the ``config.model_type`` values they serve) and
    ``family`` (a human name for error messages and docs).
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.check_config(model.config)

    # -- to override -------------------------------------------------------------------
    def check_config(self, config) -> None:
        """Refuse configurations of a supported family that cannot be decomposed."""

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The spatial map F (B, D, H, W) whose spatial mean feeds the linear head."""
        hidden = self.model.base_model(pixel_values=pixel_values).last_hidden_state
        return hidden

    def classifier(self) -> nn.Module:
        return self.model.classifier

    # -- shared ------------------------------------------------------------------------
    def head(self) -> LinearHead:
        linear = _find_linear(self.classifier(), self.model.config.model_type)
        weight = linear.weight.detach()
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(weight.shape[0])
        return LinearHead(weight=weight, bias=bias.to(weight))

    def verify(self, pixel_values: torch.Tensor) -> float:
        """Check ``A . avg(F) + b`` against the model's logits on ``pixel_values``.

        Returns the relative error; raises :class:`UnsupportedModelError` above tolerance.
        """
        with torch.no_grad():
            expected = self.model(pixel_values=pixel_values).logits.float()
            fmap = self.feature_map(pixel_values)
            head = self.head()
            got = fmap.float().mean(dim=(2, 3)) @ head.weight.float().T + head.bias.float()
        scale = expected.abs().max().clamp_min(1e-6)
        error = float((got - expected).abs().max() / scale)
        if not math.isfinite(error) or error > IDENTITY_TOLERANCE:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} (model_type={self.model.config.model_type!r}) does not "
                f"satisfy logits = A . avg_hw(F) + b on a probe input (relative error {error:.2e} > "
                f"{IDENTITY_TOLERANCE:.0e}), so EPIC cannot decompose its logits exactly. "
                f"Supported families: {supported_families_text()}."
            )
        return error


def _find_linear(module: nn.Module, model_type: str) -> nn.Linear:
    if isinstance(module, nn.Linear):
        return module
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise UnsupportedModelError(
            f"The {model_type!r} model has no single linear classification head (found "
            f"{len(linears)} linear layers); was it loaded with num_labels=0 or as a bare "
            "backbone? Load it with AutoModelForImageClassification and a classification head."
        )
    return linears[0]


def fold_post_pool_layernorm(fmap: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """Make a LayerNorm applied *after* pooling commute with pooling.

    ``F' = (F - mu) / sqrt(var + eps) * gamma + beta`` with ``mu`` the mean of F over
    (C, H, W) and ``var`` the biased variance over channels of ``avg_hw F``: a per-image
    affine map of F whose spatial mean is exactly ``LN(avg_hw F)``.
    """
    pooled = fmap.mean(dim=(2, 3))
    mu = pooled.mean(dim=1)
    var = pooled.var(dim=1, unbiased=False)
    scale = torch.rsqrt(var + norm.eps)
    normed = (fmap - mu[:, None, None, None]) * scale[:, None, None, None]
    if norm.weight is not None:
        normed = normed * norm.weight[None, :, None, None]
    if norm.bias is not None:
        normed = normed + norm.bias[None, :, None, None]
    return normed


def tokens_to_grid(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, D) tokens in row-major order to a (B, D, H, W) map."""
    batch, length, dim = tokens.shape
    if height * width != length:
        raise UnsupportedModelError(
            f"cannot arrange {length} tokens on a {height} x {width} grid; the input size does "
            "not match the model's patch grid."
        )
    return tokens.transpose(1, 2).reshape(batch, dim, height, width)


class ConvNetAdapter(ModelAdapter):
    """Convolutional families whose head is ``Linear(AdaptiveAvgPool(F))``."""

    model_types = ("resnet", "regnet", "mobilenet_v2")
    family = "ResNet, RegNet, MobileNetV2"


class EfficientNetAdapter(ModelAdapter):
    model_types = ("efficientnet",)
    family = "EfficientNet (pooling_type='mean')"

    def check_config(self, config) -> None:
        if getattr(config, "pooling_type", "mean") != "mean":
            raise UnsupportedModelError(
                f"EfficientNet with pooling_type={config.pooling_type!r} max-pools its features; "
                "EPIC needs an average pool to decompose the logits. Use pooling_type='mean'."
            )


class ConvNextAdapter(ModelAdapter):
    """ConvNeXt (v1, v2): LayerNorm after the pool, folded into F."""

    model_types = ("convnext", "convnextv2")
    family = "ConvNeXt, ConvNeXt V2"

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.model.base_model
        hidden = base(pixel_values=pixel_values).last_hidden_state
        return fold_post_pool_layernorm(hidden, base.layernorm)


class SwinAdapter(ModelAdapter):
    """Swin (v1, v2): per-token LayerNorm, then an average over the final token grid."""

    model_types = ("swin", "swinv2")
    family = "Swin, Swin V2"

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.model.base_model(pixel_values=pixel_values).last_hidden_state
        height, width = self.grid_size(pixel_values.shape[-2:], tokens.shape[1])
        return tokens_to_grid(tokens, height, width)

    def grid_size(self, input_hw: torch.Size, length: int) -> tuple[int, int]:
        config = self.model.config
        height = math.ceil(input_hw[0] / config.patch_size)
        width = math.ceil(input_hw[1] / config.patch_size)
        for _ in range(len(config.depths) - 1):  # each patch merging halves, padding odd sides
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        return height, width


class MeanPooledViTAdapter(ModelAdapter):
    """BEiT and Data2Vec-Vision with ``use_mean_pooling=True``: LN(mean of patch tokens)."""

    model_types = ("beit", "data2vec-vision")
    family = "BEiT, Data2Vec-Vision (use_mean_pooling=True)"

    def check_config(self, config) -> None:
        if not getattr(config, "use_mean_pooling", False):
            raise UnsupportedModelError(
                f"{config.model_type} with use_mean_pooling=False classifies from its CLS token, "
                "which is not an average of a spatial feature map, so EPIC cannot decompose its "
                f"logits. Supported families: {supported_families_text()}."
            )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.model.base_model
        tokens = base(pixel_values=pixel_values).last_hidden_state[:, 1:, :]
        patch = self.model.config.patch_size
        grid = tokens_to_grid(tokens, pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        return fold_post_pool_layernorm(grid, base.pooler.layernorm)


ADAPTERS: dict[str, type[ModelAdapter]] = {}


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Add an adapter class to the registry under each of its ``model_types``."""
    for model_type in cls.model_types:
        ADAPTERS[model_type] = cls
    return cls


for _cls in (ConvNetAdapter, EfficientNetAdapter, ConvNextAdapter, SwinAdapter, MeanPooledViTAdapter):
    register_adapter(_cls)


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def supported_families_text() -> str:
    return ", ".join(supported_model_types())


def adapter_class_for(model_type: str | None) -> type[ModelAdapter]:
    """The adapter class for ``model_type``, or :class:`UnsupportedModelError` naming the supported ones."""
    cls = ADAPTERS.get(model_type)  # type: ignore[arg-type]
    if cls is not None:
        return cls
    if model_type in CLS_TOKEN_FAMILIES:
        why = (
            "its logits read a CLS token, which is not an average of a spatial feature map, so "
            "they cannot be decomposed exactly into channel contributions"
        )
    else:
        why = (
            "no adapter knows how to read its spatial feature map and linear head yet (a family whose "
            "logits are a linear map of an average-pooled feature map can be added with register_adapter)"
        )
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported by EPIC: {why}. "
        f"Supported model types: {supported_families_text()}."
    )


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter for a loaded model; it checks the model's configuration too."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return adapter_class_for(model_type)(model)
