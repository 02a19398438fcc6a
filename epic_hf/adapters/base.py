"""The adapter contract: a spatial feature map F, a linear head (A, b), and the load-time check.

EPIC needs a classifier of the form ``logits = A . avg_hw(F) + b (+ extra)``. Each Hugging Face
family reaches that form differently (a plain average pool, a norm after the pool, tokens that
average over a grid, a CLS token concatenated to the patch mean), so each gets a small adapter.
Every adapter is checked at load time on a probe input: if the decomposition does not reproduce
the model's own logits, the model is refused rather than explained wrongly. The folding helpers
here turn a norm or a second head into that one linear form *exactly*, never approximately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from PIL import Image
from torch import nn

from ..aliases import ImageProcessor
from ..errors import UnsupportedModelError
from .exactness import IDENTITY_TOLERANCE, relative_gaps
from .reads import ModuleT, T, activation, attribute, layers, method, model_config, patch_size, submodule

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = [  # the typed reads live in .reads; the family modules import them from here with the contract
    "IDENTITY_TOLERANCE", "LinearHead", "ModelAdapter", "ModelForward", "ModuleT", "PooledFeatures",
    "SpatialFeatures", "T", "activation", "attribute", "average_heads", "batchnorm_affine", "bias_of", "find_linear",
    "fold_batchnorm1d", "fold_post_pool_layernorm", "layers", "linear_head", "method", "model_config",
    "patch_grid", "patch_size", "submodule", "tokens_to_grid",
]



@dataclass
class LinearHead:
    """The classifier's last linear map: ``logits = avg_hw(F) @ weight.T + bias (+ extra_logits)``."""

    weight: torch.Tensor  # (num_classes, D)
    bias: torch.Tensor  # (num_classes,)


@dataclass
class SpatialFeatures:
    """F and the exact part of the logits that is not a linear map of ``avg_hw(F)``.

    ``extra_logits`` is None for purely spatial models. For DINOv2 it is ``A_cls . cls``: the
    CLS token's share of ``Linear(concat(cls, mean(patches)))``, which no spatial map carries.
    """

    fmap: torch.Tensor  # (B, D, H, W)
    extra_logits: torch.Tensor | None = None  # (B, num_classes)

    def pooled(self) -> PooledFeatures:
        """``avg_hw(F)``, the same non-spatial term, and F's grid."""
        grid = (int(self.fmap.shape[-2]), int(self.fmap.shape[-1]))
        return PooledFeatures(self.fmap.mean(dim=(2, 3)), self.extra_logits, grid)


@dataclass
class PooledFeatures:
    """``avg_hw(F)`` (B, D), the exact non-spatial logit term, and F's grid: what the index pass stores."""

    pooled: torch.Tensor
    extra_logits: torch.Tensor | None
    grid: tuple[int, int]


@dataclass
class ModelForward:
    """One run of the model's own forward: its logits, and F (or only ``avg_hw F``) read from that same run.

    ``pooled`` always holds ``avg_hw(F)``, the non-spatial logit term and the grid; ``fmap`` holds F
    itself unless only the pooled vector was asked for.
    """

    logits: torch.Tensor  # (B, num_classes), as the model returned them
    pooled: PooledFeatures
    fmap: torch.Tensor | None = None  # (B, D, H, W)

    def spatial(self) -> SpatialFeatures:
        """F and the non-spatial term, for a forward that kept F."""
        if self.fmap is None:
            raise ValueError("this forward kept only avg_hw(F); run it with pooled=False for F itself")
        return SpatialFeatures(self.fmap, self.pooled.extra_logits)

    def decomposed_logits(self, head: LinearHead) -> torch.Tensor:
        """``A . avg_hw(F) + b (+ extra)`` in float64: what the model's logits must equal."""
        logits = self.pooled.pooled.double() @ head.weight.double().T + head.bias.double()
        extra = self.pooled.extra_logits
        return logits if extra is None else logits + extra.double()


class ModelAdapter:
    """Contract: :meth:`features` gives F (and any non-spatial logit term), :meth:`head` gives (A, b).

    Subclasses set ``model_types`` (the ``config.model_type`` values they serve), ``family`` (a
    human name for error messages) and ``doc`` (one line on how F and (A, b) are read, for
    docs/supported_models.md). A family whose logits carry a term that is not spatial sets
    ``has_extra_logits = True`` and overrides :meth:`features`.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    has_extra_logits: bool = False
    #: True where :meth:`pooled_features` is much cheaper than F itself (the held linearisation): the
    #: index pass then stores pooled vectors only, and F is computed again for prototype images alone.
    pooled_is_cheaper: bool = False
    #: During :meth:`forward`, the trunk's output from the model's own forward (see :meth:`trunk_output`).
    _replay: tuple[nn.Module, Any] | None = None  # Any: the trunk's own output, handed back as run()'s

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.check_config(model_config(model))

    @property
    def config(self) -> PretrainedConfig:
        """The model's transformers config (see :func:`model_config`)."""
        return model_config(self.model)

    @property
    def model_type(self) -> str:
        return attribute(self.config, "model_type", str)

    def base_model(self) -> nn.Module:
        """transformers' ``model.base_model``: the backbone under the head (the model itself when it has none)."""
        return submodule(self.model, "base_model", nn.Module)

    # -- to override -------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module) -> ModelAdapter:
        """The adapter for ``model`` (what :func:`~epic_hf.adapters.adapter_for` builds): ``cls(model)``.

        A registered class that serves models of one type in more than one way overrides it to pick,
        once, the class that reads this model (timm: the held split for a token-pooled ViT).
        """
        return cls(model)

    @classmethod
    def cls_split_variant(cls) -> type[ModelAdapter] | None:
        """The variant that splits the family's CLS term over the tokens too (``split_cls=True``), if any."""
        return None

    @classmethod
    def check_config(cls, config: PretrainedConfig) -> None:
        """Refuse configurations of a supported family that cannot be decomposed.

        A classmethod so that a model can be refused from its config alone, before its
        weights are downloaded.
        """

    def bind_processor(self, image_processor: ImageProcessor) -> None:
        """Read what the family needs from the model's own image processor (most need nothing).

        Called once, before the load-time check; a processor that lacks what the model needs is
        refused here with :class:`UnsupportedModelError`.
        """

    def preprocess(self, image_processor: ImageProcessor, images: list[Image.Image]) -> torch.Tensor:
        """RGB images -> the (B, C, H, W) pixel values the whole pipeline carries.

        Most processors return exactly that. A family whose processor returns something else (ImageGPT's
        colour-cluster ids, SigLIP 2's patch sequences) overrides this to get pixel values from it, and
        turns them into the model's own inputs in :meth:`feature_map` and :meth:`model_logits`: so the
        rest of EPIC (the index pass, deletion and stability checks, the pictures) keeps working on images.
        """
        return image_processor(images=images, return_tensors="pt")["pixel_values"]

    @classmethod
    def doc_rows(cls) -> list[tuple[str, str, str]]:
        """Sub-family rows ``(name, status, how or why)`` for the docs; empty for most families.

        A wrapper type that serves many architectures (``timm_wrapper``) lists them here.
        """
        return []

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The spatial map F (B, D, H, W) whose spatial mean feeds the linear head."""
        base = self.base_model()
        return self.trunk_output(base, lambda: base(pixel_values=pixel_values)).last_hidden_state

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        """F plus the exact non-spatial logit term (None unless ``has_extra_logits``)."""
        return SpatialFeatures(self.feature_map(pixel_values))

    def pooled_features(self, pixel_values: torch.Tensor) -> PooledFeatures:
        """``avg_hw(F)`` without keeping F; an adapter whose full map costs more than its mean overrides it."""
        return self.features(pixel_values).pooled()

    def classifier(self) -> nn.Module:
        return submodule(self.model, "classifier", nn.Module)

    def trunk(self) -> nn.Module | None:
        """The module whose output F is read from (transformers' base model by default).

        :meth:`forward` records its output during the model's own forward, and :meth:`trunk_output`
        hands that output to :meth:`features`, so F and the logits come from one pass. None where no
        single module's output carries F: F is then read by a pass of its own.
        """
        base = self.base_model()
        return None if base is self.model else base

    def trunk_output(self, module: nn.Module, run: Callable[[], T]) -> T:
        """``module``'s output: the one the model's own forward just produced, inside :meth:`forward`; else ``run()``."""
        replay = self._replay
        if replay is not None and replay[0] is module:
            return replay[1]
        return run()

    def forward(self, pixel_values: torch.Tensor, pooled: bool = False) -> ModelForward:
        """The model's own forward, once, and F read from it (``pooled=True``: only ``avg_hw F``).

        The trunk's output is recorded by a forward hook (so it is what the model really computed,
        after any hook of the user's) and replayed to :meth:`features`. Not thread-safe on its own:
        :class:`~epic_hf.backbone.FrozenClassifier` runs one forward at a time per model.
        """
        module = self.trunk()
        recorded: list[Any] = []  # Any: whatever the trunk returns
        handle = module.register_forward_hook(lambda _m, _a, out: recorded.append(out)) if module is not None else None
        try:
            logits = self.model_logits(pixel_values)
        finally:
            if handle is not None:
                handle.remove()
        # a trunk the forward did not call exactly once cannot be replayed: F is then read by a pass of its own
        self._replay = (module, recorded[0]) if module is not None and len(recorded) == 1 else None
        try:
            if pooled:
                return ModelForward(logits, self.pooled_features(pixel_values))
            features = self.features(pixel_values)
        finally:
            self._replay = None
        return ModelForward(logits, features.pooled(), features.fmap)

    def model_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The model's own logits: what every decomposition is checked against."""
        return self.model(pixel_values=pixel_values).logits

    def head(self) -> LinearHead:
        """(A, b) acting on ``avg_hw(F)`` only."""
        return linear_head(find_linear(self.classifier(), self.model_type))

    # -- shared ------------------------------------------------------------------------
    def verify(self, pixel_values: torch.Tensor) -> float:
        """Check ``A . avg(F) + b + extra_logits`` against the model's logits on ``pixel_values``.

        F is read both ways: from the model's own forward (:meth:`forward`, what every explanation
        uses) and by :meth:`features` alone (what prototype maps use); the two must agree, and the
        first must reproduce the logits. Returns the relative error; raises
        :class:`UnsupportedModelError` above tolerance.
        """
        with torch.no_grad():
            forward = self.forward(pixel_values)
            alone = self.features(pixel_values)
        model_type = self.model_type
        if (forward.pooled.extra_logits is not None) != self.has_extra_logits:
            raise UnsupportedModelError(
                f"the {type(self).__name__} adapter for model_type={model_type!r} declares "
                f"has_extra_logits={self.has_extra_logits} but its features() "
                f"{'returns' if forward.pooled.extra_logits is not None else 'does not return'} extra logits."
            )
        error = float(relative_gaps(forward.decomposed_logits(self.head()), forward.logits).max())
        if not math.isfinite(error) or error > IDENTITY_TOLERANCE:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} (model_type={model_type!r}) does not "
                f"satisfy logits = A . avg_hw(F) + b on a probe input (relative error {error:.2e} > "
                f"{IDENTITY_TOLERANCE:.0e}), so EPIC cannot decompose its logits exactly "
                "(docs/supported_models.md lists the supported families and how to add one)."
            )
        assert forward.fmap is not None  # a full forward keeps F
        scale = forward.fmap.float().abs().amax().clamp_min(1e-6)
        drift = float((forward.fmap.float() - alone.fmap.float()).abs().amax() / scale)
        if not drift <= IDENTITY_TOLERANCE:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} (model_type={model_type!r}): F read from the model's own forward "
                f"differs from F read by the adapter alone (relative gap {drift:.2e}), so the module it reads "
                f"({type(self.trunk()).__name__}) does not compute F in the model's forward as the adapter expects."
            )
        return error


def find_linear(module: nn.Module, model_type: str) -> nn.Linear:
    """The single ``nn.Linear`` of a classification head (or a clear refusal)."""
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


def bias_of(layer: nn.Linear | nn.Conv2d) -> torch.Tensor:
    """A Linear's or convolution's bias, detached, or zeros of its output width where it has none."""
    weight = layer.weight.detach()
    return layer.bias.detach() if layer.bias is not None else torch.zeros(weight.shape[0]).to(weight)


def linear_head(linear: nn.Linear) -> LinearHead:
    return LinearHead(weight=linear.weight.detach(), bias=bias_of(linear))


def batchnorm_affine(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as ``x * scale + shift`` per channel (its running statistics must exist)."""
    if norm.running_mean is None or norm.running_var is None:
        raise UnsupportedModelError(f"a {type(norm).__name__} without running statistics cannot be folded")
    scale = torch.rsqrt(norm.running_var.detach() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach()
    shift = -norm.running_mean.detach() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach()
    return scale, shift


def fold_batchnorm1d(norm: nn.BatchNorm1d, linear: nn.Linear, model_type: str) -> LinearHead:
    """``linear(norm(x))`` as one affine map, exact for a BatchNorm in eval mode.

    In eval mode ``norm(x) = x * s + t`` with ``s = gamma / sqrt(running_var + eps)`` and
    ``t = beta - running_mean * s``, so ``W norm(x) + c = (W * s) x + (W t + c)``.
    """
    if norm.training or norm.running_mean is None or norm.running_var is None:
        raise UnsupportedModelError(
            f"the {model_type!r} head normalises pooled features with batch statistics (a BatchNorm in "
            "training mode or without running statistics), which depend on the other images in the "
            "batch; call model.eval() and use a model with tracked running statistics."
        )
    scale, shift = batchnorm_affine(norm)
    head = linear_head(linear)
    return LinearHead(weight=head.weight * scale[None, :], bias=head.weight @ shift + head.bias)


def average_heads(heads: list[LinearHead]) -> LinearHead:
    """The mean of several linear heads on the same pooled vector is one linear head."""
    return LinearHead(
        weight=torch.stack([h.weight for h in heads]).mean(dim=0),
        bias=torch.stack([h.bias for h in heads]).mean(dim=0),
    )


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


def patch_grid(pixel_values: torch.Tensor, patch: int | Sequence[int]) -> tuple[int, int]:
    """The (H, W) grid of a non-overlapping patch embedding (a convolution with stride = kernel)."""
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return pixel_values.shape[-2] // ph, pixel_values.shape[-1] // pw
