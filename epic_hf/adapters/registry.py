"""The adapter registry: which ``config.model_type`` values EPIC can decompose, and why not the rest.

This module holds data and lookups only (no adapter code). It sits above the contract in ``base``
(which never imports it), so the table is typed by the contract itself: ``type[ModelAdapter]``.
Importing :mod:`epic_hf.adapters` fills :data:`ADAPTERS`; :data:`REFUSED` says, for each family that
has no adapter, what breaks exactness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar, overload

from torch import nn

from ..errors import UnsupportedModelError
from .base import ModelAdapter

if TYPE_CHECKING:
    from transformers import PretrainedConfig

AdapterT = TypeVar("AdapterT", bound=type[ModelAdapter])


#: ``config.model_type`` -> the adapter class that serves it.
ADAPTERS: dict[str, type[ModelAdapter]] = {}

RefusalKind = Literal["cls_token", "nonlinear_head", "input", "not_testable"]


@dataclass(frozen=True)
class Refusal:
    """Why a family is refused: ``reason`` completes "model_type X is not supported by EPIC: ..."."""

    kind: RefusalKind
    reason: str


#: Families with no adapter, and why. Types listed here but registered in ADAPTERS are served.
REFUSED: dict[str, Refusal] = {
    "vit_hybrid": Refusal(
        "not_testable",
        "not testable here: ViT-hybrid was removed in transformers 5, so no adapter can be proven against its "
        "modeling code (its CLS token would be split by the held linearisation, as ViT's is)",
    ),
    "perceiver": Refusal(
        "cls_token",
        "its logits read a learned latent array that cross-attends to the image (latent queries), not an "
        "average of a spatial feature map. A held linearisation would be exact, but measured at transformers' "
        "default PerceiverConfig (224 px: 50,176 pixel tokens into 256 latents of width 1280, 26 self-attention "
        "layers, 284M parameters; benchmarks/bench_perceiver.py on 2 CPU cores: forward 1.7 s, forward + "
        "backward 5.7 s) it does not fit: carrying every pixel's part through the latents holds 256 x 50,176 x "
        "1280 floats (66 GB) per image and layer, and reading the parts backwards takes one backward pass per "
        "channel (1280 x 4.0 s, about 85 minutes per image, 3000x the forward)",
    ),
    "shieldgemma2": Refusal(
        "nonlinear_head",
        "it is a vision-language model whose logits are the language model's 'Yes'/'No' "
        "next-token scores after a text prompt, a non-linear function of the image",
    ),
    "dinat": Refusal(
        "not_testable",
        "not testable here: DiNAT needs the natten package, which has no wheel for this torch "
        "(source releases only, and natten >= 0.20 no longer has the natten2dqkrpb/natten2dav "
        "kernels transformers imports). Its head (LayerNorm per token, mean, Linear) would be "
        "exact, but no family is registered without a test that runs it",
    ),
    "nat": Refusal(
        "not_testable",
        "not testable here: NAT needs the natten package and was removed in transformers 5",
    ),
    "efficientformer": Refusal(
        "not_testable",
        "not testable here: EfficientFormer was removed in transformers 5, so no adapter can be "
        "proven against its modeling code",
    ),
}

@overload
def register_adapter(cls: AdapterT, *, override: bool = False) -> AdapterT: ...


@overload
def register_adapter(cls: None = None, *, override: bool = False) -> Callable[[AdapterT], AdapterT]: ...


def register_adapter(cls: AdapterT | None = None, *, override: bool = False) -> AdapterT | Callable[[AdapterT], AdapterT]:
    """Add an adapter class to the registry under each of its ``model_types``.

    Use as ``@register_adapter`` or ``@register_adapter(override=True)``. Registering a model type
    that another adapter already serves raises ValueError unless ``override=True``: a silent
    replacement would change how every model of that family is explained.
    """

    def add(adapter: AdapterT) -> AdapterT:
        if not (isinstance(adapter, type) and issubclass(adapter, ModelAdapter)):
            raise TypeError(f"register_adapter takes a ModelAdapter subclass, got {adapter!r}")
        if not adapter.model_types:
            raise ValueError(f"{adapter.__name__} sets no model_types; nothing to register.")
        for model_type in adapter.model_types:
            current = ADAPTERS.get(model_type)
            if current is not None and current is not adapter and not override:
                served_by = f"{current.__module__}.{current.__qualname__}"
                raise ValueError(
                    f"model_type {model_type!r} is already served by {served_by}; "
                    f"pass override=True to replace it with {adapter.__qualname__}."
                )
        for model_type in adapter.model_types:
            ADAPTERS[model_type] = adapter
        return adapter

    return add if cls is None else add(cls)


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def supported_families_text() -> str:
    return ", ".join(supported_model_types())


def refusal_message(model_type: str | None, why: str) -> str:
    """The one wording of a refusal: the model type, what breaks exactness, what is supported."""
    return (
        f"model_type {model_type!r} is not supported by EPIC: {why}. "
        f"Supported model types: {supported_families_text()}."
    )


def adapter_class_for(model_type: str | None, config: PretrainedConfig | None = None) -> type[ModelAdapter]:
    """The adapter class for ``model_type``, or :class:`UnsupportedModelError` naming the supported ones.

    With ``config``, the family's configuration check runs too (e.g. BEiT without mean pooling is
    refused), so a model can be refused before its weights are downloaded.
    """
    cls = ADAPTERS.get(model_type) if model_type is not None else None
    if cls is not None:
        if config is not None:
            cls.check_config(config)
        return cls
    refusal = REFUSED.get(model_type) if model_type is not None else None
    why = refusal.reason if refusal is not None else (
        "no adapter knows how to read its spatial feature map and linear head yet (a family whose "
        "logits are a linear map of an average-pooled feature map can be added with register_adapter)"
    )
    raise UnsupportedModelError(refusal_message(model_type, why))


def adapter_for(model: nn.Module, *, split_cls: bool = False) -> ModelAdapter:
    """The adapter for a loaded model; it checks the model's configuration too.

    ``split_cls=True`` asks for a family's variant that splits its CLS term over the tokens too
    (DINOv2: the CLS half of its head, held-linearised, as 2D channels); other families refuse it.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = adapter_class_for(model_type)
    if split_cls:
        variant = cls.cls_split_variant()
        if variant is None:
            raise UnsupportedModelError(
                f"split_cls=True splits the CLS half of DINOv2's head over the tokens; {model_type!r} has no such "
                "variant (CLS-token models such as ViT are always split): load it without split_cls")
        return variant(model)
    return cls.for_model(model)
