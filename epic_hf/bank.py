"""`PrototypeBank`: what EPIC learned about a model, small enough to ship without the dataset.

For every channel c of the disentangled feature map, the bank keeps its top-N prototypes:
``sample_keys[c]`` (which training images), ``scores[c]`` (``sum_hw G_c``), ``boxes[c]``
(the argmax cell scaled to input pixels) and a JPEG thumbnail of each distinct image. It also
keeps S, from which U is derived, so a bank fully determines the explanations it gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .disentangle import Disentangler
from .explanation import PrototypeMatch
from .images import decode_jpeg


@dataclass
class PrototypeBank:
    """Per-channel prototypes plus the disentangler state that produced them.

    Attributes:
        sample_keys: (D, N) int64, the dataset keys of each channel's prototypes, best first.
        scores: (D, N) float32, ``sum_hw G_c`` of each prototype.
        boxes: (D, N, 4) int64, ``(x0, y0, x1, y1)`` of the argmax cell, in input pixels.
        S: (D, D) float32, the disentangler parameter (U = exp(S - S^T) or exp(S)).
        matrix: ``"orthogonal"`` or ``"invertible"``.
        thumbnails: sample key -> JPEG bytes of the processed image (shared across channels).
        input_size: (height, width) of the model input the boxes refer to.
        grid_size: (height, width) of the feature map.
        config: free-form metadata (base model, dataset, hyperparameters, purity).
        class_evidence: (num_classes, D) float32 or None, the mean contribution
            ``A'_{k,j} (U v)_j`` of channel j to class k's logit over the samples predicted as k
            (an exact, global "class k relies on channels ..." summary, free from the index pass).
        class_counts: (num_classes,) int64 or None, how many samples were predicted as each class.
        id2label: class index -> label name of the base model.
        sample_names: sample key -> display name (file name, label or key column value).
    """

    sample_keys: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    S: torch.Tensor
    matrix: str
    thumbnails: dict[int, bytes]
    input_size: tuple[int, int]
    grid_size: tuple[int, int]
    config: dict[str, Any] = field(default_factory=dict)
    class_evidence: torch.Tensor | None = None
    class_counts: torch.Tensor | None = None
    id2label: dict[int, str] = field(default_factory=dict)
    sample_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dim, count = self.sample_keys.shape
        if self.scores.shape != (dim, count) or self.boxes.shape != (dim, count, 4):
            raise ValueError(
                f"inconsistent bank tensors: sample_keys {tuple(self.sample_keys.shape)}, "
                f"scores {tuple(self.scores.shape)}, boxes {tuple(self.boxes.shape)}"
            )
        if self.S.shape != (dim, dim):
            raise ValueError(f"S must be ({dim}, {dim}) for a bank of {dim} channels, got {tuple(self.S.shape)}")

    @property
    def num_channels(self) -> int:
        return self.sample_keys.shape[0]

    @property
    def prototypes_per_channel(self) -> int:
        return self.sample_keys.shape[1]

    @property
    def U(self) -> torch.Tensor:
        disentangler = Disentangler(self.num_channels, self.matrix)
        with torch.no_grad():
            disentangler.S.copy_(self.S)
            return disentangler.matrix()

    def thumbnail(self, sample_key: int) -> Image.Image:
        """The prototype image at the bank's input size (boxes apply to it directly)."""
        try:
            data = self.thumbnails[int(sample_key)]
        except KeyError:
            raise KeyError(f"the bank has no thumbnail for sample key {sample_key}") from None
        image = decode_jpeg(data)
        height, width = self.input_size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        return image

    def prototypes(self, channel: int) -> list[PrototypeMatch]:
        """The prototypes of ``channel``, best first."""
        if not 0 <= channel < self.num_channels:
            raise IndexError(f"channel must be in [0, {self.num_channels - 1}], got {channel}")
        matches = []
        for key, score, box in zip(
            self.sample_keys[channel].tolist(), self.scores[channel].tolist(), self.boxes[channel].tolist()
        ):
            matches.append(
                PrototypeMatch(
                    sample_key=int(key), score=float(score), box=tuple(int(v) for v in box),
                    _load_image=lambda key=key: self.thumbnail(key),
                )
            )
        return matches

    def show(self, channel: int) -> Image.Image:
        """A sheet of ``channel``'s prototypes with their boxes."""
        from .render import render_prototype_sheet

        return render_prototype_sheet(self, channel)

    # -- persistence (see epic_hf.bank_io) --------------------------------------------------
    def save_pretrained(self, save_directory: str | Path) -> Path:
        from .bank_io import save_bank

        return save_bank(self, Path(save_directory))

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, revision: str | None = None, **hub_kwargs) -> "PrototypeBank":
        from .bank_io import load_bank

        return load_bank(path_or_repo_id, revision=revision, **hub_kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        from .bank_io import push_bank_to_hub

        return push_bank_to_hub(self, repo_id, **kwargs)
