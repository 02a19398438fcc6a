"""How good is EPIC on a CLS-token ViT, next to a CNN, on data whose answer is known?

Both classifiers are trained here on the same planted-concept images (``epic_hf.synthetic``: a
coloured shape on textured noise, one concept per class), then each gets an EPIC fit with the same
settings (the demo's: invertible U, a 5-step schedule) and the same evaluation. The ViT is split by
the held linearisation (docs/how_epic_works.md); the CNN is the demo's tiny ResNet. A tiny DINOv2
(head on concat(CLS, mean of patches)) is measured twice on the same trained weights: as it loads by
default (its CLS half is the CLS term) and with ``split_cls=True`` (that half split over the tokens
too, 2D channels). Reported per model:

* held-out accuracy of the classifier itself;
* purity before (U = I) and after the fit, from the fit report;
* class consistency, shift stability and exact deletion (top-k vs random channels), from
  ``explainer.evaluate`` on held-out images;
* concept hits: over held-out images the model gets right, the share of the prototypes of the
  top channel that show the image's own planted concept (labels read from the training set);
* the patches' share of |evidence| (``explanation.patch_share``; 1.0 for the CNN), mean over the
  held-out images, and the mean of the CLS token's own part.

Run::

    python benchmarks/bench_vit_quality.py            # 480 training images, 64 px: a few minutes on 2 cores
    python benchmarks/bench_vit_quality.py --small    # 96 images: the suite's smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epic_hf import EpicExplainer  # noqa: E402
from epic_hf.synthetic import planted_dataset, tiny_resnet, tiny_vit, train_classifier  # noqa: E402

logger = logging.getLogger("bench_vit_quality")


def concept_hits(explanations: list, train_labels: list[int]) -> float | None:
    """Share of the top channel's prototypes that come from the explained image's own class (right answers only)."""
    hits, total = 0, 0
    for explanation in explanations:
        if not explanation.is_correct or not explanation.channels:
            continue
        for prototype in explanation.channels[0].prototypes:
            if prototype.is_query:
                continue
            total += 1
            hits += int(train_labels[prototype.sample_key] == explanation.target_index)
    return hits / total if total else None


def tiny_dinov2(num_classes: int, layers: int, width: int, seed: int) -> tuple[Any, Any]:
    """A small DINOv2 classifier (8 px patches on 64 px), whose head reads concat(CLS, mean of patches)."""
    from transformers import Dinov2Config, Dinov2ForImageClassification, ViTImageProcessor

    from epic_hf.synthetic import CONCEPTS

    names = list(CONCEPTS[:num_classes])
    torch.manual_seed(seed)
    config = Dinov2Config(image_size=64, patch_size=8, hidden_size=width, num_hidden_layers=layers,
                          num_attention_heads=4, mlp_ratio=2, id2label=dict(enumerate(names)),
                          label2id={n: i for i, n in enumerate(names)})
    return Dinov2ForImageClassification(config), ViTImageProcessor(size={"height": 64, "width": 64})


def measure(name: str, model: Any, processor: Any, train: Any, held_out: Any, args: argparse.Namespace, *,
            split_cls: bool = False, accuracy: float | None = None) -> dict:
    """Train the classifier (unless its training ``accuracy`` is given: trained already), fit, evaluate."""
    started = time.perf_counter()
    if accuracy is None:
        accuracy = train_classifier(model, processor, train, epochs=args.classifier_epochs, lr=args.classifier_lr,
                                    seed=args.seed)
    trained = time.perf_counter() - started
    explainer = EpicExplainer(model, processor, matrix="invertible", split_cls=split_cls)
    report = explainer.fit(train, prototypes_per_channel=5, schedule_start=20, schedule_end=5, schedule_steps=5,
                           batch_size=64, train_batch_size=32, lr=1e-2, seed=args.seed)
    names = held_out.features["label"].names
    truths = [names[label] for label in held_out["label"]]
    explanations = explainer.explain([im.convert("RGB") for im in held_out["image"]], top_k=4, true_label=truths)
    with tempfile.TemporaryDirectory() as scratch:
        evaluation = explainer.evaluate(held_out, output_dir=scratch).headline()
    return {
        "model": name, "train accuracy": accuracy,
        "held-out accuracy": statistics.mean(float(bool(e.is_correct)) for e in explanations),
        "purity before (U = I)": report.purity_before, "purity after": report.purity_after,
        "class consistency": evaluation["class_consistency"],
        "class consistency (U = I)": evaluation["class_consistency_identity"],
        "shift stability": evaluation["shift_stability"],
        "deletion drop, top-k": evaluation["deletion_drop_top_k"],
        "deletion drop, random": evaluation["deletion_drop_random"],
        "concept hits": concept_hits(explanations, list(train["label"])),
        "patch share": statistics.mean(e.patch_share for e in explanations),
        "mean abs(CLS own part)": statistics.mean(abs(e.cls_contribution) for e in explanations),
        "seconds (train + fit + evaluate)": time.perf_counter() - started, "seconds training": trained,
    }


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print()
    print(f"## bench_vit_quality: {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPU cores")
    print()
    print(f"{args.num_images} training and {args.num_held_out} held-out planted-concept images at 64 px, "
          f"{args.num_classes} classes; classifiers trained {args.classifier_epochs} epochs; EPIC: invertible U, "
          "schedule 20 -> 5 in 5 steps, lr 1e-2 (the demo's); evaluation at its defaults on the held-out images")
    print()
    print("| metric | " + " | ".join(row["model"] for row in rows) + " |")
    print("| --- | " + " | ".join("---:" for _ in rows) + " |")
    for key in rows[0]:
        if key == "model":
            continue
        cells = [row[key] for row in rows]
        print(f"| {key} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="96 training images, 2 epochs: a smoke run")
    parser.add_argument("--num-images", type=int, default=480)
    parser.add_argument("--num-held-out", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--classifier-epochs", type=int, default=12)
    parser.add_argument("--classifier-lr", type=float, default=3e-3)
    parser.add_argument("--vit-layers", type=int, default=4)
    parser.add_argument("--vit-width", type=int, default=64, help="the ViT's hidden size D (the CNN's D is 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.small:
        args.num_images, args.num_held_out, args.classifier_epochs, args.vit_layers = 96, 16, 2, 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train = planted_dataset(args.num_images, num_classes=args.num_classes, size=64, seed=args.seed)
    held_out = planted_dataset(args.num_held_out, num_classes=args.num_classes, size=64, seed=args.seed + 1)
    cnn, cnn_processor = tiny_resnet(args.num_classes, seed=args.seed)
    vit, vit_processor = tiny_vit(args.num_classes, layers=args.vit_layers, width=args.vit_width, seed=args.seed)
    dinov2, dinov2_processor = tiny_dinov2(args.num_classes, args.vit_layers, args.vit_width, args.seed)
    rows = [measure("tiny ResNet (D=32)", cnn, cnn_processor, train, held_out, args),
            measure(f"tiny ViT ({args.vit_layers} layers, D={args.vit_width}, CLS token)", vit, vit_processor, train, held_out,
                    args)]
    dinov2_name = f"tiny DINOv2 ({args.vit_layers} layers, D={args.vit_width})"
    rows.append(measure(dinov2_name, dinov2, dinov2_processor, train, held_out, args))
    rows.append(measure(f"{dinov2_name}, split_cls (2D={2 * args.vit_width})", dinov2, dinov2_processor, train,
                        held_out, args, split_cls=True, accuracy=rows[-1]["train accuracy"]))
    print_table(rows, args)


if __name__ == "__main__":
    main()
