"""``epic-hf atlas``: a static site of every concept (channel) a bank holds and the classes it drives."""

from __future__ import annotations

import argparse

from ..bank import PrototypeBank
from ..viz import write_atlas
from .common import emit, model_reference


def add_parser(commands, common: argparse.ArgumentParser, formatter) -> None:
    atlas = commands.add_parser(
        "atlas", parents=[common], formatter_class=formatter, help="write a browsable atlas of a bank's channels",
        description="Write a self-contained static site (open index.html from disk, no server): a grid of every "
                    "channel with its prototype crops, a page per channel and per class, and search.",
    )
    atlas.add_argument("bank", help="EPIC bank directory, a fit's output dir, or a Hub repo id")
    atlas.add_argument("-o", "--output-dir", required=True, help="where the site is written")
    atlas.add_argument("--revision", default=None, help="Hub revision of the bank")
    atlas.add_argument("--title", default=None, help="page title (by default, from the base model)")
    atlas.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    bank = PrototypeBank.from_pretrained(model_reference(args.bank), revision=args.revision)
    emit(f"wrote {write_atlas(bank, args.output_dir, title=args.title)}")
    return 0
