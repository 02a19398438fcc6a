"""``epic-hf evaluate``: purity, class consistency, stability and exact deletion of a bank, under U and U = I."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation import evaluate_explainer
from ..explainer import EpicExplainer
from .common import check_local, emit, model_reference


def add_parser(commands, common: argparse.ArgumentParser, formatter) -> None:
    evaluate = commands.add_parser(
        "evaluate", parents=[common], formatter_class=formatter,
        help="measure a bank's purity, class consistency, stability and deletion faithfulness",
        description="Stream DATASET through the classifier and measure, under the bank's U and under U = I: "
                    "purity, prototype class consistency, explanation stability under pixel noise and a shift, "
                    "and exact deletion of the top-k channels against random ones. Prints a table; with "
                    "--output-dir writes evaluation.json and evaluation.md there and keeps per-batch state, so "
                    "the same command resumes a killed run (definitions: docs/evaluation.md).",
    )
    evaluate.add_argument("bank", help="EPIC bank directory, a fit's output dir, or a Hub repo id")
    evaluate.add_argument("dataset", help="an image folder (class subfolders give labels) or a Hub dataset id; the "
                                          "bank's own prototypes are scored only on the data it was fit on")
    evaluate.add_argument("--output-dir", default=None, help="evaluation.json, evaluation.md and resumable state")
    evaluate.add_argument("--base-model", default=None, help="where the bank's classifier is now, if it has moved")
    evaluate.add_argument("--revision", default=None, help="revision of the bank")
    metrics = evaluate.add_argument_group("metrics")
    metrics.add_argument("--top-k", type=int, default=4, help="channels per explanation (default: 4)")
    metrics.add_argument("--noise-std", type=float, default=0.05,
                         help="pixel noise std, in [0, 1] intensity units (default: 0.05)")
    metrics.add_argument("--shift-pixels", type=int, default=4, help="shift in model-input pixels (default: 4)")
    metrics.add_argument("--random-draws", type=int, default=8,
                         help="random channel sets per image for the deletion baseline (default: 8)")
    metrics.add_argument("--prototypes-per-channel", type=int, default=None,
                         help="N of the prototypes mined on DATASET (default: the bank's)")
    metrics.add_argument("--seed", type=int, default=0, help="seed of the noise and random draws (default: 0)")
    data = evaluate.add_argument_group("data")
    data.add_argument("--split", default=None, help="dataset split (default: its only split, or 'train')")
    data.add_argument("--image-column", default=None, help="column holding the images")
    data.add_argument("--key-column", default=None, help="integer column of sample keys, if the fit used one")
    data.add_argument("--label-column", default=None, help="class column for consistency (default: 'label')")
    data.add_argument("--streaming", action="store_true", help="read the dataset as a stream")
    data.add_argument("--max-samples", type=int, default=None, help="evaluate at most this many images")
    data.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    dataset = args.dataset
    check_local(dataset, "dataset")
    if Path(dataset).expanduser().is_dir():
        dataset = str(Path(dataset).expanduser().resolve())
    explainer = EpicExplainer.from_pretrained(model_reference(args.bank), revision=args.revision,
                                              base_model=args.base_model)
    report = evaluate_explainer(
        explainer, dataset, top_k=args.top_k, label_column=args.label_column, max_samples=args.max_samples,
        output_dir=args.output_dir, noise_std=args.noise_std, shift_pixels=args.shift_pixels, seed=args.seed,
        batch_size=args.batch_size, random_draws=args.random_draws,
        prototypes_per_channel=args.prototypes_per_channel, split=args.split, image_column=args.image_column,
        key_column=args.key_column, streaming=args.streaming)
    emit(report.to_markdown())
    if args.output_dir is not None:
        emit(f"wrote {Path(args.output_dir) / 'evaluation.json'} and {Path(args.output_dir) / 'evaluation.md'}")
    return 0
