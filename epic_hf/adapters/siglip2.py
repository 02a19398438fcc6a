"""SigLIP 2 (NaFlex): patch sequences with their grid shape, classified from the masked mean of the patch tokens.

Its image processor resizes each image to a grid of at most ``max_num_patches`` patches (keeping
the aspect ratio), flattens the patches and pads the sequence, returning the patches, a mask and
each image's grid shape. ``Siglip2ForImageClassification`` averages the unmasked tokens of
``last_hidden_state`` (post-LayerNorm per token) and applies ``classifier``. So F is those tokens
on their grid and the head is the classifier: exact, with no CLS term.

Why a square grid: EPIC's pipeline carries (B, C, H, W) images, which one batch of NaFlex grids of
different shapes cannot be. A square image is handed to the processor as it is: the processor
puts it on ``k x k`` patches, ``k = floor(sqrt(max_num_patches))``, and its patches are put back
on the image plane, so it reaches the model exactly as through the processor's own call. Any other
image is first squashed to that square (bilinear, as a fixed-size processor such as ViT's would),
so the model sees it on the k x k grid, not at its own aspect ratio.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import nn

from ..aliases import ImageProcessor
from ..errors import UnsupportedModelError
from .base import ModelAdapter, attribute, submodule, tokens_to_grid
from .registry import register_adapter


@register_adapter
class Siglip2Adapter(ModelAdapter):
    model_types = ("siglip2",)
    family = "SigLIP 2 (NaFlex)"
    doc = (
        "a square image as its processor makes it (`floor(sqrt(max_num_patches))` patches a side), the patches put "
        "back on the image plane; any other image squashed to that square first (NaFlex would keep its aspect "
        "ratio); the model gets them patchified with `spatial_shapes` and an all-ones mask; F = "
        "`vision_model(...).last_hidden_state` (post-LayerNorm per token) on that grid; head: `model.classifier`"
    )

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.patch = int(attribute(self.config.vision_config, "patch_size", int))
        self.side: int | None = None  # pixels a side of the square the pipeline uses; from the processor

    def bind_processor(self, image_processor: ImageProcessor) -> None:
        patch = getattr(image_processor, "patch_size", None)
        limit = getattr(image_processor, "max_num_patches", None)
        if not isinstance(patch, int) or not isinstance(limit, int):
            raise UnsupportedModelError(
                f"SigLIP 2 needs its NaFlex image processor (patch_size and max_num_patches); "
                f"{type(image_processor).__name__} has neither: load Siglip2ImageProcessor from the model's repo."
            )
        if patch != self.patch:
            raise UnsupportedModelError(f"the image processor cuts {patch}-pixel patches, the model reads "
                                        f"{self.patch}-pixel ones: load the processor of this model")
        self.side = patch * math.isqrt(limit)

    def preprocess(self, image_processor: ImageProcessor, images: list[Image.Image]) -> torch.Tensor:
        side = self._side()
        # a square image goes to the processor as it is (it resizes it to the grid itself, exactly as
        # through its own call); any other is squashed to the square first
        square = [image if image.width == image.height else image.resize((side, side), Image.Resampling.BILINEAR)
                  for image in images]
        processed = image_processor(images=square, return_tensors="pt")
        shapes = processed["spatial_shapes"]
        grid = side // self.patch
        if not bool((shapes == grid).all()):
            raise UnsupportedModelError(f"the image processor put a {side} px square on a {shapes[0].tolist()} grid, "
                                        f"not {grid} x {grid}: its resizing is not the one this adapter knows")
        patches = processed["pixel_values"][:, : grid * grid]  # (B, k*k, p*p*C), channels last in each patch
        batch, channels = patches.shape[0], patches.shape[-1] // (self.patch * self.patch)
        planes = patches.reshape(batch, grid, grid, self.patch, self.patch, channels)
        return planes.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, side, side)

    def model_inputs(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, H, W) -> the processor's layout: row-major patches, their grid shape, an all-ones mask."""
        batch, channels, height, width = pixel_values.shape
        rows, columns = height // self.patch, width // self.patch
        if rows * self.patch != height or columns * self.patch != width:
            raise UnsupportedModelError(f"a {height} x {width} input is not a whole number of "
                                        f"{self.patch}-pixel patches")
        patches = pixel_values.reshape(batch, channels, rows, self.patch, columns, self.patch)
        patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * columns, -1)
        shapes = torch.tensor([[rows, columns]] * batch, device=pixel_values.device)
        mask = torch.ones(batch, rows * columns, dtype=torch.int32, device=pixel_values.device)
        return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}

    def trunk(self) -> nn.Module:
        return submodule(self.model, "vision_model", nn.Module)

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vision = self.trunk()
        tokens = self.trunk_output(vision, lambda: vision(**self.model_inputs(pixel_values))).last_hidden_state
        return tokens_to_grid(tokens, pixel_values.shape[-2] // self.patch, pixel_values.shape[-1] // self.patch)

    def model_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(**self.model_inputs(pixel_values)).logits

    def _side(self) -> int:
        if self.side is None:
            raise UnsupportedModelError("SigLIP 2's patch grid is not known: bind its image processor first")
        return self.side
