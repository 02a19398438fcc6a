"""Make the README's picture of the app, docs/images/app.png, from the demo's trained model.

Why a script: the picture used to be a by-product of a test, taken of an untrained 8-channel test
model that predicted "green square 37%", and the test rewrote a tracked file on every run. This
runs ``epic-hf demo`` (a trained classifier and its bank), serves the app on loopback, uploads
one of the demo's held-out images through the page's own file input in a headless Chromium and
captures the page down to the sheet. The browser flow is the app test's own (tests/cdp.py), so
the picture shows the page the test checks.

Usage::

    python scripts/app_screenshot.py                      # writes docs/images/app.png
    python scripts/app_screenshot.py --demo-dir epic-demo --output /tmp/app.png   # reuse a demo

Needs the app extra (gradio) and a ``chromium`` on the PATH; no network.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TQDM_DISABLE", "1")

from cdp import Browser, explain_upload, page_screenshot  # noqa: E402

from epic_hf import EpicExplainer  # noqa: E402
from epic_hf.demo import run_demo  # noqa: E402

logger = logging.getLogger("app_screenshot")
TITLE = "EPIC explanations of the demo's tiny ResNet"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo_folder(demo_dir: Path | None, work: Path) -> Path:
    """A demo's output folder: the one given, or a fresh ``epic-hf demo`` run under ``work``."""
    if demo_dir is not None:
        return demo_dir
    return Path(run_demo(work / "epic-demo")["output_dir"])


def upload_image(demo: Path) -> Path:
    """The held-out image of the demo's first explanation (its confident hit), from ``images/<label>/``."""
    import json

    source = json.loads((demo / "explanations.json").read_text())[0]["source"]
    return demo / source.split(":")[0]


def screenshot(demo: Path, output: Path, profile_root: Path) -> Path:
    explainer = EpicExplainer.from_pretrained(demo / "bank")
    # the page's title names the classifier's folder, a temporary path here: name the model instead
    blocks = explainer.launch(host="127.0.0.1", port=free_port(), block=False, title=TITLE)
    browser = Browser(profile_root)
    try:
        text = explain_upload(browser, blocks.local_url, upload_image(demo))
        logger.info("the page's decomposition:\n%s", text)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(page_screenshot(browser))
    finally:
        browser.close()
        blocks.close()
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-dir", type=Path, default=None, help="an existing `epic-hf demo` output folder")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "app.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as work:
        demo = demo_folder(args.demo_dir, Path(work))
        written = screenshot(demo, args.output, Path(work))
    logger.info("wrote %s", written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
