"""The four kinds of finding, each a plain computation on the audit's numbers (definitions: docs/audit.md).

Inputs are what the exact decomposition gives for free on the pooled vectors: the class evidence
``E[k, j]`` (the mean contribution ``A'_{k,j} (U v)_j`` of channel j to class k over the samples
predicted as k), each class's *drivers* (its strongest channels by share of its positive
evidence), each channel's top-N samples on the data with the cell where each peaks, the labels and
the model's probabilities. Nothing here runs the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from .config import AuditConfig
from .report import Finding


@dataclass
class Scene:
    """What every detector reads. ``share`` (C, D): channel j's share of class k's positive evidence.
    ``top_keys`` (D, N): each channel's top-N sample keys. ``cells`` channel -> (N,) peak cells (row-major)
    for the examined channels. ``rows`` key -> row of the per-sample tensors."""

    share: torch.Tensor
    drivers: dict[int, list[int]]
    top_keys: torch.Tensor
    cells: dict[int, torch.Tensor]
    grid: tuple[int, int]
    keys: torch.Tensor
    labels: torch.Tensor
    probabilities: torch.Tensor
    vectors: torch.Tensor  # (n, D) avg_hw F
    U: torch.Tensor
    weight: torch.Tensor  # (C, D) A' = A U^-1
    names: list[str]

    def contributions(self, row: int, k: int) -> torch.Tensor:
        """(D,) ``A'_{k, j} (U v)_j``: what each channel adds to class k's logit for the sample in ``row`` (exact)."""
        return self.weight[k] * (self.U.double() @ torch.as_tensor(self.vectors[row]).double())

    def row_of(self) -> dict[int, int]:
        return {int(key): row for row, key in enumerate(self.keys.tolist())}


def evidence_shares(evidence: torch.Tensor) -> torch.Tensor:
    """(C, D) share of each class's positive evidence that each channel carries (rows sum to 1, or 0)."""
    positive = evidence.double().clamp_min(0)
    return positive / positive.sum(dim=1, keepdim=True).clamp_min(1e-300)


def class_drivers(share: torch.Tensor, per_class: int, min_share: float) -> dict[int, list[int]]:
    """Class -> its strongest ``per_class`` channels by evidence share, those carrying at least ``min_share``."""
    found: dict[int, list[int]] = {}
    values, channels = share.topk(min(per_class, share.shape[1]), dim=1)
    for k in range(share.shape[0]):
        found[k] = [int(c) for v, c in zip(values[k].tolist(), channels[k].tolist()) if v >= min_share and v > 0]
    return found


def driven_class(scene: Scene, channel: int) -> int:
    """The class whose evidence the channel carries the largest share of."""
    return int(scene.share[:, channel].argmax())


def where(row: int, col: int, grid: tuple[int, int]) -> str:
    """A cell of the grid in words: "bottom-right corner", "top edge", "centre"."""
    def third(index: int, size: int, names: tuple[str, str, str]) -> str:
        if size < 3:
            return names[0] if index < size / 2 else names[2]
        return names[min(2, index * 3 // size)]

    vertical = third(row, grid[0], ("top", "middle", "bottom"))
    horizontal = third(col, grid[1], ("left", "centre", "right"))
    if vertical != "middle" and horizontal != "centre":
        return f"{vertical}-{horizontal} corner"
    if vertical == "middle" and horizontal == "centre":
        return "centre"
    return f"{vertical if vertical != 'middle' else horizontal} edge"


def null_max_counts(spread: torch.Tensor, draws: int, count: int, seed: int) -> torch.Tensor:
    """The largest number of ``count`` peaks that share one cell, when peaks fall as the data's ``spread`` says:
    ``draws`` Monte Carlo samples (the fixed-position test's null distribution)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(spread.double(), draws * count, replacement=True, generator=generator)
    picks = picks.reshape(draws, count)
    counts = torch.zeros(draws, spread.numel(), dtype=torch.int64)
    counts.scatter_add_(1, picks, torch.ones_like(picks))
    return counts.amax(dim=1)


def fixed_position(scene: Scene, config: AuditConfig) -> list[Finding]:
    """Driving channels whose top activations peak in one cell far more often than the data's peaks do.

    The null is the spread of the peaks of every examined channel on this data, with one peak
    added per cell (so no cell is impossible): a channel whose concept moves as the data's content
    moves draws its N peaks from it. The p-value is the share of null draws whose fullest cell holds
    as many peaks as the channel's; a finding needs p below ``significance`` / (channels examined)
    and at least ``fixed_position_share`` of the peaks in that cell.
    """
    if not scene.cells:
        return []
    cells_count = scene.grid[0] * scene.grid[1]
    spread = torch.ones(cells_count, dtype=torch.float64)
    for peaks in scene.cells.values():
        spread += torch.bincount(peaks, minlength=cells_count).double()
    spread /= spread.sum()
    count = int(next(iter(scene.cells.values())).numel())
    null = null_max_counts(spread, config.null_draws, count, config.seed)
    level = config.significance / len(scene.cells)
    found = []
    for channel, peaks in scene.cells.items():
        cell, held = Counter(peaks.tolist()).most_common(1)[0]
        p_value = (1 + int((null >= held).sum())) / (1 + null.numel())
        if held / count < config.fixed_position_share or p_value > level:
            continue
        k = driven_class(scene, channel)
        row, col = divmod(int(cell), scene.grid[1])
        place = where(row, col, scene.grid)
        share = float(scene.share[k, channel])
        found.append(Finding(
            "fixed_position", channel, [k], scene.top_keys[channel].tolist(), held / count * share,
            f"channel {channel} carries {share:.0%} of the evidence for '{scene.names[k]}', and {held} of its top "
            f"{count} activations peak in the same cell, the {place} (cell {row}, {col} of {scene.grid[0]} x "
            f"{scene.grid[1]}; p = {p_value:.1g} against this data's spread of peaks): a fixed-position shortcut?",
            numbers={"cell": [row, col], "place": place, "in_cell": held, "top_n": count, "p_value": p_value,
                     "evidence_share": share, "null_expected_max": float(null.double().mean())}))
    return found


def off_class(scene: Scene, config: AuditConfig) -> list[Finding]:
    """Channels that drive a class while most of their top activations are labelled another class."""
    rows = scene.row_of()
    found = []
    for k, channels in scene.drivers.items():
        for channel in channels:
            labels = [int(scene.labels[rows[key]]) for key in scene.top_keys[channel].tolist() if key in rows]
            known = [label for label in labels if label >= 0]
            if not known:
                continue
            others = [label for label in known if label != k]
            off = len(others) / len(known)
            if off <= config.off_class_share:
                continue
            common = Counter(others).most_common(1)[0][0]
            share = float(scene.share[k, channel])
            found.append(Finding(
                "off_class", channel, [k, common], scene.top_keys[channel].tolist(), off * share,
                f"channel {channel} carries {share:.0%} of the evidence for '{scene.names[k]}', but {len(others)} of "
                f"its top {len(known)} activations are labelled another class (most often '{scene.names[common]}')",
                numbers={"off_share": off, "evidence_share": share}))
    return found


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts of samples labelled i (row) and predicted j (column), over the labelled samples."""
    known = labels >= 0
    flat = labels[known] * num_classes + predictions[known]
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def shared_confusion(scene: Scene, predictions: torch.Tensor, config: AuditConfig) -> list[Finding]:
    """For each class pair the model confuses, the channels that carry strong evidence for both."""
    num_classes = scene.share.shape[0]
    matrix = confusion_matrix(scene.labels, predictions, num_classes)
    found = []
    for a in range(num_classes):
        for b in range(a + 1, num_classes):
            confused = int(matrix[a, b] + matrix[b, a])
            if confused < config.min_confusions:
                continue
            rate = confused / max(1, int(matrix[a].sum() + matrix[b].sum()))
            both = (scene.share[a] >= config.min_evidence_share) & (scene.share[b] >= config.min_evidence_share)
            mask = ((scene.labels == a) & (predictions == b)) | ((scene.labels == b) & (predictions == a))
            samples = scene.keys[mask].tolist()[: config.top_n]
            for channel in both.nonzero().flatten().tolist():
                strength = float(torch.minimum(scene.share[a, channel], scene.share[b, channel]))
                found.append(Finding(
                    "shared_confusion", channel, [a, b], samples, rate * strength,
                    f"'{scene.names[a]}' and '{scene.names[b]}' are confused on {confused} samples ({rate:.0%}); "
                    f"channel {channel} carries {float(scene.share[a, channel]):.0%} and "
                    f"{float(scene.share[b, channel]):.0%} of their evidence",
                    numbers={"confused": confused, "rate": rate, "evidence_shares": [
                        float(scene.share[a, channel]), float(scene.share[b, channel])]}))
    return found


def suspect_labels(scene: Scene, predictions: torch.Tensor, config: AuditConfig) -> list[Finding]:
    """Samples whose label disagrees with a confident prediction, by how much more the model believes its own class."""
    known = scene.labels >= 0
    disagree = known & (predictions != scene.labels)
    confident = scene.probabilities.gather(1, predictions[:, None])[:, 0]
    candidates = (disagree & (confident >= config.suspect_confidence)).nonzero().flatten().tolist()
    found = []
    for row in candidates:
        predicted, label = int(predictions[row]), int(scene.labels[row])
        score = float(confident[row] - scene.probabilities[row, label])
        carriers = scene.contributions(row, predicted).topk(min(3, scene.weight.shape[1])).indices.tolist()
        key = int(scene.keys[row])
        found.append(Finding(
            "suspect_label", -1, [predicted, label], [key], score,
            f"sample {key} is labelled '{scene.names[label]}' but the model predicts '{scene.names[predicted]}' "
            f"with p = {float(confident[row]):.3f} (p = {float(scene.probabilities[row, label]):.3f} for its "
            f"label), carried by channels {', '.join(map(str, carriers))}",
            channels=carriers, numbers={"p_predicted": float(confident[row]),
                                        "p_label": float(scene.probabilities[row, label])}))
    found.sort(key=lambda finding: -finding.score)
    return found[: config.max_suspects]
