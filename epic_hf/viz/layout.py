"""Where everything goes: figure sizes and cell positions, computed by arithmetic.

**Layout is arithmetic, not text measurement.** Every figure's size and every cell's position
follow from (number of channels, prototypes per row, ``cell_size``, whether a CLS term is shown)
through :func:`explanation_layout` and :func:`prototype_sheet_layout`. Font sizes and line
heights are fixed fractions of ``cell_size``; the text bands are sized for the longest text they
hold at those sizes, and text is cut to fit its band, never the other way round. Tests (and users
composing figures) can therefore find any pixel without rendering first.

Rectangles are ``(x0, y0, x1, y1)`` with exclusive ends, like PIL crop boxes and like the boxes
of an explanation's channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .colors import MAX_CHANNELS_SHOWN
from .fonts import ChainFont

Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Metrics:
    """Spacing and type sizes derived from ``cell`` so a figure looks the same at every scale."""

    cell: int

    @property
    def margin(self) -> int:
        return max(8, self.cell // 16)

    @property
    def gap(self) -> int:
        return max(4, self.cell // 32)

    @property
    def pad(self) -> int:
        """Inner padding of a text panel."""
        return 2 * self.gap

    @property
    def line_width(self) -> int:
        """Width of a box's coloured band: at least 3 px so a box reads at a glance."""
        return max(3, self.cell // 40)

    @property
    def stroke(self) -> int:
        """A box's whole outline: the coloured band between a dark and a light 1-px halo."""
        return self.line_width + 2

    def font_size(self, role: str) -> int:
        sizes = {"title": self.cell // 7, "body": self.cell // 11, "small": self.cell // 13}
        minimum = {"title": 16, "body": 11, "small": 10}
        return max(minimum[role], sizes[role])

    def line_height(self, role: str) -> int:
        """Baseline-to-baseline distance for ``role``'s text (1.4 em)."""
        return round(1.4 * self.font_size(role))

    def font(self, role: str, bold: bool | None = None) -> ChainFont:
        """The font chain for ``role`` (titles are bold unless told otherwise)."""
        return ChainFont(self.font_size(role), role == "title" if bold is None else bold)

    @property
    def title_height(self) -> int:
        """The title band: the label line, the numbers line, and a rule."""
        return self.line_height("title") + self.line_height("small") + 2 * self.gap

    @property
    def header_height(self) -> int:
        return self.line_height("small") + self.gap

    @property
    def caption_height(self) -> int:
        return max(self.line_height("small"), self.cell // 9)

    @property
    def label_width(self) -> int:
        return self.cell

    @property
    def section_gap(self) -> int:
        """Extra space separating the prototypes from the image's own patch and heatmap."""
        return 3 * self.gap

    @property
    def zoom(self) -> int:
        """Side of a prototype's zoomed patch, drawn beside its image: half a cell."""
        return self.cell // 2

    @property
    def prototype_stride(self) -> int:
        """From one prototype to the next: its image, its zoomed patch, and the gaps after each."""
        return self.cell + self.gap + self.zoom + self.gap

    @property
    def row_height(self) -> int:
        return self.cell + self.caption_height

    @property
    def decomposition_width(self) -> int:
        """Room for the longest decomposition line (about 34 em of body text).

        The longest is what the rest adds: "the other 2036 channels, the CLS part and the bias
        take away 123.4567" (33 em): the words say why the shown channels can pass the logit.
        """
        return 34 * self.font_size("body")

    @property
    def legend_column_width(self) -> int:
        """Room for one legend entry: swatch, ``channel 2047``, ``+12.345``, ``100.0%``."""
        return 19 * self.font_size("body")

    def decomposition_height(self, cls_term: bool) -> int:
        """Header, the terms (channels, CLS if any, bias), the logit, coverage, the rest, share's meaning.

        With a CLS term, two more small lines say what the CLS part is and what the patches carry.
        """
        body, small = self.line_height("body"), self.line_height("small")
        terms = 3 if cls_term else 2
        meanings = 3 if cls_term else 1
        return small + (terms + 1) * body + self.gap + 2 * body + meanings * small


@dataclass(frozen=True)
class ExplanationLayout:
    """Where everything goes in :func:`~epic_hf.viz.render_explanation`'s figure.

    Attributes:
        size: (width, height) of the figure.
        main_cell: the input image's cell.
        summary_box: the text panel right of the input (decomposition and legend).
        legend_rows: legend entries per legend column.
        num_channels, num_prototypes, cell_size, cls_term: what the layout was computed from.
        notes: lines under the legend (one per group of channels that peak in the same cell).
    """

    size: tuple[int, int]
    main_cell: Rect
    summary_box: Rect
    legend_rows: int
    num_channels: int
    num_prototypes: int
    cell_size: int
    cls_term: bool = False
    notes: int = 0

    @property
    def metrics(self) -> Metrics:
        return Metrics(self.cell_size)

    def note_top(self, index: int) -> int:
        """The top of note line ``index`` under the legend's entries."""
        m = self.metrics
        return self.legend_box[1] + m.line_height("small") + self.legend_rows * m.line_height("body") \
            + m.gap + index * m.line_height("small")

    @property
    def decomposition_box(self) -> Rect:
        m = self.metrics
        x0, y0 = self.summary_box[0] + m.pad, self.summary_box[1] + m.pad
        return (x0, y0, x0 + m.decomposition_width, self.summary_box[3] - m.pad)

    @property
    def legend_box(self) -> Rect:
        m = self.metrics
        x0 = self.decomposition_box[2] + 2 * m.pad
        return (x0, self.summary_box[1] + m.pad, self.summary_box[2] - m.pad, self.summary_box[3] - m.pad)

    def legend_entry(self, slot: int) -> Rect:
        """The band of legend entry ``slot``: entries fill a column, then the next one."""
        m = self.metrics
        box = self.legend_box
        rows = max(1, self.legend_rows)
        x0 = box[0] + (slot // rows) * m.legend_column_width
        y0 = box[1] + m.line_height("small") + (slot % rows) * m.line_height("body")
        return (x0, y0, x0 + m.legend_column_width, y0 + m.line_height("body"))

    @property
    def header_top(self) -> int:
        return self.summary_box[3] + self.metrics.margin

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
        """The square of a prototype's whole image (its zoomed patch is :func:`zoom_cell` of this)."""
        m = self.metrics
        x0 = self.prototype_area(row)[0] + index * m.prototype_stride
        top = self.row_top(row)
        return (x0, top, x0 + m.cell, top + m.cell)


def _prototype_span(num_prototypes: int, m: Metrics) -> int:
    """Width of a row's prototype area (each prototype: image, gap, zoomed patch); with none, room for two."""
    count = max(num_prototypes, 2)
    return count * m.prototype_stride - m.gap


def zoom_cell(cell: Rect, m: Metrics) -> Rect:
    """Where a prototype's zoomed patch goes: beside its image ``cell``, top-aligned, half a cell square."""
    x0 = cell[2] + m.gap
    return (x0, cell[1], x0 + m.zoom, cell[1] + m.zoom)


def _check(cell_size: int, *counts: int) -> None:
    if cell_size < 32:
        raise ValueError(f"cell_size must be at least 32 pixels, got {cell_size}")
    if any(count < 0 for count in counts):
        raise ValueError("the numbers of channels and prototypes must be non-negative")


def explanation_layout(
    num_channels: int, num_prototypes: int, cell_size: int = 160, cls_term: bool = False, notes: int = 0
) -> ExplanationLayout:
    """The figure size and cell positions for ``num_channels`` rows of ``num_prototypes`` each.

    Rules (``c`` = ``cell_size``, ``M`` = :class:`Metrics`):

    * rows width = margin + label column (c) + gap + patch (c) + gap + heatmap (c) + section gap
      + max(num_prototypes, 2) prototypes, each a cell and its zoomed patch (c / 2) with gaps, + margin;
    * top width = margin + input (c) + section gap + the panel (decomposition block and at least
      one legend column, padded) + margin; the figure is as wide as the wider of the two;
    * the legend fills as many columns as the panel's width holds, then the rows they need;
      then ``notes`` small lines under them; the panel is as tall as the input (c) or as its
      text, whichever is taller;
    * height = margin + title band + panel + margin + column-header band
      + num_channels rows of (c + caption band), separated by margins, + margin.

    Raises:
        ValueError: more than :data:`MAX_CHANNELS_SHOWN` channels (a picture has a colour per
            channel only up to there), a negative count, or a cell under 32 pixels.
    """
    _check(cell_size, num_channels, num_prototypes, notes)
    if num_channels > MAX_CHANNELS_SHOWN:
        raise ValueError(
            f"a picture shows at most MAX_CHANNELS_SHOWN = {MAX_CHANNELS_SHOWN} channels, got {num_channels}; "
            "render_explanation() shows the first ones and to_dict() keeps all"
        )
    m = Metrics(cell_size)
    rows_width = (
        m.margin + m.label_width + m.gap + 2 * m.cell + m.gap + m.section_gap
        + _prototype_span(num_prototypes, m) + m.margin
    )
    panel_min = m.pad + m.decomposition_width + 2 * m.pad + m.legend_column_width + m.pad
    width = max(rows_width, m.margin + m.cell + m.section_gap + panel_min + m.margin)
    panel_x0 = m.margin + m.cell + m.section_gap
    legend_width = (width - m.margin - m.pad) - (panel_x0 + m.pad + m.decomposition_width + 2 * m.pad)
    columns = max(1, min(legend_width // m.legend_column_width, num_channels))
    legend_rows = -(-num_channels // columns)
    legend_height = m.line_height("small") + legend_rows * m.line_height("body")
    if notes:
        legend_height += m.gap + notes * m.line_height("small")
    text_height = max(m.decomposition_height(cls_term), legend_height)
    top = m.margin + m.title_height
    panel = (panel_x0, top, width - m.margin, top + max(m.cell, 2 * m.pad + text_height))
    rows = num_channels * m.row_height + max(num_channels - 1, 0) * m.margin
    height = panel[3] + m.margin + m.header_height + rows + m.margin
    main_cell = (m.margin, top, m.margin + m.cell, top + m.cell)
    return ExplanationLayout((width, height), main_cell, panel, legend_rows, num_channels, num_prototypes,
                             cell_size, cls_term, notes)


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes in :func:`~epic_hf.viz.render_prototype_sheet`'s figure."""

    size: tuple[int, int]
    num_prototypes: int
    cell_size: int

    def prototype_cell(self, index: int) -> Rect:
        m = Metrics(self.cell_size)
        x0 = m.margin + index * m.prototype_stride
        top = m.margin + m.title_height
        return (x0, top, x0 + m.cell, top + m.cell)


def prototype_sheet_layout(num_prototypes: int, cell_size: int = 160) -> SheetLayout:
    """Size of a prototype sheet: a title band over one row of ``num_prototypes`` captioned cells.

    width = 2 margins + max(num_prototypes, 2) prototypes, each a cell and its zoomed patch, with
    gaps (room for the title even with one prototype); height = margin + title band + cell + caption band + margin.
    """
    _check(cell_size, num_prototypes)
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
    x0, x1 = clamp_span(target[0] + round(box[0] * sx), target[0] + round(box[2] * sx), target[0], target[2])
    y0, y1 = clamp_span(target[1] + round(box[1] * sy), target[1] + round(box[3] * sy), target[1], target[3])
    return (x0, y0, x1, y1)


def clamp_span(start: int, end: int, low: int, high: int) -> tuple[int, int]:
    """``[start, end)`` moved inside ``[low, high)`` and at least one pixel long."""
    start = min(max(start, low), high - 1)
    end = min(max(end, start + 1), high)
    return start, end


def nested_insets(boxes: Sequence[Sequence[int]]) -> list[int]:
    """How many earlier boxes equal each box: identical boxes are nested by that many strokes."""
    seen: dict[tuple[int, ...], int] = {}
    insets = []
    for box in boxes:
        key = tuple(int(v) for v in box)
        insets.append(seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return insets


def shared_box_rects(rects: Sequence[Rect], stroke: int, bounds: Rect) -> list[Rect]:
    """Where each box is drawn so that boxes on the same cell stay apart, one ring per channel.

    ``rects`` are the boxes already scaled to the figure. Identical ones (channels that peak in
    the same cell) are drawn as concentric rings a ``stroke`` apart, the first channel outermost:
    inside the box where it is large enough to hold them all with room in the middle, else
    outside it, the innermost ring on the cell itself, each side growing only as far as
    ``bounds`` allows. Inward-only nesting collapsed a small cell's rings into one (four channels
    of a ViT's 8-pixel patch showed one box).
    """
    counts: dict[Rect, int] = {}
    for rect in rects:
        counts[rect] = counts.get(rect, 0) + 1
    out = []
    for rect, rank in zip(rects, nested_insets(rects)):
        count = counts[rect]
        side = min(rect[2] - rect[0], rect[3] - rect[1])
        if count == 1 or side >= (2 * count + 1) * stroke:
            out.append(inset_rect(rect, rank * stroke))
        else:
            out.append(outset_rect(rect, (count - 1 - rank) * stroke, bounds))
    return out


def outset_rect(rect: Rect, amount: int, bounds: Rect) -> Rect:
    """``rect`` grown by ``amount`` on each side, no side past ``bounds``."""
    x0, y0, x1, y1 = rect
    return (max(bounds[0], x0 - amount), max(bounds[1], y0 - amount),
            min(bounds[2], x1 + amount), min(bounds[3], y1 + amount))


def inset_rect(rect: Rect, amount: int) -> Rect:
    """``rect`` shrunk by ``amount`` on each side, never below one pixel."""
    x0, y0, x1, y1 = rect
    dx = min(amount, max(0, (x1 - x0 - 1) // 2))
    dy = min(amount, max(0, (y1 - y0 - 1) // 2))
    return (x0 + dx, y0 + dy, x1 - dx, y1 - dy)
