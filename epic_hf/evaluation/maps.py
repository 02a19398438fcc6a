"""Pixel attribution maps of every compared method, for a batch of processed images and their target classes.

EPIC's map of class k is ``sum_{j in S} A'_{k,j} G_j`` with ``G = U F`` (S: the explanation's
shown channels), computed as ``(A'_k[S] U[S]) . F`` at the feature grid and resized bilinearly to
the input. With every channel it is ``A_k F``, the class activation map (``A' U = A``), so the
``all_channels`` method stands for the CAM under any U. The external baselines (Grad-CAM,
Integrated Gradients) come from their own libraries through :mod:`.baselines`.

Every map is (B, H, W) float32 at the input's resolution; larger means "more for the class".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from ..backbone import FrozenClassifier
from .channels import ChannelView, read
from .draws import sample_seed

EPIC_METHOD, IDENTITY_METHOD, ALL_CHANNELS, RANDOM = "epic", "epic_identity", "all_channels", "random"
GRADCAM, INTEGRATED_GRADIENTS = "gradcam", "integrated_gradients"
#: The methods computed from the decomposition itself (no extra library).
OWN_METHODS = (EPIC_METHOD, IDENTITY_METHOD, ALL_CHANNELS, RANDOM)
#: Every method, in the order tables list them.
METHODS = (*OWN_METHODS, GRADCAM, INTEGRATED_GRADIENTS)


def upsample(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear with ``align_corners=False`` (as :meth:`Explanation.attribution_map`)."""
    return nnf.interpolate(grid[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def channel_map(view: ChannelView, fmap: torch.Tensor, targets: torch.Tensor,
                selected: torch.Tensor | None) -> torch.Tensor:
    """``sum_{j in S} A'_{k,j} G_j`` (B, h, w) at the feature grid; ``selected`` (B, D) bool, None for all channels.

    ``A'_k[S] . U[S] . F``: one D-vector per image times F, never the D maps G themselves.
    """
    coefficients = view.weight[targets].double()  # (B, D): A'_k
    if selected is not None:
        coefficients = coefficients * selected.double()
    if view.U is not None:
        coefficients = coefficients @ view.U.double()  # (A'_k * 1_S) U, a vector on F's channels
    return torch.einsum("bd,bdhw->bhw", coefficients, fmap.double()).float()


def shown_mask(view: ChannelView, fmap: torch.Tensor, targets: torch.Tensor, top_k: int) -> torch.Tensor:
    """(B, D) bool: the channels an explanation of each target shows under ``view`` (top-k positive evidence)."""
    readout = read(view, fmap, targets, top_k)
    mask = torch.zeros(fmap.shape[0], fmap.shape[1], dtype=torch.bool, device=fmap.device)
    return mask.scatter(1, readout.channels, readout.shown)


def random_maps(seed: int, keys: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """Uniform noise maps (B, H, W), seeded per sample: the baseline that knows nothing about the model."""
    maps = []
    for key in keys:
        generator = torch.Generator().manual_seed(sample_seed(seed + 1, int(key)))  # not the stability noise's stream
        maps.append(torch.rand(size, generator=generator, dtype=torch.float32))
    return torch.stack(maps)


@dataclass
class MapMaker:
    """Every method's maps for one classifier, under one U (``epic``) and U = I (``epic_identity``)."""

    classifier: FrozenClassifier
    epic: ChannelView
    identity: ChannelView
    top_k: int
    seed: int

    def maps(self, methods: Sequence[str], keys: Sequence[int], pixel_values: torch.Tensor, targets: torch.Tensor,
             fmap: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{method: (B, H, W)}`` for ``targets`` (B,); ``fmap`` (F of ``pixel_values``) saves a forward."""
        size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        if fmap is None and any(m in (EPIC_METHOD, IDENTITY_METHOD, ALL_CHANNELS) for m in methods):
            fmap = self.classifier.features(pixel_values).fmap
        found: dict[str, torch.Tensor] = {}
        for method in methods:
            if method in (EPIC_METHOD, IDENTITY_METHOD):
                assert fmap is not None
                view = self.epic if method == EPIC_METHOD else self.identity
                mask = shown_mask(view, fmap.float(), targets, self.top_k)
                found[method] = upsample(channel_map(view, fmap, targets, mask), size)
            elif method == ALL_CHANNELS:
                assert fmap is not None
                found[method] = upsample(channel_map(self.identity, fmap, targets, None), size)
            elif method == RANDOM:
                found[method] = random_maps(self.seed, keys, size).to(pixel_values.device)
            elif method == GRADCAM:
                from .baselines import gradcam_maps

                found[method] = gradcam_maps(self.classifier, pixel_values, targets)
            elif method == INTEGRATED_GRADIENTS:
                from .baselines import integrated_gradients_maps

                found[method] = integrated_gradients_maps(self.classifier, pixel_values, targets)
            else:
                raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")
        return {name: value.float().to(pixel_values.device) for name, value in found.items()}
