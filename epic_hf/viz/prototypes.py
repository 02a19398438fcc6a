"""Prototype cells (shared by the explanation sheet) and a bank's per-channel prototype sheet.

A prototype cell is the prototype's image with its box in the channel's colour, the patch under
the box zoomed beside it, and a caption naming it (``PrototypeMatch.name``, else ``#<key>``,
cut by :func:`~.captions.short_prototype_name`: a label keeps its start, a file name its end)
with its score. When the explained image is itself a prototype (``is_query``) its cell says
so, in a dark banner and the caption, so the reader does not take the image as outside
evidence for itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from ..results import PrototypeMatch
from .captions import THIS_IMAGE, channel_title, plural, prototype_caption, short_prototype_name
from .colors import INK, MUTED, PANEL, RGB, channel_color
from .draw import crop_box, draw_box, draw_tag, frame, new_canvas, paste_fitted
from .layout import Metrics, Rect, prototype_sheet_layout, scale_box, zoom_cell

if TYPE_CHECKING:  # annotations only: the bank is drawn here, never built
    from ..bank import PrototypeBank

logger = logging.getLogger(__name__)


def draw_prototype(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, prototype: PrototypeMatch, cell: Rect, color: RGB, m: Metrics
) -> None:
    """A prototype image with its box, the patch under the box zoomed beside it, and ``name · score`` below.

    Why the zoom: at thumbnail size the box is small and what it holds unreadable; the zoomed
    patch is what the channel responds to, as prototype papers show it.
    """
    image = prototype.image
    target = paste_fitted(canvas, image, cell)
    box = scale_box(prototype.box, image.size, target)
    draw_box(draw, box, color, m.line_width)
    zoom = zoom_cell(cell, m)
    paste_fitted(canvas, crop_box(image, prototype.box), zoom)
    draw_box(draw, zoom, color, max(2, m.line_width // 2))
    small = m.font("small")
    if prototype.is_query:
        _mark_this_image(draw, cell, box, m)
    else:
        frame(draw, cell)
    name, score = prototype_caption(prototype)
    caption = (cell[0], cell[3], zoom[2], cell[3] + m.caption_height)
    score_text = f"  ·  {score}"
    name_room = caption[2] - caption[0] - 4 - small.getlength(score_text)
    small.draw_centered(draw, caption, short_prototype_name(name, small, name_room) + score_text,
                        INK if prototype.is_query else MUTED)


def _mark_this_image(draw: ImageDraw.ImageDraw, cell: Rect, box: Rect, m: Metrics) -> None:
    """A dark frame and a ``this image`` tag, in the top or bottom corner away from the box."""
    font = m.font("small", bold=True)
    tag_height = font.ascent + font.descent + 2 * max(1, font.size // 6)
    box_low = (box[1] + box[3]) / 2 > (cell[1] + cell[3]) / 2
    y = cell[1] + m.gap if box_low else cell[3] - m.gap - tag_height
    draw_tag(draw, (cell[0] + m.gap, y), THIS_IMAGE, font, INK, max_width=cell[2] - cell[0] - 2 * m.gap)
    frame(draw, cell, INK, 2)


def draw_notice(draw: ImageDraw.ImageDraw, rect: Rect, text: str, m: Metrics) -> None:
    """A grey panel with a short sentence, where pictures would be but are not."""
    draw.rectangle(rect, fill=PANEL)
    m.font("body").draw_centered(draw, rect, text, MUTED)


def render_prototype_sheet(bank: PrototypeBank, channel: int, cell_size: int = 160) -> Image.Image:
    """All prototypes of one channel of ``bank``, best first, with their boxes and scores.

    Boxes use ``channel_color(channel)``: a sheet has no slot order, so the channel's own
    index picks the colour.
    """
    prototypes = bank.prototypes(channel)
    layout = prototype_sheet_layout(len(prototypes), cell_size)
    m = Metrics(cell_size)
    canvas, draw = new_canvas(layout.size)
    color = channel_color(channel)
    _draw_sheet_title(draw, channel_title(channel, bank.channel_part(channel)), len(prototypes), layout.size[0], color,
                      m)
    if not prototypes:
        top = m.margin + m.title_height
        draw_notice(draw, (m.margin, top, layout.size[0] - m.margin, top + m.cell), "no prototypes for this channel", m)
        return canvas
    for index, prototype in enumerate(prototypes):
        draw_prototype(canvas, draw, prototype, layout.prototype_cell(index), color, m)
    return canvas


def _draw_sheet_title(draw: ImageDraw.ImageDraw, channel: str, count: int, width: int, color: RGB, m: Metrics) -> None:
    """A colour bar, ``channel 12 — 5 prototypes`` (with its best part where known), what the boxes and scores are."""
    title = m.font("title")
    bar_w = max(4, m.cell // 32)
    top = m.margin
    draw.rectangle((m.margin, top, m.margin + bar_w - 1, top + m.line_height("title") - 1), fill=color)
    x = m.margin + bar_w + 2 * m.gap
    title.draw(draw, (x, top), f"{channel} — {plural(count, 'prototype')}", INK, width - x - m.margin)
    note = "best first; box = where the channel fires most; score = its activation summed over the image"
    m.font("small").draw(draw, (x, top + m.line_height("title")), note, MUTED, width - x - m.margin)
