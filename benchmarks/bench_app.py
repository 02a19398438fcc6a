"""What does the Gradio app add to an explanation? Launch-to-ready time and per-request latency.

Goal (issue 18): a request to the app costs under 1.2x the explanation it shows. One run
measures, on the same image and the same explainer:

* ``explain``: ``explainer.explain(image)``, the numbers only;
* ``explain + sheet``: the same, then ``explanation.to_image()``: what the app shows, computed in-process;
* ``app request (page)``: the requests the page itself makes, over loopback: the upload, the
  call, its event stream read as it arrives (as a browser's EventSource does), and the download
  of the sheet; the app reads the image, explains it, draws the sheet and the decomposition table
  and writes the sheet as JPEG in between;
* ``app request (gradio_client)``: the same through ``gradio_client``'s ``predict``, which waits
  for each event-stream message in 50 ms sleeps: what a script calling the app pays.

and, once, ``launch to ready``: from ``explainer.launch(block=False)`` to the first answered
page, then the first client connection. The bank has real prototype thumbnails (the sheet draws
them) and U != I. Cases are timed round-robin (warmup, then ``--repeats`` rounds), medians reported.

Run::

    python benchmarks/bench_app.py            # ResNet-50 architecture, random weights, 224px
    python benchmarks/bench_app.py --small    # tiny ResNet, 64px: seconds (the test suite)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_explain import build_explainer, make_images, time_round_robin  # noqa: E402

from epic_hf import EpicConfig, PrototypeBank  # noqa: E402
from epic_hf.images import encode_jpeg  # noqa: E402

logger = logging.getLogger("bench_app")
GOAL_RATIO = 1.2


def attach_bank_with_thumbnails(explainer, input_size: tuple[int, int], seed: int, per_channel: int = 5) -> None:
    """A bank with a small random S and real JPEG thumbnails, so the sheet draws every prototype."""
    dim = explainer.num_channels
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randint(0, 64, (dim, per_channel), generator=generator)
    side = input_size[0]
    thumbnails = {key: encode_jpeg(image, max_side=side, quality=90)
                  for key, image in enumerate(make_images(64, side, seed + 1))}
    x0 = torch.randint(0, side // 2, (dim, per_channel, 1), generator=generator)
    y0 = torch.randint(0, side // 2, (dim, per_channel, 1), generator=generator)
    boxes = torch.cat([x0, y0, x0 + side // 4, y0 + side // 4], dim=-1)
    bank = PrototypeBank(
        sample_keys=keys, scores=torch.rand(dim, per_channel, generator=generator).sort(dim=1, descending=True).values,
        boxes=boxes.to(torch.int64), S=torch.randn(dim, dim, generator=generator) * 0.01, matrix=explainer.matrix,
        thumbnails=thumbnails, input_size=input_size, grid_size=(1, 1),
        config=EpicConfig(model_type=explainer.classifier.model_type, num_channels=dim,
                          prototypes_per_channel=per_channel, matrix=explainer.matrix, grid_size=(1, 1),
                          input_size=input_size),
    )
    explainer.set_bank(bank, check_base_model=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_and_connect(explainer):
    """(blocks, client, seconds to the first answered page, seconds to a connected client)."""
    from gradio_client import Client

    started = time.perf_counter()
    blocks = explainer.launch(host="127.0.0.1", port=free_port(), block=False)
    with urllib.request.urlopen(blocks.local_url, timeout=60) as response:
        assert response.status == 200
    ready = time.perf_counter() - started
    client = Client(blocks.local_url, verbose=False)
    return blocks, client, ready, time.perf_counter() - started


PAGE_CASE = "app request (page)"


class PageRequests:
    """The HTTP requests the app's page makes to explain an upload, made with httpx (gradio's own HTTP client)."""

    def __init__(self, url: str) -> None:
        import httpx

        self.base = url.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(timeout=120)

    def explain(self, path: Path, top_k: int) -> list:
        with path.open("rb") as file:
            uploaded = self.http.post(f"{self.base}/upload", files={"files": (path.name, file, "image/png")})
        upload = {"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}
        call = self.http.post(f"{self.base}/call/explain", json={"data": [upload, "the predicted class", top_k, False]})
        outputs = self.read_events(f"{self.base}/call/explain/{call.json()['event_id']}")
        self.http.get(outputs[2]["url"]).raise_for_status()  # the page loads the sheet it is handed
        return outputs

    def read_events(self, url: str) -> list:
        """The outputs of the ``complete`` event, reading the stream as it arrives."""
        import json

        event = None
        with self.http.stream("GET", url) as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"the app answered with an error: {line}")
                    return json.loads(line.removeprefix("data:"))
        raise RuntimeError("the app's event stream ended without a result")

    def close(self) -> None:
        self.http.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny model, few repeats (seconds)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(1 if args.small else torch.get_num_threads())
    repeats = args.repeats or (3 if args.small else 10)
    explainer, model_name = build_explainer(None, args.small, args.seed)
    size = 64 if args.small else 224
    attach_bank_with_thumbnails(explainer, (size, size), args.seed)
    image = make_images(1, 256 if not args.small else 64, args.seed + 7)[0]
    from gradio_client import handle_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "query.png"
        image.save(path)
        blocks, client, ready, connected = launch_and_connect(explainer)
        try:
            page = PageRequests(blocks.local_url)
            cases = {
                "explain": lambda: explainer.explain(image, top_k=args.top_k),
                "explain + sheet": lambda: explainer.explain(image, top_k=args.top_k).to_image(),
                PAGE_CASE: lambda: page.explain(path, args.top_k),
                "app request (gradio_client)": lambda: client.predict(handle_file(str(path)), "the predicted class",
                                                                      args.top_k, api_name="/explain"),
            }
            times = time_round_robin(cases, warmup=1, repeats=repeats)
            page.close()
        finally:
            with contextlib.redirect_stdout(sys.stderr):  # gradio prints "Closing server ..." on stdout
                blocks.close()
    print_table(times, model_name, ready, connected, repeats)
    return 0


def print_table(times: dict[str, list[float]], model_name: str, ready: float, connected: float, repeats: int) -> None:
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"## bench_app: {model_name}; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, median of {repeats} rounds\n")
    print(f"launch to ready: {ready:.2f} s to the first answered page, {connected:.2f} s to a connected client\n")
    print("| case | s/request (median) | s/request (min) | ratio vs explain | ratio vs explain + sheet |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {median[name]:.4f} | {min(values):.4f} | {median[name] / median['explain']:.2f}x | "
              f"{median[name] / median['explain + sheet']:.2f}x |")
    ratio = median[PAGE_CASE] / median["explain + sheet"]
    verdict = "met" if ratio < GOAL_RATIO else "not met"
    print(f"\ngoal: a request from the page < {GOAL_RATIO}x the explanation it shows (explain + sheet): "
          f"{ratio:.2f}x ({verdict}); the app adds {1000 * (median[PAGE_CASE] - median['explain + sheet']):.0f} ms")


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
