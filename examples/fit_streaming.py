"""Fit an EPIC bank on a *streamed* dataset: a Hub dataset id (e.g. ImageNet) or a local folder.

    python examples/fit_streaming.py microsoft/resnet-50 imagenet-1k --split train --output-dir runs/in1k
    python examples/fit_streaming.py ./my_model ./my_images --output-dir runs/stream

With ``streaming=True`` nothing is downloaded up front: the one backbone pass reads the stream
once, and the prototype images are fetched again by re-reading the stream up to the last key
needed (see docs/distributed.md). Sample keys are positions in the unshuffled stream, or the
values of ``--key-column`` (an integer column) when given.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from epic_hf import EpicExplainer, FitConfig

DEFAULTS = FitConfig()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="image classifier: Hub id or directory")
    parser.add_argument("dataset", help="Hub dataset id or local image folder")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--split", default=None)
    parser.add_argument("--image-column", default=None)
    parser.add_argument("--key-column", default=None)
    parser.add_argument("--prototypes-per-channel", type=int, default=DEFAULTS.prototypes_per_channel)
    parser.add_argument("--schedule-start", type=int, default=DEFAULTS.schedule_start)
    parser.add_argument("--schedule-end", type=int, default=DEFAULTS.schedule_end)
    parser.add_argument("--schedule-steps", type=int, default=DEFAULTS.schedule_steps)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model = str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
    dataset = str(Path(args.dataset).resolve()) if Path(args.dataset).is_dir() else args.dataset
    explainer = EpicExplainer.from_pretrained(model)
    report = explainer.fit(
        dataset,
        streaming=True,
        split=args.split,
        image_column=args.image_column,
        key_column=args.key_column,
        output_dir=args.output_dir,
        prototypes_per_channel=args.prototypes_per_channel,
        schedule_start=args.schedule_start,
        schedule_end=args.schedule_end,
        schedule_steps=args.schedule_steps,
        batch_size=args.batch_size,
    )
    print(f"purity {report.purity_before:.4f} -> {report.purity_after:.4f} on {report.num_samples} streamed images")
    bank = explainer.bank
    print(f"bank: {Path(args.output_dir) / 'bank'} ({bank.num_channels} channels x {bank.prototypes_per_channel})")
    print(f"channel 0 prototypes (stream positions): {bank.sample_keys[0].tolist()}")


if __name__ == "__main__":
    main()
