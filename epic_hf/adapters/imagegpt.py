"""ImageGPT: a GPT over colour-cluster ids, classified from the mean of its per-pixel hidden states.

Its image processor resizes, scales to [-1, 1] and replaces every pixel by the id of its nearest
colour cluster; ``ImageGPTForImageClassification`` runs the transformer on those ids and applies
``score`` (a Linear without bias) to the mean of ``last_hidden_state`` over all positions (the
final LayerNorm is per position). So F is that hidden state on the pixel grid, and the head is
``score``: exact, with no CLS term.

Why the pipeline still carries images: the processor is asked for its pixel values
(``do_color_quantize=False``) and this adapter quantizes them with the processor's own clusters
and transformers' own ``color_quantize_torch``. Everything that works on images (the index pass,
deletion and stability checks, the pictures) keeps working, and the ids the model sees are the
ones its processor would make.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..aliases import ImageProcessor
from ..errors import UnsupportedModelError
from .base import ModelAdapter, submodule, tokens_to_grid
from .registry import register_adapter


@register_adapter
class ImageGptAdapter(ModelAdapter):
    model_types = ("imagegpt",)
    family = "ImageGPT"
    doc = (
        "the image processor's pixel values (`do_color_quantize=False`), quantized to its colour clusters "
        "as it would; F = `transformer(input_ids).last_hidden_state` (after `ln_f`, per pixel) on the "
        "`(H, W)` pixel grid; head: `model.score` (no bias)"
    )

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.clusters: torch.Tensor | None = None

    def bind_processor(self, image_processor: ImageProcessor) -> None:
        clusters = getattr(image_processor, "clusters", None)
        if clusters is None:
            raise UnsupportedModelError(
                f"ImageGPT reads colour-cluster ids, and this image processor "
                f"({type(image_processor).__name__}) has no colour clusters: load the model's own "
                "ImageGPTImageProcessor (AutoImageProcessor.from_pretrained on the model's repo)."
            )
        self.clusters = torch.as_tensor(np.asarray(clusters), dtype=torch.float32)

    def preprocess(self, image_processor: ImageProcessor, images: list[Image.Image]) -> torch.Tensor:
        return image_processor(images=images, return_tensors="pt", do_color_quantize=False)["pixel_values"]

    def input_ids(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The colour-cluster id of every pixel, row-major: what ImageGPTImageProcessor returns."""
        from transformers.models.imagegpt.image_processing_imagegpt import color_quantize_torch

        if self.clusters is None:
            raise UnsupportedModelError("ImageGPT's colour clusters are not known: bind its image processor first")
        batch = pixel_values.shape[0]
        pixels = pixel_values.float().permute(0, 2, 3, 1).reshape(-1, pixel_values.shape[1])
        return color_quantize_torch(pixels, self.clusters.to(pixels.device)).reshape(batch, -1)

    def trunk(self) -> nn.Module:
        return submodule(self.model, "transformer", nn.Module)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        transformer = self.trunk()
        tokens = self.trunk_output(transformer, lambda: transformer(input_ids=self.input_ids(pixel_values))).last_hidden_state
        return tokens_to_grid(tokens, int(pixel_values.shape[-2]), int(pixel_values.shape[-1]))

    def model_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=self.input_ids(pixel_values)).logits

    def classifier(self) -> nn.Module:
        return submodule(self.model, "score", nn.Module)
