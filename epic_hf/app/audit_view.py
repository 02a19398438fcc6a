"""The app's Audit tab, as plain values: an audit's findings read back from its folder, with their pictures.

An audit (``epic-hf audit --output-dir DIR`` or ``explainer.audit(..., output_dir=DIR)``) leaves
``audit.json`` and the pictures of its samples in ``DIR``; the tab shows them as the page does, each
finding's message above its samples, the box where the channel peaks drawn on each. Nothing is
recomputed: the app shows what the audit found, on the data it was run on.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from ..viz.audit_page import IMAGES_DIR
from .views import md_text

#: Findings the tab shows at most (the page, audit.html, has them all), and the side of each picture.
MAX_FINDINGS, PICTURE_SIDE = 30, 128
BOX_COLOR = (255, 59, 48)


def audit_findings(folder: str | Path, limit: int = MAX_FINDINGS) -> list[tuple[str, list[tuple[Image.Image, str]]]]:
    """(Markdown, [(picture with its box, caption)]) per finding of the audit in ``folder``, in the report's order."""
    root = Path(folder)
    path = root / "audit.json" if root.is_dir() else root
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not an audit's audit.json ({error}); write one with epic-hf audit "
                         "--output-dir") from None
    labels = [str(label) for label in report.get("labels", [])]
    height, width = (max(1, int(v)) for v in report.get("input_size") or (1, 1))
    shown = []
    for finding in report.get("findings", [])[:limit]:
        classes = ", ".join(labels[k] if 0 <= k < len(labels) else f"class {k}" for k in finding["classes"])
        channel = (f"channel {finding['channel']}" if finding["channel"] >= 0
                   else "channels " + ", ".join(map(str, finding.get("channels", []))))
        text = (f"**{finding['kind'].replace('_', ' ')}** · {channel} · {md_text(classes)} · score "
                f"{finding['score']:.3f}\n\n{md_text(str(finding['message']))}")  # labels are data: escaped
        boxes = finding.get("boxes") or []
        pictures = []
        for position, key in enumerate(finding["samples"]):
            picture = path.parent / IMAGES_DIR / f"{int(key)}.jpg"
            if not picture.is_file():
                continue
            image = Image.open(picture).convert("RGB").resize((PICTURE_SIDE, PICTURE_SIDE))
            if position < len(boxes):
                x0, y0, x1, y1 = boxes[position]
                ImageDraw.Draw(image).rectangle(
                    [x0 * PICTURE_SIDE // width, y0 * PICTURE_SIDE // height, x1 * PICTURE_SIDE // width - 1,
                     y1 * PICTURE_SIDE // height - 1], outline=BOX_COLOR, width=2)
            pictures.append((image, f"#{int(key)}"))
        shown.append((text, pictures))
    return shown
