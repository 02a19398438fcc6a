"""The shortcut story: a model that tells two classes apart only by a tag in one corner, and the audit that says so.

    python examples/audit_shortcut.py --output-dir runs/shortcut --picture docs/images/audit_shortcut.png

It draws planted data (``epic_hf.synthetic.shortcut_dataset``): red circles, *tagged* circles
(the same red circles with a small tag in the bottom-right corner) and green squares, some of
whose labels are flipped to "red circle". It trains a tiny ResNet on them, fits EPIC with an
output dir, and audits the same data, which reuses the fit's pooled index. It prints the
findings, writes ``audit.json`` and ``audit.html`` to ``<output-dir>/audit`` and, with
``--picture``, a PNG of the top finding with its prototypes and their peak boxes.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
import time
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from epic_hf import AuditReport, EpicExplainer
from epic_hf.synthetic import flipped_rows, shortcut_dataset, tiny_resnet, train_classifier

LABELS = ["red circle", "tagged circle", "green square"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--picture", default=None, help="PNG of the top finding with its prototypes")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--flipped", type=int, default=8, help="green squares relabelled 'red circle'")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.output_dir)

    data = shortcut_dataset(args.images, size=args.size, seed=0, flipped=args.flipped)
    model, processor = tiny_resnet(3, image_size=args.size, labels=LABELS)
    train_classifier(model, processor, data, epochs=args.epochs, batch_size=16, lr=1e-2)
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")  # the bank names its base model by this folder

    explainer = EpicExplainer.from_pretrained(out / "model")
    started = time.perf_counter()
    explainer.fit(data, output_dir=out / "fit", schedule_start=20, schedule_end=5, schedule_steps=3)
    fit_seconds = time.perf_counter() - started
    report = explainer.audit(data, output_dir=out / "audit")  # the fit's index is reused: same data
    print(report.to_markdown())
    print(f"planted label flips: {flipped_rows(data)}")
    print(f"audit {report.seconds:.2f} s, fit {fit_seconds:.2f} s (ratio {report.seconds / fit_seconds:.2f}); "
          f"index reused: {report.reused_index}; backbone on {report.backbone_images} of {report.num_samples} images")
    print(f"open {out / 'audit' / 'audit.html'}")
    if args.picture and report.findings:
        picture(report).save(args.picture)
        print(f"wrote {args.picture}")


def picture(report: AuditReport, columns: int = 10, cell: int = 88) -> Image.Image:
    """The top finding: its message, then its first prototypes with the box where the channel peaks."""
    finding = report.findings[0]
    font = ImageFont.load_default(size=15)
    lines = textwrap.wrap(finding.message, width=118)
    shown = finding.samples[: 2 * columns]
    rows = (len(shown) + columns - 1) // columns
    top = 16 + 20 * len(lines) + 10
    canvas = Image.new("RGB", (columns * (cell + 6) + 26, top + rows * (cell + 6) + 14), "white")
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        draw.text((16, 12 + 20 * index), line, fill=(28, 28, 33), font=font)
    height, width = report.input_size
    for index, key in enumerate(shown):
        x, y = 16 + (index % columns) * (cell + 6), top + (index // columns) * (cell + 6)
        image = Image.open(BytesIO(report.thumbnails[key])).convert("RGB").resize((cell, cell))
        canvas.paste(image, (x, y))
        if index < len(finding.boxes):
            x0, y0, x1, y1 = finding.boxes[index]
            draw.rectangle([x + x0 * cell // width, y + y0 * cell // height, x + x1 * cell // width - 1,
                            y + y1 * cell // height - 1], outline=(255, 59, 48), width=2)
    return canvas


if __name__ == "__main__":
    main()
