"""The explanation results as data: an exact decomposition of one logit, its channels and prototypes.

``contributions.sum() + cls_contribution + bias == logits[target_index]``: every number shown
to a user adds up to the model's own output. These classes hold numbers and text only; the
pictures are :class:`epic_hf.explanation.Explanation`'s, drawn by :mod:`epic_hf.viz`, which reads
these types (and so sits between the two, with no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as nnf
from PIL import Image

from .aliases import JSONDict

Box = tuple[int, int, int, int]


@dataclass
class PrototypeMatch:
    """One prototype of a channel: a training image whose ``box`` activates the channel most.

    ``name`` is what captions call it (a file name, a dataset label or key-column value; None
    shows ``#<sample_key>``). ``is_query`` marks the explained image itself among a channel's
    prototypes: pictures label it "this image" rather than show it as outside evidence.
    """

    sample_key: int
    score: float
    box: Box  # (x0, y0, x1, y1) in the model's input pixels, like ``image``
    _load_image: Callable[[], Image.Image] = field(repr=False, compare=False)
    name: str | None = None
    is_query: bool = False

    @cached_property
    def image(self) -> Image.Image:
        """The prototype's processed image (from the bank's thumbnail), at the input size."""
        return self._load_image()

    def to_dict(self) -> JSONDict:
        return {
            "sample_key": int(self.sample_key),
            "name": self.name,
            "score": float(self.score),
            "box": list(self.box),
            "is_query": bool(self.is_query),
        }


@dataclass(repr=False)
class ChannelExplanation:
    """One disentangled channel's share of the target logit, where it fires and its prototypes.

    ``contribution`` is ``A'_{k,j} * avg(G)_j`` (its exact term of the logit); ``evidence`` is
    ``A'_{k,j} * relu(avg(G)_j)``, the positive evidence the shown channels are ranked by.
    """

    channel: int
    contribution: float
    box: Box
    heatmap: torch.Tensor  # (H_in, W_in) relu(G_channel) upsampled to the input
    prototypes: list[PrototypeMatch]
    evidence: float = 0.0
    #: (best annotated part, its part purity) where the bank was evaluated on part-annotated data
    part: tuple[str, float] | None = None

    def to_dict(self) -> JSONDict:
        return {
            **({"part": list(self.part)} if self.part is not None else {}),
            "channel": int(self.channel),
            "contribution": float(self.contribution),
            "evidence": float(self.evidence),
            "box": list(self.box),
            "prototypes": [p.to_dict() for p in self.prototypes],
        }

    def __repr__(self) -> str:
        return (
            f"ChannelExplanation(channel={self.channel}, contribution={self.contribution:+.4f}, "
            f"box={tuple(self.box)}, prototypes={len(self.prototypes)})"
        )


@dataclass(repr=False)
class ExplanationData:
    """Why the model gave ``target_label``: channel contributions, boxes and prototypes.

    ``cls_contribution`` is the exact non-spatial term of models that read a CLS token beside
    the mean of their patch tokens (DINOv2); 0.0 for purely spatial models. ``true_label`` (when
    known) and ``source`` (the explained file or sample name) let pictures and reports say
    whether the prediction was right and what was explained.
    """

    logits: torch.Tensor  # (num_classes,)
    target_index: int
    target_label: str
    contributions: torch.Tensor  # (D,): A'_{k,j} * avg(G)_j
    bias: float
    channels: list[ChannelExplanation]
    image: Image.Image  # the processed input the model saw, as RGB
    id2label: dict[int, str] = field(default_factory=dict)
    cls_contribution: float = 0.0
    true_label: str | None = None
    source: str | None = None
    #: What :meth:`attribution_map` reads: F (D, h, w) float32 (a CLS-token model's patch parts), the target's
    #: row of A' (D,), and U (D, D), shared with the explainer rather than copied. F costs D * h * w * 4 bytes:
    #: 400 KB for ResNet-50 (2048 x 7 x 7), 600 KB for ViT-B/16 (768 x 14 x 14). None where the explanation was
    #: built without them. Kept apart rather than as the (D, h, w) map of every channel's ``A'_{k,j} G_j``, which
    #: would cost the explanation a full ``U F`` (D^2 h w products) whether or not a map is ever asked for.
    feature_map: torch.Tensor | None = field(default=None, repr=False)
    target_weights: torch.Tensor | None = field(default=None, repr=False)
    disentangling_matrix: torch.Tensor | None = field(default=None, repr=False)

    def attribution_map(self, channels: str | list[int] | torch.Tensor = "shown", *,
                        upsample: bool = True) -> torch.Tensor:
        """A signed pixel map of the target logit: ``sum_{j in S} A'_{k,j} G_j(x)``, (H, W) float32.

        ``channels``: ``"shown"`` (the explanation's channels), ``"all"``, or channel indices. With
        ``upsample`` (the default) the (h, w) feature-grid map is resized bilinearly
        (``align_corners=False``) to the model input's resolution; without it, the grid map itself,
        whose mean is the chosen channels' summed contribution (for ``"all"``: ``contributions.sum()``).
        The map is how the field's pixel metrics (deletion/insertion, ROAD, Quantus) see an explanation.
        With ``"all"`` it is the class activation map ``A_k F`` whatever U is (``A' U F = A F``): U changes
        a pixel map only through which channels are shown. For CLS-token models it holds the patch
        tokens' part only; :attr:`patch_share` says how much of the evidence that leaves out.
        """
        fmap, weights, U = self.feature_map, self.target_weights, self.disentangling_matrix
        if fmap is None or weights is None or U is None:
            raise ValueError("this explanation carries no feature map (it was not built by "
                             "EpicExplainer.explain), so it has no attribution map")
        if isinstance(channels, str):
            if channels == "shown":
                index = torch.tensor([c.channel for c in self.channels], dtype=torch.long)
            elif channels == "all":
                index = torch.arange(fmap.shape[0])
            else:
                raise ValueError(f"channels must be 'shown', 'all' or a list of channel indices, got {channels!r}")
        else:
            index = torch.as_tensor(channels, dtype=torch.long).reshape(-1)
            if index.numel() and not (0 <= int(index.min()) and int(index.max()) < fmap.shape[0]):
                raise ValueError(f"channel indices must be in [0, {fmap.shape[0] - 1}], got {index.tolist()}")
        # sum_{j in S} A'_{k,j} G_j = (A'_k[S] U[S]) . F: D * |S| + D * h * w products, not a full U F
        combined = weights[index].double() @ U[index].double()
        grid = torch.einsum("d,dhw->hw", combined, fmap.double()).float()
        if not upsample:
            return grid
        width, height = self.image.size
        return nnf.interpolate(grid[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]

    @property
    def probability(self) -> float:
        """Softmax probability of the target class."""
        return float(torch.softmax(self.logits.double(), dim=0)[self.target_index])

    @property
    def target_logit(self) -> float:
        return float(self.logits[self.target_index])

    @property
    def predicted_index(self) -> int:
        """The model's own top class (the target unless another class was asked for)."""
        return int(self.logits.argmax())

    @property
    def predicted_label(self) -> str:
        index = self.predicted_index
        return self.target_label if index == self.target_index else self.id2label.get(index, str(index))

    @property
    def is_correct(self) -> bool | None:
        """Whether the model's prediction is the true label; None when the true label is unknown."""
        return None if self.true_label is None else self.predicted_label == self.true_label

    @property
    def patch_share(self) -> float:
        """The patches' share of the evidence: ``sum |contributions| / (sum |contributions| + |cls_contribution|)``.

        1.0 for a model with no CLS term. For a CLS-token model (ViT, DeiT, ...) the rest is the CLS
        token's own part, which no image region carries: a low share means the map explains little.
        """
        spatial = float(self.contributions.double().abs().sum())
        total = spatial + abs(float(self.cls_contribution))
        return spatial / total if total > 0 else 1.0

    def share(self, contribution: float) -> float:
        """A contribution as a fraction of the summed absolute contributions of all channels."""
        total = float(self.contributions.abs().sum())
        return contribution / total if total > 0 else 0.0

    def to_dict(self) -> JSONDict:
        """A JSON-serialisable summary (no pixels) with every channel it holds, for services and logs."""
        return {
            "source": self.source,
            "target_index": int(self.target_index),
            "target_label": self.target_label,
            "predicted_index": self.predicted_index,
            "true_label": self.true_label,
            "correct": self.is_correct,
            "probability": self.probability,
            "logit": self.target_logit,
            "bias": float(self.bias),
            "cls_contribution": float(self.cls_contribution),
            "patch_share": self.patch_share,
            "logits": [float(v) for v in self.logits],
            "contributions": [float(v) for v in self.contributions],
            "image_size": list(self.image.size),
            "channels": [
                {**c.to_dict(), "share": self.share(c.contribution)} for c in self.channels
            ],
        }

    def __repr__(self) -> str:
        top = ", ".join(f"{c.channel}: {c.contribution:+.3f}" for c in self.channels[:4])
        more = f", +{len(self.channels) - 4} more" if len(self.channels) > 4 else ""
        parts = [f"target={self.target_label!r} ({self.target_index})", f"p={self.probability:.3f}",
                 f"logit={self.target_logit:+.3f}"]
        if self.true_label is not None:
            parts.append(f"true={self.true_label!r} ({'correct' if self.is_correct else 'MISS'})")
        if self.source:
            parts.append(f"source={self.source!r}")
        parts.append(f"channels=[{top}{more}]")
        return f"Explanation({', '.join(parts)})"


def purity_drop_note(before: float | None, after: float | None) -> str | None:
    """The plain-words sentence for a fit whose trained U made the prototypes less pure than U = I; else None.

    A fit exists to raise purity, so a summary that shows ``0.601 -> 0.398`` among other numbers
    lets a user publish a worse bank without noticing. The fit's log, the ``epic-hf fit`` summary
    and the model card all say it with this one sentence. Missing or NaN numbers say nothing.
    """
    if before is None or after is None or not before == before or not after == after:  # None or NaN
        return None
    if after >= before:
        return None
    return (f"this fit lowered purity from {before:.3f} (U = I, the model's own channels) to {after:.3f}: its "
            "prototypes are less pure than the untrained channels' (explanations are still exact); a larger or "
            "more varied dataset, the full schedule (--schedule-steps) or another --lr may help")
