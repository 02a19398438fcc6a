"""A single, self-contained HTML page for a batch of explanations.

One file a user can e-mail, attach to an issue or open offline: UTF-8, inline CSS, images
embedded as ``data:image/png;base64`` URIs, no scripts and no external resources. Every piece
of text (labels come from model configs and may contain anything) goes through
``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from PIL import Image

from .render import channel_color

if TYPE_CHECKING:
    from .explanation import ChannelExplanation, Explanation

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1c1c20;
       margin: 0; background: #fafafc; }
main { max-width: 1400px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; font-weight: 600; margin: 8px 0 4px; }
.subtitle { color: #6e6e76; margin: 0 0 24px; }
section { background: #fff; border: 1px solid #e2e2e8; border-radius: 8px; padding: 20px 24px;
          margin: 0 0 28px; }
h2 { font-size: 20px; font-weight: 600; margin: 0 0 4px; }
.numbers { color: #6e6e76; margin: 0 0 16px; }
.figure { max-width: 100%; height: auto; display: block; margin: 0 0 16px; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0 0 14px; font-size: 14px; }
th, td { padding: 5px 12px; text-align: left; border-bottom: 1px solid #ececf0; }
th { color: #6e6e76; font-weight: 500; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
          vertical-align: -1px; }
.exact { font-size: 14px; color: #3a3a40; background: #f4f6f4; border-left: 3px solid #147a3c;
         padding: 8px 12px; margin: 0; }
.exact code { font-size: 13px; }
"""


def write_html_report(
    explanations: "Explanation | Sequence[Explanation]", path: str | Path, title: str = "EPIC explanations"
) -> Path:
    """Write one self-contained HTML page with a section per explanation; returns its path.

    Each section holds the rendered figure (:meth:`Explanation.to_image`), the prediction
    (label, probability, logit), a table of the top channels and the exactness check
    ``sum(contributions) + bias == logit`` with the actual numbers.
    """
    items = _as_list(explanations)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html_report(items, title), encoding="utf-8")
    return path


def render_html_report(explanations: Iterable["Explanation"], title: str = "EPIC explanations") -> str:
    """The HTML text of :func:`write_html_report`, for callers that serve it instead of saving."""
    items = list(explanations)
    sections = "\n".join(_section(index, explanation) for index, explanation in enumerate(items, start=1))
    count = f"{len(items)} explanation{'s' if len(items) != 1 else ''}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p class=\"subtitle\">{html.escape(count)} &middot; EPIC prototype explanations: each logit is "
        "decomposed exactly into disentangled channel contributions plus the head's bias.</p>\n"
        f"{sections}\n</main>\n</body>\n</html>\n"
    )


def _as_list(explanations: "Explanation | Sequence[Explanation]") -> list["Explanation"]:
    from .explanation import Explanation

    if isinstance(explanations, Explanation):
        return [explanations]
    items = list(explanations)
    for position, item in enumerate(items):
        if not isinstance(item, Explanation):
            raise TypeError(f"item {position} is a {type(item).__name__}, not an Explanation")
    return items


def png_data_uri(image: Image.Image) -> str:
    """``data:image/png;base64,...`` for ``image``: pictures travel inside the page."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _section(index: int, explanation: "Explanation") -> str:
    label = html.escape(explanation.target_label)
    numbers = (
        f"class {explanation.target_index} &middot; probability {100 * explanation.probability:.2f}% "
        f"&middot; logit {explanation.target_logit:.4f}"
    )
    alt = html.escape(f"EPIC explanation of {explanation.target_label}", quote=True)
    return (
        f"<section id=\"explanation-{index}\">\n"
        f"<h2>{index}. {label}</h2>\n<p class=\"numbers\">{numbers}</p>\n"
        f"<img class=\"figure\" src=\"{png_data_uri(explanation.to_image())}\" alt=\"{alt}\">\n"
        f"{_channel_table(explanation)}\n{_exactness_note(explanation)}\n</section>"
    )


def _channel_table(explanation: "Explanation") -> str:
    header = (
        "<tr><th>channel</th><th>contribution</th><th>share</th><th>box (x0, y0, x1, y1)</th>"
        "<th>prototype keys</th></tr>"
    )
    rows = "\n".join(_channel_row(slot, channel, explanation) for slot, channel in enumerate(explanation.channels))
    return f"<table>\n<thead>{header}</thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _channel_row(slot: int, channel: "ChannelExplanation", explanation: "Explanation") -> str:
    red, green, blue = channel_color(slot)
    swatch = f"<span class=\"swatch\" style=\"background: rgb({red}, {green}, {blue})\"></span>"
    keys = ", ".join(str(p.sample_key) for p in channel.prototypes) or "none (fit a bank first)"
    box = ", ".join(str(int(v)) for v in channel.box)
    share = 100 * explanation.share(channel.contribution)
    cells = [
        f"<td>{swatch}{html.escape(str(channel.channel))}</td>",
        f"<td class=\"num\">{channel.contribution:+.4f}</td>",
        f"<td class=\"num\">{share:.1f}%</td>",
        f"<td>({html.escape(box)})</td>",
        f"<td>{html.escape(keys)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _exactness_note(explanation: "Explanation") -> str:
    """The promise, checked with this explanation's own numbers."""
    total = float(explanation.contributions.double().sum())
    rebuilt = total + float(explanation.bias)
    logit = explanation.target_logit
    count = explanation.contributions.numel()
    text = (
        f"Exact: the sum of all {count} channel contributions ({total:.6f}) plus the bias "
        f"({float(explanation.bias):.6f}) is {rebuilt:.6f}; the model's logit is {logit:.6f} "
        f"(difference {abs(rebuilt - logit):.1e})."
    )
    return f"<p class=\"exact\">{html.escape(text)}</p>"
