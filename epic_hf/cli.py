"""The ``epic-hf`` command: fit a prototype bank, explain images, inspect a bank, run the demo.

Examples::

    epic-hf fit microsoft/resnet-50 ./my_images --output-dir runs/resnet50
    epic-hf fit microsoft/resnet-50 imagenet-1k --streaming --split train --output-dir runs/in1k
    accelerate launch --num_processes 4 -m epic_hf fit microsoft/resnet-50 imagenet-1k --streaming ...
    epic-hf explain runs/resnet50/bank cat.jpg dog.jpg --output explanations/
    epic-hf info runs/resnet50/bank
    epic-hf demo --output-dir ./epic-demo

Errors the user can fix (a missing file, an unsupported model, a corrupt bank...) end the
command with a non-zero exit status and one line ``epic-hf: error: <message>`` on stderr;
``--debug`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

PROG = "epic-hf"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

logger = logging.getLogger("epic_hf.cli")


class CliError(Exception):
    """A problem with the command line's arguments, reported as one line."""


# -- helpers --------------------------------------------------------------------------------
def _looks_like_local_path(value: str) -> bool:
    """A path rather than a Hub id: absolute, relative with ./ or ../, ~, or more than one '/'."""
    return (
        value.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or "\\" in value
        or value.count("/") > 1
        or value in (".", "..")
    )


def _check_local(value: str, what: str) -> None:
    """A value that is clearly a local path must exist (and not be sent to the Hub as an id)."""
    if _looks_like_local_path(value) and not Path(value).expanduser().exists():
        raise FileNotFoundError(f"{what} {value!r} does not exist")


def _model_reference(value: str) -> str:
    """A local model dir becomes absolute, so that a bank naming it loads from anywhere."""
    _check_local(value, "model")
    path = Path(value).expanduser()
    if path.is_dir():
        nested = path / "bank"
        if not (path / "epic_config.json").is_file() and (nested / "epic_config.json").is_file():
            path = nested  # a fit's output_dir: use its bank
        return str(path.resolve())
    if path.exists():
        raise ValueError(f"model {value!r} is a file; pass a model directory, an EPIC bank directory or a Hub id")
    return value


def _parse_target(value: str | None) -> int | str | None:
    if value is None:
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def _image_paths(values: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for value in values:
        path = Path(value).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"the folder {value!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"image file {value!r} does not exist")
    if not paths:
        raise CliError("no images given")
    return paths


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") in ("", "0") and os.environ.get("LOCAL_RANK", "0") in ("", "0")


def _emit(text: str) -> None:
    """What the command reports to the user, on stdout (main process only under accelerate)."""
    if _is_main_process():
        print(text, flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _configure_logging(level: int) -> None:
    """INFO for epic_hf on stderr; the library itself never configures logging."""
    package = logging.getLogger("epic_hf")
    package.setLevel(level if _is_main_process() else max(level, logging.WARNING))
    if not any(getattr(h, "_epic_hf_cli", False) for h in package.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._epic_hf_cli = True  # type: ignore[attr-defined]
        package.addHandler(handler)
    package.propagate = False


# -- fit --------------------------------------------------------------------------------------
def _cmd_fit(args: argparse.Namespace) -> int:
    from .explainer import EpicExplainer

    model = _model_reference(args.model)
    dataset = args.dataset
    _check_local(dataset, "dataset")
    if Path(dataset).expanduser().is_dir():
        dataset = str(Path(dataset).expanduser().resolve())
    explainer = EpicExplainer.from_pretrained(model, revision=args.revision, matrix=args.matrix)
    report = explainer.fit(
        dataset,
        split=args.split,
        image_column=args.image_column,
        key_column=args.key_column,
        streaming=args.streaming,
        prototypes_per_channel=args.prototypes_per_channel,
        schedule=args.schedule,
        schedule_start=args.schedule_start,
        schedule_end=args.schedule_end,
        schedule_steps=args.schedule_steps,
        epochs_per_step=args.epochs_per_step,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        train_batch_size=args.train_batch_size,
        seed=args.seed,
        output_dir=args.output_dir,
        mixed_precision=args.mixed_precision,
        feature_cache_mb=args.feature_cache_mb,
        index_memory_mb=args.index_memory_mb,
        thumbnail_size=args.thumbnail_size,
        thumbnail_quality=args.thumbnail_quality,
    )
    if not _is_main_process():
        return 0
    bank_dir = Path(args.output_dir) / "bank"
    if not (bank_dir / "epic_config.json").is_file():  # the fit writes it; make sure it is there
        explainer.save_pretrained(bank_dir)
    summary = {
        "bank": str(bank_dir),
        "purity_before": report.purity_before,
        "purity_after": report.purity_after,
        "num_samples": report.num_samples,
        "num_skipped": report.num_skipped,
        "num_processes": report.num_processes,
        "resumed_from_step": report.resumed_from_step,
        "total_seconds": round(report.total_seconds, 2),
    }
    if args.push_to_hub:
        summary["pushed"] = explainer.push_to_hub(args.push_to_hub, private=args.private)
    _emit(json.dumps(summary, indent=2, default=_json_default))
    return 0


# -- explain ----------------------------------------------------------------------------------
def _write_outputs(explanations: list, paths: list[Path], output: Path) -> list[Path]:
    suffix = output.suffix.lower()
    written: list[Path] = []
    if suffix == ".html":
        from .report import write_html_report

        output.parent.mkdir(parents=True, exist_ok=True)
        write_html_report(explanations, output)
        written.append(output)
    elif suffix == ".json":
        output.parent.mkdir(parents=True, exist_ok=True)
        records = [{"image": str(path), **e.to_dict()} for path, e in zip(paths, explanations)]
        output.write_text(json.dumps(records, indent=2))
        written.append(output)
    elif suffix in PICTURE_SUFFIXES:
        if len(explanations) == 1:
            written.append(explanations[0].save(output))
        else:
            for position, explanation in enumerate(explanations):
                written.append(explanation.save(output.with_name(f"{output.stem}_{position}{output.suffix}")))
    elif suffix and not output.is_dir():
        raise CliError(
            f"--output {str(output)!r}: use a .png/.jpg picture, a .html report, a .json file or a directory"
        )
    else:  # a directory: one picture per image, an HTML report and the JSON
        output.mkdir(parents=True, exist_ok=True)
        stems: dict[str, int] = {}
        for path, explanation in zip(paths, explanations):
            stem = path.stem
            stems[stem] = stems.get(stem, 0) + 1
            name = stem if stems[stem] == 1 else f"{stem}_{stems[stem] - 1}"
            written.append(explanation.save(output / f"{name}.png"))
        written.extend(_write_outputs(explanations, paths, output / "report.html"))
        written.extend(_write_outputs(explanations, paths, output / "explanations.json"))
    return written


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explainer import EpicExplainer

    if args.top_k < 1:
        raise CliError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = _model_reference(args.model)
    paths = _image_paths(args.images)
    explainer = EpicExplainer.from_pretrained(model, revision=args.revision)
    if args.bank is not None:
        from .bank import PrototypeBank

        bank_ref = _model_reference(args.bank)
        explainer.set_bank(PrototypeBank.from_pretrained(bank_ref, revision=args.bank_revision))
    if explainer.bank is None:
        logger.warning("%s has no EPIC bank: showing channel contributions without prototypes "
                       "(fit one with `epic-hf fit`, or pass --bank)", args.model)
    explanations = explainer.explain([str(p) for p in paths], target=_parse_target(args.target), top_k=args.top_k,
                                     batch_size=args.batch_size)
    for path, explanation in zip(paths, explanations):
        channels = ", ".join(f"#{c.channel} {c.contribution:+.3f}" for c in explanation.channels)
        _emit(f"{path}: {explanation.target_label} (class {explanation.target_index}, "
              f"p={explanation.probability:.3f}, logit {explanation.target_logit:.3f} = "
              f"{explanation.contributions.sum().item():.3f} + bias {explanation.bias:.3f}); top channels: {channels}")
    if args.output is not None:
        for written in _write_outputs(explanations, paths, Path(args.output).expanduser()):
            _emit(f"wrote {written}")
    return 0


# -- info -------------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    from .bank_io import CONFIG_NAME, WEIGHTS_NAME, _resolve_file, load_bank

    reference = args.bank
    _check_local(reference, "bank")
    fit_report = None
    local = Path(reference).expanduser()
    if local.is_dir() and not (local / CONFIG_NAME).is_file() and (local / "bank" / CONFIG_NAME).is_file():
        report_path = local / "fit_report.json"
        if report_path.is_file():
            fit_report = json.loads(report_path.read_text())
        local = local / "bank"
        reference = str(local)
    elif local.is_dir() and not (local / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{reference!r} is not an EPIC bank directory: {CONFIG_NAME} is missing")
    bank = load_bank(reference, revision=args.revision)  # validates config and tensors
    weights = _resolve_file(reference, WEIGHTS_NAME, args.revision)
    config = bank.config
    summary: dict[str, Any] = {
        "bank": reference,
        "base_model_name_or_path": config.get("base_model_name_or_path"),
        "base_model_revision": config.get("base_model_revision"),
        "model_type": config.get("model_type"),
        "matrix": bank.matrix,
        "num_channels": bank.num_channels,
        "prototypes_per_channel": bank.prototypes_per_channel,
        "input_size": list(bank.input_size),
        "grid_size": list(bank.grid_size),
        "num_thumbnails": len(bank.thumbnails),
        "bank_file_bytes": weights.stat().st_size,
        "bytes_per_prototype": round(weights.stat().st_size / max(1, bank.num_channels * bank.prototypes_per_channel), 1),
        "metrics": {
            "purity_before": config.get("purity_before"),
            "purity_after": config.get("purity_after"),
            "num_samples": config.get("num_samples"),
            "num_skipped": config.get("num_skipped"),
        },
        "dataset": config.get("dataset"),
        "fit": config.get("fit"),
        "format_version": config.get("format_version"),
        "library_version": config.get("library_version"),
    }
    if fit_report is not None:
        summary["fit_report"] = {k: fit_report.get(k) for k in (
            "total_seconds", "index_seconds", "step_prototypes", "step_purity", "num_processes", "resumed_from_step")}
    if args.channel is not None:
        if not 0 <= args.channel < bank.num_channels:
            raise CliError(f"--channel must be in [0, {bank.num_channels - 1}], got {args.channel}")
        summary["channel"] = {
            "channel": args.channel,
            "prototypes": [p.to_dict() for p in bank.prototypes(args.channel)],
        }
    _emit(json.dumps(summary, indent=2, default=_json_default))
    return 0


# -- demo -------------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.output_dir, num_images=args.num_images, seed=args.seed)
    _emit(json.dumps({k: v for k, v in summary.items() if k != "explanations"}, indent=2, default=_json_default))
    _emit(f"open {summary['report_html']} to see the explanations")
    return 0


# -- the parser -------------------------------------------------------------------------------
class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="EPIC prototype explanations for Hugging Face image classifiers.",
        epilog="Run `epic-hf <command> --help` for a command's options. Docs: docs/quickstart.md, docs/cli.md.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and DEBUG logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    common = argparse.ArgumentParser(add_help=False)  # the same flags, accepted after the command too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and DEBUG logs")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="log warnings and errors only")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = commands.add_parser(
        "fit", parents=[common], formatter_class=_Formatter,
        help="learn U and mine a prototype bank for a classifier on a dataset",
        description="Learn the disentangling matrix U and mine a prototype bank. Checkpoints go to "
                    "--output-dir; running the same command again resumes an interrupted fit. The bank "
                    "is written to OUTPUT_DIR/bank. Works under `accelerate launch -m epic_hf fit ...`.",
    )
    fit.add_argument("model", help="an image classifier: Hub id or local directory")
    fit.add_argument("dataset", help="an image folder (class subfolders allowed) or a Hub dataset id")
    fit.add_argument("--output-dir", required=True, help="checkpoints and the final bank (OUTPUT_DIR/bank)")
    fit.add_argument("--revision", default=None, help="model revision (branch, tag or commit)")
    data = fit.add_argument_group("data")
    data.add_argument("--split", default=None, help="dataset split (default: its only split, or 'train')")
    data.add_argument("--streaming", action="store_true", help="read the dataset as a stream")
    data.add_argument("--image-column", default=None, help="column holding the images (default: the first Image)")
    data.add_argument("--key-column", default=None,
                      help="integer column used as sample keys (default: row index / stream position)")
    method = fit.add_argument_group("EPIC")
    method.add_argument("--matrix", choices=("orthogonal", "invertible"), default="orthogonal",
                        help="parameterisation of U")
    method.add_argument("--prototypes-per-channel", type=int, default=5, help="prototypes kept per channel")
    method.add_argument("--schedule", choices=("linear", "exponential", "logarithmic"), default="linear",
                        help="how the number of training prototypes shrinks")
    method.add_argument("--schedule-start", type=int, default=100, help="prototypes per channel at the first step")
    method.add_argument("--schedule-end", type=int, default=5, help="prototypes per channel at the last step")
    method.add_argument("--schedule-steps", type=int, default=10, help="schedule steps (re-mine, then train)")
    method.add_argument("--epochs-per-step", type=int, default=2, help="training epochs per schedule step")
    method.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate on S")
    method.add_argument("--weight-decay", type=float, default=1e-5, help="Adam weight decay on S")
    method.add_argument("--seed", type=int, default=0, help="seed of the pair shuffling")
    compute = fit.add_argument_group("compute")
    compute.add_argument("--batch-size", type=int, default=64, help="images per backbone batch")
    compute.add_argument("--train-batch-size", type=int, default=None,
                         help="(image, channel) pairs per optimizer step (default: --batch-size)")
    compute.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None,
                         help="backbone precision (default: accelerate's configuration)")
    compute.add_argument("--feature-cache-mb", type=float, default=2048, help="memory for prototype feature maps")
    compute.add_argument("--index-memory-mb", type=float, default=4096,
                         help="memory for the pooled index before it spills to disk")
    bank = fit.add_argument_group("bank")
    bank.add_argument("--thumbnail-size", type=int, default=112, help="long side of prototype thumbnails")
    bank.add_argument("--thumbnail-quality", type=int, default=80, help="JPEG quality of thumbnails")
    bank.add_argument("--push-to-hub", metavar="REPO", default=None, help="push the bank to this Hub repo")
    bank.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    fit.set_defaults(handler=_cmd_fit)

    explain = commands.add_parser(
        "explain", parents=[common], formatter_class=_Formatter,
        help="explain a classifier's predictions on images",
        description="Decompose each image's logit exactly into disentangled channels and show their "
                    "prototypes. MODEL is an EPIC bank (directory, fit output dir or Hub repo; it loads its "
                    "base model) or a plain classifier (then pass --bank, or get contributions only).",
    )
    explain.add_argument("model", help="EPIC bank dir / Hub repo, a fit's output dir, or a classifier")
    explain.add_argument("images", nargs="+", help="image files (or folders of images)")
    explain.add_argument("--bank", default=None, help="an EPIC bank for MODEL (directory or Hub repo)")
    explain.add_argument("--revision", default=None, help="revision of MODEL")
    explain.add_argument("--bank-revision", default=None, help="revision of --bank")
    explain.add_argument("--top-k", type=int, default=4, help="channels shown per image")
    explain.add_argument("--target", default=None,
                         help="class index or label to explain (default: the predicted class)")
    explain.add_argument("--batch-size", type=int, default=32, help="images per batch")
    explain.add_argument("--output", "-o", default=None,
                         help="a .png/.jpg (one per image: NAME_i.png), .html report, .json file, or a directory "
                              "(pictures + report.html + explanations.json)")
    explain.set_defaults(handler=_cmd_explain)

    info = commands.add_parser(
        "info", parents=[common], formatter_class=_Formatter,
        help="show a bank's configuration and metrics",
        description="Print a JSON summary of an EPIC bank: base model, D x N, matrix, purity, dataset, "
                    "fit hyperparameters and file size.",
    )
    info.add_argument("bank", help="EPIC bank directory, a fit's output dir, or a Hub repo id")
    info.add_argument("--revision", default=None, help="Hub revision")
    info.add_argument("--channel", type=int, default=None, help="also list this channel's prototypes")
    info.set_defaults(handler=_cmd_info)

    demo = commands.add_parser(
        "demo", parents=[common], formatter_class=_Formatter,
        help="offline demo: train a tiny classifier on planted shapes, fit EPIC, explain",
        description="Needs no network and no GPU (well under a minute on 2 CPU cores). Writes the "
                    "classifier, the bank, explanation pictures, report.html and explanations.json.",
    )
    demo.add_argument("--output-dir", default="./epic-demo", help="where everything is written")
    demo.add_argument("--num-images", type=int, default=240, help="training images")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())


def _handled_errors() -> tuple[type[BaseException], ...]:
    from .errors import EpicError

    errors: list[type[BaseException]] = [CliError, EpicError, ValueError, FileNotFoundError, OSError, KeyError]
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:  # pragma: no cover - very old huggingface_hub
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``epic-hf`` and ``python -m epic_hf``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    level = logging.DEBUG if debug else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    _configure_logging(level)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        hint = " (run the same command again to resume the fit)" if args.command == "fit" else ""
        print(f"{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    except _handled_errors() as error:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
