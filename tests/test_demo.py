"""The demo invites the next step (issue 34): its held-out images by class, and a ViT at its best epoch.

Real runs of :func:`epic_hf.demo.run_demo` and of the classifier training it uses; the commands the
README gives next (``epic-hf explain``, ``epic-hf evaluate``) run on what the demo wrote.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from epic_hf.synthetic import classifier_accuracy, planted_dataset, tiny_resnet, train_classifier

LABELS = ("red circle", "green square", "blue triangle", "yellow cross")


def test_training_keeps_the_best_validation_epoch(caplog) -> None:
    """The model that comes back is the epoch with the best validation accuracy (the latest of equals)."""
    train = planted_dataset(48, num_classes=3, size=64, seed=5)
    validation = planted_dataset(24, num_classes=3, size=64, seed=6)
    model, processor = tiny_resnet(3, (8, 8), seed=3)
    with caplog.at_level(logging.INFO, logger="epic_hf.synthetic"):
        train_classifier(model, processor, train, epochs=5, lr=3e-2, validation=validation)
    scores = [float(v) for v in re.findall(r"validation accuracy (\d\.\d+)", caplog.text)][:5]
    assert len(scores) == 5
    kept = classifier_accuracy(model, processor, validation)
    assert kept == pytest.approx(max(scores), abs=1e-3)
    assert f"kept the best epoch, validation accuracy {max(scores):.3f}" in caplog.text


@pytest.mark.slow  # a small demo, then the README's explain and evaluate commands on its images: about 20 s
def test_the_demo_writes_its_held_out_images_by_class_for_the_next_commands(tmp_path: Path) -> None:
    from epic_hf.cli import main
    from epic_hf.demo import run_demo

    summary = run_demo(tmp_path / "demo", num_images=24, num_explained=2, classifier_epochs=1, num_held_out=8)
    images = Path(summary["images_dir"])
    assert images == tmp_path / "demo" / "images"
    held_out = planted_dataset(8, num_classes=4, size=64, seed=1)  # the demo's held-out images: seed + 1
    assert sorted(p.name for p in images.iterdir()) == sorted(LABELS)  # the labels' own text, spaces kept
    files = sorted(images.rglob("*.png"))
    assert len(files) == 8
    for index, (image, label) in enumerate(zip(held_out["image"], held_out["label"])):
        written = images / LABELS[label] / f"{index:03d}.png"
        assert np.array_equal(np.asarray(Image.open(written).convert("RGB")), np.asarray(image.convert("RGB")))
    records = json.loads(Path(summary["explanations_json"]).read_text())
    for record, kind in zip(records, summary["explained"]):  # each explained image names its file
        path = tmp_path / "demo" / kind.split(":")[0]
        assert path.is_file() and path.parent.name == record["true_label"]
    # the README's next commands run on the folder, its class subfolders giving the true labels
    explained = tmp_path / "explained"
    assert main(["explain", summary["bank_dir"], str(images), "--output", str(explained)]) == 0
    assert len(list(explained.rglob("*.png"))) >= 8
    evaluation = tmp_path / "evaluation"
    assert main(["evaluate", summary["bank_dir"], str(images), "--output-dir", str(evaluation)]) == 0
    assert any(evaluation.iterdir())


@pytest.mark.slow  # the ViT demo at its defaults: about 30 s on 2 cores
def test_the_vit_demo_at_its_default_seed_shows_no_miss(tmp_path: Path) -> None:
    """It keeps its best validation epoch: the last one had fallen to 0.891 on held-out images."""
    from epic_hf.demo import run_demo

    summary = run_demo(tmp_path / "demo", architecture="vit")
    records = json.loads(Path(summary["explanations_json"]).read_text())
    assert len(records) == 4 and all(record["correct"] for record in records)
    assert not any("miss" in kind for kind in summary["explained"])
    assert summary["held_out_correct"] == summary["held_out_total"] == 4
    assert summary["validation_accuracy"] == 1.0 and summary["held_out_accuracy"] >= 0.95
    assert "MISS" not in Path(summary["report_html"]).read_text()
