"""The offline demo: planted-concept images, a tiny classifier, an EPIC fit and its explanations.

``epic-hf demo`` (or :func:`run_demo`) needs no network and no GPU. It

1. draws a training set of 4 planted concepts (coloured shapes on textured noise,
   :mod:`epic_hf.synthetic`) and trains a tiny ResNet on it;
2. saves that classifier as a normal ``transformers`` directory (``classifier/``), so the
   bank can name it as its base model;
3. fits EPIC (invertible U, a short schedule) and saves the bank (``bank/``), which
   ``EpicExplainer.from_pretrained(output_dir / "bank")`` loads again, classifier included;
4. explains a few held-out images: one PNG each, ``report.html`` and ``explanations.json``.

The known answer: a good bank's channels fire on the shapes, so the prototypes of the top
channels of a "red circle" image should be red circles.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .explainer import EpicExplainer
from .synthetic import planted_dataset, tiny_resnet, train_classifier
from .viz import write_html_report

logger = logging.getLogger(__name__)

NUM_CLASSES = 4


def run_demo(
    output_dir: str | Path,
    num_images: int = 240,
    seed: int = 0,
    num_explained: int = 4,
    top_k: int = 4,
    classifier_epochs: int = 4,
) -> dict[str, Any]:
    """Train, fit, explain and save everything under ``output_dir``; returns a summary dict.

    Args:
        output_dir: where ``classifier/``, ``bank/``, ``explanation_*.png``, ``report.html``
            and ``explanations.json`` go (created if missing).
        num_images: training images (the dataset EPIC mines prototypes from).
        seed: seeds the data, the classifier and the fit; held-out images use ``seed + 1``.
        num_explained: held-out images to explain.
        top_k: channels shown per explanation.
        classifier_epochs: training epochs of the tiny classifier.
    """
    if num_images < NUM_CLASSES:
        raise ValueError(f"num_images must be at least {NUM_CLASSES}, got {num_images}")
    if num_explained < 1:
        raise ValueError(f"num_explained must be at least 1, got {num_explained}")
    started = time.perf_counter()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    # 1. data with a known answer, and a classifier trained on it
    train = planted_dataset(num_images, num_classes=NUM_CLASSES, size=64, seed=seed)
    model, processor = tiny_resnet(NUM_CLASSES, seed=seed)
    accuracy = train_classifier(model, processor, train, epochs=classifier_epochs, seed=seed)
    logger.info("demo classifier: training accuracy %.3f on %d images", accuracy, num_images)

    # 2. save it, so that the bank names a base model that can be loaded again
    classifier_dir = (output / "classifier").resolve()
    model.save_pretrained(classifier_dir)
    processor.save_pretrained(classifier_dir)

    # 3. the EPIC fit. Invertible U, and a larger learning rate than the paper's 1e-3: with a
    #    5-step schedule on 240 images there are only a few hundred optimizer steps.
    explainer = EpicExplainer(model, processor, matrix="invertible", base_model_name_or_path=str(classifier_dir))
    report = explainer.fit(
        train, prototypes_per_channel=5, schedule_start=20, schedule_end=5, schedule_steps=5,
        batch_size=64, train_batch_size=32, lr=1e-2, seed=seed,
    )
    logger.info("demo purity: %.4f before (U = I) -> %.4f after", report.purity_before, report.purity_after)
    bank_dir = explainer.save_pretrained(output / "bank")

    # 4. explanations of held-out images
    held_out = planted_dataset(num_explained, num_classes=NUM_CLASSES, size=64, seed=seed + 1)
    images = [image.convert("RGB") for image in held_out["image"]]
    names = held_out.features["label"].names
    explanations = explainer.explain(images, top_k=top_k, true_label=[names[label] for label in held_out["label"]])
    pictures = []
    for position, explanation in enumerate(explanations):
        path = explanation.save(output / f"explanation_{position}.png")
        pictures.append(str(path))
    html_path = output / "report.html"
    write_html_report(explanations, html_path)
    records = []
    for position, explanation in enumerate(explanations):
        records.append(explanation.to_dict())
    json_path = output / "explanations.json"
    json_path.write_text(json.dumps(records, indent=2))
    correct = sum(r["target_label"] == r["true_label"] for r in records)

    summary = {
        "output_dir": str(output),
        "classifier_dir": str(classifier_dir),
        "bank_dir": str(bank_dir),
        "num_images": num_images,
        "classifier_accuracy": accuracy,
        "purity_before": report.purity_before,
        "purity_after": report.purity_after,
        "num_channels": explainer.num_channels,
        "prototypes_per_channel": explainer.bank.prototypes_per_channel if explainer.bank else 0,
        "bank_bytes": sum(f.stat().st_size for f in Path(bank_dir).iterdir() if f.suffix == ".safetensors"),
        "held_out_correct": correct,
        "held_out_total": len(records),
        "explanations": pictures,
        "report_html": str(html_path),
        "explanations_json": str(json_path),
        "seconds": time.perf_counter() - started,
    }
    logger.info("demo finished in %.1f s; open %s", summary["seconds"], html_path)
    return summary
