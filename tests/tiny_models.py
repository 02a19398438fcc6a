"""Tiny, randomly initialised classifiers of every supported family (well under 1 MB each).

One entry per ``config.model_type`` in the adapter registry (plus variants, such as LeViT with
its teacher head, that reach the same adapter through another class); ``test_adapters`` fails if
a registered family has no tiny model here, so a new family cannot skip the exactness tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import (
    AutoModelForImageClassification,
    BeitConfig,
    BitConfig,
    CLIPConfig,
    ConvNextConfig,
    ConvNextImageProcessor,
    ConvNextV2Config,
    CvtConfig,
    Data2VecVisionConfig,
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2Config,
    Dinov2WithRegistersConfig,
    DonutSwinConfig,
    EfficientNetConfig,
    FocalNetConfig,
    HGNetV2Config,
    HieraConfig,
    IJepaConfig,
    ImageGPTConfig,
    ImageGPTImageProcessor,
    LevitConfig,
    LevitForImageClassification,
    LevitForImageClassificationWithTeacher,
    MetaClip2Config,
    MobileNetV1Config,
    MobileNetV2Config,
    MobileViTConfig,
    MobileViTV2Config,
    PoolFormerConfig,
    PPLCNetConfig,
    PretrainedConfig,
    PvtConfig,
    PvtV2Config,
    RegNetConfig,
    ResNetConfig,
    SegformerConfig,
    Siglip2Config,
    Siglip2ImageProcessor,
    SiglipConfig,
    SwiftFormerConfig,
    SwinConfig,
    Swinv2Config,
    TextNetConfig,
    ViTConfig,
    ViTMSNConfig,
)

LABELS = ["circle", "square", "triangle"]
IMAGE_SIZE = 32


def _labels() -> dict:
    return {"id2label": dict(enumerate(LABELS)), "label2id": {v: i for i, v in enumerate(LABELS)}}


def _vit(**extra) -> dict:
    return {"image_size": IMAGE_SIZE, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, **extra}


def _two_tower(config_class, **extra) -> PretrainedConfig:
    """CLIP-style configs: a tiny vision tower (what classification uses) and a tiny text tower."""
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return config_class(vision_config=_vit(intermediate_size=32), text_config=text, **extra, **_labels())


def _two_stage(**extra) -> dict:
    """Two-stage MiT encoders (SegFormer, PVT v2): overlapping patch embeddings, strides 4 and 2."""
    return dict(hidden_sizes=[8, 16], depths=[1, 1], num_encoder_blocks=2, num_attention_heads=[1, 2],
                sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2], **extra, **_labels())


@dataclass(frozen=True)
class TinySpec:
    """How to build one tiny classifier: its config, input size, (if Auto cannot pick it) class, and
    (if the family's own differs from a plain resize-and-normalise) image processor."""

    config: Callable[[], PretrainedConfig]
    image_size: int = IMAGE_SIZE
    model_class: type | None = None
    processor: Callable[[], Any] | None = None
    #: its own processor keeps the aspect ratio (SigLIP 2's NaFlex), the pipeline squashes to a square:
    #: the two agree on square images
    squares_only: bool = False


def _siglip2() -> PretrainedConfig:
    """SigLIP 2 with a 4 x 4 grid of 8-pixel patches (its processor: at most 16 patches)."""
    config = _two_tower(Siglip2Config)
    config.vision_config.num_patches = 16
    return config


def _imagegpt_processor() -> ImageGPTImageProcessor:
    """ImageGPT's own processor: 8 x 8 pixels, 16 colour clusters (random, fixed)."""
    clusters = torch.rand(16, 3, generator=torch.Generator().manual_seed(11)) * 2 - 1
    return ImageGPTImageProcessor(clusters=clusters.numpy(), size={"height": 8, "width": 8})


_LEVIT = dict(hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8],
              mlp_ratio=[2, 2, 2], attention_ratio=[2, 2, 2])

TINY_MODELS: dict[str, TinySpec] = {
    "resnet": TinySpec(lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], **_labels())),
    "regnet": TinySpec(lambda: RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8,
                                            **_labels())),
    "mobilenet_v1": TinySpec(lambda: MobileNetV1Config(image_size=IMAGE_SIZE, depth_multiplier=0.1, min_depth=4,
                                                       **_labels())),
    "mobilenet_v2": TinySpec(lambda: MobileNetV2Config(
        image_size=IMAGE_SIZE, depth_multiplier=0.1, min_depth=4, finegrained_output=False, **_labels())),
    "bit": TinySpec(lambda: BitConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_groups=4,
                                      layer_type="preactivation", **_labels())),
    "mobilevit": TinySpec(lambda: MobileViTConfig(
        image_size=64, hidden_sizes=[8, 8, 16], neck_hidden_sizes=[8, 8, 8, 8, 8, 16, 16], expand_ratio=2.0,
        num_attention_heads=2, **_labels()), image_size=64),
    "mobilevitv2": TinySpec(lambda: MobileViTV2Config(image_size=64, width_multiplier=0.125, **_labels()),
                            image_size=64),
    "pvt_v2": TinySpec(lambda: PvtV2Config(image_size=IMAGE_SIZE, **_two_stage())),
    "segformer": TinySpec(lambda: SegformerConfig(decoder_hidden_size=16, **_two_stage())),
    "segformer-tokens": TinySpec(lambda: SegformerConfig(decoder_hidden_size=16, reshape_last_stage=False,
                                                         **_two_stage())),
    "hgnet_v2": TinySpec(lambda: HGNetV2Config(
        embedding_size=8, hidden_sizes=[16, 16], depths=[1, 1], stem_channels=[3, 8, 8], stage_in_channels=[8, 16],
        stage_mid_channels=[8, 8], stage_out_channels=[16, 16], stage_num_blocks=[1, 1],
        stage_downsample=[False, True], stage_light_block=[False, False], stage_kernel_size=[3, 3],
        stage_numb_of_layers=[1, 1], **_labels())),
    "textnet": TinySpec(lambda: TextNetConfig(
        stem_out_channels=8, conv_layer_kernel_sizes=[[[3, 3]], [[3, 3]]], conv_layer_strides=[[2], [2]],
        hidden_sizes=[8, 8, 16], **_labels())),
    "efficientnet": TinySpec(lambda: EfficientNetConfig(
        image_size=IMAGE_SIZE, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, **_labels())),
    "convnext": TinySpec(lambda: ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **_labels())),
    "convnextv2": TinySpec(lambda: ConvNextV2Config(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **_labels())),
    "poolformer": TinySpec(lambda: PoolFormerConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2],
        padding=[2, 1], **_labels())),
    "swiftformer": TinySpec(lambda: SwiftFormerConfig(depths=[1, 1, 1, 1], embed_dims=[8, 8, 16, 16], **_labels()),
                           image_size=64),
    "swin": TinySpec(lambda: SwinConfig(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, **_labels())),
    "swinv2": TinySpec(lambda: Swinv2Config(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, **_labels())),
    "donut-swin": TinySpec(lambda: DonutSwinConfig(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, **_labels())),
    "focalnet": TinySpec(lambda: FocalNetConfig(
        image_size=IMAGE_SIZE, patch_size=4, embed_dim=8, depths=[1, 1], focal_levels=[1, 1], focal_windows=[3, 3],
        **_labels())),
    "hiera": TinySpec(lambda: HieraConfig(
        image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[3, 3], patch_stride=[2, 2], patch_padding=[1, 1], embed_dim=8,
        num_heads=[1, 1, 2], depths=[1, 1, 1], query_stride=[2, 2], masked_unit_size=[8, 8],
        masked_unit_attention=[True, False, False], num_query_pool=1, **_labels())),
    "levit": TinySpec(lambda: LevitConfig(image_size=128, **_LEVIT, **_labels()), image_size=128,
                      model_class=LevitForImageClassification),
    "levit-teacher": TinySpec(lambda: LevitConfig(image_size=128, **_LEVIT, **_labels()), image_size=128,
                              model_class=LevitForImageClassificationWithTeacher),
    "beit": TinySpec(lambda: BeitConfig(**_vit(intermediate_size=32, use_mean_pooling=True), **_labels())),
    "data2vec-vision": TinySpec(lambda: Data2VecVisionConfig(**_vit(intermediate_size=32, use_mean_pooling=True),
                                                             **_labels())),
    "ijepa": TinySpec(lambda: IJepaConfig(**_vit(intermediate_size=32), **_labels())),
    "clip": TinySpec(lambda: _two_tower(CLIPConfig, projection_dim=8)),
    "metaclip_2": TinySpec(lambda: _two_tower(MetaClip2Config, projection_dim=8)),
    "siglip": TinySpec(lambda: _two_tower(SiglipConfig)),
    "dinov2": TinySpec(lambda: Dinov2Config(**_vit(mlp_ratio=2), **_labels())),
    "dinov2_with_registers": TinySpec(lambda: Dinov2WithRegistersConfig(**_vit(mlp_ratio=2, num_register_tokens=2),
                                                                        **_labels())),
    # a non-linear head after the pool (1x1 convolution, hard-swish), made exact per image by its held gates
    "pp_lcnet": TinySpec(lambda: PPLCNetConfig(scale=0.25, class_expand=32, **_labels()), image_size=64),
    # CLS-token transformers, split by the held linearisation: two blocks, so that it is tested across layers
    "vit": TinySpec(lambda: ViTConfig(**_vit(intermediate_size=32, num_hidden_layers=2), **_labels())),
    "vit_msn": TinySpec(lambda: ViTMSNConfig(**_vit(intermediate_size=32, num_hidden_layers=2), **_labels())),
    "deit": TinySpec(lambda: DeiTConfig(**_vit(intermediate_size=32, num_hidden_layers=2), **_labels()),
                     model_class=DeiTForImageClassification),
    "deit-teacher": TinySpec(lambda: DeiTConfig(**_vit(intermediate_size=32, num_hidden_layers=2), **_labels()),
                             model_class=DeiTForImageClassificationWithTeacher),
    "cvt": TinySpec(lambda: CvtConfig(
        embed_dim=[8, 16], num_heads=[1, 2], depth=[1, 2], patch_sizes=[7, 3], patch_stride=[4, 2],
        patch_padding=[2, 1], mlp_ratio=[2.0, 2.0], attention_drop_rate=[0.0, 0.0], drop_rate=[0.0, 0.0],
        drop_path_rate=[0.0, 0.0], qkv_bias=[True, True], cls_token=[False, True], qkv_projection_method=["dw_bn"] * 2,
        kernel_qkv=[3, 3], padding_kv=[1, 1], stride_kv=[2, 2], padding_q=[1, 1], stride_q=[1, 1], **_labels())),
    # colour-cluster ids, not pixel values: the processor is asked for pixel values, the adapter quantizes them
    "imagegpt": TinySpec(lambda: ImageGPTConfig(vocab_size=17, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                                **_labels()), image_size=8, processor=_imagegpt_processor),
    # NaFlex patch sequences with a mask and grid shapes: the adapter patchifies the pipeline's square images
    "siglip2": TinySpec(_siglip2, processor=lambda: Siglip2ImageProcessor(patch_size=8, max_num_patches=16),
                        squares_only=True),
    "pvt": TinySpec(lambda: PvtConfig(
        image_size=IMAGE_SIZE, num_encoder_blocks=2, depths=[1, 2], sequence_reduction_ratios=[2, 1],
        hidden_sizes=[8, 16], patch_sizes=[4, 2], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], num_labels=3,
        **_labels())),
}

#: ``name -> config factory`` (kept for callers that only need a config).
TINY_CONFIGS = {name: spec.config for name, spec in TINY_MODELS.items()}


def tiny_model_types() -> set[str]:
    """The ``config.model_type`` values that the tiny models cover."""
    return {spec.config().model_type for spec in TINY_MODELS.values()}


def tiny_processor(size: int = IMAGE_SIZE) -> ConvNextImageProcessor:
    """Resize to size x size (crop_pct=1 below 384 px keeps the whole image)."""
    return ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0)


def make_tiny_model(name: str, seed: int = 0):
    spec = TINY_MODELS[name]
    torch.manual_seed(seed)
    config = spec.config()
    model = spec.model_class(config) if spec.model_class else AutoModelForImageClassification.from_config(config)
    with torch.no_grad():  # random but non-trivial heads and norms (and BatchNorm statistics)
        for param_name, parameter in model.named_parameters():
            if parameter.ndim == 1 and ("norm" in param_name or "bias" in param_name):
                parameter.add_(torch.randn_like(parameter) * 0.1)
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("running_mean"):
                buffer.add_(torch.randn_like(buffer) * 0.1)
            elif buffer_name.endswith("running_var"):
                buffer.mul_(torch.rand_like(buffer) + 0.5)
    return model.eval()


def processor_for(name: str) -> Any:
    """The image processor a tiny model is saved with: its family's own, or a plain resize."""
    spec = TINY_MODELS[name]
    return spec.processor() if spec.processor else tiny_processor(spec.image_size)


def model_logits(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """A classifier's own logits; PP-LCNet (transformers 5.25) returns them as ``last_hidden_state``."""
    output = model(pixel_values=pixel_values)
    return output.logits if getattr(output, "logits", None) is not None else output.last_hidden_state


def own_logits(model, processor: Any, images: list) -> torch.Tensor:
    """The model on whatever its own processor returns for ``images`` (pixel values, or ImageGPT's ids)."""
    inputs = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
    output = model(**inputs)
    return output.logits if getattr(output, "logits", None) is not None else output.last_hidden_state


def save_tiny_model(name: str, directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    make_tiny_model(name, seed).save_pretrained(directory)
    processor_for(name).save_pretrained(directory)
    return directory


def push_tiny_resnet(repo_id: str, data, seed: int, num_classes: int = 3) -> None:
    """A tiny ResNet trained one epoch on ``data`` and pushed with its processor to ``repo_id`` (the test Hub)."""
    from epic_hf.synthetic import tiny_resnet, train_classifier

    model, processor = tiny_resnet(num_classes, (8, 8), seed=seed)
    train_classifier(model, processor, data, epochs=1)
    model.push_to_hub(repo_id)
    processor.push_to_hub(repo_id)
