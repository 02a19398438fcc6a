"""The frozen classifier EPIC explains: model, image processor and adapter, and where it came from.

Everything that runs the backbone goes through :class:`FrozenClassifier`, so the fit, the
explainer and the evaluation share one preprocessing path and one notion of "the model's
feature map". The classifier is never trained or changed: every run is scoped by
:meth:`FrozenClassifier.running`, which holds the model's lock (one forward at a time per model,
so that hooks of two threads never mix), puts it in eval mode for the call and restores every
module's own training flag after, under ``torch.no_grad``. Moving the model for a fit is scoped
(:meth:`FrozenClassifier.placed_on`) and undone afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from .adapters import (
    LinearHead,
    ModelAdapter,
    ModelForward,
    PooledFeatures,
    SpatialFeatures,
    adapter_for,
    check_decomposition,
    full_precision,
    model_config,
    tolerance_for,
)
from .aliases import ImageProcessor
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


#: One lock per model object, whoever wraps it: two explainers (the app and a notebook) over one model
#: share it. Re-entrant, so a run inside a run (a check inside a fit) does not wait on itself.
_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that lets one forward at a time run on ``model`` (hooks are per model, not per thread)."""
    with _LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


class FrozenClassifier:
    """A classifier of the form ``logits = A . avg_hw(F) + b (+ a non-spatial term)``, checked on load and per batch.

    The model runs with eval-mode semantics (batch norm and dropout must behave as at inference for
    the decomposition to be exact), but its own training flags are left as the caller set them:
    :meth:`running` forces eval for each call and restores them after.
    """

    def __init__(self, model: nn.Module, image_processor: ImageProcessor, reference: ModelReference | None = None, *,
                 split_cls: bool = False) -> None:
        self.model = model
        self.image_processor = image_processor
        self.split_cls = split_cls
        self.reference = reference or ModelReference(getattr(model, "name_or_path", None) or None)
        self._fingerprint: str | None = None
        self._probe: torch.Tensor | None = None
        with self.running():  # the adapter reads folded heads (an eval-mode BatchNorm) as it is built
            self.adapter: ModelAdapter = adapter_for(model, split_cls=split_cls)
            self.adapter.bind_processor(image_processor)
            self.adapter.verify(self.probe_pixel_values())
        self.num_channels: int = self.head().weight.shape[1]

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Run a block on the model: its lock held, eval mode, no grad; every module's training flag restored after.

        Explaining must never change the caller's model: a model left in train mode (a notebook after
        fine-tuning) would otherwise update its BatchNorm statistics and be explained as the train-mode
        function, and two threads' hooks would see each other's forwards.
        """
        with model_lock(self.model):
            modes = [(module, module.training) for module in self.model.modules()]
            try:
                self.model.eval()
                with torch.no_grad():
                    yield
            finally:
                for module, training in modes:
                    module.training = training

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
        with self.running():
            return self._head_on_device()

    def _head_on_device(self) -> LinearHead:
        """:meth:`head` for a caller that already holds :meth:`running`."""
        head = self.adapter.head()
        device = self.device
        if head.weight.device == device and head.bias.device == device:
            return head
        return LinearHead(weight=head.weight.to(device), bias=head.bias.to(device))

    # -- inputs ----------------------------------------------------------------------------
    def preprocess(self, images: Sequence[object]) -> torch.Tensor:
        """Decode and RGB-coerce ``images``, run the image processor: (B, C, H, W) on the model's device."""
        rgb = [to_rgb(image, position) for position, image in enumerate(images)]
        pixel_values = self.adapter.preprocess(self.image_processor, rgb)
        parameter = next(self.model.parameters())
        return pixel_values.to(device=parameter.device, dtype=parameter.dtype)

    def as_pixel_values(self, images: object) -> torch.Tensor:
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
    def forward(self, pixel_values: torch.Tensor, pooled: bool = False) -> ModelForward:
        """The model's own forward on a batch, F read from that same run, and the check that they agree.

        ``pooled=True`` keeps only ``avg_hw(F)`` (cheaper for a held split). Runs under the caller's
        autocast, if any; the check's tolerance follows the least precise dtype that took part.
        Raises :class:`~epic_hf.errors.DecompositionError` where ``A . avg_hw(F) + b (+ extra)`` is not
        the logits the model returned, so nothing downstream presents terms that are not the model's.
        """
        with self.running():  # one scope for the forward and the head it is checked against
            forward = self.adapter.forward(pixel_values, pooled=pooled)
            head = self._head_on_device()
        self.check(forward.decomposed_logits(head), forward)
        return forward

    def check(self, decomposed: torch.Tensor, forward: ModelForward, what: str = "the decomposition") -> float:
        """Raise :class:`~epic_hf.errors.DecompositionError` unless ``decomposed`` is ``forward``'s logits."""
        dtypes = [forward.logits.dtype, forward.pooled.pooled.dtype]
        if forward.pooled.extra_logits is not None:
            dtypes.append(forward.pooled.extra_logits.dtype)
        with torch.no_grad(), full_precision():
            return check_decomposition(decomposed, forward.logits, tolerance=tolerance_for(*dtypes),
                                       model_type=self.model_type, id2label=self.id2label, what=what)

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        """F and, for models with a CLS term, the exact non-spatial part of the logits, checked against the logits."""
        return self.forward(pixel_values).spatial()

    def pooled_features(self, pixel_values: torch.Tensor) -> PooledFeatures:
        """``avg_hw(F)``, the non-spatial term and the grid, without keeping F where that is cheaper; checked."""
        return self.forward(pixel_values, pooled=True).pooled

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """F (B, D, H, W) in float32, whose spatial mean feeds the linear head (no logits, so no check)."""
        with self.running():
            return self.adapter.feature_map(pixel_values).float()

    def logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model's own logits, for checks."""
        with self.running():
            return self.adapter.model_logits(pixel_values).float()

    @contextlib.contextmanager
    def placed_on(self, device: torch.device | str) -> Iterator[FrozenClassifier]:
        """Run a block with the model on ``device``, then move it back to where the caller had it.

        Holds the model's lock throughout: another thread's explanation waits rather than running on a
        model that is halfway to another device.
        """
        with model_lock(self.model):
            original = self.device
            target = torch.device(device)
            if target != original:
                self.model.to(target)
            try:
                yield self
            finally:
                if target != original:
                    self.model.to(original)
