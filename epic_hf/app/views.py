"""What the app shows, as plain values: no gradio here, so every view is testable and reusable.

Each function turns the explainer's results into what a page shows: the upload read safely, the
prediction as label -> probability, the exact decomposition as a Markdown table whose terms add up
to the logit, a channel's prototypes with the classes it drives, and a class's channels. The page
(:mod:`epic_hf.app.page`) only wires these to components.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from PIL import Image, UnidentifiedImageError

from ..atomic import atomic_path, write_atomic
from ..errors import UnreadableImageError
from ..images import to_rgb
from ..results import ExplanationData
from ..viz import render_prototype_sheet
from ..viz.captions import (
    channel_title,
    cls_meaning,
    coverage_line,
    decomposition_terms,
    legend_fields,
    others_line,
    plural,
    share_meaning,
    signed,
)

if TYPE_CHECKING:  # annotations only
    from ..bank import PrototypeBank
    from ..explanation import Explanation


class AppExplainer(Protocol):
    """What the app reads from an explainer (an :class:`~epic_hf.EpicExplainer` with a bank).

    A Protocol because ``EpicExplainer.launch`` imports the app: the app naming the explainer's
    class back would make a cycle.
    """

    @property
    def bank(self) -> PrototypeBank | None: ...

    @property
    def id2label(self) -> dict[int, str]: ...

    @property
    def base_model_name_or_path(self) -> str | None: ...

    def explain(self, image: Image.Image, target: int | str | None = None, top_k: int = 4) -> Explanation: ...

logger = logging.getLogger(__name__)

#: Uploads above these are refused with a message, before any decoding: an app must keep serving.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
PREDICTED = "the predicted class"


class BadUploadError(UnreadableImageError):
    """An upload the app will not explain; the message is shown in the page as it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(0, reason)
        self.args = (reason,)


def upload_path(payload: object) -> Path:
    """The local file of an upload: gradio's file payload (a dict with ``path``), or a path."""
    if isinstance(payload, dict):
        payload = payload.get("path")
    if not payload:
        raise BadUploadError("no image: drop, paste or upload one, or pick an example")
    return Path(str(payload))


def read_upload(payload: object) -> Image.Image:
    """The uploaded image as RGB, or :class:`BadUploadError` saying what is wrong with it.

    Checks the size on disk and the pixel count (read from the header, before decoding), so a
    huge file or a decompression bomb costs nothing; then decodes as every input is decoded
    (:func:`epic_hf.images.to_rgb`: EXIF orientation, any mode), which refuses truncated files.
    """
    path = upload_path(payload)
    if not path.is_file():
        raise BadUploadError("the upload did not arrive: try again")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise BadUploadError(f"the file is {size / 2**20:.1f} MB; the app takes images up to "
                             f"{MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        with Image.open(path) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise BadUploadError("this file is not an image the app can read (PNG, JPEG, WebP, GIF, BMP, TIFF)") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise BadUploadError(f"the image is {width} x {height} pixels; the app takes up to "
                             f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels: make it smaller first")
    try:
        return to_rgb(path)
    except UnreadableImageError:
        raise BadUploadError("the image could not be decoded: the file is damaged or truncated") from None


def target_choices(id2label: dict[int, str]) -> list[str]:
    """The class picker's entries: the predicted class first, then ``index: label`` for every class."""
    return [PREDICTED] + [f"{index}: {label}" for index, label in sorted(id2label.items())]


def parse_target(choice: object) -> int | None:
    """The class index of a picker entry (None for the predicted class)."""
    if choice in (None, "", PREDICTED):
        return None
    if isinstance(choice, int):
        return choice
    head = str(choice).split(":", 1)[0].strip()
    if not head.lstrip("-").isdigit():
        raise ValueError(f"unknown class {choice!r}: pick one from the list")
    return int(head)


def prediction(explanation: ExplanationData, top: int = 5) -> dict[str, float]:
    """The model's top classes with their softmax probabilities (for a label component)."""
    probabilities = torch.softmax(explanation.logits.double(), dim=0)
    values, indices = probabilities.topk(min(top, probabilities.numel()))
    names = explanation.id2label
    return {names.get(int(i), str(int(i))): float(v) for v, i in zip(values, indices)}


def md_text(text: str) -> str:
    """Text for a Markdown table cell: labels are data, so characters Markdown reads are escaped."""
    return "".join("\\" + c if c in "\\`*_{}[]<>()#+-!|~" else c for c in text).replace("\n", " ")


def decomposition_markdown(explanation: ExplanationData) -> str:
    """The exact decomposition as a table (each term, then their sum, the logit) and the shown channels.

    Why a table: a reader checks that the terms add up. The numbers are the explanation's own
    (``contributions.sum() + cls_contribution + bias``), so the sum shown is the model's logit.
    """
    terms = decomposition_terms(explanation)
    total = math.fsum(value for _, value in terms)
    rows = [f"| {md_text(name)} | {signed(value)} |" for name, value in terms]
    lines = [
        f"**{md_text(explanation.target_label)}** (class {explanation.target_index}) · "
        f"p = {100 * explanation.probability:.1f}%",
        "",
        "| exact decomposition of the logit | value |",
        "| --- | ---: |",
        *rows,
        f"| **sum = the model's logit** | **{signed(explanation.target_logit)}** |",
        "",
        f"The terms sum to {signed(total)}; the model's logit is {signed(explanation.target_logit)}.",
        "",
        md_text(coverage_line(explanation, explanation.channels)) + "; "
        + md_text(others_line(explanation, explanation.channels)) + ".",
        "",
        "| channel | contribution | share |",
        "| --- | ---: | ---: |",
    ]
    for channel in explanation.channels:
        name, contribution, share = legend_fields(explanation, channel)
        lines.append(f"| {name} | {contribution} | {share} |")
    lines += ["", f"*{md_text(share_meaning(explanation))}.*"]
    lines += [f"*{md_text(line)}.*" for line in cls_meaning(explanation)]  # what the CLS term is, in words
    return "\n".join(lines)


def channel_markdown(bank: PrototypeBank, channel: int, top: int = 5) -> str:
    """The classes ``channel`` drives most, from the bank's class evidence (mean contribution to their logits)."""
    head = f"### {md_text(channel_title(channel, bank.channel_part(channel)))}\n\n"
    head += f"{plural(bank.prototypes_per_channel, 'prototype')}, best first."
    evidence = bank.class_evidence
    if evidence is None:
        return head + "\n\nThis bank has no class evidence (it was fit by an older epic_hf)."
    column = torch.nan_to_num(evidence[:, channel].double())
    values, indices = column.topk(min(top, column.numel()))
    names = bank.id2label or {}
    rows = [f"| {md_text(names.get(int(k), f'class {int(k)}'))} | {signed(float(v))} |"
            for v, k in zip(values, indices) if float(v) > 0]
    if not rows:
        return head + "\n\nNo class gets positive evidence from this channel."
    return "\n".join([head, "", "| classes it drives most | mean evidence |", "| --- | ---: |", *rows])


def channel_view(bank: PrototypeBank, channel: int) -> tuple[Image.Image, str]:
    """All prototypes of ``channel`` (boxes and zoomed patches) and the classes it drives most."""
    if not 0 <= channel < bank.num_channels:
        raise ValueError(f"there is no channel {channel}: this bank has channels 0 to {bank.num_channels - 1}")
    return render_prototype_sheet(bank, channel), channel_markdown(bank, channel)


def class_view(bank: PrototypeBank, label: int | str, top: int = 4) -> tuple[str, list[tuple[Image.Image, str]]]:
    """What the model looks for in a class: its channels from ``class_channels``, each with its prototypes."""
    index = bank.class_index(label)
    name = (bank.id2label or {}).get(index, f"class {index}")
    counts = bank.class_counts
    count = int(counts[index]) if counts is not None else None
    channels = [(c, v) for c, v in bank.class_channels(index, top)]
    head = f"### {md_text(name)} (class {index})"
    if count is not None:
        head += f"\n\n{plural(count, 'fit sample')} predicted as this class."
    if count == 0 or not any(v > 0 for _, v in channels):
        return head + "\n\nNo evidence: no fit sample was predicted as this class, so the bank cannot say " \
                      "which channels it relies on.", []
    rows = [f"| {md_text(channel_title(c, bank.channel_part(c)))} | {signed(v)} |" for c, v in channels if v > 0]
    text = "\n".join([head, "", "| channels it relies on most | mean contribution |", "| --- | ---: |", *rows])
    return text, [(render_prototype_sheet(bank, c), channel_title(c, bank.channel_part(c))) for c, v in channels
                  if v > 0]


#: How many of its own pictures the app keeps on disk: gradio copies each one into its cache as it
#: answers, so older ones are only kept to let a slow page finish loading them.
KEEP_PICTURES = 64


def picture_file(image: Image.Image, directory: Path, keep: int = KEEP_PICTURES) -> str:
    """``image`` written as a high-quality JPEG in ``directory``; returns its path, for the page to serve.

    The oldest pictures beyond the newest ``keep`` are removed, so an app that serves for days
    does not fill its disk.

    Why not hand gradio the PIL image: gradio would encode it as PNG at the default level, which
    for a sheet of 1800 x 1000 pixels costs 0.2 s, as much as the explanation itself on a small
    model. JPEG at quality 92 without chroma subsampling keeps the text sharp and takes 10 ms.
    """
    directory.mkdir(parents=True, exist_ok=True)
    # the name starts with the time, so sorting names sorts by age (two handlers may write at once)
    name = str(directory / f"{time.time_ns():020d}_{secrets.token_hex(4)}.jpg")
    with atomic_path(name) as partial:
        image.convert("RGB").save(partial, format="JPEG", quality=92, subsampling=0)
    # "[0-9]*": never another handler's picture still being written (epic_hf.atomic's hidden partial file)
    for old in sorted(directory.glob("[0-9]*.jpg"))[:-keep] if keep > 0 else []:
        if str(old) != name:
            old.unlink(missing_ok=True)
    return name


def example_files(bank: PrototypeBank, directory: Path, count: int = 6) -> list[str]:
    """The bank's own prototype thumbnails as example files (the top prototype of the first channels)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for key in dict.fromkeys(bank.sample_keys[:, 0].tolist() + bank.sample_keys.flatten().tolist()):
        if len(paths) >= count:
            break
        if int(key) not in bank.thumbnails:
            continue
        path = directory / f"prototype_{int(key)}.jpg"
        write_atomic(path, bank.thumbnails[int(key)])
        paths.append(str(path))
    return paths
