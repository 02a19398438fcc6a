"""The ``epic-hf`` command: fit a prototype bank, explain images, inspect a bank, serve its app, run the demo.

Examples::

    epic-hf fit microsoft/resnet-50 ./my_images --output-dir runs/resnet50
    epic-hf fit microsoft/resnet-50 imagenet-1k --streaming --split train --output-dir runs/in1k
    accelerate launch --num_processes 4 -m epic_hf fit microsoft/resnet-50 imagenet-1k --streaming ...
    epic-hf explain runs/resnet50/bank cat.jpg dog.jpg --output explanations/
    epic-hf info runs/resnet50/bank
    epic-hf app runs/resnet50/bank
    epic-hf space me/resnet-50-epic --repo me/resnet-50-epic-space
    epic-hf demo --output-dir ./epic-demo

Errors the user can fix (a missing file, an unsupported model, a corrupt bank...) end the
command with a non-zero exit status and one line ``epic-hf: error: <message>`` on stderr;
``--debug`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import datasets
import transformers
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import disable_progress_bars as _disable_hub_bars

from .._version import __version__
from ..demo import run_demo
from ..errors import EpicError
from ..progress import disable_progress_bars
from . import app, atlas, audit, evaluate, explain, fit, info
from .common import PROG, CliError, configure_logging, emit, json_default

__all__ = ["build_parser", "main"]


def _run_demo(args: argparse.Namespace) -> int:
    summary = run_demo(args.output_dir, num_images=args.num_images, seed=args.seed, architecture=args.architecture)
    emit(json.dumps({k: v for k, v in summary.items() if k != "explanations"}, indent=2, default=json_default))
    emit(f"open {summary['report_html']} to see the explanations")
    return 0


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG, description="EPIC prototype explanations for Hugging Face image classifiers.",
        epilog="Run `epic-hf <command> --help` for a command's options. Docs: docs/quickstart.md, docs/cli.md.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and DEBUG logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    common = argparse.ArgumentParser(add_help=False)  # the same flags, accepted after the command too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and DEBUG logs")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="warnings and errors only, no progress bars")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fit.add_parser(commands, common, formatter)
    explain.add_parser(commands, common, formatter)
    info.add_parser(commands, common, formatter)
    evaluate.add_parser(commands, common, formatter)
    audit.add_parser(commands, common, formatter)
    atlas.add_parser(commands, common, formatter)
    app.add_parser(commands, common, formatter)
    demo = commands.add_parser(
        "demo", parents=[common], formatter_class=formatter,
        help="offline demo: train a tiny classifier on planted shapes, fit EPIC, explain",
        description="Needs no network and no GPU. Writes the classifier, the bank, explanation pictures, "
                    "report.html and explanations.json.",
    )
    demo.add_argument("--output-dir", default="./epic-demo", help="where everything is written (default: "
                                                                  "./epic-demo)")
    demo.add_argument("--num-images", type=int, default=240, help="training images (default: 240)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--architecture", choices=["resnet", "vit"], default="resnet",
                      help="the tiny classifier: a CNN, or a ViT that reads its CLS token (default: resnet)")
    demo.set_defaults(handler=_run_demo)
    return parser


def _one_line(error: BaseException) -> str:
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error) or type(error).__name__
    return " ".join(message.split())


def _quiet_libraries() -> None:
    """-q: no progress bars (or info chatter) from epic_hf, transformers, datasets or huggingface_hub."""
    disable_progress_bars()
    _disable_hub_bars()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


#: Library warnings that say nothing a user of this command can act on, filtered at the CLI only.
NOISE = ("requires torchvision", "Requested torchvision backend")


def _filter_library_noise(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in NOISE)


HANDLED_ERRORS = (CliError, EpicError, ValueError, FileNotFoundError, OSError, KeyError, HfHubHTTPError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``epic-hf`` and ``python -m epic_hf``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    quiet = getattr(args, "quiet", False)
    configure_logging(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    logging.getLogger("transformers.utils.import_utils").addFilter(_filter_library_noise)
    if quiet:
        _quiet_libraries()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        hint = " (run the same command again to resume the fit)" if args.command == "fit" else ""
        print(f"{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    except HANDLED_ERRORS as error:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
