"""Publish an EPIC bank on the Hugging Face Hub.

    # push a bank you already have (a fit's <output-dir>/bank, or the output dir itself)
    python examples/push_bank.py you/resnet-50-epic --bank runs/resnet50/bank
    # or fit first, then push
    python examples/push_bank.py you/my-model-epic --model ./my_model --dataset ./my_images --output-dir runs/x

The repo holds only ``epic_config.json``, ``epic_bank.safetensors`` and a model card; it names
its base model, so ``EpicExplainer.from_pretrained("you/resnet-50-epic")`` loads both. The token
comes from ``huggingface-cli login`` or ``HF_TOKEN``. A base model given as a local directory is
named by its absolute path and a fingerprint of its weights: on another machine, load the bank
with ``base_model=`` (``--base-model``) pointing at a copy of that classifier, or push banks of
Hub models to share them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from epic_hf import EpicExplainer, FitConfig, PrototypeBank

DEFAULTS = FitConfig()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo_id", help="Hub repo to create or update, e.g. you/resnet-50-epic")
    parser.add_argument("--bank", default=None, help="an existing bank directory (or a fit's output dir)")
    parser.add_argument("--model", default=None, help="with --dataset: classifier to fit a bank for")
    parser.add_argument("--dataset", default=None, help="with --model: image folder or Hub dataset id")
    parser.add_argument("--output-dir", default="epic-fit", help="with --model: the fit's output dir")
    parser.add_argument("--schedule-start", type=int, default=DEFAULTS.schedule_start)
    parser.add_argument("--schedule-end", type=int, default=DEFAULTS.schedule_end)
    parser.add_argument("--schedule-steps", type=int, default=DEFAULTS.schedule_steps)
    parser.add_argument("--prototypes-per-channel", type=int, default=DEFAULTS.prototypes_per_channel)
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.bank:
        path = Path(args.bank)
        if not (path / "epic_config.json").is_file() and (path / "bank" / "epic_config.json").is_file():
            path = path / "bank"
        bank = PrototypeBank.from_pretrained(path)
        url = bank.push_to_hub(args.repo_id, private=args.private)
    elif args.model and args.dataset:
        model = str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
        dataset = str(Path(args.dataset).resolve()) if Path(args.dataset).is_dir() else args.dataset
        explainer = EpicExplainer.from_pretrained(model)
        report = explainer.fit(dataset, output_dir=args.output_dir, schedule_start=args.schedule_start,
                               schedule_end=args.schedule_end, schedule_steps=args.schedule_steps,
                               prototypes_per_channel=args.prototypes_per_channel)
        print(f"purity {report.purity_before:.4f} -> {report.purity_after:.4f}")
        url = explainer.push_to_hub(args.repo_id, private=args.private)
    else:
        parser.error("pass --bank DIR, or --model and --dataset to fit a bank first")
    print(f"pushed {args.repo_id}: {url}")


if __name__ == "__main__":
    main()
