"""LeViT: the mean of the last stage's tokens into BatchNorm1d + Linear head(s).

An eval-mode BatchNorm1d after the pool is an affine map, so each head folds into one Linear;
``LevitForImageClassificationWithTeacher`` averages two such heads, which is one Linear again.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .base import LinearHead, ModelAdapter, average_heads, fold_batchnorm1d, submodule, tokens_to_grid
from .registry import register_adapter


@register_adapter
class LevitAdapter(ModelAdapter):
    model_types = ("levit",)
    family = "LeViT (with or without teacher)"
    doc = (
        "last-stage tokens reshaped row-major to their square grid; head: each `LevitClassificationLayer` "
        "(BatchNorm1d then Linear) folded into one affine map, the teacher variant's two heads averaged"
    )

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        base = self.base_model()
        tokens = self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state
        side = math.isqrt(tokens.shape[1])  # LeViT's subsampling keeps a square resolution
        return tokens_to_grid(tokens, side, side)

    def head(self) -> LinearHead:
        model_type = self.model_type
        layers = [self.classifier()]
        if getattr(self.model, "classifier_distill", None) is not None:  # the teacher variant's second head
            layers.append(submodule(self.model, "classifier_distill", nn.Module))
        if not all(hasattr(layer, "batch_norm") and hasattr(layer, "linear") for layer in layers):
            raise UnsupportedModelError(
                f"The {model_type!r} model has no classification head (was it loaded with num_labels=0?); "
                "load it with AutoModelForImageClassification and a classification head."
            )
        return average_heads([self._fold(layer, model_type) for layer in layers])

    @staticmethod
    def _fold(layer: nn.Module, model_type: str) -> LinearHead:
        """One ``LevitClassificationLayer`` (BatchNorm1d, then Linear) as one affine map."""
        return fold_batchnorm1d(submodule(layer, "batch_norm", nn.BatchNorm1d), submodule(layer, "linear", nn.Linear),
                                model_type)
