"""Part-grounded prototype metrics: part purity (PIP-Net), part consistency and stability (Huang et al., ICCV 2023).

Why: EPIC's purity (:mod:`.purity`) is measured in feature space; datasets with part keypoints
(CUB-200-2011's 15 parts) let the field ask whether a channel's prototypes land on one *annotated*
part. A dataset brings a ``parts`` column of ``{part name: [x, y, visible]}`` in original-image
pixels (:mod:`epic_hf.data.cub` reads CUB's files into one).

A channel's **box** on an image is the footprint of its peak cell ``argmax_hw G_c`` at the model
input, mapped back through the processor's resize and crop to the original image
(:func:`epic_hf.images.box_in_original`); a part is **hit** when it is visible and its keypoint
lies in the box (edges included). With ``merge_sides`` the parts whose names differ only by
"left"/"right" are one part, hit when either side is (PIP-Net's 12 CUB parts).

* **purity**: channel c's prototypes are its top-N images of the evaluated data by the mean of G_c
  (the same :class:`~epic_hf.mining.TopN` as the purity rows); its purity is the largest share of
  them that hit one part; reported: the mean over channels, how many exceed 0.5, each channel's
  best part.
* **consistency**: for each class k, its top channels (``class_channels``: largest mean
  contribution ``A'_{k,j} avg G_j`` over the evaluated images the model predicts as k); a pair
  (k, c) is consistent when one part is hit in at least ``threshold`` of the class's images where
  that part is visible; reported: the share of consistent pairs, and (``best_part_share``) the mean
  over pairs of that best hit share, a graded version that does not hide everything below the threshold.
* **stability**: for each (class, channel) pair, the share of the class's images whose set of hit
  parts is unchanged when Gaussian noise of ``parts_noise_std`` (in model-input units) is added,
  averaged over the pairs (per prototype, then over prototypes, as Huang et al. average).

Classes are the model's predictions, as ``class_channels`` defines them, so a dataset's label ids
need not match the model's. Everything is measured under U and under U = I, in one pass over the
evaluated images after the stream.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from ..backbone import FrozenClassifier
from ..data import ImageSource, SkippedSamples
from ..disentangle import cell_box, peak_cells
from ..images import box_in_original
from .channels import IDENTITY, VIEWS, ChannelView
from .draws import sample_seed

Points = dict[str, list[tuple[float, float]]]
_SIDES = {"left", "right"}


def part_name(name: str, merge_sides: bool) -> str:
    """``name``, or with ``merge_sides`` the name without its "left"/"right" word ("left eye" -> "eye")."""
    if not merge_sides:
        return name
    words = [word for word in re.split(r"[\s_\-]+", name.strip()) if word]
    kept = [word for word in words if word.lower() not in _SIDES]
    return " ".join(kept) if kept and len(kept) < len(words) else name


def visible_points(value: Any, merge_sides: bool) -> Points:
    """The visible keypoints of one ``parts`` value ``{name: [x, y, visible]}``, by (merged) part name."""
    points: Points = {}
    for name, point in (value or {}).items():
        if point is None or len(point) < 2 or any(v is None for v in point[:3]):
            continue
        if len(point) >= 3 and float(point[2]) <= 0:
            continue
        points.setdefault(part_name(str(name), merge_sides), []).append((float(point[0]), float(point[1])))
    return points


def hit_parts(box: tuple[float, float, float, float], points: Points) -> frozenset[str]:
    """The parts with a visible keypoint inside ``box`` (x0, y0, x1, y1), edges included."""
    x0, y0, x1, y1 = box
    return frozenset(name for name, found in points.items()
                     if any(x0 <= x <= x1 and y0 <= y <= y1 for x, y in found))


@dataclass
class ClassSums:
    """Sums of ``avg_hw F`` per predicted class, over the stream: what ``class_channels`` are read from."""

    sums: dict[int, list[float]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def update(self, targets: torch.Tensor, pooled: torch.Tensor) -> None:
        for target, row in zip(targets.tolist(), pooled.double().cpu()):
            held = self.sums.get(int(target))
            self.sums[int(target)] = (row if held is None else torch.tensor(held, dtype=torch.float64) + row).tolist()
            self.counts[int(target)] = self.counts.get(int(target), 0) + 1

    def class_channels(self, view: ChannelView, top: int) -> dict[int, list[int]]:
        """Class -> its ``top`` channels by mean contribution ``A'_{k,j} avg G_j`` (largest first)."""
        found = {}
        for target, total in self.sums.items():
            mean = torch.tensor(total, dtype=torch.float64, device=view.weight.device)[None] / self.counts[target]
            evidence = view.weight[target].cpu() * view.pooled(mean)[0].cpu()
            found[target] = evidence.argsort(descending=True, stable=True)[:top].tolist()
        return found

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {str(k): v for k, v in self.sums.items()}, "counts": {str(k): v for k, v in self.counts.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClassSums:
        return cls({int(k): v for k, v in state["sums"].items()}, {int(k): v for k, v in state["counts"].items()})


@dataclass
class PartCounts:
    """The hit counts of one view, filled image by image."""

    prototype_hits: dict[int, Counter[str]] = field(default_factory=dict)
    prototypes: Counter[int] = field(default_factory=Counter)
    pair_hits: dict[tuple[int, int], Counter[str]] = field(default_factory=dict)
    class_visible: dict[int, Counter[str]] = field(default_factory=dict)
    stable: Counter[tuple[int, int]] = field(default_factory=Counter)
    images: Counter[tuple[int, int]] = field(default_factory=Counter)

    def result(self, names: list[str], threshold: float) -> dict[str, Any]:
        per_channel: list[dict[str, Any]] = []
        purities: list[float] = []
        for channel in sorted(self.prototypes):
            hits = self.prototype_hits.get(channel, Counter())
            best = max(names, key=lambda name: (hits[name], -names.index(name)), default=None)
            share = hits[best] / self.prototypes[channel] if best is not None else 0.0
            per_channel.append({"channel": channel, "part": best if share > 0 else None, "purity": share})
            purities.append(share)
        consistent, best_shares = 0, []
        for (target, _), hits in self.pair_hits.items():
            visible = self.class_visible.get(target, Counter())
            shares = [hits[name] / count for name, count in visible.items() if count]
            consistent += any(share >= threshold for share in shares)
            best_shares.extend([max(shares)] if shares else [])
        scored = [pair for pair in self.pair_hits if sum(self.class_visible.get(pair[0], Counter()).values())]
        return {"purity": sum(purities) / len(purities) if purities else None,
                "channels_over_half": sum(p > 0.5 for p in purities), "per_channel": per_channel,
                "consistency": consistent / len(scored) if scored else None, "class_channel_pairs": len(scored),
                "best_part_share": sum(best_shares) / len(best_shares) if best_shares else None,
                "stability": (sum(self.stable[pair] / count for pair, count in self.images.items()) / len(self.images)
                              if self.images else None), "stability_images": sum(self.images.values())}


class PartMetrics:
    """The pass over the evaluated images that fills :class:`PartCounts` for both views."""

    def __init__(self, classifier: FrozenClassifier, views: dict[str, ChannelView], prototype_keys: dict[str, Any],
                 class_sums: ClassSums, top: int, merge_sides: bool, noise_std: float, seed: int) -> None:
        self.classifier, self.views, self.merge_sides = classifier, views, merge_sides
        self.noise_std, self.seed = noise_std, seed
        self.bias = classifier.head().bias.double()  # the predictions must be the stream's, bias included
        self.prototypes: dict[str, dict[int, list[int]]] = {}
        for view, keys in prototype_keys.items():
            found: dict[int, list[int]] = {}
            for channel, row in enumerate(keys.tolist()):
                for key in row:
                    found.setdefault(int(key), []).append(channel)
            self.prototypes[view] = found
        self.class_channels = {view: class_sums.class_channels(views[view], top) for view in VIEWS}
        self.counts = {view: PartCounts() for view in VIEWS}
        self.names: list[str] = []
        self.images_with_parts = 0

    def run(self, source: ImageSource, column: str, batch_size: int, stop: int) -> None:
        """One pass over the first ``stop`` records (those the stream evaluated), ``column`` holding the parts."""
        table = None  # a table is read by key per batch; a stream's column once, up to ``stop`` when keys are positions
        if source.streaming or source.key_column is not None:
            table = source.column(column, range(stop) if source.key_column is None else None)
        for keys, images, _ in source.batches(batch_size, SkippedSamples(), stop=stop):
            if keys:
                found = table if table is not None else source.column(column, keys)
                self.batch(keys, images, [found.get(key) for key in keys])

    @torch.no_grad()
    def batch(self, keys: list[int], images: list[Any], parts: list[Any]) -> None:
        """One batch: clean and noisy feature maps, the predictions, then each image under both views."""
        classifier = self.classifier
        pixel_values = classifier.preprocess(images)
        input_size = (int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))
        features = classifier.features(pixel_values)
        fmap = features.fmap.float()
        logits = fmap.double().mean(dim=(2, 3)) @ self.views[IDENTITY].weight.T + self.bias
        if features.extra_logits is not None:
            logits = logits + features.extra_logits.double()
        targets = logits.argmax(dim=1).tolist()
        noise = torch.stack([torch.randn(tuple(pixel_values.shape[1:]), dtype=torch.float32,
                                         generator=torch.Generator().manual_seed(sample_seed(self.seed, key)))
                             for key in keys])
        noisy = classifier.feature_map(pixel_values + (noise * self.noise_std).to(pixel_values))
        for index, key in enumerate(keys):
            for raw in (parts[index] or {}):
                if part_name(str(raw), self.merge_sides) not in self.names:
                    self.names.append(part_name(str(raw), self.merge_sides))
            points = visible_points(parts[index], self.merge_sides)
            self.images_with_parts += bool(points)
            original = (images[index].height, images[index].width)
            for view in VIEWS:
                self._image(view, key, targets[index], fmap[index], noisy[index], points, original, input_size)

    def _boxes(self, view: str, fmap: torch.Tensor, channels: list[int], original: tuple[int, int],
               input_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
        """Each channel's peak-cell box in original pixels."""
        maps = self.views[view].channel_maps(fmap[None], torch.tensor([channels], dtype=torch.long))
        rows, cols = peak_cells(maps)
        grid = (int(fmap.shape[-2]), int(fmap.shape[-1]))
        return [box_in_original(cell_box(r, c, grid, input_size), original, input_size,
                                self.classifier.image_processor) for r, c in zip(rows[0].tolist(), cols[0].tolist())]

    def _image(self, view: str, key: int, target: int, fmap: torch.Tensor, noisy: torch.Tensor, points: Points,
               original: tuple[int, int], input_size: tuple[int, int]) -> None:
        counts = self.counts[view]
        channels = self.prototypes[view].get(key, [])
        if channels:
            for channel, box in zip(channels, self._boxes(view, fmap, channels, original, input_size)):
                counts.prototypes[channel] += 1
                counts.prototype_hits.setdefault(channel, Counter()).update(hit_parts(box, points))
        chosen = self.class_channels[view].get(target, [])
        if not chosen or not points:
            return
        counts.class_visible.setdefault(target, Counter()).update(points.keys())
        clean = self._boxes(view, fmap, chosen, original, input_size)
        moved = self._boxes(view, noisy, chosen, original, input_size)
        for channel, before, after in zip(chosen, clean, moved):
            hit = hit_parts(before, points)
            counts.pair_hits.setdefault((target, channel), Counter()).update(hit)
            counts.stable[target, channel] += hit == hit_parts(after, points)
            counts.images[target, channel] += 1

    def result(self, threshold: float) -> dict[str, Any]:
        """``report.parts``: each metric per view, and what they were measured on."""
        per_view = {view: self.counts[view].result(self.names, threshold) for view in VIEWS}
        metrics = ("purity", "channels_over_half", "per_channel", "consistency", "best_part_share", "stability",
                   "class_channel_pairs", "stability_images")
        return {**{name: {view: per_view[view][name] for view in VIEWS} for name in metrics},
                "part_names": list(self.names), "images_with_parts": self.images_with_parts}


def check_parts_column(source: ImageSource, column: str) -> None:
    """Refuse, before the stream, a dataset whose known columns lack ``column``: the part metrics would have nothing."""
    columns = list(source.dataset.column_names or [])
    if columns and column not in columns:
        raise ValueError(
            f"parts=True needs a column of part keypoints {{name: [x, y, visible]}}; the dataset has no {column!r} "
            f"column (columns: {columns}): pass parts_column=<name>, or a CUB-200-2011 folder")


def part_report(classifier: FrozenClassifier, source: ImageSource, views: dict[str, ChannelView],
                prototype_keys: dict[str, torch.Tensor], class_sums: ClassSums, settings: Any, stop: int,
                notes: list[str]) -> dict[str, Any]:
    """``report.parts`` (see the module docstring), from one more pass over the ``stop`` records evaluated."""
    metrics = PartMetrics(classifier, views, prototype_keys, class_sums, settings.top_k, not settings.parts_keep_sides,
                          settings.parts_noise_std, settings.seed)
    metrics.run(source, settings.parts_column, settings.batch_size, stop)
    if not metrics.images_with_parts:
        notes.append(f"no evaluated image has a visible part in {settings.parts_column!r}: the part metrics are empty")
    return {**metrics.result(settings.parts_threshold), "merge_sides": not settings.parts_keep_sides,
            "noise_std": settings.parts_noise_std, "threshold": settings.parts_threshold,
            "class_channels": settings.top_k}
