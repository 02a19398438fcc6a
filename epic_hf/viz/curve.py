"""The purity curve of a fit, drawn with PIL: what the official code reports, as a picture.

For each schedule step, the purity of the freshly mined prototypes before training on them and
after; the bank's purity under U = I and under the trained U as two reference lines.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from .fonts import ChainFont

SIZE = (640, 380)
MARGIN = (64, 40, 24, 70)  # left, top, right, bottom
BEFORE, AFTER, REFERENCE, GRID = (150, 150, 160), (20, 110, 200), (200, 60, 40), (228, 228, 232)


def render_purity_curve(steps: Sequence[dict], purity_before: float, purity_after: float) -> Image.Image:
    """``steps``: dicts with ``prototypes``, ``purity_before``, ``purity_after`` (a FitReport's steps)."""
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN[0], MARGIN[1], SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]
    values = [purity_before, purity_after] + [s[k] for s in steps for k in ("purity_before", "purity_after")]
    low, high = min(values), max(values)
    pad = max(0.02, (high - low) * 0.1)
    low, high = low - pad, high + pad
    count = max(len(steps), 1)

    def point(step: float, value: float) -> tuple[float, float]:
        x = left + (right - left) * (step + 0.5) / count
        return x, bottom - (bottom - top) * (value - low) / (high - low)

    small, title = ChainFont(12), ChainFont(15, bold=True)
    for tick in range(5):
        value = low + (high - low) * tick / 4
        y = point(0, value)[1]
        draw.line([(left, y), (right, y)], fill=GRID)
        small.draw(draw, (6, round(y) - 8), f"{value:.3f}", fill=(90, 90, 100))
    for value, label in ((purity_before, "bank, U = I"), (purity_after, "bank, trained U")):
        y = point(0, value)[1]
        draw.line([(left, y), (right, y)], fill=REFERENCE, width=1)
        small.draw(draw, (right - small.getlength(label) - 4, round(y) - 16), label, fill=REFERENCE)
    for key, color in (("purity_before", BEFORE), ("purity_after", AFTER)):
        points = [point(i, s[key]) for i, s in enumerate(steps)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=color)
    for i, s in enumerate(steps):
        x = point(i, low)[0]
        small.draw(draw, (round(x - small.getlength(f"N={s['prototypes']}") / 2), bottom + 8), f"N={s['prototypes']}",
                   fill=(60, 60, 70))
    title.draw(draw, (left, 10), "EPIC purity per schedule step", fill=(20, 20, 30))
    legend_y = SIZE[1] - 28
    for x, color, label in ((left, BEFORE, "mined, before training"), (left + 220, AFTER, "after training")):
        draw.line([(x, legend_y + 7), (x + 24, legend_y + 7)], fill=color, width=3)
        small.draw(draw, (x + 30, legend_y), label, fill=(40, 40, 50))
    return image
