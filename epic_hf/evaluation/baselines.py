"""The field's own attribution methods, from their own libraries: Grad-CAM (pytorch-grad-cam), Integrated Gradients (captum).

They are imported lazily, from the ``compare`` extra (``pip install "epic_hf[compare]"``); a missing
library raises :class:`ImportError` saying so. Nothing here re-implements them: this module only
picks the layer Grad-CAM reads, turns a token sequence back into its grid (the library's
``reshape_transform`` hook), and hands both libraries the model's own logits.

Gradients are taken with respect to the input only: every parameter's ``requires_grad`` is switched
off for the call and restored after, so the user's model gathers no ``.grad``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..backbone import FrozenClassifier

COMPARE_HINT = 'pip install "epic_hf[compare]"'


def require(module: str, purpose: str) -> Any:
    """Import ``module`` or raise an ImportError that says how to install it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ImportError(f"{purpose} needs the {module.split('.')[0]} package: {COMPARE_HINT}") from error


class LogitsModule(nn.Module):
    """The model as a tensor -> logits function (both libraries call ``model(x)`` and index a tensor)."""

    def __init__(self, classifier: FrozenClassifier) -> None:
        super().__init__()
        self.inner = classifier.model
        self._adapter = classifier.adapter
        self.train(classifier.model.training)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._adapter.model_logits(pixel_values)


@contextlib.contextmanager
def input_gradients(classifier: FrozenClassifier) -> Iterator[None]:
    """The model in eval mode under its lock, grad enabled, parameters frozen (restored after)."""
    with classifier.running(), torch.enable_grad():
        flags = [(p, p.requires_grad) for p in classifier.model.parameters()]
        try:
            for parameter, _ in flags:
                parameter.requires_grad_(False)
            yield
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)


def _block_list(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of transformer blocks: the ModuleList holding the most LayerNorms, if any."""
    best, count = None, 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module):
            norms = sum(isinstance(m, nn.LayerNorm) for m in module.modules())
            if norms > count:
                best, count = module, norms
    return best


def gradcam_layer(classifier: FrozenClassifier, pixel_values: torch.Tensor) -> tuple[nn.Module, bool]:
    """The module Grad-CAM reads, and whether its output is a token sequence.

    Of two candidates, the one the forward reaches last: the last module whose output is a spatial
    map (B, C, h, w) with more than one cell (a CNN's last stage), and the first LayerNorm of the
    last transformer block (pytorch-grad-cam's advice for ViTs: the patch tokens after the last
    block's attention get no gradient from a CLS head, the norm before it does).
    """
    order: list[tuple[nn.Module, Any]] = []
    handles = [m.register_forward_hook(lambda m, _a, out: order.append((m, out))) for m in classifier.model.modules()]
    try:
        with classifier.running():
            classifier.adapter.model_logits(pixel_values[:1])
    finally:
        for handle in handles:
            handle.remove()
    fired = [m for m, _ in order]
    spatial = [m for m, out in order
               if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1]
    blocks = _block_list(classifier.model)
    token = next((m for m in blocks[-1].modules() if isinstance(m, nn.LayerNorm)), None) if blocks is not None else None
    if token is not None and token in fired and (not spatial or fired.index(token) > fired.index(spatial[-1])):
        return token, True
    if not spatial:
        raise ValueError(f"found no layer for Grad-CAM in {type(classifier.model).__name__}")
    return spatial[-1], False


def token_reshape(grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's ``reshape_transform``: (B, N, C) tokens -> (B, C, h, w), dropping CLS/register tokens."""
    height, width = grid

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, tokens.shape[1] - height * width:, :]
        return patches.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


def gradcam_maps(classifier: FrozenClassifier, pixel_values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``GradCAM`` maps (B, H, W) for ``targets``, at the input's resolution."""
    cam_module = require("pytorch_grad_cam", "Grad-CAM")
    outputs = require("pytorch_grad_cam.utils.model_targets", "Grad-CAM")
    layer, tokens = gradcam_layer(classifier, pixel_values)
    reshape = None
    if tokens:
        grid = classifier.forward(pixel_values[:1], pooled=True).pooled.grid
        reshape = token_reshape(grid)
    with input_gradients(classifier):
        cam = cam_module.GradCAM(model=LogitsModule(classifier), target_layers=[layer], reshape_transform=reshape)
        try:
            inputs = pixel_values.detach().clone().requires_grad_(True)
            found = cam(input_tensor=inputs, targets=[outputs.ClassifierOutputTarget(int(t)) for t in targets])
        finally:
            cam.activations_and_grads.release()
    return torch.as_tensor(found, dtype=torch.float32)


#: Integrated Gradients' path steps (captum's default is 50; fewer keep evaluations affordable).
IG_STEPS = 32


def integrated_gradients_maps(classifier: FrozenClassifier, pixel_values: torch.Tensor, targets: torch.Tensor,
                              baseline: torch.Tensor | None = None) -> torch.Tensor:
    """captum's ``IntegratedGradients`` from ``baseline`` (default: the processed black image), summed over colour."""
    attr = require("captum.attr", "Integrated Gradients")
    if baseline is None:
        from .faithfulness import black_image

        baseline = black_image(classifier, pixel_values)
    with input_gradients(classifier):
        method = attr.IntegratedGradients(LogitsModule(classifier))
        found = method.attribute(pixel_values.detach().clone().requires_grad_(True),
                                 baselines=baseline.expand_as(pixel_values).contiguous(),
                                 target=targets.tolist(), n_steps=IG_STEPS,
                                 internal_batch_size=max(1, pixel_values.shape[0]))
    return found.detach().float().sum(dim=1)


#: ROAD's default thresholds (pytorch-grad-cam's): the share of pixels removed, in percent.
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: The percentiles ``evaluate(faithfulness=True, road=True)`` scores: every other one, half the imputations.
ROAD_EVALUATED = (10, 30, 50, 70, 90)


def road_scores(classifier: FrozenClassifier, pixel_values: torch.Tensor, targets: torch.Tensor,
                maps: dict[str, torch.Tensor], percentiles: tuple[int, ...] = ROAD_PERCENTILES,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """ROAD (Rong et al., ICML 2022) by pytorch-grad-cam: ``{method: {"morf": ..., "lerf": ...}}``, means over images.

    Each number is the change of the explained class's softmax probability after the most (MoRF)
    or least (LeRF) relevant pixels are filled by ROAD's noisy linear imputer, averaged over
    ``percentiles``: MoRF should drop far (more negative is better), LeRF should barely move.
    Unlike RISE's black pixels, the imputer keeps the image's statistics. Its noise is drawn from
    torch's global generator, seeded here by ``seed`` (and restored after).
    """
    road = require("pytorch_grad_cam.metrics.road", "ROAD")
    outputs = require("pytorch_grad_cam.utils.model_targets", "ROAD")
    model = LogitsModule(classifier).eval()
    wanted = [outputs.ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    found: dict[str, dict[str, float]] = {}
    with classifier.running(), torch.random.fork_rng(devices=[]):
        for method, values in maps.items():
            found[method] = {}
            for name, metric in (("morf", road.ROADMostRelevantFirstAverage(list(percentiles))),
                                 ("lerf", road.ROADLeastRelevantFirstAverage(list(percentiles)))):
                torch.manual_seed(seed)
                scores = metric(pixel_values, values.detach().cpu().numpy(), wanted, model)
                found[method][name] = float(scores.mean())
    return found
