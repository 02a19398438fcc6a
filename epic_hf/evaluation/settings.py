"""The settings of one evaluation, validated once, and what a resumed run must agree on.

``batch_size`` and ``max_samples`` are not part of the fingerprint: every random draw is seeded
per sample (by the seed and the sample key), so the numbers do not depend on how the data was
batched, and a finished run can be extended to more samples by running it again with a larger
``max_samples``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from ..config import FitConfig

#: FitConfig fields that say how to read a dataset; the only ``**data_overrides`` evaluate accepts.
DATA_SETTINGS = ("split", "image_column", "key_column", "streaming")


@dataclass(frozen=True)
class EvaluationSettings:
    """Every knob of :func:`~epic_hf.evaluation.evaluate_explainer` (see docs/evaluation.md)."""

    top_k: int = 4
    noise_std: float = 0.05
    shift_pixels: int = 4
    seed: int = 0
    random_draws: int = 8
    prototypes_per_channel: int = 5
    batch_size: int = 32
    max_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("top_k", "random_draws", "prototypes_per_channel", "batch_size"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("shift_pixels", self.shift_pixels, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        if self.max_samples is not None:
            _check_int("max_samples", self.max_samples, minimum=1)
        if isinstance(self.noise_std, bool) or not isinstance(self.noise_std, (int, float)) or self.noise_std < 0:
            raise ValueError(f"noise_std must be a number of at least 0, got {self.noise_std!r}")

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the numbers (not batch_size, not max_samples)."""
        values = dataclasses.asdict(self)
        del values["batch_size"], values["max_samples"]
        return values


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")


def data_config(label_column: str | None, overrides: dict[str, Any]) -> FitConfig:
    """The FitConfig that tells the fit package's ``open_source`` how to read the dataset."""
    unknown = sorted(set(overrides) - set(DATA_SETTINGS))
    if unknown:
        raise TypeError(f"unknown evaluation setting(s) {unknown}; dataset settings are {list(DATA_SETTINGS)}")
    return FitConfig(label_column=label_column, **overrides)


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's float32 bytes (identifies the bank's U in a fingerprint)."""
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]

