"""Exceptions that name what went wrong and what to do about it."""

from __future__ import annotations

import math


class EpicError(Exception):
    """Base class of every error epic_hf raises on purpose."""


class UnsupportedModelError(EpicError, ValueError):
    """The classifier cannot be decomposed exactly into channel contributions.

    Raised at load time, before any work is done, so that a user never gets an
    explanation that does not add up to the model's own logits.
    """


class BankMismatchError(EpicError, ValueError):
    """A prototype bank does not belong to the model it is paired with."""


class BankFormatError(EpicError, ValueError):
    """A bank file is corrupt, truncated or written by an unknown format version."""


class CheckpointMismatchError(EpicError, ValueError):
    """A fit's ``output_dir`` holds a checkpoint made with other arguments."""


class OutputDirLockedError(EpicError, RuntimeError):
    """Another run (a fit or an evaluation) is writing to the same output directory."""


class BaseModelNotFoundError(EpicError, FileNotFoundError):
    """A bank's base model is not where the bank says it is (pass ``base_model=``)."""


class HubUnreachableError(EpicError, ConnectionError):
    """The Hugging Face Hub cannot be reached and the files are not in the local cache."""


class EmptyDatasetError(EpicError, ValueError):
    """A fit's or an evaluation's input holds no images: an empty folder, a Dataset of 0 rows, a stream that ends at once.

    Raised while the input is opened, before any output directory is made, so that a run on
    nothing fails with one line that names the input, and leaves nothing behind.
    """


class UnreadableImageError(EpicError, ValueError):
    """Input ``position`` is not an image this package can read; ``reason`` says why, without the position.

    Typed, so that callers that skip unreadable inputs (a fit, ``epic-hf explain DIR``) report the
    reason and renumber the position without parsing a message.
    """

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"input {position}: {reason}")
        self.position = int(position)
        self.reason = reason

    def shifted(self, offset: int) -> UnreadableImageError:
        """The same error for a batch that starts at ``offset`` of a longer list."""
        return UnreadableImageError(self.position + offset, self.reason)


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about values read from files.

    A hostile file's value may be megabytes long or hold control characters: ``repr`` escapes
    the characters, and the cut keeps an error to one readable line.
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 15]}...({len(text)} chars)"


class DecompositionError(EpicError, RuntimeError):
    """The terms of a decomposition do not add up to the logits the model's own forward returned.

    Raised per batch, instead of presenting an explanation that is no longer the model's: the model
    was changed after it was loaded (a forward hook on its classifier, new weights), or ran in a
    precision the decomposition cannot follow. ``gap`` is relative to the image's largest |logit|.
    """

    def __init__(self, *, model_type: str, class_index: int, label: str, gap: float, tolerance: float,
                 image: int = 0, what: str = "the decomposition") -> None:
        off = (f"is off by {gap:.3g} relative to its largest |logit|, above the {tolerance:.0e} tolerance"
               if math.isfinite(gap) else "is not a finite number (NaN or inf) in the logits or the terms")
        super().__init__(
            f"{what} of the {model_type!r} model does not reproduce its own logits: image {image}, class "
            f"{class_index} ({label!r}) {off}. Was the model changed after loading (a hook on its head, new "
            "weights)? Load it again with EpicExplainer.from_pretrained, or remove the change."
        )
        self.model_type = model_type
        self.class_index = class_index
        self.label = label
        self.gap = gap
        self.tolerance = tolerance
        self.image = image
