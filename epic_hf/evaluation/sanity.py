"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018): does a map depend on the model and on the class?

*Model-parameter randomisation*, cascading from the head: the head's weights are redrawn, then
the last block's too, then more blocks (a quarter, half, all of them), then every parameter; at each step the Spearman rank
correlation of each method's map with the trained model's map is measured. A map that stays
the same when the weights it is meant to explain are random is not explaining them. The
randomised models are deep copies: the user's model is never touched.

*Random logit*: the map for a random other class (seeded per sample) against the map for the
predicted class; a high correlation means the map barely depends on the class asked about.

Lower correlations are better in both. The random map is the control: it is insensitive to both
by construction (its correlation is 1 under randomisation).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..backbone import FrozenClassifier
from .channels import ChannelView
from .draws import sample_seed
from .maps import MapMaker


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of a 1-D tensor, ties sharing their mean rank (as Spearman's rho wants), float64."""
    order = torch.sort(values.double(), stable=True)
    _, inverse, counts = torch.unique_consecutive(order.values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() + 1) / 2  # 0-based mean position of each run of ties
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order.indices] = mean_rank[inverse]
    return ranks


def spearman(first: torch.Tensor, second: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two maps (flattened); None where either is constant."""
    a, b = average_ranks(first.reshape(-1)), average_ranks(second.reshape(-1))
    a, b = a - a.mean(), b - b.mean()
    norm = float(a.norm() * b.norm())
    return float((a * b).sum()) / norm if norm > 0 else None


def block_list(model: nn.Module) -> list[nn.Module]:
    """The model's blocks, top first: the elements of its ModuleList holding the most parameters."""
    best: list[nn.Module] = []
    size = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            count = sum(p.numel() for p in module.parameters())
            if count > size:
                best, size = list(module), count
    return best[::-1]


@torch.no_grad()
def randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter of ``module`` from N(0, s^2), s its trained values' std (0.02 where that is 0)."""
    for parameter in module.parameters():
        spread = float(parameter.float().std()) if parameter.numel() > 1 else 0.0
        spread = spread if spread > 0 and spread == spread else 0.02
        drawn = torch.randn(parameter.shape, generator=generator, dtype=torch.float32) * spread
        parameter.copy_(drawn.to(parameter))


def cascade_depths(blocks: int) -> list[int]:
    """How many top blocks each step randomises besides the head: 0, 1, a quarter, half, all of them (deduplicated).

    A few steps rather than one per block: every step is a whole copy of the model held for the run.
    """
    return sorted({0, *(d for d in (1, round(blocks / 4), round(blocks / 2), blocks) if 1 <= d <= blocks)})


def cascade(classifier: FrozenClassifier, seed: int) -> list[tuple[str, FrozenClassifier]]:
    """Deep copies with the head, then more and more top blocks, then every parameter randomised: (label, copy)."""
    steps: list[tuple[str, FrozenClassifier]] = []
    blocks = block_list(classifier.model)
    head = classifier.adapter.classifier()
    names = {id(m): n for n, m in classifier.model.named_modules()}
    for depth in [*cascade_depths(len(blocks)), -1]:
        model = copy.deepcopy(classifier.model)
        copies = dict(model.named_modules())
        generator = torch.Generator().manual_seed(sample_seed(seed, depth))
        if depth < 0:
            randomise(model, generator)
            label = "all"
        else:
            randomise(copies[names[id(head)]], generator)
            for block in blocks[:depth]:
                randomise(copies[names[id(block)]], generator)
            label = "head" if depth == 0 else f"head+{depth} block{'s' if depth > 1 else ''}"
        steps.append((label, FrozenClassifier(model, classifier.image_processor, classifier.reference,
                                              split_cls=classifier.split_cls)))
    return steps


def maker_for(classifier: FrozenClassifier, like: MapMaker) -> MapMaker:
    """``like``'s methods, U and settings on another classifier (its own head: ``A'`` = its ``A`` U^-1)."""
    head = classifier.head()
    weight = head.weight.double()
    epic = like.epic
    U = epic.U
    if U is not None:  # A' = A U^-1, solved rather than inverted
        weight_epic = torch.linalg.solve(U.double().T, weight.T).T
    else:
        weight_epic = weight
    return MapMaker(classifier, ChannelView(epic.name, U, weight_epic, epic.orthogonal),
                    ChannelView(like.identity.name, None, weight, True), like.top_k, like.seed)


class Sanity:
    """Running sums of the Spearman correlations per method, per randomisation step and for the random logit."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, list[float]]] = {}  # check -> method -> [sum, count]
        #: check -> method -> images where a map was constant (no rank correlation exists: Grad-CAM's ReLU zeroes
        #: the whole map of a randomised model whose gradients turned negative), reported beside the means
        self.constant: dict[str, dict[str, int]] = {}

    def add(self, check: str, method: str, value: float | None) -> None:
        if value is None:
            per = self.constant.setdefault(check, {})
            per[method] = per.get(method, 0) + 1
            return
        entry = self.sums.setdefault(check, {}).setdefault(method, [0.0, 0.0])
        entry[0] += value
        entry[1] += 1

    def update(self, reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor], check: str) -> None:
        for method, maps in reference.items():
            for first, second in zip(maps, other[method]):
                self.add(check, method, spearman(first, second))

    def result(self, steps: Sequence[str]) -> dict[str, Any]:
        """``{"randomisation": {method: {step: rho}}, "random_logit": {method: rho}, "steps": [...], "constant":
        {check: {method: images}}}``: a mean over the images whose maps were not constant, None where all were."""
        def mean(check: str, method: str) -> float | None:
            total, count = self.sums.get(check, {}).get(method, [0.0, 0.0])
            return total / count if count else None

        methods = sorted({m for per in self.sums.values() for m in per})
        return {"randomisation": {m: {step: mean(f"randomised:{step}", m) for step in steps} for m in methods},
                "random_logit": {m: mean("random_logit", m) for m in methods}, "steps": list(steps),
                "constant": {check: dict(per) for check, per in self.constant.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums, "constant": self.constant}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Sanity:
        found = cls()
        found.sums = {c: {m: list(v) for m, v in per.items()} for c, per in state["sums"].items()}
        found.constant = {c: dict(per) for c, per in state.get("constant", {}).items()}
        return found


def other_classes(seed: int, keys: Sequence[int], targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A random class other than the target, seeded per sample (the random-logit test's class)."""
    picked = []
    for key, target in zip(keys, targets.tolist()):
        generator = torch.Generator().manual_seed(sample_seed(seed + 2, int(key)))
        offset = int(torch.randint(1, num_classes, (1,), generator=generator))
        picked.append((target + offset) % num_classes)
    return torch.tensor(picked, device=targets.device)
