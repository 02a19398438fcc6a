"""The explanation sheet: one picture that says what the model saw and why, with exact numbers.

Top: the label with a ``correct`` / ``MISS: true class X`` tag when the true label is known, the
probability, logit, class and file; the input with each shown channel's box; a panel with the
exact decomposition of the logit (all channels, the CLS term if any, the bias), how much of the
logit the shown channels carry and what the rest adds, what "share" (and the CLS part) means,
and a colour legend. Then one row per channel: its contribution and share, the patch under its
box, its heatmap, its prototypes.

Channels that peak in the same cell draw one box each as concentric rings, the legend names them
("channels 3, 7 and 12 peak in the same cell") and each repeating row says "same cell as
channel 3": without that, four channels on one ViT patch showed one box and four rows that looked
like copies of each other, and nothing said why.

Geometry comes from :func:`~epic_hf.viz.layout.explanation_layout`; words from
:mod:`~epic_hf.viz.captions`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PIL import Image, ImageDraw

from ..results import ChannelExplanation
from ..results import ExplanationData as Explanation  # the numbers; this module draws them
from .captions import (
    channel_title,
    cls_meaning,
    coverage_line,
    decomposition_terms,
    legend_fields,
    others_line,
    percent,
    ranking_note,
    same_cell_as,
    share_meaning,
    shared_cell_notes,
    signed,
    title_numbers,
    verdict,
)
from .colors import (
    INK,
    MAX_CHANNELS_SHOWN,
    MUTED,
    NEGATIVE,
    PANEL,
    POSITIVE,
    RGB,
    RULE,
    channel_color,
    heatmap_overlay,
)
from .draw import crop_box, draw_box, draw_tag, frame, new_canvas, paste_fitted
from .fonts import ChainFont
from .layout import ExplanationLayout, Metrics, Rect, explanation_layout, scale_box, shared_box_rects
from .prototypes import draw_notice, draw_prototype

logger = logging.getLogger(__name__)

NO_PROTOTYPES_TEXT = "no prototypes (fit a bank first)"


def shown_channels(explanation: Explanation) -> list[ChannelExplanation]:
    """The channels a picture shows: the first :data:`MAX_CHANNELS_SHOWN`, with a warning if cut."""
    channels = list(explanation.channels)
    if len(channels) > MAX_CHANNELS_SHOWN:
        logger.warning(
            "the explanation has %d channels; the picture shows the first %d (MAX_CHANNELS_SHOWN) "
            "and to_dict() keeps all %d", len(channels), MAX_CHANNELS_SHOWN, len(channels),
        )
        return channels[:MAX_CHANNELS_SHOWN]
    return channels


def layout_for(explanation: Explanation, cell_size: int = 160) -> ExplanationLayout:
    """The layout :func:`render_explanation` uses for ``explanation``."""
    shown = explanation.channels[:MAX_CHANNELS_SHOWN]
    num_prototypes = max((len(c.prototypes) for c in shown), default=0)
    return explanation_layout(len(shown), num_prototypes, cell_size, cls_term=explanation.cls_contribution != 0.0,
                              notes=len(shared_cell_notes(shown)))


def render_explanation(explanation: Explanation, cell_size: int = 160,
                       overlay: str | Sequence[int] | None = None) -> Image.Image:
    """The one-page picture of an explanation; see :func:`explanation_layout` for its geometry.

    At most :data:`MAX_CHANNELS_SHOWN` channels are drawn (a warning is logged when the
    explanation has more; its JSON keeps them all). ``overlay`` (``"shown"``, ``"all"`` or channel
    indices) lays the explanation's pixel map, :meth:`~epic_hf.results.ExplanationData.attribution_map`
    of those channels, over the input under the boxes: the same map the deletion and insertion
    metrics score, positive evidence only, in the heatmap ramp of the channel rows.
    """
    channels = shown_channels(explanation)
    layout = layout_for(explanation, cell_size)
    canvas, draw = new_canvas(layout.size)
    _draw_title(draw, explanation, layout, overlay)
    _draw_main_image(canvas, draw, explanation, channels, layout, overlay)
    draw.rectangle(layout.summary_box, fill=PANEL)
    _draw_decomposition(draw, explanation, channels, layout)
    _draw_legend(draw, explanation, channels, layout)
    _draw_column_headers(draw, layout)
    for row in range(len(channels)):
        _draw_channel_row(canvas, draw, explanation, channels, row, layout)
    return canvas


def _draw_title(draw: ImageDraw.ImageDraw, explanation: Explanation, layout: ExplanationLayout,
                overlay: str | Sequence[int] | None = None) -> None:
    """The label and its verdict tag, then the numbers line, over a thin rule."""
    m = layout.metrics
    width = layout.size[0]
    title, small = m.font("title"), m.font("small")
    tag = verdict(explanation)
    tag_room = 0 if tag is None else round(m.font("body", bold=True).getlength(tag[0])) + 6 * m.gap
    label_width = title.draw(draw, (m.margin, m.margin), explanation.target_label, INK,
                             max(width - 2 * m.margin - tag_room, m.cell))
    if tag is not None:
        body = m.font("body", bold=True)
        tag_y = m.margin + title.ascent - body.ascent - max(1, body.size // 6)
        draw_tag(draw, (m.margin + label_width + 2 * m.gap, tag_y), tag[0], body, POSITIVE if tag[1] else NEGATIVE,
                 max_width=width - m.margin - (m.margin + label_width + 2 * m.gap))
    small.draw(draw, (m.margin, m.margin + m.line_height("title")), title_numbers(explanation, overlay), MUTED,
               width - 2 * m.margin, middle=True)
    rule_y = m.margin + m.title_height - m.gap
    draw.line((m.margin, rule_y, width - m.margin, rule_y), fill=RULE, width=1)


def _draw_main_image(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, explanation: Explanation,
    channels: Sequence[ChannelExplanation], layout: ExplanationLayout, overlay: str | Sequence[int] | None = None,
) -> None:
    """The input (under its pixel map, with ``overlay``) with every shown channel's box; boxes on one cell
    are concentric rings so each colour shows."""
    m = layout.metrics
    image = explanation.image
    shown = image if overlay is None else heatmap_overlay(image, explanation.attribution_map(
        overlay if isinstance(overlay, str) else list(overlay)))
    target = paste_fitted(canvas, shown, layout.main_cell)
    rects = [scale_box(c.box, image.size, target) for c in channels]
    for slot, rect in enumerate(shared_box_rects(rects, m.stroke, target)):
        draw_box(draw, rect, channel_color(slot), m.line_width)
    frame(draw, layout.main_cell)


def _draw_decomposition(
    draw: ImageDraw.ImageDraw, explanation: Explanation, channels: Sequence[ChannelExplanation],
    layout: ExplanationLayout,
) -> None:
    """The logit as a column sum of its exact terms, the shown channels' coverage, and share's meaning."""
    m = layout.metrics
    box = layout.decomposition_box
    body, bold, small = m.font("body"), m.font("body", bold=True), m.font("small")
    x, y, width = box[0], box[1], box[2] - box[0]
    number_w = round(body.getlength(signed(-99999.9999))) + m.gap  # the numbers' right edge
    small.draw(draw, (x, y), "exact decomposition of the logit", MUTED, width)
    y += m.line_height("small")
    for name, value in decomposition_terms(explanation):
        _draw_term(draw, (x, y), number_w, signed(value), name, body, INK, width)
        y += m.line_height("body")
    draw.line((x, y + 1, x + number_w, y + 1), fill=INK, width=1)
    _draw_term(draw, (x, y + 2), number_w, signed(explanation.target_logit), "logit", bold, INK, width)
    y += m.line_height("body") + m.gap
    body.draw(draw, (x, y), coverage_line(explanation, channels), INK, width)
    y += m.line_height("body")
    body.draw(draw, (x, y), others_line(explanation, channels), MUTED, width)
    y += m.line_height("body")
    for line in [share_meaning(explanation), *cls_meaning(explanation)]:
        small.draw(draw, (x, y), line, MUTED, width)
        y += m.line_height("small")


def _draw_term(draw: ImageDraw.ImageDraw, xy: tuple[int, int], number_w: int, number: str, name: str,
               font, fill: RGB, width: int) -> None:
    """A right-aligned signed number, then what it is."""
    x, y = xy
    space = max(3, font.size // 2)  # half an em between the number column and its words
    font.draw(draw, (x + number_w - space - round(font.getlength(number)), y), number, fill)
    font.draw(draw, (x + number_w + space, y), name, fill if name == "logit" else MUTED, width - number_w - space)


def _draw_legend(
    draw: ImageDraw.ImageDraw, explanation: Explanation, channels: Sequence[ChannelExplanation],
    layout: ExplanationLayout,
) -> None:
    """A header saying how channels were ranked, then one swatch line per channel in columns."""
    m = layout.metrics
    box = layout.legend_box
    m.font("small").draw(draw, (box[0], box[1]), ranking_note(len(channels), len(explanation.channels)), MUTED,
                         box[2] - box[0])
    body = m.font("body")
    for slot, channel in enumerate(channels):
        _legend_entry(draw, layout.legend_entry(slot), slot, legend_fields(explanation, channel), body, m)
    for index, note in enumerate(shared_cell_notes(channels)):
        m.font("small").draw(draw, (box[0], layout.note_top(index)), note, INK, box[2] - box[0])


def _legend_entry(draw: ImageDraw.ImageDraw, rect: Rect, slot: int, fields: tuple[str, str, str], font,
                  m: Metrics) -> None:
    """Swatch, ``channel N``, then contribution and share right-aligned at fixed stops (in em)."""
    x, y = rect[0], rect[1]
    swatch = max(8, font.size - 2)
    top = y + (m.line_height("body") - swatch) // 2
    draw.rectangle((x, top, x + swatch - 1, top + swatch - 1), fill=channel_color(slot))
    name, contribution, share = fields
    font.draw(draw, (x + swatch + font.size // 2, y), name, INK, 8 * font.size)
    for text, stop in ((contribution, 12.5), (share, 17.5)):
        right = x + round(stop * font.size)
        font.draw(draw, (right - round(font.getlength(text)), y), text, INK)


def first_that_fits(font: ChainFont, options: Sequence[str], width: float) -> str:
    """The first of ``options`` (longest first) that fits ``width`` uncut; else the last one."""
    return next((text for text in options if font.getlength(text) <= width), options[-1])


def _draw_column_headers(draw: ImageDraw.ImageDraw, layout: ExplanationLayout) -> None:
    if layout.num_channels == 0:
        return
    m = layout.metrics
    font = m.font("small")
    top = layout.header_top
    bottom = top + m.header_height - m.gap
    area = layout.prototype_area(0)
    heads = [
        (layout.label_cell(0), ("channel · contribution", "channel")),
        (layout.patch_cell(0), ("patch under the box", "patch")),
        (layout.heatmap_cell(0), ("where it fires", "heatmap")),
        (area, ("prototypes: training images that fire this channel most", "prototypes (name · score)")),
    ]
    for rect, options in heads:
        room = rect[2] - rect[0] - m.gap
        font.draw(draw, (rect[0], top), first_that_fits(font, options, room), MUTED, room)
    draw.line((m.margin, bottom, layout.size[0] - m.margin, bottom), fill=RULE, width=1)


def _draw_channel_row(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, explanation: Explanation,
    channels: Sequence[ChannelExplanation], row: int, layout: ExplanationLayout,
) -> None:
    m = layout.metrics
    channel = channels[row]
    color = channel_color(row)
    _draw_row_label(draw, explanation, channel, layout.label_cell(row), color, m)
    thin = max(2, m.line_width // 2)
    patch_cell = layout.patch_cell(row)
    paste_fitted(canvas, crop_box(explanation.image, channel.box), patch_cell)
    draw_box(draw, patch_cell, color, thin)
    heat_cell = layout.heatmap_cell(row)
    target = paste_fitted(canvas, heatmap_overlay(explanation.image, channel.heatmap), heat_cell)
    draw_box(draw, scale_box(channel.box, explanation.image.size, target), color, thin)
    frame(draw, heat_cell)
    note = same_cell_as(channels, row)
    if note is not None:  # why this row's patch and heatmap look like an earlier row's
        m.font("small").draw(draw, (patch_cell[0], patch_cell[3] + m.gap // 2), note, INK,
                             heat_cell[2] - patch_cell[0])
    if not channel.prototypes:
        area = layout.prototype_area(row)
        draw_notice(draw, (area[0], area[1], area[2], area[1] + m.cell), NO_PROTOTYPES_TEXT, m)
        return
    for index, prototype in enumerate(channel.prototypes[: layout.num_prototypes]):
        draw_prototype(canvas, draw, prototype, layout.prototype_cell(row, index), color, m)


def _draw_row_label(
    draw: ImageDraw.ImageDraw, explanation: Explanation, channel: ChannelExplanation,
    cell: Rect, color: RGB, m: Metrics,
) -> None:
    """Colour bar, channel id, signed contribution, and a bar for its share."""
    bar_w = max(4, m.cell // 32)
    draw.rectangle((cell[0], cell[1], cell[0] + bar_w - 1, cell[3] - 1), fill=color)
    x = cell[0] + bar_w + m.gap * 2
    max_w = cell[2] - x - m.gap
    y = cell[1] + m.gap
    m.font("body").draw(draw, (x, y), channel_title(channel.channel, channel.part), INK, max_w)
    y += m.line_height("body")
    sign_color = POSITIVE if channel.contribution >= 0 else NEGATIVE
    m.font("title").draw(draw, (x, y), signed(channel.contribution, 3), sign_color, max_w)
    y += m.line_height("title")
    small = m.font("small")
    small.draw(draw, (x, y), first_that_fits(small, ("contribution to the logit", "of the logit"), max_w), MUTED, max_w)
    y += m.line_height("small") + m.gap
    share = explanation.share(channel.contribution)
    m.font("body").draw(draw, (x, y), f"{percent(share)} share", INK, max_w)
    y += m.line_height("body") + m.gap
    track = (x, y, x + max_w, y + max(4, m.cell // 32))
    if track[3] < cell[3]:
        draw.rectangle(track, fill=RULE)
        filled = round(max_w * min(abs(share), 1.0))
        if filled > 0:
            draw.rectangle((x, track[1], x + filled, track[3]), fill=color)
