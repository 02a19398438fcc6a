"""Pictures of explanations and prototype banks, drawn with PIL alone.

The figure is the face of the product, so two rules hold throughout:

* **Layout is arithmetic, not text measurement.** Every figure's size and every cell's
  position follow from (number of channels, prototypes per row, ``cell_size``) through
  :func:`explanation_layout` and :func:`prototype_sheet_layout`; text is truncated to fit
  its band, never the other way round. Tests (and users composing figures) can therefore
  find any pixel without rendering first.
* **Colour identifies a channel.** Slot ``i`` of ``explanation.channels`` is drawn in
  ``CHANNEL_COLORS[i % len(CHANNEL_COLORS)]`` everywhere it appears: its box on the input,
  its row's bar, the boxes on its prototypes. Boxes are drawn *inside* their pixel bounds
  and a box identical to an earlier one is nested one line width further in, so every
  outline stays visible.

Rectangles are ``(x0, y0, x1, y1)`` with exclusive ends, like PIL crop boxes and like the
boxes of :class:`~epic_hf.explanation.ChannelExplanation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from .bank import PrototypeBank
    from .explanation import ChannelExplanation, Explanation, PrototypeMatch

Rect = tuple[int, int, int, int]
RGB = tuple[int, int, int]

#: One saturated colour per channel slot; chosen to stay apart from each other and from
#: the heatmap ramp's dominant hues when printed or seen by colour-blind readers.
CHANNEL_COLORS: tuple[RGB, ...] = (
    (230, 25, 75),    # red
    (0, 130, 200),    # blue
    (60, 180, 75),    # green
    (245, 130, 48),   # orange
    (145, 30, 180),   # purple
    (240, 50, 230),   # magenta
    (0, 170, 170),    # teal
    (255, 200, 0),    # amber
    (128, 64, 0),     # brown
    (0, 0, 128),      # navy
)

BACKGROUND: RGB = (255, 255, 255)
INK: RGB = (28, 28, 32)
MUTED: RGB = (110, 110, 118)
RULE: RGB = (222, 222, 228)
PANEL: RGB = (246, 246, 249)
POSITIVE: RGB = (20, 120, 60)
NEGATIVE: RGB = (190, 30, 45)

NO_PROTOTYPES_TEXT = "no prototypes (fit a bank first)"

# Anchors of the heatmap ramp (a compact "turbo"-like jet): cold blue -> cyan -> yellow -> red.
_RAMP_ANCHORS: tuple[tuple[float, RGB], ...] = (
    (0.00, (48, 18, 59)),
    (0.15, (65, 105, 225)),
    (0.35, (27, 208, 213)),
    (0.55, (120, 250, 90)),
    (0.70, (240, 220, 50)),
    (0.85, (250, 120, 30)),
    (1.00, (180, 10, 10)),
)


def channel_color(slot: int) -> RGB:
    """The colour of channel slot ``slot`` (wrapping around the palette)."""
    return CHANNEL_COLORS[slot % len(CHANNEL_COLORS)]


# -- layout -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metrics:
    """Spacing derived from ``cell_size`` so a figure looks the same at every scale."""

    cell: int

    @property
    def margin(self) -> int:
        return max(8, self.cell // 16)

    @property
    def gap(self) -> int:
        return max(4, self.cell // 32)

    @property
    def line_width(self) -> int:
        """Box outline width: at least 3 px so a box reads at a glance."""
        return max(3, self.cell // 40)

    @property
    def title_height(self) -> int:
        return max(36, self.cell * 3 // 10)

    @property
    def header_height(self) -> int:
        return max(18, self.cell // 7)

    @property
    def caption_height(self) -> int:
        return max(16, self.cell // 9)

    @property
    def label_width(self) -> int:
        return self.cell

    @property
    def section_gap(self) -> int:
        """Extra space separating the prototypes from the image's own patch and heatmap."""
        return 3 * self.gap

    @property
    def row_height(self) -> int:
        return self.cell + self.caption_height

    def font_size(self, role: str) -> int:
        sizes = {"title": self.cell // 7, "body": self.cell // 11, "small": self.cell // 13}
        minimum = {"title": 16, "body": 11, "small": 10}
        return max(minimum[role], sizes[role])


@dataclass(frozen=True)
class ExplanationLayout:
    """Where everything goes in :func:`render_explanation`'s figure.

    Attributes:
        size: (width, height) of the figure.
        main_cell: the input image's cell.
        num_channels, num_prototypes, cell_size: what the layout was computed from.
    """

    size: tuple[int, int]
    main_cell: Rect
    num_channels: int
    num_prototypes: int
    cell_size: int

    @property
    def metrics(self) -> Metrics:
        return Metrics(self.cell_size)

    @property
    def summary_box(self) -> Rect:
        """The text panel right of the input image (prediction, exactness, legend)."""
        m = self.metrics
        x0 = self.main_cell[2] + m.section_gap
        return (x0, self.main_cell[1], self.size[0] - m.margin, self.main_cell[3])

    @property
    def header_top(self) -> int:
        return self.main_cell[3] + self.metrics.margin

    def row_top(self, row: int) -> int:
        m = self.metrics
        return self.header_top + m.header_height + row * (m.row_height + m.margin)

    def label_cell(self, row: int) -> Rect:
        m = self.metrics
        top = self.row_top(row)
        return (m.margin, top, m.margin + m.label_width, top + m.cell)

    def patch_cell(self, row: int) -> Rect:
        m = self.metrics
        x0 = m.margin + m.label_width + m.gap
        top = self.row_top(row)
        return (x0, top, x0 + m.cell, top + m.cell)

    def heatmap_cell(self, row: int) -> Rect:
        m = self.metrics
        x0 = self.patch_cell(row)[2] + m.gap
        top = self.row_top(row)
        return (x0, top, x0 + m.cell, top + m.cell)

    def prototype_area(self, row: int) -> Rect:
        """The span for a row's prototypes (or the no-prototype notice)."""
        m = self.metrics
        x0 = self.heatmap_cell(row)[2] + m.section_gap
        top = self.row_top(row)
        return (x0, top, x0 + _prototype_span(self.num_prototypes, m), top + m.row_height)

    def prototype_cell(self, row: int, index: int) -> Rect:
        m = self.metrics
        x0 = self.prototype_area(row)[0] + index * (m.cell + m.gap)
        top = self.row_top(row)
        return (x0, top, x0 + m.cell, top + m.cell)


def _prototype_span(num_prototypes: int, m: Metrics) -> int:
    """Width of a row's prototype area; with none, room for the notice (two cells)."""
    count = max(num_prototypes, 2)
    return count * m.cell + (count - 1) * m.gap


def explanation_layout(num_channels: int, num_prototypes: int, cell_size: int = 160) -> ExplanationLayout:
    """The figure size and cell positions for ``num_channels`` rows of ``num_prototypes`` each.

    Rules (``c`` = ``cell_size``, see :class:`Metrics` for margin/gap/bands):

    * width = margin + label column (c) + gap + patch (c) + gap + heatmap (c) + section gap
      + max(num_prototypes, 2) cells (with gaps between them) + margin;
    * height = margin + title band + input image (c) + margin + column-header band
      + num_channels rows of (c + caption band), separated by margins, + margin;
    * the input image's cell sits at (margin, margin + title band), size c x c.
    """
    if cell_size < 32:
        raise ValueError(f"cell_size must be at least 32 pixels, got {cell_size}")
    if num_channels < 0 or num_prototypes < 0:
        raise ValueError("num_channels and num_prototypes must be non-negative")
    m = Metrics(cell_size)
    width = (
        m.margin + m.label_width + m.gap + 2 * m.cell + m.gap + m.section_gap
        + _prototype_span(num_prototypes, m) + m.margin
    )
    main_top = m.margin + m.title_height
    main_cell = (m.margin, main_top, m.margin + m.cell, main_top + m.cell)
    rows = num_channels * m.row_height + max(num_channels - 1, 0) * m.margin
    height = main_cell[3] + m.margin + m.header_height + rows + m.margin
    return ExplanationLayout((width, height), main_cell, num_channels, num_prototypes, cell_size)


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes in :func:`render_prototype_sheet`'s figure."""

    size: tuple[int, int]
    num_prototypes: int
    cell_size: int

    def prototype_cell(self, index: int) -> Rect:
        m = Metrics(self.cell_size)
        x0 = m.margin + index * (m.cell + m.gap)
        top = m.margin + m.title_height
        return (x0, top, x0 + m.cell, top + m.cell)


def prototype_sheet_layout(num_prototypes: int, cell_size: int = 160) -> SheetLayout:
    """Size of a prototype sheet: a title band over one row of ``num_prototypes`` captioned cells.

    width = 2 margins + max(num_prototypes, 2) cells with gaps (room for the title even with
    one prototype); height = margin + title band + cell + caption band + margin.
    """
    if cell_size < 32:
        raise ValueError(f"cell_size must be at least 32 pixels, got {cell_size}")
    m = Metrics(cell_size)
    width = 2 * m.margin + _prototype_span(num_prototypes, m)
    height = m.margin + m.title_height + m.row_height + m.margin
    return SheetLayout((width, height), num_prototypes, cell_size)


# -- geometry ---------------------------------------------------------------------------------
def fit_rect(image_size: tuple[int, int], cell: Rect) -> Rect:
    """The largest rectangle of ``image_size``'s aspect ratio centred in ``cell``.

    Non-square inputs are letterboxed rather than stretched, so boxes keep their shape.
    """
    width, height = image_size
    cell_w, cell_h = cell[2] - cell[0], cell[3] - cell[1]
    scale = min(cell_w / width, cell_h / height)
    fit_w, fit_h = max(1, round(width * scale)), max(1, round(height * scale))
    x0 = cell[0] + (cell_w - fit_w) // 2
    y0 = cell[1] + (cell_h - fit_h) // 2
    return (x0, y0, x0 + fit_w, y0 + fit_h)


def scale_box(box: Sequence[int], image_size: tuple[int, int], target: Rect) -> Rect:
    """Map a box in image pixels to the figure rectangle ``target`` the image was drawn into."""
    width, height = image_size
    sx = (target[2] - target[0]) / width
    sy = (target[3] - target[1]) / height
    x0 = target[0] + round(box[0] * sx)
    y0 = target[1] + round(box[1] * sy)
    x1 = target[0] + round(box[2] * sx)
    y1 = target[1] + round(box[3] * sy)
    x0, x1 = _clamp_span(x0, x1, target[0], target[2])
    y0, y1 = _clamp_span(y0, y1, target[1], target[3])
    return (x0, y0, x1, y1)


def _clamp_span(start: int, end: int, low: int, high: int) -> tuple[int, int]:
    start = min(max(start, low), high - 1)
    end = min(max(end, start + 1), high)
    return start, end


def nested_insets(boxes: Sequence[Sequence[int]]) -> list[int]:
    """How many earlier boxes equal each box: identical boxes are nested by that many line widths."""
    seen: dict[tuple[int, ...], int] = {}
    insets = []
    for box in boxes:
        key = tuple(int(v) for v in box)
        insets.append(seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return insets


def inset_rect(rect: Rect, amount: int) -> Rect:
    """``rect`` shrunk by ``amount`` on each side, never below one pixel."""
    x0, y0, x1, y1 = rect
    dx = min(amount, max(0, (x1 - x0 - 1) // 2))
    dy = min(amount, max(0, (y1 - y0 - 1) // 2))
    return (x0 + dx, y0 + dy, x1 - dx, y1 - dy)


def draw_box(draw: ImageDraw.ImageDraw, rect: Rect, color: RGB, line_width: int) -> None:
    """Outline drawn inside ``rect`` (exclusive ends), so adjacent boxes never overwrite each other."""
    x0, y0, x1, y1 = rect
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=color, width=line_width)


# -- colour -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _ramp_lut() -> np.ndarray:
    """A 256 x 3 uint8 lookup table interpolated between the ramp's anchors."""
    positions = np.array([p for p, _ in _RAMP_ANCHORS])
    colours = np.array([c for _, c in _RAMP_ANCHORS], dtype=np.float64)
    samples = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(samples, positions, colours[:, k]) for k in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB with the heatmap ramp: (H, W) float -> (H, W, 3) uint8."""
    index = np.clip(np.rint(np.nan_to_num(values) * 255), 0, 255).astype(np.int64)
    return _ramp_lut()[index]


def normalize_heatmap(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """``heatmap / max`` in [0, 1] (negative values clipped); all zeros when nothing fires."""
    values = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    values = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def heatmap_overlay(image: Image.Image, heatmap: torch.Tensor | np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``image`` blended with the coloured, max-normalised ``heatmap`` (resized to the image).

    The blend weight grows with the heat (from ``alpha / 2`` to ``alpha``) so cold regions
    keep more of the photo and the hot spot reads first.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = image.convert("RGB")
    heat = normalize_heatmap(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {tuple(heat.shape)}")
    if heat.shape != (rgb.height, rgb.width):
        resized = Image.fromarray(heat, mode="F").resize(rgb.size, Image.Resampling.BILINEAR)
        heat = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    weight = (alpha * (0.5 + 0.5 * heat))[..., None]
    base = np.asarray(rgb, dtype=np.float32)
    mixed = base * (1.0 - weight) + colorize(heat).astype(np.float32) * weight
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), mode="RGB")


# -- text -------------------------------------------------------------------------------------
@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled font at ``size`` (a bitmap fallback where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def font_for(metrics: Metrics, role: str) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return _font(metrics.font_size(role))


def fit_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, max_width: int) -> str:
    """``text`` cut with an ellipsis so it fits ``max_width`` pixels (layout never stretches for text)."""
    if max_width <= 0:
        return ""
    if font.getlength(text) <= max_width:
        return text
    ellipsis = "…"
    low, high = 0, len(text)
    while low < high:  # longest prefix that fits with the ellipsis
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle].rstrip() + ellipsis) <= max_width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + ellipsis if low else ""


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, fill: RGB, max_width: int) -> None:
    """Left-aligned text, truncated to ``max_width``."""
    draw.text(xy, fit_text(text, font, max_width), font=font, fill=fill)


def _text_with_dash(draw: ImageDraw.ImageDraw, xy: tuple[int, int], left: str, right: str, font, fill: RGB) -> None:
    """``left — right`` with the em dash drawn as a rule: PIL's bundled font has no U+2014 glyph."""
    x, y = xy
    draw.text((x, y), left, font=font, fill=fill)
    space = font.getlength(" ")
    dash_x0 = x + font.getlength(left) + space
    dash_w = max(6, round(font.getlength("M")))
    top, bottom = draw.textbbox((x, y), "x", font=font)[1::2]
    dash_y = (top + bottom) // 2
    draw.line((dash_x0, dash_y, dash_x0 + dash_w, dash_y), fill=fill, width=max(1, round(getattr(font, "size", 11) / 14)))
    draw.text((dash_x0 + dash_w + space, y), right, font=font, fill=fill)


def _text_centered(draw: ImageDraw.ImageDraw, rect: Rect, text: str, font, fill: RGB) -> None:
    """Text centred in ``rect`` (both ways), truncated to its width."""
    shown = fit_text(text, font, rect[2] - rect[0] - 4)
    left, top, right, bottom = draw.textbbox((0, 0), shown, font=font)
    x = rect[0] + (rect[2] - rect[0] - (right - left)) // 2 - left
    y = rect[1] + (rect[3] - rect[1] - (bottom - top)) // 2 - top
    draw.text((x, y), shown, font=font, fill=fill)


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Hg")
    return bottom + max(2, (bottom - top) // 4)


# -- cells ------------------------------------------------------------------------------------
def paste_fitted(canvas: Image.Image, image: Image.Image, cell: Rect) -> Rect:
    """Paste ``image`` scaled into ``cell`` keeping its aspect ratio; returns where it landed."""
    target = fit_rect(image.size, cell)
    size = (target[2] - target[0], target[3] - target[1])
    # Tiny crops (a few feature-map cells of a small input) are zoomed pixel-exact so nothing
    # is invented between their pixels; anything larger is resampled smoothly.
    method = Image.Resampling.NEAREST if min(image.size) < 24 else Image.Resampling.LANCZOS
    canvas.paste(image.convert("RGB").resize(size, method), target[:2])
    return target


def _frame(draw: ImageDraw.ImageDraw, cell: Rect, color: RGB = RULE) -> None:
    draw.rectangle((cell[0] - 1, cell[1] - 1, cell[2], cell[3]), outline=color, width=1)


def crop_box(image: Image.Image, box: Sequence[int]) -> Image.Image:
    """The pixels under ``box``, clamped to the image and at least one pixel wide."""
    x0, x1 = _clamp_span(int(box[0]), int(box[2]), 0, image.width)
    y0, y1 = _clamp_span(int(box[1]), int(box[3]), 0, image.height)
    return image.crop((x0, y0, x1, y1))


def _draw_prototype(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, prototype: "PrototypeMatch", cell: Rect, color: RGB, m: Metrics
) -> None:
    """A prototype image with its box, and ``key k  score s`` in the caption band below."""
    image = prototype.image
    target = paste_fitted(canvas, image, cell)
    draw_box(draw, scale_box(prototype.box, image.size, target), color, m.line_width)
    _frame(draw, cell)
    caption = (cell[0], cell[3], cell[2], cell[3] + m.caption_height)
    _text_centered(draw, caption, f"key {prototype.sample_key}  score {prototype.score:.2f}", font_for(m, "small"), MUTED)


def _new_canvas(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("RGB", size, BACKGROUND)
    return canvas, ImageDraw.Draw(canvas)


# -- the explanation figure -------------------------------------------------------------------
def render_explanation(explanation: "Explanation", cell_size: int = 160) -> Image.Image:
    """The one-page picture of an explanation; see :func:`explanation_layout` for its geometry.

    Top: the prediction (label, probability, logit) and the input with each top channel's box.
    Then one row per channel: its label and contribution, the patch under its box, its heatmap
    on the input, and its prototypes from the bank with their boxes, all in the channel's colour.
    """
    num_prototypes = max((len(c.prototypes) for c in explanation.channels), default=0)
    layout = explanation_layout(len(explanation.channels), num_prototypes, cell_size)
    canvas, draw = _new_canvas(layout.size)
    _draw_title(draw, explanation, layout)
    _draw_main_image(canvas, draw, explanation, layout)
    _draw_summary(draw, explanation, layout)
    _draw_column_headers(draw, layout)
    for row, channel in enumerate(explanation.channels):
        _draw_channel_row(canvas, draw, explanation, channel, row, layout)
    return canvas


def _draw_title(draw: ImageDraw.ImageDraw, explanation: "Explanation", layout: ExplanationLayout) -> None:
    """The predicted (or asked-for) label, then its probability and logit, over a thin rule."""
    m = layout.metrics
    width = layout.size[0]
    title_font, body_font = font_for(m, "title"), font_for(m, "body")
    numbers = f"p = {100 * explanation.probability:.1f}%   ·   logit {explanation.target_logit:+.3f}"
    numbers_w = int(body_font.getlength(numbers))
    label_max = width - 2 * m.margin - numbers_w - 4 * m.gap
    label = fit_text(explanation.target_label, title_font, label_max)
    y = m.margin + (m.title_height - m.gap - _line_height(title_font)) // 2
    draw.text((m.margin, y), label, font=title_font, fill=INK)
    label_bottom = draw.textbbox((m.margin, y), label or "H", font=title_font)[3]
    number_x = m.margin + int(title_font.getlength(label)) + 3 * m.gap
    number_y = label_bottom - draw.textbbox((0, 0), numbers, font=body_font)[3]
    draw.text((number_x, number_y), numbers, font=body_font, fill=MUTED)
    rule_y = m.margin + m.title_height - m.gap
    draw.line((m.margin, rule_y, width - m.margin, rule_y), fill=RULE, width=1)


def _draw_main_image(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, explanation: "Explanation", layout: ExplanationLayout
) -> None:
    """The input with every top channel's box; identical boxes nest so each colour shows."""
    m = layout.metrics
    image = explanation.image
    target = paste_fitted(canvas, image, layout.main_cell)
    boxes = [c.box for c in explanation.channels]
    for slot, (box, inset) in enumerate(zip(boxes, nested_insets(boxes))):
        rect = inset_rect(scale_box(box, image.size, target), inset * m.line_width)
        draw_box(draw, rect, channel_color(slot), m.line_width)
    _frame(draw, layout.main_cell)


def _draw_summary(draw: ImageDraw.ImageDraw, explanation: "Explanation", layout: ExplanationLayout) -> None:
    """The exact decomposition of the logit and a colour legend of the top channels."""
    m = layout.metrics
    box = layout.summary_box
    draw.rectangle(box, fill=PANEL)
    body, small = font_for(m, "body"), font_for(m, "small")
    pad = m.gap * 2
    x, y = box[0] + pad, box[1] + pad
    max_w = box[2] - x - pad
    total = float(explanation.contributions.double().sum())
    count = explanation.contributions.numel()
    _text(draw, (x, y), "exact decomposition of the logit", small, MUTED, max_w)
    y += _line_height(small)
    equation = (
        f"{explanation.target_logit:.4f} = {total:.4f} (sum of {count} channel contributions) "
        f"{_signed_term(explanation.bias)} (bias)"
    )
    _text(draw, (x, y), equation, body, INK, max_w)
    y += _line_height(body) + m.gap
    _draw_legend(draw, explanation, (x, y, box[2] - pad, box[3] - pad // 2), body)


def _draw_legend(draw: ImageDraw.ImageDraw, explanation: "Explanation", area: Rect, font) -> None:
    """One swatch line per channel, flowing into as many columns as the panel's height needs."""
    entries = explanation.channels
    if not entries:
        return
    line = _line_height(font)
    per_column = max(1, (area[3] - area[1]) // line)
    columns = -(-len(entries) // per_column)
    natural = round(3 * font.getlength("channel 00000")) + line  # swatch + three tab stops
    column_w = min((area[2] - area[0]) // columns, natural)
    for slot, channel in enumerate(entries):
        x = area[0] + (slot // per_column) * column_w
        y = area[1] + (slot % per_column) * line
        _legend_entry(draw, (x, y), slot, channel, explanation, font, column_w - 8)


def _signed_term(value: float) -> str:
    """``+ 0.1234`` or ``- 0.1234``: a term of a sum, spaced like hand-written arithmetic.

    ASCII minus on purpose: PIL's bundled font has no glyph for U+2212.
    """
    return f"{'-' if value < 0 else '+'} {abs(value):.4f}"


def _legend_entry(
    draw: ImageDraw.ImageDraw, xy: tuple[int, int], slot: int, channel: "ChannelExplanation",
    explanation: "Explanation", font, max_width: int,
) -> None:
    """Swatch, then channel / contribution / share in tab-aligned columns."""
    x, y = xy
    swatch = max(8, _line_height(font) - 6)
    draw.rectangle((x, y + 2, x + swatch, y + 2 + swatch), fill=channel_color(slot))
    share = 100 * explanation.share(channel.contribution)
    tab = round(font.getlength("channel 00000"))
    fields = [f"channel {channel.channel}", f"{channel.contribution:+.3f}", f"{share:.1f}% share"]
    left = x + swatch + 8
    right = x + max_width
    for index, text in enumerate(fields):
        start = left + index * tab
        if start >= right:
            break
        _text(draw, (start, y), text, font, INK, min(tab - 6, right - start) if index < 2 else right - start)


def _draw_column_headers(draw: ImageDraw.ImageDraw, layout: ExplanationLayout) -> None:
    if layout.num_channels == 0:
        return
    m = layout.metrics
    font = font_for(m, "small")
    top = layout.header_top
    bottom = top + m.header_height - m.gap
    label = layout.label_cell(0)
    heads = [
        ((label[0], top, label[2], bottom), "channel · contribution"),
        ((layout.patch_cell(0)[0], top, layout.patch_cell(0)[2], bottom), "patch"),
        ((layout.heatmap_cell(0)[0], top, layout.heatmap_cell(0)[2], bottom), "where it fires"),
    ]
    area = layout.prototype_area(0)
    heads.append(((area[0], top, area[2], bottom), "prototypes: training images that fire this channel most"))
    for rect, text in heads:
        _text(draw, (rect[0], rect[1]), text, font, MUTED, rect[2] - rect[0])
    draw.line((m.margin, bottom, layout.size[0] - m.margin, bottom), fill=RULE, width=1)


def _draw_channel_row(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, explanation: "Explanation",
    channel: "ChannelExplanation", row: int, layout: ExplanationLayout,
) -> None:
    m = layout.metrics
    color = channel_color(row)
    _draw_row_label(draw, explanation, channel, layout.label_cell(row), color, m)
    patch_cell = layout.patch_cell(row)
    paste_fitted(canvas, crop_box(explanation.image, channel.box), patch_cell)
    draw_box(draw, patch_cell, color, max(2, m.line_width // 2))
    heat_cell = layout.heatmap_cell(row)
    overlay = heatmap_overlay(explanation.image, channel.heatmap)
    target = paste_fitted(canvas, overlay, heat_cell)
    draw_box(draw, scale_box(channel.box, explanation.image.size, target), color, max(2, m.line_width // 2))
    _frame(draw, heat_cell)
    if not channel.prototypes:
        area = layout.prototype_area(row)
        notice = (area[0], area[1], area[2], area[1] + m.cell)
        draw.rectangle(notice, fill=PANEL)
        _text_centered(draw, notice, NO_PROTOTYPES_TEXT, font_for(m, "body"), MUTED)
        return
    for index, prototype in enumerate(channel.prototypes):
        _draw_prototype(canvas, draw, prototype, layout.prototype_cell(row, index), color, m)


def _draw_row_label(
    draw: ImageDraw.ImageDraw, explanation: "Explanation", channel: "ChannelExplanation",
    cell: Rect, color: RGB, m: Metrics,
) -> None:
    """Colour bar, channel id, signed contribution, and a bar for its share of the evidence."""
    bar_w = max(4, m.cell // 32)
    draw.rectangle((cell[0], cell[1], cell[0] + bar_w - 1, cell[3] - 1), fill=color)
    x = cell[0] + bar_w + m.gap * 2
    max_w = cell[2] - x - m.gap
    body, title, small = font_for(m, "body"), font_for(m, "title"), font_for(m, "small")
    y = cell[1] + m.gap
    _text(draw, (x, y), f"channel {channel.channel}", body, INK, max_w)
    y += _line_height(body) + m.gap
    sign_color = POSITIVE if channel.contribution >= 0 else NEGATIVE
    _text(draw, (x, y), f"{channel.contribution:+.2f}", title, sign_color, max_w)
    y += _line_height(title)
    _text(draw, (x, y), "contribution to the logit", small, MUTED, max_w)
    y += _line_height(small) + m.gap * 2
    share = explanation.share(channel.contribution)
    _text(draw, (x, y), f"{100 * share:.1f}% share", body, INK, max_w)
    y += _line_height(body) + m.gap
    track = (x, y, x + max_w, y + max(4, m.cell // 32))
    if track[3] < cell[3]:
        draw.rectangle(track, fill=RULE)
        filled = round(max_w * min(abs(share), 1.0))
        if filled > 0:
            draw.rectangle((x, track[1], x + filled, track[3]), fill=color)


# -- the prototype sheet ----------------------------------------------------------------------
def render_prototype_sheet(bank: "PrototypeBank", channel: int, cell_size: int = 160) -> Image.Image:
    """All prototypes of one channel of ``bank``, best first, with their boxes and scores.

    Boxes use ``CHANNEL_COLORS[channel % len]``: a sheet has no slot order, so the channel's
    own index picks the colour.
    """
    prototypes = bank.prototypes(channel)
    layout = prototype_sheet_layout(len(prototypes), cell_size)
    m = Metrics(cell_size)
    canvas, draw = _new_canvas(layout.size)
    color = channel_color(channel)
    title_font = font_for(m, "title")
    plural = "prototype" if len(prototypes) == 1 else "prototypes"
    bar_w = max(4, m.cell // 32)
    y = m.margin + (m.title_height - _line_height(title_font)) // 2
    draw.rectangle((m.margin, y, m.margin + bar_w - 1, y + _line_height(title_font)), fill=color)
    _text_with_dash(draw, (m.margin + bar_w + m.gap * 2, y), f"channel {channel}",
                    f"{len(prototypes)} {plural}", title_font, INK)
    if not prototypes:
        cell = (m.margin, m.margin + m.title_height, layout.size[0] - m.margin, m.margin + m.title_height + m.cell)
        draw.rectangle(cell, fill=PANEL)
        _text_centered(draw, cell, "no prototypes for this channel", font_for(m, "body"), MUTED)
        return canvas
    for index, prototype in enumerate(prototypes):
        _draw_prototype(canvas, draw, prototype, layout.prototype_cell(index), color, m)
    return canvas
