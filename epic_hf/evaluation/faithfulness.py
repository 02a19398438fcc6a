"""Deletion and insertion AUC, as RISE defines them (Petsiuk et al., BMVC 2018), for any pixel map.

The explained class is the model's prediction on the clean input. Pixels are ordered by the map,
descending, ties by flat index (a stable sort of ``-map``). At step ``i`` of ``n`` the first
``round(i * H * W / n)`` pixels (all colour channels of each) are replaced: *deletion* replaces
them in the input with the processed all-black image; *insertion* starts from the input blurred
(separable Gaussian, kernel 11, sigma 5, reflect padding) and puts the input's pixels back. The
score is the softmax probability of the explained class; ``AUC = (p_0/2 + p_1 + ... + p_{n-1} +
p_n/2) / n``. Low deletion and high insertion AUC mean the map found what the model used.

The end points shared by every method (the clean, the black and the blurred input) run once per
image; every other perturbed input runs through the model's own forward in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as nnf
from PIL import Image

from ..backbone import FrozenClassifier

DELETION, INSERTION = "deletion", "insertion"
MODES = (DELETION, INSERTION)
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0


def black_image(classifier: FrozenClassifier, like: torch.Tensor) -> torch.Tensor:
    """The processor's output for an all-black image of ``like``'s size, (1, C, H, W): its normalised zeros."""
    height, width = int(like.shape[-2]), int(like.shape[-1])
    black = classifier.preprocess([Image.new("RGB", (width, height))])
    if black.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"the processor turned a {width} x {height} black image into {tuple(black.shape[-2:])}, "
                         f"not the inputs' {tuple(like.shape[-2:])}")
    return black.to(like)


def gaussian_blur(pixel_values: torch.Tensor, kernel: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """A separable Gaussian blur of (B, C, H, W) per colour channel, reflect padding (RISE's insertion start)."""
    offsets = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    weights = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    weights = (weights / weights.sum()).to(pixel_values)
    channels = pixel_values.shape[1]
    pad = kernel // 2
    x = nnf.pad(pixel_values, (pad, pad, 0, 0), mode="reflect")
    x = nnf.conv2d(x, weights.view(1, 1, 1, kernel).expand(channels, 1, 1, kernel), groups=channels)
    x = nnf.pad(x, (0, 0, pad, pad), mode="reflect")
    return nnf.conv2d(x, weights.view(1, 1, kernel, 1).expand(channels, 1, kernel, 1), groups=channels)


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(B, H*W): each pixel's place in its map's order (descending, ties by flat index ascending)."""
    flat = maps.reshape(maps.shape[0], -1)
    order = torch.sort(-flat.float(), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def step_counts(steps: int, pixels: int) -> list[int]:
    """Pixels replaced at each step ``i = 0..n``: ``round(i * H * W / n)`` (Python's round)."""
    return [round(i * pixels / steps) for i in range(steps + 1)]


def auc(curve: Sequence[float]) -> float:
    """The trapezoid area under ``p_0..p_n`` on [0, 1]: ``(p_0/2 + p_1 + ... + p_{n-1} + p_n/2) / n``."""
    steps = len(curve) - 1
    return (curve[0] / 2 + sum(curve[1:-1]) + curve[-1] / 2) / steps


class Scorer:
    """The explained class's softmax probability for many inputs, in batches of ``batch_size``."""

    def __init__(self, classifier: FrozenClassifier, batch_size: int) -> None:
        self.classifier, self.batch_size = classifier, batch_size
        self.forwards = 0

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        found = []
        for start in range(0, inputs.shape[0], self.batch_size):
            logits = self.classifier.logits(inputs[start: start + self.batch_size]).double()
            found.append(logits.softmax(dim=1).gather(1, targets[start: start + self.batch_size, None])[:, 0])
            self.forwards += 1
        return torch.cat(found)


@torch.no_grad()
def curves(scorer: Scorer, pixel_values: torch.Tensor, targets: torch.Tensor, maps: dict[str, torch.Tensor],
           steps: int, modes: Sequence[str] = MODES) -> dict[str, dict[str, torch.Tensor]]:
    """``{mode: {method: (B, steps + 1) probabilities}}`` for every map of the batch (``modes``: both by default)."""
    batch, _, height, width = pixel_values.shape
    counts = torch.tensor(step_counts(steps, height * width), device=pixel_values.device)
    black = black_image(scorer.classifier, pixel_values).expand_as(pixel_values)
    blurred = gaussian_blur(pixel_values)
    # the end points every method shares: clean, all black, blurred
    ends = scorer(torch.cat([pixel_values, black, blurred]), targets.repeat(3)).reshape(3, batch)
    clean, dark, blur = ends[0], ends[1], ends[2]
    found: dict[str, dict[str, torch.Tensor]] = {mode: {} for mode in modes}
    inner = counts[1:-1]  # steps 1..n-1
    for method, values in maps.items():
        ranks = pixel_ranks(values).reshape(batch, 1, height, width)
        for mode in modes:
            base, source = (pixel_values, black) if mode == DELETION else (blurred, pixel_values)
            probabilities = []
            # one chunk of (step, image) pairs at a time: never more than batch_size inputs in memory
            pairs = [(s, b) for s in range(inner.numel()) for b in range(batch)]
            for start in range(0, len(pairs), scorer.batch_size):
                chunk = pairs[start: start + scorer.batch_size]
                step_index = torch.tensor([s for s, _ in chunk], device=pixel_values.device)
                image_index = torch.tensor([b for _, b in chunk], device=pixel_values.device)
                replaced = ranks[image_index] < inner[step_index].view(-1, 1, 1, 1)
                inputs = torch.where(replaced, source[image_index], base[image_index])
                probabilities.append(scorer(inputs, targets[image_index]))
            middle = (torch.cat(probabilities).reshape(inner.numel(), batch).T if probabilities
                      else pixel_values.new_zeros((batch, 0), dtype=torch.float64))
            first, last = (clean, dark) if mode == DELETION else (blur, clean)
            found[mode][method] = torch.cat([first[:, None], middle, last[:, None]], dim=1)
    return found


class Faithfulness:
    """Running sums of the deletion and insertion curves per method (float64), and how many images each has."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.sums: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
        self.counts: dict[str, int] = {}
        #: ROAD's per-batch means times the batch's images, per method and order ("morf", "lerf"); ROAD scores the
        #: same maps of the same images as the curves, so ``counts`` is its number of images too
        self.road_sums: dict[str, dict[str, float]] = {}

    def update_road(self, found: dict[str, dict[str, float]], images: int) -> None:
        """Add one batch of :func:`~epic_hf.evaluation.baselines.road_scores` (means over its ``images``)."""
        for method, orders in found.items():
            sums = self.road_sums.setdefault(method, {})
            for order, value in orders.items():
                sums[order] = sums.get(order, 0.0) + value * images

    def update(self, found: dict[str, dict[str, torch.Tensor]]) -> None:
        for mode, per_method in found.items():
            for method, values in per_method.items():
                total = self.sums[mode].setdefault(method, [0.0] * (self.steps + 1))
                for index, value in enumerate(values.double().sum(dim=0).tolist()):
                    total[index] += value
                if mode == DELETION:
                    self.counts[method] = self.counts.get(method, 0) + int(values.shape[0])

    def result(self) -> dict[str, Any]:
        """``{"deletion": {method: auc}, "insertion": {...}, "curves": {mode: {method: mean curve}}, ...}``, and
        ``"road": {method: {"morf": ..., "lerf": ...}}`` when ROAD was scored."""
        mean = {mode: {m: [v / self.counts[m] for v in sums] for m, sums in per.items() if self.counts.get(m)}
                for mode, per in self.sums.items()}
        found = {DELETION: {m: auc(c) for m, c in mean[DELETION].items()},
                 INSERTION: {m: auc(c) for m, c in mean[INSERTION].items()},
                 "curves": mean, "steps": self.steps, "images": dict(self.counts)}
        if self.road_sums:
            found["road"] = {m: {order: value / self.counts[m] for order, value in sums.items()}
                             for m, sums in self.road_sums.items()}
        return found

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "sums": self.sums, "counts": self.counts, "road_sums": self.road_sums}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Faithfulness:
        found = cls(int(state["steps"]))
        found.sums = {mode: {m: list(v) for m, v in per.items()} for mode, per in state["sums"].items()}
        found.counts = dict(state["counts"])
        found.road_sums = {m: dict(v) for m, v in state.get("road_sums", {}).items()}
        return found
