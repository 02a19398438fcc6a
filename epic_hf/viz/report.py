"""A single, self-contained HTML page for a batch of explanations.

One file a user can e-mail, attach to an issue or open offline: UTF-8, inline CSS, images
embedded as ``data:image/png;base64`` URIs, no scripts and no external resources. Every piece
of text (labels come from model configs, file names from users' disks) goes through
``html.escape``. Each section names its input file and, when the writer is told where they
are, links to the explanation's PNG and JSON next to the page; files that could not be read are
listed at the top, so a batch that lost images says so.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeGuard, cast
from urllib.parse import quote

from PIL import Image

from ..atomic import write_atomic
from ..results import ChannelExplanation
from ..results import ExplanationData as Explanation  # the numbers; this module draws them
from .captions import (
    channel_total,
    coverage_line,
    decomposition_equation,
    others_line,
    percent,
    plural,
    prototype_caption,
    share_meaning,
    shared_cell_notes,
    signed,
    verdict,
)
from .colors import channel_color
from .fonts import printable
from .sheet import render_explanation

PathLike = str | os.PathLike

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Noto Sans", Helvetica, Arial, sans-serif; color: #1c1c20;
       margin: 0; background: #fafafc; }
main { max-width: 1400px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; font-weight: 600; margin: 8px 0 4px; }
.subtitle { color: #6e6e76; margin: 0 0 24px; }
section { background: #fff; border: 1px solid #e2e2e8; border-radius: 8px; padding: 20px 24px;
          margin: 0 0 28px; }
section.skipped { border-color: #e8c7a0; background: #fffaf3; }
h2 { font-size: 20px; font-weight: 600; margin: 0 0 4px; }
.file { margin: 0 0 4px; font-size: 14px; }
.file code { font-size: 13px; background: #f2f2f6; padding: 1px 5px; border-radius: 3px; }
.numbers { color: #6e6e76; margin: 0 0 16px; }
.tag { display: inline-block; font-size: 13px; font-weight: 600; color: #fff; border-radius: 4px;
       padding: 2px 8px; margin-left: 10px; vertical-align: 3px; }
.tag.hit { background: #147a3c; }
.tag.miss { background: #be1e2d; }
.figure { max-width: 100%; height: auto; display: block; margin: 0 0 16px; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0 0 14px; font-size: 14px; }
th, td { padding: 5px 12px; text-align: left; border-bottom: 1px solid #ececf0; }
th { color: #6e6e76; font-weight: 500; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
          vertical-align: -1px; }
.coverage { font-size: 14px; margin: 0 0 4px; }
.meaning { font-size: 13px; color: #6e6e76; margin: 0 0 12px; }
.exact { font-size: 14px; color: #3a3a40; background: #f4f6f4; border-left: 3px solid #147a3c;
         padding: 8px 12px; margin: 0; }
"""


def write_html_report(
    explanations: Explanation | Sequence[Explanation],
    path: PathLike,
    title: str = "EPIC explanations",
    *,
    png_paths: Sequence[PathLike | None] | None = None,
    json_paths: Sequence[PathLike | None] | None = None,
    skipped: Sequence[str] | None = None,
) -> Path:
    """Write one self-contained HTML page with a section per explanation; returns its path.

    Each section names its input file (``Explanation.source``), shows the true label and a
    ``correct`` / ``MISS`` tag when known, the rendered figure, the prediction, a table of the
    shown channels and the exactness check with the actual numbers.

    Args:
        png_paths, json_paths: per explanation, where its saved PNG / JSON is (or None); the
            section links to them, relative to the page.
        skipped: input files that could not be read (``"path"`` or ``"path: reason"``); the page
            lists them at the top.
    """
    items = _as_list(explanations)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_html_report(
        items, title, png_links=_links(png_paths, len(items), path.parent, "png_paths"),
        json_links=_links(json_paths, len(items), path.parent, "json_paths"), skipped=skipped,
    )
    write_atomic(path, page)
    return path


def render_html_report(
    explanations: Iterable[Explanation],
    title: str = "EPIC explanations",
    *,
    png_links: Sequence[str | None] | None = None,
    json_links: Sequence[str | None] | None = None,
    skipped: Sequence[str] | None = None,
) -> str:
    """The HTML text of :func:`write_html_report` (links given as ready-made hrefs)."""
    items = list(explanations)
    pngs = list(png_links) if png_links is not None else [None] * len(items)
    jsons = list(json_links) if json_links is not None else [None] * len(items)
    sections = "\n".join(
        _section(index, explanation, pngs[index - 1], jsons[index - 1])
        for index, explanation in enumerate(items, start=1)
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class=\"subtitle\">{_subtitle(items)}</p>\n"
        f"{_skipped_section(skipped or [])}{sections}\n</main>\n</body>\n</html>\n"
    )


def explanation_html(explanation: Explanation) -> str:
    """A compact HTML view of one explanation (for notebooks): headline, figure, decomposition."""
    tag = _tag(explanation)
    return (
        f"<div><strong>{html.escape(explanation.target_label)}</strong>{tag} "
        f"<span style=\"color:#6e6e76\">{_numbers(explanation)}</span><br>"
        f"<img src=\"{png_data_uri(render_explanation(explanation))}\" style=\"max-width:100%\" "
        f"alt=\"{html.escape(_alt(explanation), quote=True)}\"><br>"
        f"<code>{html.escape(decomposition_equation(explanation))}</code></div>"
    )


def png_data_uri(image: Image.Image) -> str:
    """``data:image/png;base64,...`` for ``image``: pictures travel inside the page."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _as_list(explanations: Explanation | Iterable[Explanation]) -> list[Explanation]:
    """One explanation or a sequence of them (checked by shape: this module imports no results)."""
    if _is_explanation(explanations):
        return [explanations]
    items = list(cast("Iterable[Explanation]", explanations))  # not one explanation: the sequence of them
    for position, item in enumerate(items):
        if not _is_explanation(item):
            raise TypeError(f"item {position} is a {type(item).__name__}, not an Explanation")
    return items


def _is_explanation(value: object) -> TypeGuard[Explanation]:
    return all(hasattr(value, name) for name in ("channels", "contributions", "to_image", "target_label"))


def _links(paths: Sequence[PathLike | None] | None, count: int, base: Path, name: str) -> list[str | None] | None:
    """hrefs to ``paths`` relative to the page's folder (a file URI where no relative path exists)."""
    if paths is None:
        return None
    if len(paths) != count:
        raise ValueError(f"{name} has {len(paths)} entries for {count} explanations")
    links: list[str | None] = []
    for path in paths:
        if path is None:
            links.append(None)
            continue
        try:
            links.append(quote(Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()))
        except ValueError:  # another drive on Windows
            links.append(Path(path).resolve().as_uri())
    return links


def _subtitle(items: list[Explanation]) -> str:
    """What the page shows; with the CLS term, in plain words, for models that have one."""
    text = f"{plural(len(items), 'explanation')} &middot; EPIC prototype explanations: each logit is decomposed "
    if any(e.cls_contribution != 0.0 for e in items):
        text += ("exactly into disentangled channel contributions, the CLS token's own part (what reaches the "
                 "class token through no image patch: its own embedding and the model's biases) and the head's bias.")
    else:
        text += "exactly into disentangled channel contributions plus the head's bias."
    judged = [e.is_correct for e in items if e.is_correct is not None]
    if judged:
        misses = judged.count(False)
        correct = judged.count(True)
        text += f" Of {len(judged)} with a known label: {correct} correct, {plural(misses, 'miss', 'misses')}."
    return text


def _skipped_section(skipped: Sequence[str]) -> str:
    if not skipped:
        return ""
    rows = "\n".join(f"<li><code>{html.escape(str(entry))}</code></li>" for entry in skipped)
    return (
        f"<section class=\"skipped\" id=\"skipped\">\n<h2>Skipped {plural(len(skipped), 'file')} that could not be "
        f"read</h2>\n<ul>\n{rows}\n</ul>\n</section>\n"
    )


def _tag(explanation: Explanation) -> str:
    judged = verdict(explanation)
    if judged is None:
        return ""
    text, correct = judged
    return f"<span class=\"tag {'hit' if correct else 'miss'}\">{html.escape(text)}</span>"


def _numbers(explanation: Explanation) -> str:
    parts = [
        f"class {explanation.target_index}",
        f"probability {100 * explanation.probability:.2f}%",
        f"logit {explanation.target_logit:.4f}",
    ]
    if explanation.true_label is not None:
        parts.append(f"true label {html.escape(explanation.true_label)}")
    if explanation.predicted_index != explanation.target_index:
        parts.append(f"the model predicts {html.escape(explanation.predicted_label)}")
    return " &middot; ".join(parts)


def _alt(explanation: Explanation) -> str:
    source = f" for {explanation.source}" if explanation.source else ""
    return f"EPIC explanation of {explanation.target_label}{source}"


def _file_line(explanation: Explanation, png: str | None, json: str | None) -> str:
    parts = []
    if explanation.source:
        parts.append(f"file <code>{html.escape(printable(explanation.source))}</code>")
    for name, href in (("PNG", png), ("JSON", json)):
        if href:
            parts.append(f"<a href=\"{html.escape(href, quote=True)}\">{name}</a>")
    return f"<p class=\"file\">{' &middot; '.join(parts)}</p>\n" if parts else ""


def _section(index: int, explanation: Explanation, png: str | None, json: str | None) -> str:
    shown = explanation.channels
    return (
        f"<section id=\"explanation-{index}\">\n"
        f"<h2>{index}. {html.escape(explanation.target_label)}{_tag(explanation)}</h2>\n"
        f"{_file_line(explanation, png, json)}<p class=\"numbers\">{_numbers(explanation)}</p>\n"
        f"<img class=\"figure\" src=\"{png_data_uri(render_explanation(explanation))}\" "
        f"alt=\"{html.escape(_alt(explanation), quote=True)}\">\n"
        f"{_channel_table(explanation)}\n"
        f"<p class=\"coverage\">{html.escape(coverage_line(explanation, shown))}; "
        f"{html.escape(others_line(explanation, shown))}</p>\n"
        f"{_notes(explanation)}<p class=\"meaning\">{html.escape(share_meaning(explanation))}</p>\n"
        f"{_exactness_note(explanation)}\n</section>"
    )


def _notes(explanation: Explanation) -> str:
    """The sheet's notes on channels that peak in one cell, as a paragraph (none: nothing)."""
    notes = shared_cell_notes(explanation.channels)
    return f"<p class=\"coverage\">{html.escape('; '.join(notes))}.</p>\n" if notes else ""


def _channel_table(explanation: Explanation) -> str:
    header = (
        "<tr><th>channel</th><th>contribution</th><th>share</th><th>box (x0, y0, x1, y1)</th>"
        "<th>prototypes (name &middot; score)</th></tr>"
    )
    rows = "\n".join(_channel_row(slot, channel, explanation) for slot, channel in enumerate(explanation.channels))
    return f"<table>\n<thead>{header}</thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _channel_row(slot: int, channel: ChannelExplanation, explanation: Explanation) -> str:
    red, green, blue = channel_color(slot)
    swatch = f"<span class=\"swatch\" style=\"background: rgb({red}, {green}, {blue})\"></span>"
    names = [" · ".join(prototype_caption(p)) for p in channel.prototypes]
    box = ", ".join(str(int(v)) for v in channel.box)
    cells = [
        f"<td>{swatch}{html.escape(str(channel.channel))}</td>",
        f"<td class=\"num\">{html.escape(signed(channel.contribution))}</td>",
        f"<td class=\"num\">{percent(explanation.share(channel.contribution))}</td>",
        f"<td>({html.escape(box)})</td>",
        f"<td>{html.escape(', '.join(names) or 'none (fit a bank first)')}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _exactness_note(explanation: Explanation) -> str:
    """The promise, checked with this explanation's own numbers."""
    total = channel_total(explanation)
    cls = float(explanation.cls_contribution)
    bias = float(explanation.bias)
    rebuilt = total + cls + bias
    logit = explanation.target_logit
    count = explanation.contributions.numel()
    cls_text = (f" plus the CLS token's own part ({cls:.6f}; the image patches carry "
                f"{explanation.patch_share:.1%} of the summed |contributions|, the CLS token the rest)"
                if cls != 0.0 else "")
    text = (
        f"Exact: the sum of all {count} channel contributions ({total:.6f}){cls_text} plus the bias "
        f"({bias:.6f}) is {rebuilt:.6f}; the model's logit is {logit:.6f} (difference {abs(rebuilt - logit):.1e})."
    )
    return f"<p class=\"exact\">{html.escape(text)}</p>"
