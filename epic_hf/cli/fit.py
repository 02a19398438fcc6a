"""``epic-hf fit``: learn U and mine a prototype bank; its flags are generated from FitConfig."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bank_format import CONFIG_NAME
from ..config import FitConfig
from ..data.resolve import check_image_folder
from ..explainer import EpicExplainer
from ..locks import DirectoryLock
from ..results import purity_drop_note
from .common import check_local, emit, is_main_process, json_default, model_reference
from .flags import add_config_flags, config_from_args


def add_parser(commands, common: argparse.ArgumentParser, formatter) -> None:
    fit = commands.add_parser(
        "fit", parents=[common], formatter_class=formatter,
        help="learn U and mine a prototype bank for a classifier on a dataset",
        description="Learn the disentangling matrix U and mine a prototype bank. Checkpoints go to "
                    "--output-dir; running the same command again resumes an interrupted fit. The bank "
                    "is written to OUTPUT_DIR/bank. Works under `accelerate launch -m epic_hf fit ...`.",
    )
    fit.add_argument("model", help="an image classifier: Hub id or local directory")
    fit.add_argument("dataset", help="an image folder (class subfolders allowed), a save_to_disk folder, a "
                                     "Parquet/CSV/JSON-lines file or a Hub dataset id")
    fit.add_argument("--output-dir", required=True, help="checkpoints and the final bank (OUTPUT_DIR/bank)")
    fit.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
    fit.add_argument("--trust-remote-code", action="store_true",
                      help="let a classifier whose repo ships its own Python code run it (only for authors you "
                           "trust; never stored in a bank)")
    fit.add_argument("--matrix", choices=("orthogonal", "invertible"), default="orthogonal",
                     help="parameterisation of U (default: orthogonal)")
    fit.add_argument("--split-cls", action="store_true",
                     help="DINOv2: split the CLS half of its head over the tokens too, as D more channels, so that "
                          "only the CLS's own part stays in the CLS term (the bank records it)")
    add_config_flags(fit, FitConfig)
    hub = fit.add_argument_group("hub")
    hub.add_argument("--push-to-hub", metavar="REPO", default=None, help="push the bank to this Hub repo")
    hub.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    fit.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(FitConfig, args)  # validated before any model loads
    model = model_reference(args.model)
    dataset = args.dataset
    check_local(dataset, "dataset")
    if Path(dataset).expanduser().exists():
        dataset = str(Path(dataset).expanduser().resolve())
        check_image_folder(dataset)  # an empty folder is named before any model loads
    explainer = EpicExplainer.from_pretrained(model, revision=args.revision, matrix=args.matrix,
                                              trust_remote_code=args.trust_remote_code,
                                              split_cls=args.split_cls or None)  # a bank keeps its own
    report = explainer.fit(dataset, config, output_dir=args.output_dir)
    if not is_main_process():
        return 0
    bank_dir = Path(args.output_dir) / "bank"
    if not (bank_dir / CONFIG_NAME).is_file():  # the fit writes it; make sure it is there, as the fit would
        with DirectoryLock(args.output_dir, "fit"):
            explainer.save_pretrained(bank_dir)
    summary = {
        "bank": str(bank_dir), "purity_before": report.purity_before, "purity_after": report.purity_after,
        "num_samples": report.num_samples, "num_skipped": report.num_skipped,
        "num_processes": report.num_processes, "resumed_from_step": report.resumed_from_step,
        "total_seconds": round(report.total_seconds, 2),
    }
    lowered = purity_drop_note(report.purity_before, report.purity_after)
    if lowered is not None:
        summary["warning"] = lowered
    if args.push_to_hub:
        summary["pushed"] = explainer.push_to_hub(args.push_to_hub, private=args.private)
    emit(json.dumps(summary, indent=2, default=json_default))
    return 0
