"""`EvaluationConfig`: every setting of an evaluation, its default, help and validation, written once.

``explainer.evaluate``, ``evaluate_explainer`` and the ``epic-hf evaluate`` flags are derived
from it, as the fit's are from :class:`~epic_hf.config.FitConfig`; how the dataset is read is
the same :class:`~epic_hf.config.DataConfig`.

``batch_size`` and ``max_samples`` do not change the numbers: every random draw is seeded per
sample (by the seed and the sample key), so the result does not depend on how the data was
batched, and a finished run can be extended to more samples by running it again with a larger
``max_samples``. They are therefore left out of what a resumed run must agree on.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from ..config import DataConfig, DataSettings, _section, _setting, flat_settings


@dataclass(frozen=True)
class EvaluationConfig(DataSettings):
    """Every setting of :meth:`EpicExplainer.evaluate` (definitions: docs/evaluation.md)."""

    what = "evaluation"

    data: DataConfig = _section(DataConfig, "how to read the dataset")
    top_k: int = _setting(4, "channels per explanation: the ones stability compares and deletion removes",
                          group="metrics", minimum=1)
    noise_std: float = _setting(0.05, "std of the pixel noise, in [0, 1] intensity units", group="metrics",
                                minimum=0)
    shift_pixels: int = _setting(4, "shift of the image, in model-input pixels", group="metrics", minimum=0)
    random_draws: int = _setting(8, "random channel sets per image for the deletion baseline", group="metrics",
                                 minimum=1)
    prototypes_per_channel: int | None = _setting(
        None, "N of the prototypes mined on the evaluated data; by default the bank's", group="metrics", minimum=1)
    seed: int = _setting(0, "seed of the noise and of the random draws", group="metrics", minimum=0)
    faithfulness: bool = _setting(False, "also score pixel maps (EPIC's, U = I, all channels, Grad-CAM, Integrated "
                                  "Gradients, random) by RISE deletion/insertion AUC and the sanity checks",
                                  group="metrics")
    faithfulness_steps: int = _setting(32, "steps of the deletion and insertion curves", group="metrics", minimum=1)
    road: bool = _setting(False, "with faithfulness, also ROAD (pytorch-grad-cam's MoRF and LeRF, its noisy linear "
                          "imputer, at the 10th to 90th percentile in steps of 20): 10 imputations per image "
                          "and method", group="metrics")
    parts: bool = _setting(False, "also score prototypes against annotated part keypoints (part purity, consistency "
                           "and stability; needs a parts column, as CUB-200-2011's)", group="metrics")
    parts_column: str = _setting("parts", "column of part keypoints {name: [x, y, visible]} in original pixels",
                                 group="metrics")
    parts_noise_std: float = _setting(0.2, "std of the noise of part stability, in model-input units",
                                      group="metrics", minimum=0)
    parts_threshold: float = _setting(0.8, "share of a class's images on which a channel must hit one part to be "
                                      "consistent", group="metrics", minimum=0, maximum=1)
    parts_keep_sides: bool = _setting(False, "count left and right parts apart (by default they are one part, as "
                                      "PIP-Net counts them)", group="metrics")
    max_samples: int | None = _setting(None, "evaluate at most this many images", group="data", result=False,
                                       minimum=1)
    batch_size: int = _setting(32, "images per backbone batch", group="compute", result=False, minimum=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.road and not self.faithfulness:
            raise ValueError("road=True scores the pixel maps of faithfulness=True: set both (--faithfulness --road)")

    def result_settings(self) -> dict[str, Any]:
        """The metric settings that change the numbers (the data's identity is fingerprinted on its own)."""
        return {k: v for k, v in flat_settings(self, result_only=True).items()
                if k not in {spec.name for spec in dataclasses.fields(DataConfig)}}


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's float32 bytes (identifies the bank's U in a fingerprint)."""
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]
