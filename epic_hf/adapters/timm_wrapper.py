"""timm classifiers loaded through transformers' ``TimmWrapperForImageClassification``.

A timm classifier computes ``forward_head(forward_features(x))``. Which of the registered head
readers (:mod:`.timm_readers`) serves a model is decided once, when the adapter is made
(:meth:`TimmWrapperAdapter.for_model`): a VisionTransformer that classifies from its CLS token goes
to :class:`~.timm_vit.TimmTokenViTAdapter` (the held split, as transformers' ViT); every other model
to :class:`TimmWrapperAdapter`, whose reader gives a :class:`~.timm_heads.TimmHead`. At load the
reading is proved on random features shaped like the model's own ``forward_features`` output
(:func:`check_head_is_pool_then_linear`), before a head that pools with a maximum or attention could
be explained wrongly; then the decomposition must reproduce the logits, as for every adapter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import LinearHead, ModelAdapter, SpatialFeatures, attribute, bias_of, method, model_config, submodule
from .registry import register_adapter
from .timm_gated import GatedConvHeadReader  # noqa: F401 - importing the module registers its readers
from .timm_heads import SELECT_POOL, HeadReader, TimmHead
from .timm_readers import HEAD_READERS, Where, check_timm_config, qualified, reader_for
from .timm_tokens import token_grid
from .timm_vit import TimmTokenViTAdapter, TokenViTReader

__all__ = ["TimmHead", "TimmWrapperAdapter", "check_head_is_pool_then_linear", "read_timm_head"]


def read_timm_head(timm_model: nn.Module, architecture: str) -> TimmHead:
    """The head of a timm model that is not a token ViT, read by the one reader that matches it (or refused)."""
    return _read(timm_model, architecture)[0]


def _read(timm_model: nn.Module, architecture: str) -> tuple[TimmHead, Where]:
    reader = reader_for(timm_model, architecture)
    where = Where(architecture, type(timm_model).__name__, reader.name)
    if not isinstance(reader, HeadReader):
        raise where.refuse(f"is split by the held linearisation ({TimmTokenViTAdapter.__name__}), not read as a "
                           "pooled head; load it with epic_hf.adapters.adapter_for")
    return reader.read(timm_model, where), where


@register_adapter
class TimmWrapperAdapter(ModelAdapter):
    """timm classifiers (``model_type='timm_wrapper'``), each read by the one registered timm head reader that matches it.

    A token-pooled VisionTransformer is served by ``TimmTokenViTAdapter`` (see :meth:`for_model`); this
    class reads every other head as F and a linear map of its mean. The readers, as registered:
    """

    model_types = ("timm_wrapper",)
    family = "timm via TimmWrapper (one registered head reader per kind of timm head)"
    doc = ""  # generated from the readers below the class

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.timm_head, self.where = _read(self.base_model(), self.architecture)

    @classmethod
    def for_model(cls, model: nn.Module) -> ModelAdapter:
        """Chosen once, by the registry: the held split where :class:`~.timm_vit.TokenViTReader` serves the model,
        else this class (whose reader then reads the head). The config is checked first, so that a pool the
        config already refuses is refused with its reason."""
        config = model_config(model)
        cls.check_config(config)
        architecture = str(getattr(config, "architecture", "?"))
        if isinstance(reader_for(submodule(model, "timm_model", nn.Module), architecture), TokenViTReader):
            return TimmTokenViTAdapter(model)
        return cls(model)

    @classmethod
    def check_config(cls, config: PretrainedConfig) -> None:  # a TimmWrapperConfig, whose fields are timm's own
        check_timm_config(config)

    @classmethod
    def doc_rows(cls) -> list[tuple[str, str, str]]:
        """Every reader's coverage rows, tested and checked first, then what each refuses."""
        rows = [row for reader in HEAD_READERS for row in reader.rows()]
        return [row for row in rows if row[1] != "refused"] + [row for row in rows if row[1] == "refused"]

    @property
    def architecture(self) -> str:
        return str(getattr(self.config, "architecture", "?"))

    def trunk(self) -> None:
        """None: timm's ``forward_features`` is a method, not a module whose output a hook can record, so F is
        read by a pass of its own."""
        return None

    def features(self, pixel_values: torch.Tensor) -> SpatialFeatures:
        return SpatialFeatures(self.feature_map(pixel_values))

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return method(self.base_model(), "forward_features")(pixel_values.to(attribute(self.model, "dtype", torch.dtype)))

    def grid(self, features: torch.Tensor, size: tuple[int, ...]) -> tuple[int, int]:
        """Where tokens lie on the image (a map needs no grid: (0, 0))."""
        if features.ndim != 3:
            return (0, 0)
        return token_grid(self.base_model(), size, features.shape[1] - self.timm_head.prefix_tokens)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(pixel_values)
        return self.timm_head.to_map(features, self.grid(features, tuple(pixel_values.shape[-2:])))

    def classifier(self) -> nn.Module:
        return self.timm_head.fc

    def head(self) -> LinearHead:
        """(A, b) of the classifier; a 1x1 convolution's (out, in, 1, 1) kernel is the same matrix."""
        fc = self.timm_head.fc
        return LinearHead(weight=fc.weight.detach().flatten(1), bias=bias_of(fc))

    def verify(self, pixel_values: torch.Tensor) -> float:
        """The head proved on random features shaped like this model's own, then the identity every adapter proves."""
        with torch.no_grad():
            features = self.forward_features(pixel_values)
        grid = self.grid(features, tuple(pixel_values.shape[-2:]))
        check_head_is_pool_then_linear(self.base_model(), self.timm_head, features, grid, self.where)
        return super().verify(pixel_values)


TimmWrapperAdapter.doc = (
    "F and (A, b) are read by the one registered timm head reader that matches the model (a reader that names "
    "its class or its head's class, else the one that matches its global pool): "
    + ", ".join(repr(reader.name) for reader in HEAD_READERS)
    + " (each row below names its reader). A VisionTransformer or distilled DeiT with global_pool='token' is "
    f"split by the held linearisation as transformers' ViT is ({TokenViTReader.name!r}, served by "
    "TimmTokenViTAdapter; the CLS term). For every other head, at load, timm's own `forward_head` runs on random "
    "features shaped like the model's `forward_features` output: forward hooks list every module it runs (any the "
    "reader did not name, but the pool, dropout and flatten, is refused by name), and its logits must equal the "
    "classifier of the mean of F"
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig
TimmWrapperAdapter.__doc__ = (TimmWrapperAdapter.__doc__ or "") + "".join(
    f"\n    * {reader.name!r}: {reader.serves}." for reader in HEAD_READERS) + "\n"


def check_head_is_pool_then_linear(timm_model: nn.Module, head: TimmHead, features: torch.Tensor,
                                   grid: tuple[int, int], where: Where) -> None:
    """Run timm's own ``forward_head`` on random features and compare with the reading EPIC uses.

    ``features`` is the model's own ``forward_features`` output (its shape is what ``forward_head``
    reads, so nothing is guessed); the probe runs on signed random values of that shape. Forward hooks
    list every module ``forward_head`` calls (a BatchNorm1d before the Linear, a conv_head, an
    activation module the reader did not name are refused by name), and the logits must equal
    ``fc(avg_hw(F))``, which also catches functional activations that no hook sees.
    """
    probe = torch.randn(features.shape, generator=torch.Generator().manual_seed(0)).to(features)
    with torch.no_grad():
        fmap = head.to_map(probe, grid).float()
    width = int(head.fc.weight.shape[1])
    if fmap.shape[1] != width:
        raise where.refuse(f"changes the width after the pool ({fmap.shape[1]} features in F, {width} at the "
                           "classifier), so a layer sits between the pool and the Linear")
    ran, logits = _run_head_with_hooks(timm_model, probe)
    allowed = _allowed_head_modules(timm_model, head)
    extra = [f"{name} ({type(module).__name__})" for name, module in ran if module not in allowed]
    if extra:
        raise where.refuse(f"applies {', '.join(extra)} between the global pool and its classifier, which EPIC "
                           "does not fold")
    expected = fmap.mean(dim=(2, 3)) @ head.fc.weight.detach().float().flatten(1).T
    if head.fc.bias is not None:
        expected = expected + head.fc.bias.detach().float()
    if logits.shape != expected.shape or not torch.allclose(logits, expected, rtol=1e-4, atol=1e-5):
        raise where.refuse("computes something other than what its reader reads after forward_features (an average "
                           "pool, folded norms, held gates and one Linear)")


def _run_head_with_hooks(timm_model: nn.Module, features: torch.Tensor) -> tuple[list[tuple[str, nn.Module]], torch.Tensor]:
    """``forward_head(features)`` as (name, module) of each leaf module it ran, and its logits."""
    names = {module: name for name, module in timm_model.named_modules() if not list(module.children())}
    ran: list[tuple[str, nn.Module]] = []
    hooks = [module.register_forward_hook(lambda mod, _args, _out: ran.append((names[mod], mod))) for module in names]
    try:
        with torch.no_grad():
            logits = method(timm_model, "forward_head")(features).float().flatten(1)
    finally:
        for hook in hooks:
            hook.remove()
    return ran, logits


def _allowed_head_modules(timm_model: nn.Module, head: TimmHead) -> set[nn.Module]:
    """The modules a decomposable head may run: its pool, dropouts, flattens, identities, norm, fc and named modules."""
    allowed: set[nn.Module] = {head.fc, *head.head_modules}
    if head.norm is not None:
        allowed.add(head.norm)
    for module in timm_model.modules():
        if isinstance(module, (nn.Dropout, nn.Flatten, nn.Identity)):
            allowed.add(module)
        elif qualified(module) == SELECT_POOL:  # its pool type was checked: an average
            allowed.update(module.modules())
    return allowed
