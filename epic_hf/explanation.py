"""The result of :meth:`EpicExplainer.explain`: an exact decomposition of one logit.

``contributions.sum() + bias == logits[target_index]``: every number shown to a user adds
up to the model's own output. Pictures are drawn by :mod:`epic_hf.render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

Box = tuple[int, int, int, int]


@dataclass
class PrototypeMatch:
    """One prototype of a channel: a training image whose ``box`` activates the channel most."""

    sample_key: int
    score: float
    box: Box  # (x0, y0, x1, y1) in the model's input pixels, like ``image``
    _load_image: Callable[[], Image.Image] = field(repr=False, compare=False)

    @cached_property
    def image(self) -> Image.Image:
        """The prototype's processed image (from the bank's thumbnail), at the input size."""
        return self._load_image()

    def to_dict(self) -> dict[str, Any]:
        return {"sample_key": int(self.sample_key), "score": float(self.score), "box": list(self.box)}


@dataclass
class ChannelExplanation:
    """One disentangled channel's share of the target logit, where it fires and its prototypes."""

    channel: int
    contribution: float
    box: Box
    heatmap: torch.Tensor  # (H_in, W_in) relu(G_channel) upsampled to the input
    prototypes: list[PrototypeMatch]

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": int(self.channel),
            "contribution": float(self.contribution),
            "box": list(self.box),
            "prototypes": [p.to_dict() for p in self.prototypes],
        }


@dataclass
class Explanation:
    """Why the model gave ``target_label``: channel contributions, boxes and prototypes."""

    logits: torch.Tensor  # (num_classes,)
    target_index: int
    target_label: str
    contributions: torch.Tensor  # (D,): A'_{k,j} * avg(G)_j
    bias: float
    channels: list[ChannelExplanation]
    image: Image.Image  # the processed input the model saw, as RGB
    id2label: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def probability(self) -> float:
        """Softmax probability of the target class."""
        return float(torch.softmax(self.logits.double(), dim=0)[self.target_index])

    @property
    def target_logit(self) -> float:
        return float(self.logits[self.target_index])

    def share(self, contribution: float) -> float:
        """A contribution as a fraction of the summed absolute contributions."""
        total = float(self.contributions.abs().sum())
        return contribution / total if total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no pixels), for services and logs."""
        return {
            "target_index": int(self.target_index),
            "target_label": self.target_label,
            "probability": self.probability,
            "logit": self.target_logit,
            "bias": float(self.bias),
            "logits": [float(v) for v in self.logits],
            "contributions": [float(v) for v in self.contributions],
            "image_size": list(self.image.size),
            "channels": [
                {**c.to_dict(), "share": self.share(c.contribution)} for c in self.channels
            ],
        }

    def to_image(self) -> Image.Image:
        """A one-page picture: the input with boxes, then a row per channel with its prototypes."""
        from .render import render_explanation

        return render_explanation(self)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_image` (png/jpg by extension) or :meth:`to_dict` (``.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            import json

            path.write_text(json.dumps(self.to_dict(), indent=2))
        else:
            self.to_image().save(path)
        return path

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.to_image().save(buffer, format="PNG")
        return buffer.getvalue()
