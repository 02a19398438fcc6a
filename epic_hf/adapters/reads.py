"""Typed reads of a model's parts: each step of a walk into a model checked, and refused by name.

torch types ``nn.Module.__getattr__`` as ``Tensor | Module`` and configs are untyped bags, so every
step of a walk such as ``model.base_model.pooler.layernorm`` goes through one of these: each
checks what it reads and refuses a model that does not have the expected shape, by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from ..errors import UnsupportedModelError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

ModuleT = TypeVar("ModuleT", bound=nn.Module)
T = TypeVar("T")

def submodule(model: nn.Module, path: str, kind: type[ModuleT]) -> ModuleT:
    """``model.get_submodule(path)`` (dotted; properties such as ``base_model`` count), checked to be a ``kind``."""
    try:
        module = model.get_submodule(path)
    except AttributeError as error:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no module {path!r} ({error}), which EPIC reads to decompose it; "
            "was it loaded with AutoModelForImageClassification, with its classification head?"
        ) from None
    if not isinstance(module, kind):
        raise UnsupportedModelError(
            f"{type(model).__name__}.{path} has type {type(module).__name__}, not the {kind.__name__} "
            "that EPIC reads there to decompose this model exactly."
        )
    return module


def method(module: nn.Module, name: str) -> Callable[..., Any]:  # Any: what the model's own method returns
    """A module's own method that torch's types cannot see (Hiera's ``reroll``, timm's ``forward_features``)."""
    found = getattr(module, name, None)
    if not callable(found):
        raise UnsupportedModelError(f"{type(module).__name__} has no method {name!r}, which EPIC calls to read it.")
    return found


def layers(model: nn.Module, path: str) -> list[nn.Module]:
    """The modules of the ``nn.ModuleList`` or ``nn.Sequential`` at ``path``, in order (a stack of blocks or stages).

    Families keep their blocks in either container, and torch types neither's contents through attributes.
    """
    container = submodule(model, path, nn.Module)
    if not isinstance(container, (nn.ModuleList, nn.Sequential)):
        raise UnsupportedModelError(
            f"{type(model).__name__}.{path} is a {type(container).__name__}, not the list of blocks EPIC reads there."
        )
    return list(container)


def activation(module: nn.Module, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A module's activation (``mlp.act_fn`` and the like): a module, or a plain function a config can name.

    Held as a gate (``act(z) / z``), so any callable is read as it is, the way the model calls it.
    """
    found = getattr(module, name, None)
    if not callable(found):
        raise UnsupportedModelError(f"{type(module).__name__}.{name} is {found!r}, not the activation EPIC holds.")
    return found


def model_config(model: nn.Module) -> PretrainedConfig:
    """A model's transformers config; its fields depend on the family (read them with :func:`attribute`)."""
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no config; EPIC explains transformers image classifiers "
            "(load one with AutoModelForImageClassification)."
        )
    return config


def attribute(owner: object, name: str, kind: type[T] | tuple[type[T], ...]) -> T:
    """``owner.name`` (a config field, or a plain attribute of a module), checked to be a ``kind``."""
    value = getattr(owner, name, None)
    if not isinstance(value, kind):
        kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UnsupportedModelError(
            f"{type(owner).__name__}.{name} is {value!r}, not the {kinds} that EPIC reads to decompose this model."
        )
    return value


def patch_size(config: object) -> int | Sequence[int]:
    """``config.patch_size``: one side, or (height, width)."""
    size = getattr(config, "patch_size", None)
    if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 2):
        return size
    raise UnsupportedModelError(f"{type(config).__name__}.patch_size is {size!r}, not a side or a (height, width).")
