"""Fit an EPIC prototype bank for a classifier on a local folder of images.

    python examples/fit_imagefolder.py microsoft/resnet-50 ./my_images --output-dir runs/my_images

The folder is read with ``datasets.load_dataset("imagefolder")`` (class subfolders are fine;
their names caption the prototypes). Checkpoints go to ``--output-dir``; start the same command
again after an interruption and it resumes. The bank ends up in ``<output-dir>/bank`` and loads
with ``EpicExplainer.from_pretrained("<output-dir>/bank")``; ``<output-dir>/purity.png`` shows the
purity of each schedule step. The defaults are ``FitConfig``'s (the paper's); every other
setting is a flag of ``epic-hf fit``.
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
    parser.add_argument("folder", help="folder of images (class subfolders allowed)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--matrix", choices=("orthogonal", "invertible"), default="orthogonal")
    parser.add_argument("--prototypes-per-channel", type=int, default=DEFAULTS.prototypes_per_channel)
    parser.add_argument("--schedule-start", type=int, default=DEFAULTS.schedule_start)
    parser.add_argument("--schedule-end", type=int, default=DEFAULTS.schedule_end)
    parser.add_argument("--schedule-steps", type=int, default=DEFAULTS.schedule_steps)
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model = str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
    explainer = EpicExplainer.from_pretrained(model, matrix=args.matrix)
    report = explainer.fit(
        str(Path(args.folder).resolve()),
        output_dir=args.output_dir,
        prototypes_per_channel=args.prototypes_per_channel,
        schedule_start=args.schedule_start,
        schedule_end=args.schedule_end,
        schedule_steps=args.schedule_steps,
        lr=args.lr,
        batch_size=args.batch_size,
    )
    print(f"purity {report.purity_before:.4f} -> {report.purity_after:.4f} on {report.num_samples} images "
          f"({report.num_skipped} unreadable, skipped) in {report.total_seconds:.1f} s")
    print(f"cond(U) = {report.condition_number} (1 for a rotation; bounded by max_condition for an invertible U)")
    print(f"purity per schedule step: {[round(p, 4) for p in report.step_purity]} "
          f"(plotted in {Path(args.output_dir) / 'purity.png'})")
    print(f"bank: {Path(args.output_dir) / 'bank'}")

    # A first look: explain one image of the folder with the new bank.
    first = next(p for p in sorted(Path(args.folder).rglob("*"))
                 if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
    truth = first.parent.name if first.parent.resolve() != Path(args.folder).resolve() else None  # class folder
    explanation = explainer.explain(str(first), true_label=truth)
    print(f"{first}: {explanation.target_label}, top channels "
          f"{[c.channel for c in explanation.channels]} -> {explanation.save(Path(args.output_dir) / 'example.png')}")
    print(f"class {explanation.target_label!r} relies most on (channel, mean contribution): "
          f"{explainer.class_channels(explanation.target_label, top_k=3)}")


if __name__ == "__main__":
    main()
