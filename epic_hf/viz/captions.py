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
#: The CLS term's name in the decomposition, and what it means (models that read a CLS token).
CLS_TERM = "CLS token's own part"
CLS_MEANING = "CLS part: the class token's own embedding and the biases, via no patch"
PATCH_SHARE_MEANING = "the image patches carry {share:.0%} of Σ|contribution|, the CLS part the rest"
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
        terms.append((CLS_TERM, float(explanation.cls_contribution)))
    terms.append(("bias", float(explanation.bias)))
    return terms


def cls_meaning(explanation: Explanation) -> list[str]:
    """What the CLS term is, in plain words, and how much the patches carry; empty without one.

    Why: "CLS token's own part" alone reads as jargon. It is what reaches the class token through
    no image patch: its own embedding, and every bias and LayerNorm shift of the model (the held
    split's convention), so no box or heatmap can show it; the patches' share says how much of the
    evidence the map does show.
    """
    if explanation.cls_contribution == 0.0:
        return []
    return [CLS_MEANING, PATCH_SHARE_MEANING.format(share=explanation.patch_share)]


def decomposition_equation(explanation: Explanation, digits: int = 4) -> str:
    """One line: ``logit +7.8512 = +5.1234 (all 512 channels) + 1.2345 (bias)``."""
    parts = []
    for index, (name, value) in enumerate(decomposition_terms(explanation)):
        number = signed(value, digits)
        parts.append(f"{number} ({name})" if index == 0 else f"{number[0]} {number[1:]} ({name})")
    return f"logit {signed(explanation.target_logit, digits)} = " + " ".join(parts)


def coverage_line(explanation: Explanation, shown: Sequence[ChannelExplanation]) -> str:
    """What the shown channels add together, next to the logit itself.

    A percentage of the logit is given only where it reads plainly: a positive logit and a sum
    between 0 and the logit. Past 100% ("123.4% of the logit") or below 0 a percentage puzzles
    readers, so the two numbers stand side by side and :func:`others_line` says what the rest
    adds or takes away.
    """
    total = sum(float(c.contribution) for c in shown)
    count = len(shown)
    head = f"the {'channel' if count == 1 else plural(count, 'channel')} shown {'adds' if count == 1 else 'add'}"
    logit = explanation.target_logit
    if logit > 0 and 0 <= total <= logit:
        return f"{head} {signed(total)}, {percent(total / logit)} of the logit {signed(logit)}"
    return f"{head} {signed(total)}; the logit is {signed(logit)}"


def others_line(explanation: Explanation, shown: Sequence[ChannelExplanation]) -> str:
    """What every other term adds to the shown channels' sum to make the logit (or takes away).

    Beside "share" (a channel's part of Σ|contribution|, small when many channels fire) and a
    shown sum larger than the logit, the numbers read as a contradiction unless the reader sees
    what the rest (the other channels, the CLS token's own part, the bias) adds up to.
    """
    rest = explanation.target_logit - sum(float(c.contribution) for c in shown)
    count = explanation.contributions.numel() - len(shown)
    names = [f"the other {plural(count, 'channel')}"] if count > 0 else []
    if explanation.cls_contribution != 0.0:
        names.append("the CLS part")
    names.append("the bias")
    subject = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    verb = "adds" if len(names) == 1 else "add"
    if rest < 0:
        verb = "takes away" if len(names) == 1 else "take away"
    return f"{subject} {verb} {abs(rest):.4f}" if rest < 0 else f"{subject} {verb} {signed(rest)}"


def shared_cells(shown: Sequence[ChannelExplanation]) -> list[list[int]]:
    """Slots of the shown channels that peak in the same cell (same box), groups of two or more.

    Why: channels that peak in one cell draw one box on the input and near-identical patch and
    heatmap cells in their rows; without saying so the rows look like a rendering bug.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for slot, channel in enumerate(shown):
        groups.setdefault(tuple(int(v) for v in channel.box), []).append(slot)
    return [slots for slots in groups.values() if len(slots) > 1]


def shared_cell_notes(shown: Sequence[ChannelExplanation]) -> list[str]:
    """One line per group of :func:`shared_cells`: ``channels 3, 7 and 12 peak in the same cell``."""
    notes = []
    for slots in shared_cells(shown):
        ids = [str(shown[slot].channel) for slot in slots]
        notes.append(f"channels {', '.join(ids[:-1])} and {ids[-1]} peak in the same cell (nested boxes)")
    return notes


def same_cell_as(shown: Sequence[ChannelExplanation], slot: int) -> str | None:
    """A row's note, ``same cell as channel 57``, for a channel whose cell an earlier shown one peaks in."""
    for slots in shared_cells(shown):
        if slot in slots and slots[0] != slot:
            return f"same cell as channel {shown[slots[0]].channel}"
    return None


def share_meaning(explanation: Explanation) -> str:
    return SHARE_MEANING.format(count=explanation.contributions.numel())


def ranking_note(shown: int, total: int) -> str:
    """The legend's header: how the channels were chosen, and how many the picture leaves out."""
    note = f"top {plural(shown, 'channel')} by positive evidence"
    return note if total <= shown else f"{note} ({total - shown} more in to_dict())"


def title_numbers(explanation: Explanation, overlay: str | Sequence[int] | None = None) -> str:
    """The title's second line: probability, logit, class, the model's own guess if it differs, file, and
    which channels' pixel map lies over the input (``overlay``, as :func:`render_explanation` takes it)."""
    parts = [
        f"p = {100 * explanation.probability:.1f}%",
        f"logit {signed(explanation.target_logit, 3)}",
        f"class {explanation.target_index}",
    ]
    if explanation.predicted_index != explanation.target_index:
        parts.append(f"the model predicts {explanation.predicted_label}")
    if explanation.source:
        parts.append(f"file {explanation.source}")
    if overlay is not None:
        parts.append(f"heat: {overlay_text(overlay)}")
    return "   ·   ".join(parts)


def overlay_text(overlay: str | Sequence[int]) -> str:
    """What an overlaid pixel map sums, in words: 'the shown channels' map', 'channels 3, 7's map'."""
    if overlay == "shown":
        return "the shown channels' pixel map"
    if overlay == "all":
        return "all channels' pixel map (the CAM)"
    indices = [int(c) for c in overlay]
    return f"channel{'s' if len(indices) != 1 else ''} {', '.join(map(str, indices))}'s pixel map"


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
    return channel_title(channel.channel, channel.part), signed(channel.contribution, 3), percent(share)


def channel_title(channel: int, part: tuple[str, float] | None = None) -> str:
    """``channel 17``, or ``channel 17 · beak, 0.82`` where an evaluation named the channel by its best annotated part
    (and that part's purity): a number alone says nothing about what the channel finds."""
    return f"channel {channel}" if part is None else f"channel {channel} · {part[0]}, {part[1]:.2f}"
