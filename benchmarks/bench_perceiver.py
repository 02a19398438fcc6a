"""Why Perceiver is refused: what an exact held split of its logits would cost, measured.

Perceiver's logits read a learned latent array that cross-attends to the image's tokens (one per
pixel), then self-attends; a classification query reads the latents. With its LayerNorm scales,
attention weights and gates held, the logits are linear in the tokens' messages, so a split is
possible in principle. Its price, per image:

* forward mode (as the library splits a ViT's CLS): every latent carries every pixel's part, a
  ``latents x pixels x width`` tensor through each layer;
* reverse mode: one backward pass per channel of the read-out (its width), to read each pixel's
  D-dimensional part.

This script times one forward and one forward + backward of a randomly initialised
``PerceiverForImageClassificationLearned`` and prints both prices next to the forward it would be
added to. The default is transformers' default ``PerceiverConfig`` at 224 px (284M parameters);
``--small`` is a tiny config (the suite's smoke run).

Run::

    python benchmarks/bench_perceiver.py            # the default config: about 40 s on 2 cores
    python benchmarks/bench_perceiver.py --small
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from transformers import PerceiverConfig, PerceiverForImageClassificationLearned

BYTES_PER_FLOAT = 4


def timed(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny Perceiver (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs, best kept (default: 1, 3 with --small)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.small else 1)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.small:
        config = PerceiverConfig(image_size=32, num_latents=16, d_latents=32, d_model=32, num_blocks=1,
                                 num_self_attends_per_block=2, num_self_attention_heads=2,
                                 num_cross_attention_heads=1, num_labels=3)
    else:
        config = PerceiverConfig(image_size=224)
    torch.manual_seed(0)
    model = PerceiverForImageClassificationLearned(config).eval()
    pixels = torch.randn(1, 3, config.image_size, config.image_size)

    def forward() -> None:
        with torch.no_grad():
            model(inputs=pixels)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        model(inputs=pixels.clone().requires_grad_(True)).logits[0, 0].backward()

    seconds = timed(forward, repeats)
    both = timed(forward_backward, repeats)
    tokens = config.image_size * config.image_size
    width = config.d_latents
    parts_gb = config.num_latents * tokens * width * BYTES_PER_FLOAT / 1e9
    reverse = width * max(both - seconds, 0.0)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"## bench_perceiver: {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| config | pixels M | latents N | width D | layers | parameters (M) | forward s | forward + backward s | "
          "forward-mode parts (GB per image and layer) | reverse mode: D backward passes (s per image) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    name = "tiny (--small)" if args.small else "default PerceiverConfig, 224 px"
    layers = config.num_blocks * config.num_self_attends_per_block
    print(f"| {name} | {tokens} | {config.num_latents} | {width} | {layers} | {parameters:.1f} | {seconds:.2f} | "
          f"{both:.2f} | {parts_gb:.1f} | {reverse:.0f} |")
    print(f"\nthe split would cost {reverse / max(seconds, 1e-9):.0f}x the forward in reverse mode, or hold "
          f"{parts_gb:.1f} GB in forward mode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
