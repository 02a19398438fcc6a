"""Tiny, randomly initialised classifiers of every supported family (well under 1 MB each).

One entry per ``config.model_type`` in the adapter registry; ``test_adapters`` fails if a
registered family has no tiny model here, so a new family cannot skip the exactness tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForImageClassification,
    BeitConfig,
    ConvNextConfig,
    ConvNextImageProcessor,
    ConvNextV2Config,
    Data2VecVisionConfig,
    EfficientNetConfig,
    MobileNetV2Config,
    RegNetConfig,
    ResNetConfig,
    SwinConfig,
    Swinv2Config,
)

LABELS = ["circle", "square", "triangle"]
IMAGE_SIZE = 32


def _labels() -> dict:
    return {"id2label": dict(enumerate(LABELS)), "label2id": {v: i for i, v in enumerate(LABELS)}}


TINY_CONFIGS = {
    "resnet": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], **_labels()),
    "regnet": lambda: RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8, **_labels()),
    "mobilenet_v2": lambda: MobileNetV2Config(
        image_size=IMAGE_SIZE, depth_multiplier=0.1, min_depth=4, finegrained_output=False, **_labels()),
    "efficientnet": lambda: EfficientNetConfig(
        image_size=IMAGE_SIZE, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, **_labels()
    ),
    "convnext": lambda: ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **_labels()),
    "convnextv2": lambda: ConvNextV2Config(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **_labels()),
    "swin": lambda: SwinConfig(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, **_labels()
    ),
    "swinv2": lambda: Swinv2Config(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, **_labels()
    ),
    "beit": lambda: BeitConfig(
        image_size=IMAGE_SIZE, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, use_mean_pooling=True, **_labels()
    ),
    "data2vec-vision": lambda: Data2VecVisionConfig(
        image_size=IMAGE_SIZE, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, use_mean_pooling=True, **_labels()
    ),
}


def tiny_processor() -> ConvNextImageProcessor:
    """Resize to IMAGE_SIZE x IMAGE_SIZE (crop_pct=1 at 32px keeps the whole image)."""
    return ConvNextImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_pct=1.0)


def make_tiny_model(model_type: str, seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForImageClassification.from_config(TINY_CONFIGS[model_type]())
    with torch.no_grad():  # random but non-trivial heads and norms
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1 and ("norm" in name or "bias" in name):
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def save_tiny_model(model_type: str, directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    make_tiny_model(model_type, seed).save_pretrained(directory)
    tiny_processor().save_pretrained(directory)
    return directory
