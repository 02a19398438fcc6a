"""``epic-hf evaluate``: purity, class consistency, stability and exact deletion of a bank, under U and U = I."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.resolve import check_image_folder
from ..evaluation import EvaluationConfig
from ..explainer import EpicExplainer
from .common import check_local, emit, model_reference
from .flags import add_config_flags, config_from_args


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
    evaluate.add_argument("dataset", help="an image folder (class subfolders give labels), a save_to_disk folder, a "
                                          "Parquet/CSV/JSON-lines file or a Hub dataset id; the bank's own "
                                          "prototypes are scored only on the data it was fit on")
    evaluate.add_argument("--output-dir", default=None, help="evaluation.json, evaluation.md and resumable state")
    evaluate.add_argument("--base-model", default=None, help="where the bank's classifier is now, if it has moved")
    evaluate.add_argument("--trust-remote-code", action="store_true",
                      help="let a classifier whose repo ships its own Python code run it (only for authors you "
                           "trust; never stored in a bank)")
    evaluate.add_argument("--revision", default=None, help="revision of the bank")
    add_config_flags(evaluate, EvaluationConfig)
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    dataset = args.dataset
    check_local(dataset, "dataset")
    if Path(dataset).expanduser().exists():
        dataset = str(Path(dataset).expanduser().resolve())
        check_image_folder(dataset)  # an empty folder is named before any model loads
    config = config_from_args(EvaluationConfig, args)  # validated before any model loads
    explainer = EpicExplainer.from_pretrained(model_reference(args.bank), revision=args.revision,
                                              base_model=args.base_model, trust_remote_code=args.trust_remote_code)
    report = explainer.evaluate(dataset, config, output_dir=args.output_dir)
    emit(report.to_markdown())
    if args.output_dir is not None:
        emit(f"wrote {Path(args.output_dir) / 'evaluation.json'} and {Path(args.output_dir) / 'evaluation.md'}")
    return 0
