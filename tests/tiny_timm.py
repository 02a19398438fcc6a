"""Tiny, randomly initialised timm classifiers saved the way the Hub stores timm models.

A timm repo is a ``config.json`` (architecture, model_args, num_classes, label_names and the
``pretrained_cfg`` that ``TimmWrapperImageProcessor`` builds its transforms from) beside a
``model.safetensors`` of timm's own state dict; ``AutoModelForImageClassification`` and
``AutoImageProcessor`` read it as ``model_type='timm_wrapper'``. The files are written by hand
rather than with ``timm.models.save_for_hf``, whose ``model_args`` repeat ``num_classes``, which
TimmWrapper then passes twice to ``timm.create_model``.

Each entry keeps a real timm architecture name and shrinks it through ``model_args`` (fewer
blocks, narrower stages), so the head under test is the one that architecture really has.
"""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

LABELS = ["circle", "square", "triangle"]
IMAGE_SIZE = 64  # stride-32 networks keep a 2 x 2 map, so the spatial average is not trivial

#: name -> (timm architecture, model_args). Names ending in "_refused" must be refused by EPIC.
TINY_TIMM = {
    "resnet": ("resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16], "stem_width": 8}),
    "efficientnet": ("test_efficientnet", {}),
    "regnet": ("regnetx_002", {"w0": 8, "wa": 8, "wm": 2, "depth": 8, "group_size": 8, "stem_width": 8}),
    "convnext": ("convnext_atto", {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]}),
    "dla": ("dla34", {"levels": [1, 1, 1, 1, 1, 1], "channels": [4, 8, 8, 8, 16, 16]}),  # a 1x1-conv classifier
    "swin": ("swin_tiny_patch4_window7_224", {"img_size": IMAGE_SIZE, "embed_dim": 8, "depths": [1, 1],
                                              "num_heads": [1, 2], "window_size": 4}),  # a channels-last map
    "vit_avg": ("vit_tiny_patch16_224", {"img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16, "depth": 1,
                                         "num_heads": 2, "global_pool": "avg"}),
    "vit_avg_no_fc_norm": ("vit_tiny_patch16_224", {"img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16,
                                                    "depth": 1, "num_heads": 2, "global_pool": "avg",
                                                    "fc_norm": False, "reg_tokens": 2}),
    "vit_token": ("vit_tiny_patch16_224", {"img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16,
                                           "depth": 2, "num_heads": 2, "global_pool": "token"}),  # held split
    "vit_token_regs_scaled": ("vit_tiny_patch16_224", {  # register tokens, layer scale, fc_norm on the CLS
        "img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16, "depth": 2, "num_heads": 2,
        "global_pool": "token", "reg_tokens": 2, "init_values": 0.5, "fc_norm": True}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {  # two read-out tokens, two heads averaged
        "img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16, "depth": 2, "num_heads": 2}),
    "eva02_avg": ("eva02_tiny_patch14_224", {  # rotary attention, SwiGLU MLP; avg pool, fc_norm, head
        "img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16, "depth": 2, "num_heads": 2, "ref_feat_shape": [4, 4]}),
    "beit_avg": ("beit_base_patch16_224", {  # relative position bias in every block; avg pool, fc_norm, head
        "img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16, "depth": 2, "num_heads": 2}),
    "vit_relpos_avg": ("vit_relpos_base_patch16_224", {
        "img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16, "depth": 2, "num_heads": 2}),
    "pvt_v2": ("pvt_v2_b0", {"embed_dims": [8, 8, 16, 16], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}),
    "twins": ("twins_svt_small", {"embed_dims": (8, 8, 16, 16), "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2),
                                  "wss": (2, 2, 2, 2), "sr_ratios": (4, 2, 1, 1)}),
    "efficientvit_msra": ("efficientvit_m0", {  # its head is a NormLinear: BatchNorm1d, then the Linear
        "img_size": IMAGE_SIZE, "embed_dim": [16, 16], "depth": [1, 1], "num_heads": [2, 2], "window_size": [4, 4]}),
    "efficientvit_mit": ("efficientvit_b0", {  # in_conv before the pool; Linear, LayerNorm, hard-swish after it
        "widths": [8, 8, 8, 16, 16], "depths": [1, 1, 1, 1, 1], "head_dim": 8, "head_widths": [16, 24]}),
    "mobilenetv3": ("mobilenetv3_small_050", {"depth_multiplier": 0.5}),  # conv_head + hard-swish: gates held
    "resnet_max_refused": ("resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 8, 16, 16], "stem_width": 8,
                                        "global_pool": "max"}),
    "eva02_token_refused": ("eva02_tiny_patch14_224", {  # its CLS token: the held split does not read Eva blocks
        "img_size": IMAGE_SIZE, "patch_size": 16, "embed_dim": 16, "depth": 2, "num_heads": 2, "ref_feat_shape": [4, 4],
        "global_pool": "token"}),
}

EXACT = [name for name in TINY_TIMM if not name.endswith("_refused")]
REFUSED = [name for name in TINY_TIMM if name.endswith("_refused")]


def make_tiny_timm(name: str, seed: int = 0) -> torch.nn.Module:
    """The timm model itself, with random non-trivial norms, biases and classifier (as a trained model has)."""
    architecture, model_args = TINY_TIMM[name]
    torch.manual_seed(seed)
    return randomize(timm.create_model(architecture, pretrained=False, num_classes=len(LABELS), **model_args))


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial norms, biases and classifier in place (timm initialises some to 0 or 1); the model in eval mode."""
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter.ndim == 1 and ("norm" in parameter_name or "bias" in parameter_name or "bn" in parameter_name):
                parameter.add_(torch.randn_like(parameter) * 0.1)
            elif parameter_name.split(".")[0] in ("head", "head_dist", "fc", "classifier"):
                # timm starts some classifiers at zero or at 1e-3 scale (Mixer, Eva, BEiT): a trained head is not
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return model.eval()


def save_tiny_timm(name: str, directory: Path, seed: int = 0) -> Path:
    """Write ``config.json`` and ``model.safetensors`` as a timm Hub repo has them."""
    architecture, model_args = TINY_TIMM[name]
    model = make_tiny_timm(name, seed)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, directory / "model.safetensors")
    config = {
        "architecture": architecture,
        "num_classes": len(LABELS),
        "num_features": model.num_features,
        "global_pool": _pool_type(model),  # informational, as timm writes it: TimmWrapperConfig keeps it
        "label_names": LABELS,
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, IMAGE_SIZE, IMAGE_SIZE],
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": len(LABELS),
        },
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def _pool_type(model: torch.nn.Module) -> str:
    pool = getattr(model, "global_pool", None)
    if pool is None:
        pool = model.head.global_pool
    return pool if isinstance(pool, str) else pool.pool_type
