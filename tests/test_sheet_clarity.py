"""The sheet's first-hour traps (issue 34): shared peak cells, a hot spot that reads cold, puzzling words.

Each test builds a real explanation of a tiny ResNet, changes what the trap needs (channels that
share a box, a CLS term, a logit smaller than the shown channels' sum) and reads the rendered
pixels or the words the sheet and the report take from :mod:`epic_hf.viz.captions`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from epic_hf import EpicExplainer, Explanation
from epic_hf.viz import captions, explanation_layout, heatmap_overlay, render_html_report
from epic_hf.viz.colors import channel_color, colorize
from epic_hf.viz.layout import Metrics, scale_box
from tiny_models import IMAGE_SIZE, make_tiny_model, tiny_processor

CELL = 160


def pixels_of(figure: Image.Image, rect, colour) -> int:
    area = np.asarray(figure.crop(rect), dtype=np.int64)
    return int((area == np.array(colour)).all(axis=-1).sum())


def dark_pixels(figure: Image.Image, rect, threshold: int = 110) -> int:
    """Text ink: pixels darker than ``threshold`` (anti-aliased small text has few pixels of the exact ink)."""
    return int((np.asarray(figure.convert("L").crop(rect)) < threshold).sum())


def luminance(rgb) -> float:
    red, green, blue = (float(v) for v in rgb)
    return 0.299 * red + 0.587 * green + 0.114 * blue


@pytest.fixture(scope="module")
def explanation() -> Explanation:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (40, 90, 160))
    image.paste((230, 200, 30), (8, 8, 24, 24))
    return EpicExplainer(make_tiny_model("resnet"), tiny_processor()).explain(image, top_k=4)


def sharing(explanation: Explanation, boxes) -> Explanation:
    """The explanation with its shown channels' boxes replaced by ``boxes``."""
    channels = [dataclasses.replace(c, box=tuple(b)) for c, b in zip(explanation.channels, boxes)]
    return dataclasses.replace(explanation, channels=channels)


# -- channels that peak in the same cell -----------------------------------------------------------
def test_four_channels_on_one_small_cell_each_show_their_colour(explanation: Explanation) -> None:
    """A ViT's 8-pixel patch of a 64-pixel image: the four boxes used to collapse into one."""
    cell_box = (12, 12, 16, 16)  # an eighth of the image: 20 figure pixels at cell 160
    shared = sharing(explanation, [cell_box] * 4)
    figure = shared.to_image()
    layout = explanation_layout(4, 0, CELL, notes=1)
    assert figure.size == layout.size
    main = layout.main_cell
    line_width = Metrics(CELL).line_width
    for slot in range(4):  # every colour is drawn on the input, a ring of sides 10 pixels or more
        assert pixels_of(figure, main, channel_color(slot)) >= 4 * 10 * line_width, slot
    # the innermost ring is the cell itself: the last channel's colour runs along its own box
    inner = scale_box(cell_box, (IMAGE_SIZE, IMAGE_SIZE), main)
    assert figure.getpixel((inner[0] + 1, (inner[1] + inner[3]) // 2)) == channel_color(3)


def test_a_large_shared_box_nests_inside_itself(explanation: Explanation) -> None:
    cell_box = (0, 0, 16, 16)  # 80 figure pixels: room for four rings inside
    figure = sharing(explanation, [cell_box] * 4).to_image()
    main = explanation_layout(4, 0, CELL, notes=1).main_cell
    outer = scale_box(cell_box, (IMAGE_SIZE, IMAGE_SIZE), main)
    m = Metrics(CELL)
    mid_y = (outer[1] + outer[3]) // 2
    for slot in range(4):
        assert figure.getpixel((outer[0] + slot * m.stroke + 1, mid_y)) == channel_color(slot)
    beyond = (outer[2] + 1, outer[1], main[2], outer[3])  # nothing drawn right of the box
    assert all(pixels_of(figure, beyond, channel_color(slot)) == 0 for slot in range(4))


def test_channels_that_share_a_cell_are_named_on_the_sheet_and_in_the_report(explanation: Explanation) -> None:
    shown = explanation.channels
    ids = [c.channel for c in shown]
    pairs = sharing(explanation, [(0, 0, 8, 8), (8, 8, 16, 16), (0, 0, 8, 8), (8, 8, 16, 16)])
    assert captions.shared_cells(pairs.channels) == [[0, 2], [1, 3]]
    assert captions.shared_cell_notes(pairs.channels) == [
        f"channels {ids[0]} and {ids[2]} peak in the same cell (nested boxes)",
        f"channels {ids[1]} and {ids[3]} peak in the same cell (nested boxes)",
    ]
    assert [captions.same_cell_as(pairs.channels, row) for row in range(4)] == [
        None, None, f"same cell as channel {ids[0]}", f"same cell as channel {ids[1]}"]
    all_four = sharing(explanation, [(4, 4, 8, 8)] * 4).channels
    assert captions.shared_cell_notes(all_four) == [
        f"channels {ids[0]}, {ids[1]}, {ids[2]} and {ids[3]} peak in the same cell (nested boxes)"]
    apart = sharing(explanation, [(0, 0, 8, 8), (8, 0, 16, 8), (0, 8, 8, 16), (8, 8, 16, 16)])
    assert captions.shared_cell_notes(apart.channels) == [] and apart.to_image().size == explanation_layout(
        4, 0, CELL).size
    # the notes are drawn: ink where the layout puts them, and under the rows that repeat a cell
    figure = pairs.to_image()
    layout = explanation_layout(4, 0, CELL, notes=2)
    assert figure.size == layout.size
    m = layout.metrics
    legend = layout.legend_box
    for index in range(2):
        band = (legend[0], layout.note_top(index), legend[2], layout.note_top(index) + m.line_height("small"))
        assert dark_pixels(figure, band) > 50
    for row, expected in ((1, False), (2, True), (3, True)):
        patch = layout.patch_cell(row)
        band = (patch[0], patch[3], layout.heatmap_cell(row)[2], patch[3] + m.caption_height)
        assert (dark_pixels(figure, band) > 30) == expected, row
    page = render_html_report([pairs])
    assert f"channels {ids[0]} and {ids[2]} peak in the same cell" in page


# -- the heatmap's hot end ---------------------------------------------------------------------------
@pytest.mark.parametrize("background", [(0, 255, 0), (0, 0, 0), (20, 60, 20), (255, 255, 255), (230, 200, 30)])
def test_the_hottest_pixel_reads_hot_on_any_background(background) -> None:
    """Over pure green and black the old blend's hottest pixel was olive (90, 132, 5) or dark red (90, 5, 5)."""
    image = Image.new("RGB", (32, 32), background)
    heat = torch.zeros(32, 32)
    heat[16, 16] = 3.0
    overlay = np.asarray(heatmap_overlay(image, heat), dtype=np.float64)
    red, green, blue = overlay[16, 16]
    assert red >= 200 and green >= 180 and blue <= 200 and red - blue >= 40, overlay[16, 16]
    assert luminance(overlay[16, 16]) >= 190
    assert luminance(overlay[16, 16]) >= luminance(overlay[0, 0]) + 60  # the hot spot outshines the cold photo


def test_the_ramp_brightens_with_the_heat() -> None:
    ramp = colorize(np.linspace(0.0, 1.0, 64)[None, :])[0]
    brightness = [luminance(colour) for colour in ramp]
    assert all(b <= a + 1e-9 for a, b in zip(brightness[1:], brightness[:-1]))
    assert brightness[-1] >= 230 and brightness[0] <= 40


def test_a_map_that_never_fires_leaves_the_dimmed_photo() -> None:
    image = Image.new("RGB", (16, 16), (200, 100, 50))
    cold = np.asarray(heatmap_overlay(image, torch.zeros(16, 16)), dtype=np.float64)
    assert np.ptp(cold.reshape(-1, 3), axis=0).max() == 0  # even: no colour laid over any pixel
    assert luminance(cold[0, 0]) < luminance((200, 100, 50))
    with pytest.raises(ValueError):
        heatmap_overlay(image, torch.zeros(16, 16), alpha=1.5)


# -- the words -----------------------------------------------------------------------------------
def with_logit(explanation: Explanation, logit: float, cls: float = 0.0) -> Explanation:
    """The explanation with its target logit set and the bias moved so the terms still add up."""
    logits = explanation.logits.clone()
    logits[explanation.target_index] = logit
    bias = logit - float(explanation.contributions.double().sum()) - cls
    return dataclasses.replace(explanation, logits=logits, bias=bias, cls_contribution=cls)


def test_shown_channels_past_the_logit_are_said_plainly(explanation: Explanation) -> None:
    shown = explanation.channels
    total = sum(c.contribution for c in shown)
    small_logit = with_logit(explanation, total - 0.1029)  # the shown channels pass the logit: no "123.4%"
    line = captions.coverage_line(small_logit, shown)
    assert line == f"the 4 channels shown add {captions.signed(total)}; the logit is " \
                   f"{captions.signed(total - 0.1029)}"
    rest = captions.others_line(small_logit, shown)
    assert rest == f"the other {explanation.contributions.numel() - 4} channels and the bias take away 0.1029"
    assert "%" not in line
    negative = with_logit(explanation, -0.5)
    assert captions.coverage_line(negative, shown).endswith(f"the logit is {captions.signed(-0.5)}")
    inside = with_logit(explanation, 2 * total + 1.0)
    assert captions.coverage_line(inside, shown) == (
        f"the 4 channels shown add {captions.signed(total)}, "
        f"{captions.percent(total / (2 * total + 1.0))} of the logit {captions.signed(2 * total + 1.0)}")
    assert captions.others_line(inside, shown).endswith(f"and the bias add {captions.signed(total + 1.0)}")
    one = captions.coverage_line(inside, shown[:1])
    assert one.startswith("the channel shown adds ")


def test_the_cls_part_is_explained_where_it_appears(explanation: Explanation, tmp_path) -> None:
    with_cls = with_logit(explanation, explanation.target_logit, cls=-0.4472)
    names = [name for name, _ in captions.decomposition_terms(with_cls)]
    assert names[1] == "CLS token's own part"
    meaning = captions.cls_meaning(with_cls)
    assert meaning[0] == "CLS part: the class token's own embedding and the biases, via no patch"
    assert meaning[1] == f"the image patches carry {with_cls.patch_share:.0%} of Σ|contribution|, the CLS part the rest"
    assert captions.cls_meaning(explanation) == []
    assert "the CLS part and the bias" in captions.others_line(with_cls, with_cls.channels)
    figure = with_cls.to_image()
    layout = explanation_layout(4, 0, CELL, cls_term=True)
    assert figure.size == layout.size
    m = layout.metrics
    box = layout.decomposition_box
    last = box[1] + m.decomposition_height(True) - m.line_height("small")  # the patches' line, drawn last
    band = (box[0], last, box[2], last + m.line_height("small"))
    assert dark_pixels(figure, band, threshold=170) > 30  # the muted text is there
    from epic_hf.app.views import decomposition_markdown  # the app's table says the same (no gradio needed)

    assert captions.CLS_MEANING in decomposition_markdown(with_cls)
    assert captions.CLS_MEANING not in decomposition_markdown(explanation)
    page = render_html_report([with_cls])
    assert "the CLS token's own part (what reaches the class token through no image patch" in page
    assert "CLS token" not in render_html_report([explanation]).split("</p>")[0]


def test_every_line_fits_its_band_at_every_scale() -> None:
    worst = "the other 2036 channels, the CLS part and the bias take away 123.4567"
    for cell in (96, 160, 240):
        m = Metrics(cell)
        body, small = m.font("body"), m.font("small")
        assert body.getlength(worst) <= m.decomposition_width
        assert body.getlength(f"the 12 channels shown add {captions.signed(-123.4567)}; the logit is "
                              f"{captions.signed(-123.4567)}") <= m.decomposition_width
        assert small.getlength(captions.CLS_MEANING) <= m.decomposition_width
        assert small.getlength(captions.PATCH_SHARE_MEANING.format(share=1.0)) <= m.decomposition_width
        room = 2 * m.cell + m.gap  # a row's note spans its patch and heatmap cells
        assert small.getlength("same cell as channel 2047") <= room
