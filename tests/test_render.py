"""Pictures and the HTML report, drawn from real explanations of a tiny ResNet.

The figure's geometry is arithmetic (``explanation_layout``), so these tests can find each
box's outline in the rendered pixels and check it carries its channel's colour.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from epic_hf import EpicExplainer, Explanation, PrototypeBank
from epic_hf.images import encode_jpeg
from epic_hf.render import (
    CHANNEL_COLORS,
    NO_PROTOTYPES_TEXT,
    Metrics,
    explanation_layout,
    fit_text,
    heatmap_overlay,
    prototype_sheet_layout,
    render_explanation,
)
from epic_hf.report import write_html_report
from tiny_models import IMAGE_SIZE, LABELS, make_tiny_model, tiny_processor

CELL = 160
NUM_PROTOTYPES = 3


def shapes_image(seed: int, size: int = 64) -> Image.Image:
    """A coloured disc and square on a plain background: structure for the feature map to see."""
    rng = np.random.default_rng(seed)
    colour = lambda: tuple(int(v) for v in rng.integers(0, 256, 3))  # noqa: E731
    image = Image.new("RGB", (size, size), colour())
    draw = ImageDraw.Draw(image)
    draw.ellipse((size // 5, size // 5, size * 3 // 4, size * 3 // 4), fill=colour())
    draw.rectangle((size // 2, size // 8, size - 4, size // 2), fill=colour())
    return image


def hand_made_bank(num_channels: int, count: int = NUM_PROTOTYPES) -> PrototypeBank:
    """A bank built field by field: keys, scores, grid-cell boxes, identity S, JPEG thumbnails."""
    generator = torch.Generator().manual_seed(1)
    keys = (torch.arange(num_channels * count).reshape(num_channels, count) % 7).long()
    cells = torch.randint(0, 4, (num_channels, count, 2), generator=generator)
    step = IMAGE_SIZE // 4
    boxes = torch.stack(
        [cells[..., 1] * step, cells[..., 0] * step, cells[..., 1] * step + step, cells[..., 0] * step + step], dim=-1
    ).long()
    thumbnails = {
        key: encode_jpeg(shapes_image(100 + key).resize((IMAGE_SIZE, IMAGE_SIZE)), 128, 90) for key in range(7)
    }
    return PrototypeBank(
        sample_keys=keys,
        scores=torch.rand(num_channels, count, generator=generator) * 10,
        boxes=boxes,
        S=torch.zeros(num_channels, num_channels),
        matrix="orthogonal",
        thumbnails=thumbnails,
        input_size=(IMAGE_SIZE, IMAGE_SIZE),
        grid_size=(4, 4),
    )


@pytest.fixture(scope="module")
def explainer() -> EpicExplainer:
    return EpicExplainer(make_tiny_model("resnet"), tiny_processor())


@pytest.fixture(scope="module")
def explanation(explainer: EpicExplainer) -> Explanation:
    return explainer.explain(shapes_image(0), top_k=4)


@pytest.fixture(scope="module")
def banked(explainer: EpicExplainer) -> tuple[EpicExplainer, PrototypeBank, Explanation]:
    bank = hand_made_bank(explainer.num_channels)
    with_bank = EpicExplainer(explainer.model, explainer.image_processor)
    with_bank.set_bank(bank)
    return with_bank, bank, with_bank.explain(shapes_image(0), top_k=4)


def edge_points(rect: tuple[int, int, int, int], depth: int) -> list[tuple[int, int]]:
    """Points ``depth`` pixels inside each of the four edges of ``rect`` (exclusive ends)."""
    x0, y0, x1, y1 = rect
    mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
    near_x, near_y = x0 + (x1 - x0) // 4, y0 + (y1 - y0) // 4
    return [
        (x0 + depth, mid_y), (x0 + depth, near_y),
        (x1 - 1 - depth, mid_y), (x1 - 1 - depth, near_y),
        (mid_x, y0 + depth), (near_x, y0 + depth),
        (mid_x, y1 - 1 - depth), (near_x, y1 - 1 - depth),
    ]


def scaled(box, cell, input_size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    factor = (cell[2] - cell[0]) / input_size
    return tuple(int(cell[i % 2] + round(v * factor)) for i, v in enumerate(box))  # type: ignore[return-value]


def assert_outline(figure: Image.Image, rect, colour, line_width: int) -> None:
    for depth in range(line_width):
        for point in edge_points(rect, depth):
            assert figure.getpixel(point) == colour, f"pixel {point} of outline {rect} is not {colour}"


# -- the explanation figure --------------------------------------------------------------------
def test_figure_size_follows_layout(explanation: Explanation) -> None:
    figure = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), 0, CELL)
    assert figure.size == layout.size
    assert figure.mode == "RGB"
    assert len(explanation.channels) == 4


def test_layout_is_deterministic_arithmetic() -> None:
    small, more_rows, more_protos = (explanation_layout(2, 3, 100), explanation_layout(3, 3, 100),
                                     explanation_layout(2, 5, 100))
    m = Metrics(100)
    assert more_rows.size[0] == small.size[0]
    assert more_rows.size[1] - small.size[1] == m.row_height + m.margin
    assert more_protos.size[0] - small.size[0] == 2 * (m.cell + m.gap)
    assert explanation_layout(2, 0, 100).size == explanation_layout(2, 2, 100).size  # notice needs two cells
    main = small.main_cell
    assert (main[2] - main[0], main[3] - main[1]) == (100, 100)
    with pytest.raises(ValueError):
        explanation_layout(1, 1, 8)


def test_boxes_on_the_input_carry_their_channel_colour(explanation: Explanation) -> None:
    figure = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), 0, CELL)
    line_width = Metrics(CELL).line_width
    assert line_width >= 3
    drawn: dict[tuple, int] = {}
    for slot, channel in enumerate(explanation.channels):
        nested = drawn.get(tuple(channel.box), 0)  # an identical earlier box pushes this one inwards
        drawn[tuple(channel.box)] = nested + 1
        x0, y0, x1, y1 = scaled(channel.box, layout.main_cell)
        inset = nested * line_width
        rect = (x0 + inset, y0 + inset, x1 - inset, y1 - inset)
        assert_outline(figure, rect, CHANNEL_COLORS[slot % len(CHANNEL_COLORS)], line_width)


def test_rows_without_a_bank_say_so(explanation: Explanation) -> None:
    assert all(channel.prototypes == [] for channel in explanation.channels)
    figure = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), 0, CELL)
    area = layout.prototype_area(0)
    notice = np.asarray(figure.crop((area[0], area[1], area[2], area[1] + CELL)))
    assert (notice.std(axis=(0, 1)) > 0).any(), "the notice panel should hold text"
    assert "fit a bank first" in NO_PROTOTYPES_TEXT


def test_heatmap_cell_differs_from_plain_image(explanation: Explanation) -> None:
    figure = explanation.to_image()
    cell = explanation_layout(len(explanation.channels), 0, CELL).heatmap_cell(0)
    heat = np.asarray(figure.crop(cell), dtype=np.float32)
    plain = np.asarray(explanation.image.resize((CELL, CELL), Image.Resampling.NEAREST), dtype=np.float32)
    assert np.abs(heat - plain).mean() > 5


def test_to_dict_round_trips_through_json(explanation: Explanation) -> None:
    summary = explanation.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["target_label"] in LABELS


def test_save_png_and_json(explanation: Explanation, tmp_path) -> None:
    png = explanation.save(tmp_path / "x.png")
    with Image.open(png) as opened:
        opened.load()
        assert opened.format == "PNG"
        assert opened.size == explanation_layout(len(explanation.channels), 0, CELL).size
    data = json.loads(explanation.save(tmp_path / "x.json").read_text())
    assert data["target_index"] == explanation.target_index
    assert len(data["channels"]) == len(explanation.channels)


def test_repr_png_decodes(explanation: Explanation) -> None:
    with Image.open(io.BytesIO(explanation._repr_png_())) as opened:
        opened.load()
        assert opened.size == explanation.to_image().size


def test_cell_size_scales_the_figure(explanation: Explanation) -> None:
    figure = render_explanation(explanation, cell_size=96)
    assert figure.size == explanation_layout(len(explanation.channels), 0, 96).size


# -- prototypes -----------------------------------------------------------------------------
def test_prototype_rows_render_per_layout(banked) -> None:
    _, bank, explanation = banked
    assert all(len(channel.prototypes) == NUM_PROTOTYPES for channel in explanation.channels)
    figure = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), NUM_PROTOTYPES, CELL)
    assert figure.size == layout.size
    line_width = Metrics(CELL).line_width
    for row, channel in enumerate(explanation.channels):
        colour = CHANNEL_COLORS[row % len(CHANNEL_COLORS)]
        for index, prototype in enumerate(channel.prototypes):
            assert prototype.image.size == (IMAGE_SIZE, IMAGE_SIZE)
            rect = scaled(prototype.box, layout.prototype_cell(row, index))
            assert_outline(figure, rect, colour, line_width)
        assert channel.prototypes[0].sample_key == int(bank.sample_keys[channel.channel, 0])


def test_bank_show_matches_its_layout(banked) -> None:
    _, bank, _ = banked
    for channel in (0, 3):
        sheet = bank.show(channel)
        layout = prototype_sheet_layout(len(bank.prototypes(channel)), CELL)
        assert sheet.size == layout.size
        colour = CHANNEL_COLORS[channel % len(CHANNEL_COLORS)]
        first = bank.prototypes(channel)[0]
        assert_outline(sheet, scaled(first.box, layout.prototype_cell(0)), colour, Metrics(CELL).line_width)


# -- helpers --------------------------------------------------------------------------------
def test_heatmap_overlay_shapes_and_zero_map() -> None:
    image = shapes_image(3, 40)
    hot = torch.zeros(10, 10)
    hot[2, 7] = 5.0
    overlay = heatmap_overlay(image, hot, alpha=0.6)
    assert overlay.size == image.size and overlay.mode == "RGB"
    cold = heatmap_overlay(image, torch.zeros(40, 40))
    assert cold.size == image.size
    with pytest.raises(ValueError):
        heatmap_overlay(image, hot, alpha=1.5)


def test_fit_text_truncates_with_ellipsis() -> None:
    from epic_hf.render import _font

    font = _font(14)
    long = "a very long ImageNet label, with several synonyms, that never fits"
    short = fit_text(long, font, 120)
    assert short.endswith("…") and font.getlength(short) <= 120
    assert fit_text("ok", font, 120) == "ok"


# -- the HTML report ------------------------------------------------------------------------
class _ImageCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.sources.append(attributes.get("src") or "")
        if tag in ("script", "link") or (tag != "img" and attributes.get("src")):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_self_contained(explainer: EpicExplainer, tmp_path) -> None:
    explanations = explainer.explain([shapes_image(seed) for seed in (0, 1, 2)], top_k=3)
    path = write_html_report(explanations, tmp_path / "report" / "index.html", title="Tiny <shapes>")
    parser = _ImageCollector()
    parser.feed(path.read_text(encoding="utf-8"))
    assert len(parser.sources) == len(explanations) == 3
    prefix = "data:image/png;base64,"
    for source in parser.sources:
        assert source.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(source[len(prefix):]))) as opened:
            opened.load()
            assert opened.width > 0
    assert parser.external == []
    text = " ".join(parser.text)
    assert "Tiny <shapes>" in text
    for explanation in explanations:
        assert explanation.target_label in text
        assert f"{explanation.target_logit:.4f}" in text
    assert "plus the bias" in text


def test_html_report_accepts_one_explanation_and_escapes(explanation: Explanation, tmp_path) -> None:
    odd = dataclasses.replace(explanation, target_label='<script>alert("x")</script> & co')
    path = write_html_report(odd, tmp_path / "one.html")
    raw = path.read_text(encoding="utf-8")
    assert "<script>" not in raw
    assert "&lt;script&gt;" in raw
    parser = _ImageCollector()
    parser.feed(raw)
    assert len(parser.sources) == 1
    assert odd.target_label in " ".join(parser.text)
