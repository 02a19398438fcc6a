"""Colours of the pictures: one per channel slot, the heatmap ramp, and the page's inks.

Colour identifies a channel: slot ``i`` of an explanation is drawn in ``channel_color(i)``
everywhere it appears (its box on the input, its row, its prototypes' boxes, its swatch in the
HTML table). The palette has one distinct colour for every slot a picture can show
(:data:`MAX_CHANNELS_SHOWN`), so no two channels of one picture share a colour.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

RGB = tuple[int, int, int]

#: The most channels one picture shows; an explanation may hold more (its JSON keeps them all).
#: Twelve is where the palette still gives every channel a colour of its own.
MAX_CHANNELS_SHOWN = 12

#: One saturated colour per channel slot, pairwise far apart (no two within 100 RGB units) so
#: that boxes, swatches and rows of different channels are never confused.
CHANNEL_COLORS: tuple[RGB, ...] = (
    (230, 25, 75),    # red
    (0, 130, 200),    # blue
    (60, 180, 75),    # green
    (245, 130, 48),   # orange
    (145, 30, 180),   # purple
    (240, 50, 230),   # magenta
    (70, 240, 240),   # cyan
    (190, 235, 40),   # lime
    (128, 0, 0),      # maroon
    (0, 0, 128),      # navy
    (128, 128, 0),    # olive
    (255, 160, 200),  # pink
)

BACKGROUND: RGB = (255, 255, 255)
INK: RGB = (28, 28, 32)
MUTED: RGB = (100, 100, 108)
RULE: RGB = (222, 222, 228)
PANEL: RGB = (246, 246, 249)
POSITIVE: RGB = (20, 120, 60)
NEGATIVE: RGB = (190, 30, 45)
#: The two halos around every box: a dark line outside the colour and a light one inside, so a
#: box reads on a white sky, a black coat, or a patch of its own colour.
HALO_DARK: RGB = (0, 0, 0)
HALO_LIGHT: RGB = (255, 255, 255)

# Anchors of the heatmap ramp, a "hot metal" ramp: dark violet -> crimson -> orange -> yellow ->
# near-white. Its luminance rises with the heat, so the hottest colour is the brightest on the
# page and reads as hot over any photo; a blue-to-dark-red jet ramp's hottest colour is dark and,
# blended over a green or black object, came out muddy olive or brown, so the hot spot read as cold.
_RAMP_ANCHORS: tuple[tuple[float, RGB], ...] = (
    (0.00, (40, 10, 70)),
    (0.30, (160, 20, 70)),
    (0.55, (235, 90, 25)),
    (0.80, (255, 200, 40)),
    (1.00, (255, 250, 200)),
)
#: How much of the photo's own brightness and colour stays under the heat: a dimmed, half-grey
#: photo, so the ramp's hot end is the brightest thing in a heatmap cell whatever the photo is.
PHOTO_DIM = 0.5
PHOTO_COLOUR = 0.5


def channel_color(slot: int) -> RGB:
    """The colour of channel slot ``slot`` (wrapping around the palette past the cap)."""
    return CHANNEL_COLORS[slot % len(CHANNEL_COLORS)]


@lru_cache(maxsize=1)
def _ramp_lut() -> np.ndarray:
    """A 256 x 3 uint8 lookup table interpolated between the ramp's anchors."""
    positions = np.array([p for p, _ in _RAMP_ANCHORS])
    colours = np.array([c for _, c in _RAMP_ANCHORS], dtype=np.float64)
    samples = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(samples, positions, colours[:, k]) for k in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB with the heatmap ramp: (H, W) float -> (H, W, 3) uint8."""
    index = np.clip(np.rint(np.nan_to_num(values) * 255), 0, 255).astype(np.int64)
    return _ramp_lut()[index]


def normalize_heatmap(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    """``heatmap / max`` in [0, 1] (negative values clipped); all zeros when nothing fires."""
    values = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    values = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def heatmap_overlay(image: Image.Image, heatmap: torch.Tensor | np.ndarray, alpha: float = 0.85) -> Image.Image:
    """The coloured, max-normalised ``heatmap`` (resized to the image) over a dimmed ``image``.

    The photo is dimmed and half desaturated (:data:`PHOTO_DIM`, :data:`PHOTO_COLOUR`), then the
    ramp's colour is laid over it with an opacity that rises with the heat, from 0 where nothing
    fires to ``alpha`` at the peak. Cold regions show the dimmed photo, and the hottest pixel is
    a pale yellow brighter than anything under it: on a green leaf, a black coat or white snow
    the hot spot still reads as hot. A map that never fires leaves the dimmed photo alone.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = image.convert("RGB")
    heat = normalize_heatmap(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {tuple(heat.shape)}")
    if heat.shape != (rgb.height, rgb.width):
        resized = Image.fromarray(heat, mode="F").resize(rgb.size, Image.Resampling.BILINEAR)
        heat = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    weight = (alpha * heat)[..., None]
    mixed = dimmed_photo(rgb) * (1.0 - weight) + colorize(heat).astype(np.float32) * weight
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), mode="RGB")


def dimmed_photo(image: Image.Image) -> np.ndarray:
    """``image`` as float RGB, half grey and at :data:`PHOTO_DIM` brightness: the heatmap's backdrop."""
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    grey = photo @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return PHOTO_DIM * (PHOTO_COLOUR * photo + (1.0 - PHOTO_COLOUR) * grey[..., None])
