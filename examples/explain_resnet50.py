"""Explain ResNet-50's predictions with an EPIC prototype bank.

    python examples/explain_resnet50.py cat.jpg dog.jpg --bank you/resnet-50-epic
    python examples/explain_resnet50.py cat.jpg --model microsoft/resnet-50 --bank runs/resnet50/bank

``--bank`` is an EPIC repo (Hub id or directory) fit on ``--model``; make one with
``epic-hf fit microsoft/resnet-50 imagenet-1k --streaming --output-dir runs/resnet50`` (see
docs/distributed.md) and optionally ``--push-to-hub you/resnet-50-epic``. Without a bank the
script still decomposes each logit exactly into channel contributions, only without prototypes.
The channels shown are those with the most positive evidence for the predicted class. Each image
gets ``<output-dir>/<name>.png``; all of them go to ``report.html``. The same from the shell:
``epic-hf explain you/resnet-50-epic cat.jpg dog.jpg --output explanations/``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from epic_hf import EpicExplainer, PrototypeBank, write_html_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", default="microsoft/resnet-50", help="classifier (Hub id or directory)")
    parser.add_argument("--bank", default=os.environ.get("EPIC_BANK"),
                        help="EPIC bank fit on --model: Hub repo id or directory (default: $EPIC_BANK)")
    parser.add_argument("--output-dir", default="explanations", help="where the pictures go")
    parser.add_argument("--top-k", type=int, default=4, help="channels shown per image")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    explainer = EpicExplainer.from_pretrained(args.model)
    if args.bank:
        explainer.set_bank(PrototypeBank.from_pretrained(args.bank))
    else:
        logging.warning("no --bank: explanations show channel contributions but no prototypes")

    explanations = explainer.explain(args.images, top_k=args.top_k)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for path, explanation in zip(args.images, explanations):
        # exact: the channels' contributions, the CLS term (DINOv2; 0 for others) and the bias add up to the logit
        total = float(explanation.contributions.sum()) + explanation.cls_contribution + explanation.bias
        print(f"{path}: {explanation.target_label} (p={explanation.probability:.3f}); "
              f"logit {explanation.target_logit:.4f} = sum of contributions + CLS term + bias = {total:.4f}")
        for channel in explanation.channels:
            keys = [p.sample_key for p in channel.prototypes]
            print(f"  channel {channel.channel}: {channel.contribution:+.4f}, box {channel.box}, prototypes {keys}")
        print(f"  -> {explanation.save(output / (Path(path).stem + '.png'))}")

    write_html_report(explanations, output / "report.html")
    print(f"report: {output / 'report.html'}")


if __name__ == "__main__":
    main()
