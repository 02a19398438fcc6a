"""The registry of timm head readers: which reader serves a timm model, and every refusal that names one.

A timm classifier is ``forward_head(forward_features(x))``, and timm writes its heads in many
ways. Each way EPIC reads exactly is one small reader class (in :mod:`.timm_heads`,
:mod:`.timm_gated` and :mod:`.timm_vit`) registered here with :func:`register_head_reader`. A
reader declares what it matches, reads the head, and carries its coverage (the architectures
tested and checked, and what it refuses and why): docs/supported_models.md's timm section, the
list of supported heads in every refusal and ``TimmWrapperAdapter``'s doc are generated from the
readers, never written by hand.

Which reader runs is decided, not tried: a reader matches either by name (the timm class of the
model or of its head: ``specific``) or by the kind of pool the model holds (a ``SelectAdaptivePool2d``
or a pool named by a string: the general readers). A model named by a specific reader is read by
it; otherwise by the one general reader that matches. Two readers of one rank matching the same
model is a bug in the registry and raises. timm is never imported here (an optional extra): classes
are compared by their qualified names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from ..errors import UnsupportedModelError

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def qualified(obj: object) -> str:
    """``module.qualname`` of an object's class: how timm classes are named without importing timm."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


#: The ``global_pool`` values that are an average over space (timm spells it three ways).
AVERAGE_POOLS = ("avg", "fast", "fastavg")

POOL_REASONS = {
    "token": "classifies from its CLS token (global_pool='token'), which is not an average of the patch tokens",
    "map": "pools its tokens with attention (global_pool='map'), whose weights depend on the input",
    "": "has no global pool (global_pool='')",
}


class TimmReader:
    """One way of reading a timm head exactly; subclasses say what they match and how they read it.

    ``name`` names the reader in errors; ``serves`` is one phrase for the list of supported heads;
    ``how`` one line on how F and (A, b) are read. Coverage: ``tested`` (architecture -> how, for the
    tiny models ``tests/test_timm.py`` decomposes), ``checked`` (architectures checked once at full
    size) and ``refused`` (what the reader refuses -> why).
    """

    name: ClassVar[str] = ""
    serves: ClassVar[str] = ""
    how: ClassVar[str] = ""
    #: True: the reader names the classes it serves (of the model or its head); False: it matches by
    #: the kind of pool alone, and runs only where no specific reader names the model.
    specific: ClassVar[bool] = True
    tested: ClassVar[dict[str, str]] = {}
    checked: ClassVar[tuple[str, ...]] = ()
    refused: ClassVar[dict[str, str]] = {}

    def matches(self, timm_model: nn.Module) -> bool:
        raise NotImplementedError

    def rows(self) -> list[tuple[str, str, str]]:
        """This reader's rows of the timm table: (architecture, status, the reader and how it reads F and (A, b), or why not)."""
        rows = [(name, "exact (tested)", f"{self.name}: {how}") for name, how in self.tested.items()]
        if self.checked:
            rows.append((", ".join(self.checked), "exact (checked once at full size, timm 1.0.31)",
                         f"{self.name}: {self.how}"))
        return rows + [(name, "refused", f"{self.name}: {why}") for name, why in self.refused.items()]


#: The registered readers, in registration order (the order of the docs).
HEAD_READERS: list[TimmReader] = []


def register_head_reader(reader: type[TimmReader]) -> type[TimmReader]:
    """Class decorator: register one instance of ``reader``; a second reader of the same name is refused."""
    if not reader.name or not reader.serves:
        raise ValueError(f"{reader.__name__} sets no name or serves: nothing to register")
    if any(existing.name == reader.name for existing in HEAD_READERS):
        raise ValueError(f"a timm head reader named {reader.name!r} is already registered")
    HEAD_READERS.append(reader())
    return reader


def supported_heads() -> str:
    """Every registered reader's phrase: the list of supported timm heads, generated."""
    phrases = "; ".join(f"{reader.serves} ({reader.name})" for reader in HEAD_READERS)
    return f"{phrases}; docs/supported_models.md lists every architecture tested and checked"


@dataclass(frozen=True)
class Where:
    """The timm model being read, and by which reader: what every refusal names."""

    architecture: str
    class_name: str = ""
    reader: str = ""

    def __str__(self) -> str:
        who = f"{self.architecture!r} ({self.class_name})" if self.class_name else repr(self.architecture)
        return f"timm architecture {who}" + (f", read by timm head reader {self.reader!r}," if self.reader else "")

    def refuse(self, what: str, hint: str = "") -> UnsupportedModelError:
        """The error for a head EPIC cannot decompose: the architecture, the reader, what breaks, what works."""
        return UnsupportedModelError(
            f"{self} {what}, so its logits are not A . avg_hw(F) + b and EPIC cannot decompose them "
            f"exactly.{' ' + hint if hint else ''} Supported timm heads: {supported_heads()}."
        )


def reader_for(timm_model: nn.Module, architecture: str) -> TimmReader:
    """The one registered reader that serves ``timm_model``: a specific one that names it, else a general one.

    Refuses a model no reader matches, naming every reader; raises RuntimeError if two readers of one
    rank match (the registry's bug, not the model's).
    """
    for specific in (True, False):
        found = [reader for reader in HEAD_READERS if reader.specific is specific and reader.matches(timm_model)]
        if len(found) > 1:
            raise RuntimeError(f"timm head readers {', '.join(r.name for r in found)} all match "
                               f"{type(timm_model).__name__}: a reader's match is too broad")
        if found:
            return found[0]
    raise Where(architecture, type(timm_model).__name__).refuse(
        "has a head that no timm head reader matches (none names its class or its head's, and it holds "
        "neither a SelectAdaptivePool2d nor a global_pool named by a string)")


def check_pool_type(pool_type: str, where: Where) -> None:
    """Refuse every global pool but an average (timm spells it 'avg', 'fast' or 'fastavg')."""
    if pool_type.lower() in AVERAGE_POOLS:
        return
    what = POOL_REASONS.get(pool_type, f"pools with global_pool={pool_type!r}: a maximum over space is "
                             "not linear in the feature map")
    hint = "A plain VisionTransformer with global_pool='token' is supported." if pool_type == "token" else ""
    raise where.refuse(what, hint)


def check_timm_config(config: PretrainedConfig) -> None:
    """Refuse from config.json alone what it already tells: a pool that is neither an average nor the CLS token.

    ``config`` is a TimmWrapperConfig, whose fields are timm's own (read with ``getattr``). A token-pooled model is
    left to its reader (a VisionTransformer's CLS token is split by the held linearisation).
    """
    architecture = str(getattr(config, "architecture", "?"))
    pool = (getattr(config, "model_args", None) or {}).get("global_pool", getattr(config, "global_pool", None))
    if isinstance(pool, str) and pool != "token":
        check_pool_type(pool, Where(architecture))
