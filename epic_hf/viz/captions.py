"""Every sentence and number the pictures and the HTML report show, worded in one place.

The sheet and the report must say the same thing in the same words: the exact decomposition
with its signs, what "share" means, how much of the logit the shown channels cover, whether the
prediction was right, and what each prototype is. Both take their text from here.

Numbers use the true minus sign (U+2212) so signed columns line up; the font chain has it (and
falls back to ``-`` where no font does).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from ..results import ChannelExplanation, PrototypeMatch
from ..results import ExplanationData as Explanation  # the numbers; this module words them

MINUS = "\u2212"
SHARE_MEANING = "share = contribution ÷ Σ|contribution| over all {count} channels"
THIS_IMAGE = "this image"
LABEL_AND_KEY = re.compile(r"(?P<label>.+) (?P<key>#\d+)")  # how the data layer names an image by its label
SYNONYM_SEPARATOR = ", "  # ImageNet-style labels list synonyms: "great white shark, white shark, man-eater"


def signed(value: float, digits: int = 4) -> str:
    """``+1.2345`` or ``−1.2345``: a signed term, with a real minus sign.

    The sign is the value's own, even where the digits round to zero (``−0.000``), so a number's
    sign never disagrees with its colour.
    """
    return (MINUS if value < 0 else "+") + f"{abs(value):.{digits}f}"


def percent(fraction: float, digits: int = 1) -> str:
    """``12.3%`` or ``−0.4%`` (a real minus sign)."""
    return (MINUS if fraction < 0 else "") + f"{abs(100 * fraction):.{digits}f}%"


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 channel``, ``4 channels`` (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def channel_total(explanation: Explanation) -> float:
    """The sum of every channel's contribution (not only the shown ones)."""
    return float(explanation.contributions.double().sum())


def decomposition_terms(explanation: Explanation) -> list[tuple[str, float]]:
    """The terms that add up to the logit exactly: all channels, the CLS token if any, the bias."""
    count = explanation.contributions.numel()
    terms = [(f"all {plural(count, 'channel')}", channel_total(explanation))]
    if explanation.cls_contribution != 0.0:
        terms.append((f"CLS token's own part; patches carry {explanation.patch_share:.0%}",
                      float(explanation.cls_contribution)))
    terms.append(("bias", float(explanation.bias)))
    return terms


def decomposition_equation(explanation: Explanation, digits: int = 4) -> str:
    """One line: ``logit +7.8512 = +5.1234 (all 512 channels) + 1.2345 (bias)``."""
    parts = []
    for index, (name, value) in enumerate(decomposition_terms(explanation)):
        number = signed(value, digits)
        parts.append(f"{number} ({name})" if index == 0 else f"{number[0]} {number[1:]} ({name})")
    return f"logit {signed(explanation.target_logit, digits)} = " + " ".join(parts)


def coverage_line(explanation: Explanation, shown: Sequence[ChannelExplanation]) -> str:
    """How much of the logit the shown channels carry together, as a number and a percentage.

    The percentage is of the logit itself, so it is given only where the logit is positive
    (a fraction of a negative or zero logit reads backwards). It can pass 100% while each
    channel's share is small: :func:`others_line` says why (the other channels' sum).
    """
    total = sum(float(c.contribution) for c in shown)
    head = f"{'this' if len(shown) == 1 else 'these'} {plural(len(shown), 'channel')}: {signed(total)}"
    logit = explanation.target_logit
    if logit > 0:
        return f"{head} = {percent(total / logit)} of the logit"
    return f"{head} of the logit {signed(logit)}"


def others_line(explanation: Explanation, shown: Sequence[ChannelExplanation]) -> str:
    """What the channels not shown add together: why the shown ones can carry over 100% of the logit.

    Beside "share" (a channel's part of Σ|contribution|, small when many channels fire), the two
    percentages read as a contradiction unless the reader sees that the rest sum to a negative amount.
    """
    rest = channel_total(explanation) - sum(float(c.contribution) for c in shown)
    count = explanation.contributions.numel() - len(shown)
    if count <= 0:
        return "no other channels"
    return f"the other {plural(count, 'channel')} add {signed(rest)} together"


def share_meaning(explanation: Explanation) -> str:
    return SHARE_MEANING.format(count=explanation.contributions.numel())


def ranking_note(shown: int, total: int) -> str:
    """The legend's header: how the channels were chosen, and how many the picture leaves out."""
    note = f"top {plural(shown, 'channel')} by positive evidence"
    return note if total <= shown else f"{note} ({total - shown} more in to_dict())"


def title_numbers(explanation: Explanation) -> str:
    """The title's second line: probability, logit, class, the model's own guess if it differs, file."""
    parts = [
        f"p = {100 * explanation.probability:.1f}%",
        f"logit {signed(explanation.target_logit, 3)}",
        f"class {explanation.target_index}",
    ]
    if explanation.predicted_index != explanation.target_index:
        parts.append(f"the model predicts {explanation.predicted_label}")
    if explanation.source:
        parts.append(f"file {explanation.source}")
    return "   ·   ".join(parts)


def verdict(explanation: Explanation) -> tuple[str, bool] | None:
    """(``correct``, True) or (``MISS: true class X``, False); None when the true label is unknown."""
    correct = explanation.is_correct
    if correct is None:
        return None
    return ("correct", True) if correct else (f"MISS: true class {explanation.true_label}", False)


def prototype_name(prototype: PrototypeMatch) -> str:
    """The prototype's display name: its file or dataset name, else ``#<sample key>``."""
    return prototype.name if prototype.name else f"#{prototype.sample_key}"


class TextFitter(Protocol):
    """What a caption is cut with: a font that measures text and cuts it with an ellipsis."""

    def getlength(self, text: str) -> float: ...

    def fit(self, text: str, max_width: float, middle: bool = False, tail: bool = False) -> str: ...


def short_prototype_name(name: str, font: TextFitter, room: float) -> str:
    """``name`` cut to ``room`` (in ``font``) where its useful part survives.

    A name made from a dataset label (``label #key``) reads from its start: a label's first words
    say what it is ("great white shark, white shark, man-eater, ..."), so it keeps its first
    synonym, then as much of its start as fits, always with its ``#key``. Any other name is a
    file name, whose useful part is its end (``…animals_0042.jpg (animals)``).
    """
    if font.getlength(name) <= room:
        return name
    match = LABEL_AND_KEY.fullmatch(name)
    if match is None:
        return font.fit(name, room, tail=True)
    suffix = " " + match.group("key")
    label_room = room - font.getlength(suffix)
    if label_room < 2 * font.getlength("…"):  # no room for a word of the label: the key alone
        return font.fit(suffix.strip(), room)
    return font.fit(match.group("label").split(SYNONYM_SEPARATOR)[0], label_room) + suffix


def prototype_caption(prototype: PrototypeMatch) -> tuple[str, str]:
    """(name, score) for a prototype's caption; the explained image itself is ``this image``."""
    name = THIS_IMAGE if prototype.is_query else prototype_name(prototype)
    return name, f"{prototype.score:.2f}"


def legend_fields(explanation: Explanation, channel: ChannelExplanation) -> tuple[str, str, str]:
    """(``channel 12``, ``+1.234``, ``12.3%``): a legend entry's columns."""
    share = explanation.share(channel.contribution)
    return f"channel {channel.channel}", signed(channel.contribution, 3), percent(share)
