"""File names and labels as users have them: repeats, look-alikes, control characters, reserved names.

Every image of a batch gets its own output, decided before anything is written; the report links
the picture of that very image; a newline or carriage return in a name or a label is drawn and
printed escaped instead of breaking the text engine or the one-line-per-image output.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

from epic_hf.cli.explain import output_names
from epic_hf.synthetic import planted_dataset
from epic_hf.viz.fonts import printable
from test_cli import epic_hf
from tiny_models import save_tiny_model

NAMES = ["cat.jpg", "cat.png", "cat_1.jpg", "..jpg", "explanations.png", "report.png", "line\nbreak.png",
         "carriage\rreturn.png", "Cat.png"]


def test_output_names_are_distinct_plain_and_keep_the_image_stem_where_they_can():
    names = output_names([Path(name) for name in NAMES])
    assert len({name.lower() for name in names}) == len(NAMES)
    assert names[:3] == ["cat", "cat_2", "cat_1"]  # cat_1.jpg keeps its own name; the second cat takes the next
    assert not {"explanations", "report"} & {name.lower() for name in names}
    assert all(name.isprintable() and not name.startswith(".") and "/" not in name for name in names)


def test_control_characters_are_shown_escaped():
    assert printable("a\nb\rc\x1b\u202e") == "a\\nb\\rc\\x1b\\u202e"
    assert printable("chat noir 猫") == "chat noir 猫"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("names") / "pictures"
    folder.mkdir()
    images = planted_dataset(len(NAMES), size=32, seed=3)["image"]
    for name, image in zip(NAMES, images):
        image.save(folder / name, format="PNG" if name.endswith(".png") else "JPEG")
    return folder


def test_a_batch_of_awkward_names_writes_one_output_per_image_and_links_each(pictures, tmp_path):
    model = save_tiny_model("resnet", tmp_path / "model")
    out = tmp_path / "out"
    completed = epic_hf("explain", str(model), str(pictures), "--top-k", "2", "--output", str(out))
    assert completed.stdout.count("top channels") == len(NAMES)
    assert all("\r" not in line for line in completed.stdout.splitlines())
    lines = [line for line in completed.stdout.splitlines() if "top channels" in line]
    assert len(lines) == len(NAMES) and any("line\\nbreak.png" in line for line in lines)
    per_image = [p for p in out.glob("*.json") if p.name != "explanations.json"]
    assert len(per_image) == len(NAMES) and len(list(out.glob("*.png"))) == len(NAMES)
    sources = sorted(json.loads(p.read_text())["source"] for p in per_image)
    assert sources == sorted(NAMES)  # each image's own explanation, none overwritten
    combined = json.loads((out / "explanations.json").read_text())
    assert isinstance(combined, list) and len(combined) == len(NAMES)
    report = (out / "report.html").read_text()
    linked = dict(re.findall(r'<p class="file">file <code>(.*?)</code> &middot; <a href="(.*?)">PNG</a>', report, re.S))
    assert len(linked) == len(NAMES)
    for record in per_image:  # the report links, for each image, the picture written for that image
        source = json.loads(record.read_text())["source"]
        href = linked[html.escape(printable(source))]
        assert Path(urllib.parse.unquote(html.unescape(href))).name == record.with_suffix(".png").name, source
    shutil.rmtree(out)
