"""The frozen classifier EPIC explains: model, image processor and adapter, and where it came from.

Everything that runs the backbone goes through :class:`FrozenClassifier`, so the fit, the
explainer and the evaluation share one preprocessing path and one notion of "the model's
feature map". The classifier is never trained: every forward runs under ``torch.no_grad``, and
``requires_grad`` of the caller's parameters is left as it was. Moving the model for a fit is
scoped (:meth:`FrozenClassifier.placed_on`) and undone afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from .adapters import LinearHead, ModelAdapter, PooledFeatures, SpatialFeatures, adapter_for, model_config
from .images import pixel_values_to_image, to_rgb

logger = logging.getLogger(__name__)


@dataclass
class ModelReference:
    """Where a classifier came from, and how to recognise the same weights elsewhere.

    ``name_or_path``: a Hub id, or the absolute path of a local folder; ``revision``: the
    resolved Hub commit, when there is one.
    """

    name_or_path: str | None = None
    revision: str | None = None


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of the model's config and every parameter and buffer: the same weights, wherever they are.

    Hashed in float32 bytes on the CPU, so a model on another device or loaded from another
    folder gives the same fingerprint.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(str(getattr(config, "model_type", "")).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


class FrozenClassifier:
    """A classifier of the form ``logits = A . avg_hw(F) + b (+ a non-spatial term)``, checked on load.

    The model is put in eval mode (batch norm and dropout must behave as at inference for the
    decomposition to be exact); nothing else about it is changed.
    """

    def __init__(self, model: nn.Module, image_processor: Any, reference: ModelReference | None = None, *,
                 split_cls: bool = False) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.split_cls = split_cls
        self.adapter: ModelAdapter = adapter_for(model, split_cls=split_cls)
        self.adapter.bind_processor(image_processor)
        self.reference = reference or ModelReference(getattr(model, "name_or_path", None) or None)
        self._fingerprint: str | None = None
        self._probe: torch.Tensor | None = None
        with torch.no_grad():
            self.adapter.verify(self.probe_pixel_values())
        self.num_channels: int = self.head().weight.shape[1]

    # -- facts -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def model_type(self) -> str:
        return str(model_config(self.model).model_type)

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in (model_config(self.model).id2label or {}).items()}

    @property
    def fingerprint(self) -> str:
        """:func:`weights_fingerprint`, computed once (it reads every weight)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def head(self) -> LinearHead:
        """(A, b) on the model's device: some adapters read it once at load (DeiT's two heads, a folded
        timm head), and a fit may have moved the model since (:meth:`placed_on`)."""
        head = self.adapter.head()
        device = self.device
        if head.weight.device == device and head.bias.device == device:
            return head
        return LinearHead(weight=head.weight.to(device), bias=head.bias.to(device))

    # -- inputs ----------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """Decode and RGB-coerce ``images``, run the image processor: (B, C, H, W) on the model's device."""
        rgb = [to_rgb(image, position) for position, image in enumerate(images)]
        pixel_values = self.adapter.preprocess(self.image_processor, rgb)
        parameter = next(self.model.parameters())
        return pixel_values.to(device=parameter.device, dtype=parameter.dtype)

    def as_pixel_values(self, images: Any) -> torch.Tensor:
        """``images`` (one, a list, or an already processed (B, C, H, W) tensor) as pixel values."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4:
                raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(images.shape)}")
            parameter = next(self.model.parameters())
            return images.to(device=parameter.device, dtype=parameter.dtype)
        if not isinstance(images, (list, tuple)):
            images = [images]
        return self.preprocess(images)

    def to_image(self, pixel_values: torch.Tensor) -> Image.Image:
        """The processed input (C, H, W) as the RGB picture the model saw."""
        return pixel_values_to_image(pixel_values, self.image_processor)

    def probe_pixel_values(self) -> torch.Tensor:
        """Two fixed noise images (one mirrored): the input of every exactness check."""
        if self._probe is None:
            generator = torch.Generator().manual_seed(0)
            noise = (torch.rand(64, 64, 3, generator=generator) * 255).to(torch.uint8).numpy()
            probe = self.preprocess([Image.fromarray(noise)])
            self._probe = torch.cat([probe, probe.flip(-1)])
        return self._probe.to(self.device)

    # -- the backbone --------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        """F and, for models with a CLS term, the exact non-spatial part of the logits."""
        return self.adapter.features(pixel_values)

    @torch.no_grad()
    def pooled_features(self, pixel_values: torch.Tensor) -> PooledFeatures:
        """``avg_hw(F)``, the non-spatial term and the grid, without keeping F where that is cheaper."""
        return self.adapter.pooled_features(pixel_values)

    @torch.no_grad()
    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """F (B, D, H, W) in float32, whose spatial mean feeds the linear head."""
        return self.adapter.feature_map(pixel_values).float()

    def logits_from(self, pooled: torch.Tensor, extra_logits: torch.Tensor | None = None) -> torch.Tensor:
        """``A . avg_hw(F) + b (+ the non-spatial term)``: the model's logits from a pooled vector."""
        head = self.head()
        logits = pooled.float() @ head.weight.float().T + head.bias.float()
        return logits if extra_logits is None else logits + extra_logits.float()

    @torch.no_grad()
    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model's own logits, for checks."""
        return self.adapter.model_logits(pixel_values).float()

    @contextlib.contextmanager
    def placed_on(self, device: torch.device | str) -> Iterator[FrozenClassifier]:
        """Run a block with the model on ``device``, then move it back to where the caller had it."""
        original = self.device
        target = torch.device(device)
        if target != original:
            self.model.to(target)
        try:
            yield self
        finally:
            if target != original:
                self.model.to(original)
