"""The adapter contract: a spatial feature map F, a linear head (A, b), and the load-time check.

EPIC needs a classifier of the form ``logits = A . avg_hw(F) + b``. Each Hugging Face
family reaches that form differently (a plain average pool, a LayerNorm after the pool,
tokens that average over a grid), so each gets a small adapter. Every adapter is checked
at load time on a probe input: if ``A . avg_hw(F) + b`` does not reproduce the model's
own logits, the model is refused rather than explained wrongly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .registry import supported_families_text

#: Relative error above which the linear-head identity is considered broken.
IDENTITY_TOLERANCE = 1e-4


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
