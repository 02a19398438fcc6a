"""Pictures and the HTML report, drawn from real explanations of a tiny ResNet.

The figure's geometry is arithmetic (``explanation_layout``), so these tests can find each
box's outline, tag and text line in the rendered pixels and check what is drawn there.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import io
import itertools
import json
import logging
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

import epic_hf.viz
from epic_hf import EpicConfig, EpicExplainer, Explanation, PrototypeBank
from epic_hf.images import encode_jpeg
from epic_hf.viz import (
    render_prototype_sheet,
    CHANNEL_COLORS,
    MAX_CHANNELS_SHOWN,
    NO_PROTOTYPES_TEXT,
    Metrics,
    explanation_layout,
    heatmap_overlay,
    prototype_sheet_layout,
    render_explanation,
    write_html_report,
)
from epic_hf.viz import captions, colors, fonts
from epic_hf.viz.colors import HALO_DARK, HALO_LIGHT, NEGATIVE, POSITIVE, colorize
from tiny_models import IMAGE_SIZE, LABELS, make_tiny_model, tiny_processor

CELL = 160
NUM_PROTOTYPES = 3
UNICODE_LABEL = "Ω-ünïcödé 猫"


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
        config=EpicConfig(model_type="resnet", num_channels=num_channels, prototypes_per_channel=count,
                          matrix="orthogonal", grid_size=(4, 4), input_size=(IMAGE_SIZE, IMAGE_SIZE)),
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
    """A box's stroke: dark halo outside, ``line_width`` pixels of ``colour``, light halo inside."""
    for point in edge_points(rect, 0):
        assert figure.getpixel(point) == HALO_DARK, f"pixel {point} of outline {rect} has no dark halo"
    for depth in range(1, line_width + 1):
        for point in edge_points(rect, depth):
            assert figure.getpixel(point) == colour, f"pixel {point} of outline {rect} is not {colour}"
    for point in edge_points(rect, line_width + 1):
        assert figure.getpixel(point) == HALO_LIGHT, f"pixel {point} of outline {rect} has no light halo"


def pixels_of(figure: Image.Image, rect, colour, tolerance: int = 0) -> int:
    """How many pixels of ``figure`` inside ``rect`` have ``colour`` (per channel within tolerance)."""
    area = np.asarray(figure.crop(rect), dtype=np.int64)
    return int((np.abs(area - np.array(colour)).max(axis=-1) <= tolerance).sum())


def ink_extent(figure: Image.Image, rect, threshold: int = 110) -> tuple[int, int] | None:
    """(first, last) x of dark text pixels in ``rect``, in figure coordinates."""
    area = np.asarray(figure.convert("L").crop(rect))
    columns = np.flatnonzero((area < threshold).any(axis=0))
    return (rect[0] + int(columns[0]), rect[0] + int(columns[-1])) if columns.size else None


# -- the explanation figure --------------------------------------------------------------------
def test_figure_size_follows_layout(explanation: Explanation) -> None:
    figure = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), 0, CELL)
    assert figure.size == layout.size
    assert figure.mode == "RGB"
    assert len(explanation.channels) == 4


def test_layout_is_deterministic_arithmetic() -> None:
    m = Metrics(100)
    small, more_rows = explanation_layout(2, 5, 100), explanation_layout(3, 5, 100)
    assert more_rows.size[0] == small.size[0]
    assert more_rows.size[1] - small.size[1] == m.row_height + m.margin
    assert explanation_layout(2, 7, 100).size[0] - small.size[0] == 2 * m.prototype_stride  # image, gap, zoom, gap
    assert explanation_layout(2, 0, 100).size == explanation_layout(2, 2, 100).size  # notice needs two cells
    main = small.main_cell
    assert (main[2] - main[0], main[3] - main[1]) == (100, 100)
    # a CLS term adds one line to the decomposition; the panel never gets shorter than the input
    assert explanation_layout(2, 5, 100, cls_term=True).summary_box[3] >= small.summary_box[3]
    assert small.summary_box[3] - small.summary_box[1] >= 100
    with pytest.raises(ValueError):
        explanation_layout(1, 1, 8)


def test_boxes_on_the_input_carry_their_channel_colour(explanation: Explanation) -> None:
    figure = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), 0, CELL)
    m = Metrics(CELL)
    assert m.line_width >= 3 and m.stroke == m.line_width + 2
    drawn: dict[tuple, int] = {}
    for slot, channel in enumerate(explanation.channels):
        nested = drawn.get(tuple(channel.box), 0)  # an identical earlier box pushes this one inwards
        drawn[tuple(channel.box)] = nested + 1
        x0, y0, x1, y1 = scaled(channel.box, layout.main_cell)
        inset = nested * m.stroke
        rect = (x0 + inset, y0 + inset, x1 - inset, y1 - inset)
        assert_outline(figure, rect, CHANNEL_COLORS[slot], m.line_width)


def test_box_outline_reads_on_a_background_of_its_own_colour(explanation: Explanation) -> None:
    """On a plain image of slot 0's colour, the box is still outlined by contrasting halos."""
    red = CHANNEL_COLORS[0]
    plain = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), red)
    channel = dataclasses.replace(explanation.channels[0], box=(8, 8, 24, 24))
    figure = render_explanation(dataclasses.replace(explanation, image=plain, channels=[channel]), CELL)
    rect = scaled(channel.box, explanation_layout(1, 0, CELL).main_cell)
    assert_outline(figure, rect, red, Metrics(CELL).line_width)
    for halo in (HALO_DARK, HALO_LIGHT):
        assert np.abs(np.subtract(halo, red)).sum() > 250  # far from the background on both sides


def test_palette_gives_each_shown_channel_its_own_colour() -> None:
    assert len(CHANNEL_COLORS) >= MAX_CHANNELS_SHOWN == 12
    closest = min(np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(CHANNEL_COLORS, 2))
    assert closest >= 100


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
    assert summary["cls_contribution"] == 0.0 and summary["true_label"] is None and summary["correct"] is None
    assert {"evidence", "contribution", "share"} <= set(summary["channels"][0])


def test_save_png_and_json(explanation: Explanation, tmp_path) -> None:
    png = explanation.save(tmp_path / "x.png")
    with Image.open(png) as opened:
        opened.load()
        assert opened.format == "PNG"
        assert opened.size == explanation_layout(len(explanation.channels), 0, CELL).size
    data = json.loads(explanation.save(tmp_path / "x.json").read_text())
    assert data["target_index"] == explanation.target_index
    assert len(data["channels"]) == len(explanation.channels)


def test_repr_png_decodes_and_repr_is_short(explanation: Explanation) -> None:
    with Image.open(io.BytesIO(explanation._repr_png_())) as opened:
        opened.load()
        assert opened.size == explanation.to_image().size
    text = repr(explanation)
    assert len(text) < 300 and "tensor" not in text and "Image" not in text
    assert repr(explanation.target_label) in text
    assert f"{explanation.channels[0].channel}: {explanation.channels[0].contribution:+.3f}" in text
    assert "tensor" not in repr(explanation.channels[0])
    assert explanation._repr_html_().count("data:image/png;base64,") == 1


def test_cell_size_scales_the_figure(explanation: Explanation) -> None:
    figure = render_explanation(explanation, cell_size=96)
    assert figure.size == explanation_layout(len(explanation.channels), 0, 96).size


# -- text: fonts, wording -------------------------------------------------------------------
def test_unicode_label_has_a_glyph_for_every_character() -> None:
    assert fonts.missing_glyphs(UNICODE_LABEL) == []
    chain = fonts.faces(32)
    for char in UNICODE_LABEL.replace(" ", ""):
        face = chain[fonts.face_index_for(char)]
        drawn, notdef = face.getmask(char), face.getmask("\U0010fffd")
        assert (drawn.size, bytes(drawn)) != (notdef.size, bytes(notdef)), f"{char!r} is drawn as a box"
    assert fonts.face_index_for("猫") != fonts.face_index_for("Ω")  # the CJK fallback took over
    # PIL's bundled font alone (what the pictures used before) has no glyph for these
    bundled = ImageFont.load_default(size=32)
    assert bytes(bundled.getmask("猫")) == bytes(bundled.getmask("\U0010fffd"))


def test_a_character_no_font_has_is_named_once_with_how_to_get_fonts(caplog, monkeypatch) -> None:
    """A character no font has is drawn as a box: the first one drawn says so, and what font it needs."""
    monkeypatch.setattr(fonts, "_warned", set())
    unknown = "\U000f0000"  # a private-use code point no font here maps
    assert fonts.missing_glyphs(unknown) == [unknown]
    with caplog.at_level(logging.WARNING, logger="epic_hf.viz.fonts"):
        fonts.ChainFont(14).getlength(f"a{unknown}b{unknown}")
        fonts.ChainFont(14).getlength(unknown)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "U+F0000" in messages[0] and "install a font for its script" in messages[0]
    assert "epic_hf[cjk]" not in messages[0]  # a private-use character is not CJK (tests/test_first_hour.py: emoji)


def test_unicode_label_is_drawn_in_the_title(explanation: Explanation) -> None:
    figure = render_explanation(dataclasses.replace(explanation, target_label=UNICODE_LABEL), CELL)
    m = Metrics(CELL)
    band = (m.margin, m.margin, figure.width - m.margin, m.margin + m.line_height("title"))
    extent = ink_extent(figure, band)
    assert extent is not None
    width = m.font("title").getlength(UNICODE_LABEL)
    assert abs((extent[1] - extent[0]) - width) < 0.1 * width  # the whole label, not an ellipsis


def test_fit_cuts_with_an_ellipsis_at_the_end_or_middle() -> None:
    font = fonts.ChainFont(14)
    long = "a very long ImageNet label, with several synonyms, that never fits"
    short = font.fit(long, 120)
    assert short.endswith("…") and font.getlength(short) <= 120
    name = font.fit("some_very_long_file_name_from_a_camera_0001.jpg", 120, middle=True)
    assert "…" in name[1:-1] and name.endswith(".jpg") and font.getlength(name) <= 120
    assert font.fit("ok", 120) == "ok"


def test_a_label_caption_keeps_its_start_and_key_a_file_name_its_end() -> None:
    font = fonts.ChainFont(14)
    shark = "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias #5"
    assert captions.short_prototype_name(shark, font, 160) == "great white shark #5"
    long_label = "astronaut Eileen Collins in her official NASA portrait #1042"
    cut = captions.short_prototype_name(long_label, font, 150)
    assert cut.startswith("astronaut") and cut.endswith("… #1042") and font.getlength(cut) <= 150
    assert captions.short_prototype_name(long_label, font, font.getlength("#1042") + 4) == "#1042"
    file_name = "gcompris_screenshot_of_the_animals_board_0042.jpg (animals)"
    cut = captions.short_prototype_name(file_name, font, 150)
    assert cut.startswith("…") and cut.endswith("0042.jpg (animals)") and font.getlength(cut) <= 150
    assert captions.short_prototype_name("tabby cat #1", font, 150) == "tabby cat #1"


def test_signed_numbers_keep_their_sign() -> None:
    assert captions.signed(1.5, 2) == "+1.50"
    assert captions.signed(-0.0004, 3) == "\u22120.000"  # tiny negatives stay negative (colour agrees)
    assert captions.percent(-0.004) == "\u22120.4%"


def test_legend_and_decomposition_fit_for_every_count_up_to_the_cap() -> None:
    worst_name, worst_number, worst_share = "channel 2047", captions.signed(-12.345, 3), "\u2212100.0%"
    for cell in (96, 160, 240):
        m = Metrics(cell)
        body, small = m.font("body"), m.font("small")
        em = body.size
        swatch = max(8, em - 2)
        assert swatch + em // 2 + body.getlength(worst_name) <= 12.5 * em - body.getlength(worst_number) - em / 2
        assert 12.5 * em <= 17.5 * em - body.getlength(worst_share) - em / 2
        assert 17.5 * em <= m.legend_column_width
        coverage = f"the 12 channels shown add {captions.signed(123.4567)}, 100.0% of the logit {captions.signed(123.4567)}"
        assert body.getlength(coverage) <= m.decomposition_width
        assert small.getlength(captions.SHARE_MEANING.format(count=2048)) <= m.decomposition_width
        for count in range(1, MAX_CHANNELS_SHOWN + 1):
            layout = explanation_layout(count, 5, cell, cls_term=True)
            entries = [layout.legend_entry(slot) for slot in range(count)]
            legend = layout.legend_box
            for entry in entries:
                assert legend[0] <= entry[0] and entry[2] <= legend[2] + m.pad and entry[3] <= legend[3]
            assert len(set(entries)) == count  # no two entries in the same place


def test_sheet_states_the_decomposition_coverage_and_share(explanation: Explanation) -> None:
    terms = captions.decomposition_terms(explanation)
    assert [name for name, _ in terms] == [f"all {explanation.contributions.numel()} channels", "bias"]
    assert sum(value for _, value in terms) == pytest.approx(explanation.target_logit, abs=1e-5)
    shown = sum(c.contribution for c in explanation.channels)
    line = captions.coverage_line(explanation, explanation.channels)
    assert line.startswith(f"the 4 channels shown add {captions.signed(shown)}")
    if 0 <= shown <= explanation.target_logit:
        assert f"{captions.percent(shown / explanation.target_logit)} of the logit" in line
    meaning = captions.share_meaning(explanation)
    assert meaning.startswith("share = contribution ÷ Σ|contribution|")
    # the three lines are drawn, uncut, where the layout puts them
    figure = explanation.to_image()
    layout = explanation_layout(4, 0, CELL)
    m = layout.metrics
    box = layout.decomposition_box
    y = box[1] + m.line_height("small") + 3 * m.line_height("body") + m.gap
    others = captions.others_line(explanation, explanation.channels)  # why the two percentages agree
    assert others.startswith(f"the other {explanation.contributions.numel() - 4} channels and the bias ")
    for text, role in ((line, "body"), (others, "body"), (meaning, "small")):
        band = (box[0], y, box[2], y + m.line_height(role))
        extent = ink_extent(figure, band, threshold=160)
        width = m.font(role).getlength(text)
        assert extent is not None and abs((extent[1] - extent[0]) - width) < 0.08 * width, text
        y += m.line_height(role)


def test_cls_term_is_shown_when_nonzero(explanation: Explanation) -> None:
    with_cls = dataclasses.replace(explanation, cls_contribution=0.5, bias=explanation.bias - 0.5)
    terms = captions.decomposition_terms(with_cls)
    assert [name for name, _ in terms][1] == "CLS token's own part"
    assert f"{with_cls.patch_share:.0%}" in captions.cls_meaning(with_cls)[1]
    spatial = float(with_cls.contributions.abs().sum())
    assert with_cls.patch_share == pytest.approx(spatial / (spatial + 0.5))
    assert explanation.patch_share == 1.0 and explanation.to_dict()["patch_share"] == 1.0
    assert sum(value for _, value in terms) == pytest.approx(with_cls.target_logit, abs=1e-5)
    figure = with_cls.to_image()
    assert figure.size == explanation_layout(4, 0, CELL, cls_term=True).size
    assert "CLS" in captions.decomposition_equation(with_cls)


def test_title_marks_a_miss_and_a_hit(explanation: Explanation) -> None:
    predicted = explanation.predicted_label
    other = next(label for label in LABELS if label != predicted)
    m = Metrics(CELL)
    miss = dataclasses.replace(explanation, true_label=other)
    hit = dataclasses.replace(explanation, true_label=predicted)
    assert captions.verdict(miss) == (f"MISS: true class {other}", False) and miss.is_correct is False
    assert captions.verdict(hit) == ("correct", True) and hit.is_correct is True
    band = (0, 0, explanation_layout(4, 0, CELL).size[0], m.margin + m.line_height("title"))
    miss_figure, hit_figure = miss.to_image(), hit.to_image()
    assert pixels_of(miss_figure, band, NEGATIVE) > 200 and pixels_of(miss_figure, band, POSITIVE) == 0
    assert pixels_of(hit_figure, band, POSITIVE) > 200 and pixels_of(hit_figure, band, NEGATIVE) == 0
    assert pixels_of(explanation.to_image(), band, NEGATIVE) == 0  # no true label, no tag
    assert miss.to_dict()["correct"] is False


def test_more_channels_than_the_cap_are_cut_with_a_warning(explanation: Explanation, caplog) -> None:
    base = explanation.channels
    channels = [dataclasses.replace(base[i % len(base)], channel=i) for i in range(MAX_CHANNELS_SHOWN + 2)]
    many = dataclasses.replace(explanation, channels=channels)
    with caplog.at_level(logging.WARNING, logger="epic_hf.viz"):
        figure = many.to_image()
    shared = captions.shared_cell_notes(channels[:MAX_CHANNELS_SHOWN])  # copies of the same boxes, noted
    assert shared and figure.size == explanation_layout(MAX_CHANNELS_SHOWN, 0, CELL,
                                                                          notes=len(shared)).size
    assert any("MAX_CHANNELS_SHOWN" in record.getMessage() for record in caplog.records)
    assert len(many.to_dict()["channels"]) == MAX_CHANNELS_SHOWN + 2
    with pytest.raises(ValueError, match="MAX_CHANNELS_SHOWN"):
        explanation_layout(MAX_CHANNELS_SHOWN + 1, 0, CELL)


# -- prototypes -----------------------------------------------------------------------------
def test_prototype_rows_render_per_layout(banked) -> None:
    _, bank, explanation = banked
    assert all(len(channel.prototypes) == NUM_PROTOTYPES for channel in explanation.channels)
    figure = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), NUM_PROTOTYPES, CELL)
    assert figure.size == layout.size
    line_width = Metrics(CELL).line_width
    for row, channel in enumerate(explanation.channels):
        for index, prototype in enumerate(channel.prototypes):
            assert prototype.image.size == (IMAGE_SIZE, IMAGE_SIZE)
            rect = scaled(prototype.box, layout.prototype_cell(row, index))
            assert_outline(figure, rect, CHANNEL_COLORS[row], line_width)
        assert channel.prototypes[0].sample_key == int(bank.sample_keys[channel.channel, 0])


def test_prototype_captions_use_names_and_mark_this_image(banked) -> None:
    _, _, explanation = banked
    first, second = explanation.channels[0].prototypes[:2]
    assert captions.prototype_caption(first)[0] == f"#{first.sample_key}"
    named = dataclasses.replace(first, name="tabby_07.jpg")
    assert captions.prototype_caption(named) == ("tabby_07.jpg", f"{first.score:.2f}")
    query = dataclasses.replace(second, is_query=True)
    assert captions.prototype_caption(query)[0] == "this image"
    assert query.to_dict()["is_query"] is True and named.to_dict()["name"] == "tabby_07.jpg"
    rest = explanation.channels[0].prototypes[2:]
    channel = dataclasses.replace(explanation.channels[0], prototypes=[named, query, *rest])
    marked = dataclasses.replace(explanation, channels=[channel, *explanation.channels[1:]]).to_image()
    plain = explanation.to_image()
    layout = explanation_layout(len(explanation.channels), NUM_PROTOTYPES, CELL)
    m = Metrics(CELL)
    cell = layout.prototype_cell(0, 1)
    strip = m.line_height("small") + 2 * m.gap  # the tag sits in the top or bottom corner, away from the box
    corners = [(cell[0], cell[1], cell[0] + m.cell // 2, cell[1] + strip),
               (cell[0], cell[3] - strip, cell[0] + m.cell // 2, cell[3])]
    ink = (28, 28, 32)
    assert sum(pixels_of(marked, corner, ink) for corner in corners) > 100
    assert sum(pixels_of(plain, corner, ink) for corner in corners) < 10
    caption = (cell[0], cell[3], cell[2], cell[3] + m.caption_height)
    assert np.abs(np.asarray(marked.crop(caption), float) - np.asarray(plain.crop(caption), float)).sum() > 0


def test_bank_show_matches_its_layout(banked) -> None:
    _, bank, _ = banked
    for channel in (0, 3):
        sheet = render_prototype_sheet(bank, channel)
        layout = prototype_sheet_layout(len(bank.prototypes(channel)), CELL)
        assert sheet.size == layout.size
        first = bank.prototypes(channel)[0]
        assert_outline(sheet, scaled(first.box, layout.prototype_cell(0)), CHANNEL_COLORS[channel],
                       Metrics(CELL).line_width)


# -- helpers --------------------------------------------------------------------------------
def test_heatmap_overlay_pixels() -> None:
    image = shapes_image(3, 40)
    dimmed = colors.dimmed_photo(image).astype(np.float64)
    cold = np.asarray(heatmap_overlay(image, torch.zeros(40, 40), alpha=0.5), dtype=np.float64)
    assert np.abs(cold - dimmed).max() <= 1.0  # a map that never fires: the dimmed photo, no colour laid on
    hot = torch.zeros(40, 40)
    hot[10, 30] = 5.0
    warm = np.asarray(heatmap_overlay(image, hot, alpha=0.6), dtype=np.float64)
    hottest = colorize(np.ones((1, 1)))[0, 0].astype(np.float64)
    expected_peak = dimmed[10, 30] * 0.4 + hottest * 0.6  # the opacity rises to alpha at the peak
    assert np.abs(warm[10, 30] - expected_peak).max() <= 1.0
    assert np.abs(warm[0, 0] - dimmed[0, 0]).max() <= 1.0  # far from the peak: no heat, the dimmed photo
    with pytest.raises(ValueError):
        heatmap_overlay(image, hot, alpha=1.5)


# -- the HTML report ------------------------------------------------------------------------
class _PageCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.sources.append(attributes.get("src") or "")
        if tag == "a":
            self.links.append(attributes.get("href") or "")
        if tag in ("script", "link") or (tag != "img" and attributes.get("src")):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_self_contained(explainer: EpicExplainer, tmp_path) -> None:
    explanations = explainer.explain([shapes_image(seed) for seed in (0, 1, 2)], top_k=3)
    path = write_html_report(explanations, tmp_path / "report" / "index.html", title="Tiny <shapes>")
    parser = _PageCollector()
    parser.feed(path.read_text(encoding="utf-8"))
    assert len(parser.sources) == len(explanations) == 3
    prefix = "data:image/png;base64,"
    for source in parser.sources:
        assert source.startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(source[len(prefix):]))) as opened:
            opened.load()
            assert opened.width > 0
    assert parser.external == [] and parser.links == []
    text = " ".join(parser.text)
    assert "Tiny <shapes>" in text
    for explanation in explanations:
        assert explanation.target_label in text
        assert f"{explanation.target_logit:.4f}" in text
    assert "plus the bias" in text and "share = contribution" in text and "the logit" in text


def test_html_report_names_files_links_outputs_and_lists_skipped(explainer: EpicExplainer, tmp_path) -> None:
    images = [shapes_image(seed) for seed in (0, 1)]
    found = explainer.explain(images, top_k=3)
    predicted = found[0].predicted_label
    wrong = next(label for label in LABELS if label != found[1].predicted_label)
    explanations = [
        dataclasses.replace(found[0], source="dir/cat <1>.jpg", true_label=predicted),
        dataclasses.replace(found[1], source="dog.png", true_label=wrong),
    ]
    out = tmp_path / "run"
    pngs = [e.save(out / "pictures" / f"x{i}.png") for i, e in enumerate(explanations)]
    jsons = [e.save(out / f"x{i}.json") for i, e in enumerate(explanations)]
    skipped = ["broken.jpg: cannot identify image file", "notes.txt: not an image"]
    path = write_html_report(explanations, out / "index.html", png_paths=pngs, json_paths=jsons, skipped=skipped)
    raw = path.read_text(encoding="utf-8")
    parser = _PageCollector()
    parser.feed(raw)
    assert parser.links == ["pictures/x0.png", "x0.json", "pictures/x1.png", "x1.json"]
    assert all((out / link).is_file() for link in parser.links)
    text = " ".join(parser.text)
    assert "dir/cat <1>.jpg" in text and "dog.png" in text and "<1>" not in raw
    assert "Skipped 2 files" in text and "broken.jpg: cannot identify image file" in text and "notes.txt" in text
    assert raw.index("broken.jpg") < raw.index("explanation-1")  # listed before the sections
    assert "correct" in text and f"MISS: true class {wrong}" in text and f"true label {wrong}" in text
    assert "1 correct, 1 miss." in text
    with pytest.raises(ValueError, match="png_paths"):
        write_html_report(explanations, out / "bad.html", png_paths=pngs[:1])


def test_html_report_accepts_one_explanation_and_escapes(explanation: Explanation, tmp_path) -> None:
    odd = dataclasses.replace(explanation, target_label='<script>alert("x")</script> & co')
    path = write_html_report(odd, tmp_path / "one.html")
    raw = path.read_text(encoding="utf-8")
    assert "<script>" not in raw
    assert "&lt;script&gt;" in raw
    parser = _PageCollector()
    parser.feed(raw)
    assert len(parser.sources) == 1
    assert odd.target_label in " ".join(parser.text)
    with pytest.raises(TypeError, match="item 1"):
        write_html_report([explanation, "not an explanation"], tmp_path / "bad.html")
