"""Explanation stability: do the same channels, at the same places, explain a slightly changed image?

Two perturbations of the model input (after the image processor, so that every model sees the
same change): Gaussian pixel noise, and a shift of a few input pixels with edge padding. For
each image the top-k channel set of the clean and the perturbed input are compared (Jaccard
index), and for the channels both show, whether the peak cell stayed within one cell of where
the shift moved it (Chebyshev distance at most 1). The explained class is the clean prediction
in both, so a change of explanation is not confused with a change of decision; how often the
decision itself changes is kept alongside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image

from ..backbone import FrozenClassifier
from .channels import Readout

PERTURBATIONS = ("noise", "shift")


def intensity_scale(classifier: FrozenClassifier) -> torch.Tensor:
    """(C, 1, 1): how far one unit of [0, 1] pixel intensity moves each input channel.

    Measured from a black and a white image, so it holds for any processor whose rescaling and
    normalisation are affine (all of transformers' and timm's are).
    """
    black = Image.new("RGB", (64, 64), (0, 0, 0))
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    values = classifier.preprocess([black, white]).float()
    return (values[1] - values[0]).mean(dim=(1, 2))[:, None, None]


def add_noise(pixel_values: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return pixel_values + noise.to(pixel_values)


def shift(pixel_values: torch.Tensor, pixels: int) -> torch.Tensor:
    """The input moved ``pixels`` right and down; the uncovered border repeats the edge pixels."""
    if pixels == 0:
        return pixel_values.clone()
    height, width = pixel_values.shape[-2:]
    padded = nnf.pad(pixel_values.float(), (pixels, 0, pixels, 0), mode="replicate")
    return padded[..., :height, :width].to(pixel_values.dtype)


def cell_offset(pixels: int, input_size: tuple[int, int], grid: tuple[int, int]) -> tuple[float, float]:
    """Where a shift of ``pixels`` input pixels moves a peak, in feature-map cells (rows, cols)."""
    return pixels * grid[0] / input_size[0], pixels * grid[1] / input_size[1]


@dataclass
class Stability:
    """Sums over images (float64) of the overlap of clean and perturbed explanations, for one perturbation."""

    images: int = 0
    jaccard_sum: float = 0.0
    peak_sum: float = 0.0
    peak_images: int = 0

    def update(self, clean: Readout, perturbed: Readout, offset: tuple[float, float] = (0.0, 0.0)) -> None:
        for index in range(clean.channels.shape[0]):
            before, after = clean.shown_set(index), perturbed.shown_set(index)
            union = set(before) | set(after)
            shared = set(before) & set(after)
            self.images += 1
            self.jaccard_sum += len(shared) / len(union) if union else 1.0
            if shared:
                kept = sum(_within_one_cell(before[c], after[c], offset) for c in shared)
                self.peak_sum += kept / len(shared)
                self.peak_images += 1

    def result(self) -> dict[str, Any]:
        return {"channel_jaccard": self.jaccard_sum / self.images if self.images else None,
                "peak_kept": self.peak_sum / self.peak_images if self.peak_images else None,
                "images": self.images, "images_with_shared_channels": self.peak_images}

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "jaccard_sum": self.jaccard_sum, "peak_sum": self.peak_sum,
                "peak_images": self.peak_images}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Stability:
        return cls(**state)


def _within_one_cell(before: tuple[int, int], after: tuple[int, int], offset: tuple[float, float]) -> bool:
    return bool(np.all(np.abs(np.subtract(after, before) - np.asarray(offset)) <= 1.0 + 1e-9))


@dataclass
class DecisionKept:
    """How often a perturbation leaves the predicted class as it was (per perturbation)."""

    images: int = 0
    kept: int = 0

    def update(self, clean_targets: torch.Tensor, perturbed_logits: torch.Tensor) -> None:
        self.images += int(clean_targets.numel())
        self.kept += int((perturbed_logits.argmax(dim=1) == clean_targets).sum())

    def result(self) -> float | None:
        return self.kept / self.images if self.images else None

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "kept": self.kept}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DecisionKept:
        return cls(**state)
