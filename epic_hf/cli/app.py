"""``epic-hf app`` and ``epic-hf space``: a bank's Gradio page, served here or pushed to the Hub as a Space."""

from __future__ import annotations

import argparse
import importlib.util

from ..app import INSTALL_HINT, AppUnavailableError, push_space
from ..explainer import EpicExplainer
from ..loading import looks_like_path
from .common import CliError, emit, model_reference


def add_parser(commands, common: argparse.ArgumentParser, formatter) -> None:
    app = commands.add_parser(
        "app", parents=[common], formatter_class=formatter, help="serve a local Gradio page that explains images",
        description="Serve a page where anyone drops an image and sees the prediction, its exact decomposition, "
                    "the explanation sheet, each channel's prototypes and each class's channels. Works offline "
                    "(no analytics, system fonts); a public share link only with --share. Needs the app extra: "
                    'pip install "epic_hf[app]".',
    )
    app.add_argument("bank", help="EPIC bank directory, a fit's output dir, or a Hub repo id")
    app.add_argument("--base-model", default=None,
                     help="where the bank's classifier is now, when it has moved (folder or Hub id)")
    app.add_argument("--revision", default=None, help="Hub revision of the bank")
    app.add_argument("--trust-remote-code", action="store_true",
                     help="let a classifier whose repo ships its own Python code run it (only for authors you trust)")
    app.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine "
                                                         "only; 0.0.0.0 for the network)")
    app.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    app.add_argument("--share", action="store_true", help="also make a public gradio.live link (needs the internet)")
    app.add_argument("--title", default=None, help="page title (by default, from the base model)")
    app.add_argument("--audit", default=None, metavar="DIR",
                     help="an audit's output dir (epic-hf audit --output-dir): its findings in an Audit tab")
    app.set_defaults(handler=run_app)

    space = commands.add_parser(
        "space", parents=[common], formatter_class=formatter, help="create or update a bank's Gradio Space on the Hub",
        description="Push a Gradio Space (app.py, requirements.txt, README.md) whose app loads BANK from its model "
                    "repo at a pinned commit; the bank's model card gets a link to the Space. Pushing again "
                    "updates EPIC's marked sections and keeps hand edits outside them.",
    )
    space.add_argument("bank", help="the bank's model repo on the Hub (user/name; push a local bank first)")
    space.add_argument("--repo", required=True, help="the Space repo to create or update (user/name)")
    space.add_argument("--revision", default=None, help="branch, tag or commit of the bank (default: main); "
                                                        "the Space pins its commit sha")
    space.add_argument("--title", default=None, help="the Space's title")
    space.add_argument("--private", action="store_true", help="create the Space as private")
    space.set_defaults(handler=run_space)


def run_app(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:  # before any model loads: say how to install it
        raise AppUnavailableError(INSTALL_HINT)
    explainer = EpicExplainer.from_pretrained(model_reference(args.bank), revision=args.revision,
                                              base_model=args.base_model, trust_remote_code=args.trust_remote_code)
    # gradio's own start-up lines would tell a command-line user to "set `share=True` in `launch()`": launch it
    # quietly without blocking, say where it serves in this command's words, then block as gradio would
    blocks = explainer.launch(host=args.host, port=args.port, share=args.share, title=args.title, block=False,
                              audit=args.audit)
    emit(f"the app serves {blocks.local_url} (Ctrl-C stops it)")
    if blocks.share_url:
        emit(f"public link: {blocks.share_url}")
    elif args.share:
        emit("no public link could be made (--share needs the internet); the app serves locally only")
    else:
        emit("for a public gradio.live link, run the same command with --share")
    blocks.block_thread()
    return 0


def run_space(args: argparse.Namespace) -> int:
    if looks_like_path(args.bank) or args.bank.count("/") != 1:
        raise CliError(f"{args.bank!r} is not a Hub repo id: a Space loads its bank from the Hub, so push the bank "
                       "first (epic-hf fit ... --push-to-hub user/name, or explainer.push_to_hub(repo, space=...))")
    emit(push_space(args.repo, args.bank, args.revision, title=args.title, private=args.private))
    return 0
