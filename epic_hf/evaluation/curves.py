"""The deletion and insertion curves of every method as one PNG (``faithfulness_curves.png`` in the output dir).

Drawn with Pillow alone (the core package has no plotting library): two panels, the fraction of
pixels replaced on x, the explained class's mean probability on y, one line per method with its
AUC in the legend. Deletion wants a curve that falls fast; insertion one that rises fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_path

CURVES_NAME = "faithfulness_curves.png"
#: One colour per method, in METHODS order (Okabe-Ito, distinguishable with colour blindness).
PALETTE = {"epic": (213, 94, 0), "epic_identity": (0, 114, 178), "all_channels": (0, 158, 115),
           "random": (140, 140, 140), "gradcam": (204, 121, 167), "integrated_gradients": (230, 159, 0)}
PANEL, MARGIN = (420, 300), 48


def _panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], title: str, curves: dict[str, list[float]],
           aucs: dict[str, float], font: Any) -> None:
    left, top = origin
    width, height = PANEL
    draw.rectangle([left, top, left + width, top + height], outline=(0, 0, 0))
    draw.text((left, top - 20), title, fill=(0, 0, 0), font=font)
    for tick in (0.0, 0.5, 1.0):
        y = top + height - tick * height
        draw.line([left - 4, y, left, y], fill=(0, 0, 0))
        draw.text((left - 30, y - 6), f"{tick:.1f}", fill=(0, 0, 0), font=font)
        x = left + tick * width
        draw.line([x, top + height, x, top + height + 4], fill=(0, 0, 0))
        draw.text((x - 8, top + height + 6), f"{tick:.1f}", fill=(0, 0, 0), font=font)
    draw.text((left + width // 2 - 70, top + height + 20), "fraction of pixels replaced", fill=(0, 0, 0), font=font)
    for row, (method, curve) in enumerate(curves.items()):
        colour = PALETTE.get(method, (0, 0, 0))
        steps = len(curve) - 1
        points = [(left + width * i / steps, top + height - height * min(max(p, 0.0), 1.0)) for i, p in enumerate(curve)]
        draw.line(points, fill=colour, width=2)
        # the legend under the panel, two columns, clear of the curves
        x = left + (row % 2) * (width // 2)
        y = top + height + 40 + 16 * (row // 2)
        draw.line([x, y + 6, x + 20, y + 6], fill=colour, width=3)
        draw.text((x + 26, y), f"{method}  AUC {aucs.get(method, float('nan')):.3f}", fill=(0, 0, 0), font=font)


def write_curves(result: dict[str, Any], path: str | Path) -> Path:
    """Draw ``report.faithfulness`` (its mean curves and AUCs) to ``path``."""
    font = ImageFont.load_default()
    image = Image.new("RGB", (2 * PANEL[0] + 3 * MARGIN + 20, PANEL[1] + 2 * MARGIN + 90), "white")
    draw = ImageDraw.Draw(image)
    curves = result.get("curves", {})
    for column, (mode, word) in enumerate((("deletion", "lower is better"), ("insertion", "higher is better"))):
        origin = (MARGIN + 10 + column * (PANEL[0] + MARGIN + 10), MARGIN)
        _panel(draw, origin, f"{mode} (RISE, {result.get('steps')} steps): p(explained class), AUC {word}",
               curves.get(mode, {}), result.get(mode, {}), font)
    path = Path(path)
    with atomic_path(path) as partial:
        image.save(partial)
    return path
