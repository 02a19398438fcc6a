"""``epic-hf audit`` and ``epic-hf compare``: what a model relies on, and what changed between two banks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..audit import AuditConfig, compare_banks, write_compare
from ..data.resolve import check_image_folder
from ..explainer import EpicExplainer
from .common import check_local, emit, model_reference
from .flags import add_config_flags, config_from_args

BANK_HELP = ("EPIC bank directory, a fit's output dir (on the data it was fit on, its pooled index is reused: no "
             "backbone pass over the data) or a Hub repo id")
DATASET_HELP = ("an image folder (class subfolders give labels), a save_to_disk folder, a Parquet/CSV/JSON-lines "
                "file or a Hub dataset id")


def add_parser(commands, common: argparse.ArgumentParser, formatter) -> None:
    audit = commands.add_parser(
        "audit", parents=[common], formatter_class=formatter,
        help="find what a model relies on: fixed-position shortcuts, off-class channels, confusions, label errors",
        description="Read DATASET through the classifier and the bank and report, ranked: channels that drive a "
                    "class while peaking at one fixed place (a tag, watermark or border), channels that drive a class "
                    "while firing on other classes, the channels behind the class pairs the model confuses, and "
                    "samples whose label disagrees with a confident prediction. Prints a table; with --output-dir "
                    "writes audit.json and audit.html (definitions: docs/audit.md).")
    audit.add_argument("bank", help=BANK_HELP)
    audit.add_argument("dataset", help=DATASET_HELP)
    audit.add_argument("--output-dir", default=None, help="where audit.json and audit.html are written")
    _model_flags(audit)
    add_config_flags(audit, AuditConfig)
    audit.set_defaults(handler=run_audit_command)
    compare = commands.add_parser(
        "compare", parents=[common], formatter_class=formatter,
        help="compare two banks (two models, or one before and after fine-tuning) on the same data",
        description="Match the channels of BANK_A and BANK_B by the overlap of their top activations on DATASET, "
                    "and list the concepts found only in A or only in B and the classes whose evidence moved. Prints a "
                    "table; with --output-dir writes compare.json and compare.html (definitions: docs/audit.md).")
    compare.add_argument("bank_a", help=BANK_HELP)
    compare.add_argument("bank_b", help=BANK_HELP)
    compare.add_argument("dataset", help=DATASET_HELP)
    compare.add_argument("--output-dir", default=None, help="where compare.json and compare.html are written")
    _model_flags(compare)
    add_config_flags(compare, AuditConfig)
    compare.set_defaults(handler=run_compare_command)


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="let a classifier whose repo ships its own Python code run it (only for authors you "
                             "trust; never stored in a bank)")


def _dataset(value: str) -> str:
    check_local(value, "dataset")
    if Path(value).expanduser().exists():
        value = str(Path(value).expanduser().resolve())
        check_image_folder(value)  # an empty folder is named before any model loads
    return value


def _load(bank: str, trust_remote_code: bool) -> tuple[EpicExplainer, str | None]:
    """The explainer, and the fit's output dir when ``bank`` is one (its pooled index may be reused)."""
    reference = model_reference(bank)
    fit_dir = str(Path(reference).parent) if Path(reference).name == "bank" and Path(bank).is_dir() else None
    return EpicExplainer.from_pretrained(reference, trust_remote_code=trust_remote_code), fit_dir


def run_audit_command(args: argparse.Namespace) -> int:
    dataset = _dataset(args.dataset)
    config = config_from_args(AuditConfig, args)  # validated before any model loads
    explainer, fit_dir = _load(args.bank, args.trust_remote_code)
    report = explainer.audit(dataset, config, fit_dir=fit_dir, output_dir=args.output_dir)
    emit(report.to_markdown())
    if args.output_dir is not None:
        emit(f"wrote {Path(args.output_dir) / 'audit.json'} and {Path(args.output_dir) / 'audit.html'}")
    return 0


def run_compare_command(args: argparse.Namespace) -> int:
    dataset = _dataset(args.dataset)
    config = config_from_args(AuditConfig, args)
    first, first_dir = _load(args.bank_a, args.trust_remote_code)
    second, second_dir = _load(args.bank_b, args.trust_remote_code)
    report = compare_banks(first, second, dataset, config, fit_dirs=(first_dir, second_dir))
    emit(report.to_markdown())
    if args.output_dir is not None:
        page = write_compare(report, args.output_dir)
        emit(f"wrote {Path(args.output_dir) / 'compare.json'} and {page}")
    return 0
