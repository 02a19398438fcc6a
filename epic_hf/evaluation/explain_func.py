"""EPIC's pixel map as a Quantus ``explain_func``: ``(model, inputs, targets, **kwargs) -> np.ndarray (B, 1, H, W)``.

Quantus (Hedström et al., JMLR 2023) scores any explanation method through that one signature,
so every metric it has (pixel flipping, ROAD, faithfulness correlation, randomisation, ...)
reads EPIC's map ``sum_{j in S} A'_{k,j} G_j`` as it reads Grad-CAM's. Quantus calls models as
``model(x) -> logits``: :attr:`QuantusExplainFunc.model` is the classifier in that form. A model
Quantus hands back that is not this one (its randomisation metrics pass a randomised copy) is
explained as itself, under the same U: ``A' = A_copy U^-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbone import FrozenClassifier
from ..decompose import Decomposer
from .baselines import LogitsModule
from .channels import EPIC, IDENTITY, ChannelView
from .maps import MapMaker, channel_map, shown_mask, upsample
from .sanity import maker_for


class QuantusExplainFunc:
    """EPIC's map for Quantus; ``channels``: ``"shown"`` (the top-k positive-evidence channels), ``"all"`` or indices."""

    def __init__(self, classifier: FrozenClassifier, decomposer: Decomposer,
                 channels: str | Sequence[int] = "shown", top_k: int = 4) -> None:
        if isinstance(channels, str) and channels not in ("shown", "all"):
            raise ValueError(f"channels must be 'shown', 'all' or a list of channel indices, got {channels!r}")
        self.classifier, self.channels, self.top_k = classifier, channels, top_k
        head = classifier.head()
        self._maker = MapMaker(classifier, ChannelView(EPIC, decomposer.U.float(), decomposer.weight.double()),
                               ChannelView(IDENTITY, None, head.weight.double()), top_k, 0)
        self.model = LogitsModule(classifier).eval()
        self._others: dict[int, MapMaker] = {}

    def _maker_for(self, model: Any) -> MapMaker:
        inner = getattr(model, "inner", model)
        if model is None or inner is self.classifier.model:
            return self._maker
        if not isinstance(inner, nn.Module):
            raise TypeError(f"expected the torch model Quantus was given, got {type(model).__name__}")
        if id(inner) not in self._others:  # a copy Quantus made (a randomised one): explained as itself
            other = FrozenClassifier(inner, self.classifier.image_processor, split_cls=self.classifier.split_cls)
            self._others = {id(inner): maker_for(other, self._maker)}  # keep one: each step's copy is new
        return self._others[id(inner)]

    def __call__(self, model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        maker = self._maker_for(model)
        classifier = maker.classifier
        pixel_values = classifier.as_pixel_values(torch.as_tensor(np.asarray(inputs), dtype=torch.float32))
        target = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1).to(pixel_values.device)
        fmap = classifier.features(pixel_values).fmap.float()
        view = maker.epic
        mask: torch.Tensor | None
        if self.channels == "shown":
            mask = shown_mask(view, fmap, target, self.top_k)
        elif self.channels == "all":
            mask = None
        else:
            index = torch.as_tensor(list(self.channels), dtype=torch.long, device=fmap.device)
            mask = torch.zeros(fmap.shape[0], fmap.shape[1], dtype=torch.bool, device=fmap.device)
            mask[:, index] = True
        size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        maps = upsample(channel_map(view, fmap, target, mask), size)
        return maps[:, None].cpu().numpy().astype(np.float32)
