"""Drawing primitives shared by the pictures: boxes that read on any background, cells, tags.

Boxes are drawn *inside* their pixel bounds (exclusive ends), as a coloured band between a
1-pixel dark halo outside and a 1-pixel light halo inside: the colour says which channel, the
halos keep the box visible on a background of any colour, its own included.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from .colors import BACKGROUND, HALO_DARK, HALO_LIGHT, RGB, RULE
from .fonts import ChainFont
from .layout import Rect, clamp_span, fit_rect


def new_canvas(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("RGB", size, BACKGROUND)
    return canvas, ImageDraw.Draw(canvas)


def draw_box(draw: ImageDraw.ImageDraw, rect: Rect, color: RGB, line_width: int) -> None:
    """A box outline inside ``rect``: dark halo, ``line_width`` pixels of ``color``, light halo.

    The whole stroke is ``line_width + 2`` pixels; a box too small for it keeps its colour band
    and loses the halos first.
    """
    x0, y0, x1, y1 = rect
    width, height = x1 - x0, y1 - y0
    halos = 1 if min(width, height) >= 2 * (line_width + 2) else 0
    if halos:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=HALO_DARK, width=1)
        draw.rectangle((x0 + 1 + line_width, y0 + 1 + line_width, x1 - 2 - line_width, y1 - 2 - line_width),
                       outline=HALO_LIGHT, width=1)
    draw.rectangle((x0 + halos, y0 + halos, x1 - 1 - halos, y1 - 1 - halos), outline=color, width=line_width)


def frame(draw: ImageDraw.ImageDraw, cell: Rect, color: RGB = RULE, width: int = 1) -> None:
    """A thin frame just outside ``cell``."""
    draw.rectangle((cell[0] - width, cell[1] - width, cell[2] + width - 1, cell[3] + width - 1),
                   outline=color, width=width)


def paste_fitted(canvas: Image.Image, image: Image.Image, cell: Rect) -> Rect:
    """Paste ``image`` scaled into ``cell`` keeping its aspect ratio; returns where it landed."""
    target = fit_rect(image.size, cell)
    size = (target[2] - target[0], target[3] - target[1])
    # Tiny crops (a few feature-map cells of a small input) are zoomed pixel-exact so nothing
    # is invented between their pixels; anything larger is resampled smoothly.
    method = Image.Resampling.NEAREST if min(image.size) < 24 else Image.Resampling.LANCZOS
    canvas.paste(image.convert("RGB").resize(size, method), target[:2])
    return target


def crop_box(image: Image.Image, box: Sequence[int]) -> Image.Image:
    """The pixels under ``box``, clamped to the image and at least one pixel wide."""
    x0, x1 = clamp_span(int(box[0]), int(box[2]), 0, image.width)
    y0, y1 = clamp_span(int(box[1]), int(box[3]), 0, image.height)
    return image.crop((x0, y0, x1, y1))


def draw_tag(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: ChainFont,
             fill: RGB, ink: RGB = (255, 255, 255), max_width: float | None = None) -> Rect:
    """A filled, rounded label (``correct``, ``MISS: true class X``, ``this image``); returns its box."""
    pad_x, pad_y = max(4, font.size // 2), max(1, font.size // 6)
    shown = text if max_width is None else font.fit(text, max_width - 2 * pad_x)
    x, y = xy
    box = (x, y, x + round(font.getlength(shown)) + 2 * pad_x, y + font.ascent + font.descent + 2 * pad_y)
    draw.rounded_rectangle((box[0], box[1], box[2] - 1, box[3] - 1), radius=max(2, font.size // 3), fill=fill)
    font.draw(draw, (x + pad_x, y + pad_y), shown, ink)
    return box
