"""The first hour without traps (issue 34): each trap a new user met, reproduced as they met it.

Class folders spelled as people spell folders; an empty folder, Dataset or stream; a fit that
lowers purity; the model folder's absolute path in pages a stranger reads; hints that name the
wrong thing (gradio's ``share=True`` to a CLI user, the CJK extra for an emoji, "not in this
dataset" for keys that matched by row index).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from epic_hf import EpicExplainer
from epic_hf.cli import main
from epic_hf.synthetic import CONCEPTS, planted_dataset, planted_image, tiny_resnet

FIT = dict(schedule_start=6, schedule_end=3, schedule_steps=2, prototypes_per_channel=3, batch_size=32)


def run_cli(*args: str) -> tuple[int, str, str]:
    """``epic-hf ARGS`` through its ``main``, as the console script runs it: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exited:
            code = int(exited.code or 0)
    return code, out.getvalue(), err.getvalue()


def one_error_line(stderr: str) -> str:
    """The one ``epic-hf: error:`` line a failed command ends with (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("epic-hf: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def save_pictures(folder: Path, concept: str, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        planted_image(concept, rng, 64).save(folder / f"{index}.png")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A classifier folder whose labels have spaces ("red circle"), and a bank fitted on it, beside it."""
    root = tmp_path_factory.mktemp("first_hour")
    model, processor = tiny_resnet(3, (8, 8), seed=3)
    model.save_pretrained(root / "classifier")
    processor.save_pretrained(root / "classifier")
    explainer = EpicExplainer.from_pretrained(root / "classifier")
    explainer.fit(planted_dataset(30, num_classes=3, size=32, seed=0), **FIT)
    explainer.save_pretrained(root / "bank")
    return root


# -- 1. class folders named as people name folders ------------------------------------------------

def test_class_folders_match_labels_ignoring_case_underscores_and_hyphens(project: Path, tmp_path: Path):
    photos = tmp_path / "photos"
    save_pictures(photos / "red_circle", "red circle", 2, seed=1)
    save_pictures(photos / "Green-Square", "green square", 2, seed=2)
    save_pictures(photos / "blue_triangel", "blue triangle", 1, seed=3)  # a typo: matches no label
    save_pictures(photos / "purple hexagon", "blue triangle", 1, seed=4)  # not a class of this model
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("explain", str(project / "bank"), str(photos), "--output", str(out))
    assert code == 0, stderr
    records = {Path(r["image"]).parent.name + "/" + Path(r["image"]).name: r
               for r in json.loads((out / "explanations.json").read_text())}
    for name in ("red_circle/0.png", "red_circle/1.png"):
        assert records[name]["true_label"] == "red circle"
        assert records[name]["correct"] == (records[name]["target_label"] == "red circle")
    assert records["Green-Square/0.png"]["true_label"] == "green square"
    for name in ("blue_triangel/0.png", "purple hexagon/0.png"):  # no hit, and above all no miss
        assert records[name]["true_label"] is None and records[name]["correct"] is None
    report = (out / "report.html").read_text()
    assert report.count("MISS") == sum(r["correct"] is False for r in records.values())
    warnings = [line for line in stderr.splitlines() if "matches none of the model" in line]
    assert len(warnings) == 1, warnings  # one warning, naming both folders
    assert "'blue_triangel' (1 image)" in warnings[0] and "closest: 'blue triangle'" in warnings[0]
    assert "'purple hexagon'" in warnings[0]
    assert "red_circle" not in warnings[0] and "Green-Square" not in warnings[0]


def test_label_matching_rules():
    from epic_hf.naming import closest_labels, match_label

    labels = list(CONCEPTS) + ["great white shark, white shark"]
    assert match_label("RED_circle", labels) == "red circle"
    assert match_label("yellow--cross", labels) == "yellow cross"
    assert match_label("red circle", labels) == "red circle"
    assert match_label("redcircle", labels) is None
    assert match_label("a_b", ["a-b", "a b"]) is None  # two labels match: no guess
    assert match_label("a_b", ["a_b", "a b"]) == "a_b"  # but an exact spelling wins
    assert closest_labels("gren_sqare", labels)[0] == "green square"
