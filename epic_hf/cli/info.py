"""``epic-hf info``: a JSON summary of a bank (base model, D x N, matrix, purity, dataset, fit, size)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..aliases import JSONDict
from ..bank import PrototypeBank
from ..bank_format import CONFIG_NAME, WEIGHTS_NAME
from ..hub import file_resolver
from .common import CliError, check_local, emit, json_default


def add_parser(commands, common: argparse.ArgumentParser, formatter) -> None:
    info = commands.add_parser(
        "info", parents=[common], formatter_class=formatter, help="show a bank's configuration and metrics",
        description="Print a JSON summary of an EPIC bank: base model, D x N, matrix, purity, dataset, "
                    "fit settings and file size.",
    )
    info.add_argument("bank", help="EPIC bank directory, a fit's output dir, or a Hub repo id")
    info.add_argument("--revision", default=None, help="Hub revision")
    info.add_argument("--channel", type=int, default=None, help="also list this channel's prototypes")
    info.set_defaults(handler=run)


def locate_bank(reference: str) -> tuple[str, JSONDict | None]:
    """(the bank's folder or repo id, the fit report when it is a fit's output dir)."""
    check_local(reference, "bank")
    local = Path(reference).expanduser()
    if local.is_dir() and not (local / CONFIG_NAME).is_file() and (local / "bank" / CONFIG_NAME).is_file():
        report_path = local / "fit_report.json"
        return str(local / "bank"), json.loads(report_path.read_text()) if report_path.is_file() else None
    if local.is_dir() and not (local / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{reference!r} is not an EPIC bank directory: {CONFIG_NAME} is missing")
    return reference, None


def run(args: argparse.Namespace) -> int:
    reference, fit_report = locate_bank(args.bank)
    bank = PrototypeBank.from_pretrained(reference, revision=args.revision)  # validates config and tensors
    weights = file_resolver(reference, args.revision)(WEIGHTS_NAME)
    config = bank.config
    assert config is not None
    size = weights.stat().st_size
    summary: JSONDict = {
        "bank": reference, "base_model_name_or_path": config.base_model_name_or_path,
        "base_model_revision": config.base_model_revision, "model_type": config.model_type, "matrix": bank.matrix,
        "num_channels": bank.num_channels, "prototypes_per_channel": bank.prototypes_per_channel,
        "input_size": list(bank.input_size), "grid_size": list(bank.grid_size),
        "num_thumbnails": len(bank.thumbnails), "bank_file_bytes": size,
        "bytes_per_prototype": round(size / max(1, bank.num_channels * bank.prototypes_per_channel), 1),
        "metrics": {"purity_before": config.purity_before, "purity_after": config.purity_after,
                    "num_samples": config.num_samples, "num_skipped": config.num_skipped,
                    "condition_number": config.condition_number},
        "dataset": config.dataset, "fit": config.fit.to_dict(), "format_version": config.format_version,
        "library_version": config.library_version,
    }
    if fit_report is not None:
        summary["fit_report"] = {k: fit_report.get(k) for k in (
            "total_seconds", "index_seconds", "steps", "num_processes", "resumed_from_step")}
    if args.channel is not None:
        if not 0 <= args.channel < bank.num_channels:
            raise CliError(f"--channel must be in [0, {bank.num_channels - 1}], got {args.channel}")
        summary["channel"] = {"channel": args.channel,
                              "prototypes": [p.to_dict() for p in bank.prototypes(args.channel)]}
    emit(json.dumps(summary, indent=2, default=json_default))
    return 0
