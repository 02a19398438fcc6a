"""Every supported family decomposes its own logits exactly, under any U."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageClassification,
    DeiTConfig,
    DeiTForImageClassification,
    EfficientNetConfig,
    ResNetConfig,
    ViTConfig,
    ViTForImageClassification,
)

from epic_hf import ADAPTERS, EpicExplainer, UnsupportedModelError
from tiny_models import TINY_CONFIGS, save_tiny_model, tiny_processor

FAMILIES = sorted(ADAPTERS)


def test_every_registered_family_has_a_tiny_model():
    assert set(FAMILIES) <= set(TINY_CONFIGS), "add a tiny config for each new adapter"


@pytest.fixture(scope="module", params=FAMILIES)
def explainer(request, tmp_path_factory):
    path = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    assert sum(f.stat().st_size for f in path.iterdir()) < 1_000_000
    return EpicExplainer.from_pretrained(str(path))


def _images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 36, 3), dtype=np.uint8)) for i in range(count)]


def _randomize(explainer: EpicExplainer, kind: str, seed: int = 1) -> None:
    from epic_hf.disentangle import Disentangler

    explainer.disentangler = Disentangler(explainer.num_channels, kind)
    with torch.no_grad():
        explainer.disentangler.S.copy_(torch.randn(explainer.num_channels, explainer.num_channels,
                                                   generator=torch.Generator().manual_seed(seed)) * 0.3)


def test_logits_match_the_model_and_decompose_exactly(explainer):
    images = _images(3)
    explanations = explainer.explain(images)
    with torch.no_grad():
        expected = explainer.model(pixel_values=explainer.preprocess(images)).logits
    for explanation, logits in zip(explanations, expected):
        torch.testing.assert_close(explanation.logits, logits, rtol=1e-4, atol=1e-5)
        total = explanation.contributions.sum() + explanation.bias
        assert torch.isclose(total.double(), explanation.logits[explanation.target_index].double(), atol=1e-5)
        assert explanation.target_index == int(logits.argmax())
        assert explanation.contributions.shape == (explainer.num_channels,)


@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
def test_non_identity_U_keeps_predictions(explainer, kind):
    images = _images(2, seed=3)
    before = [e.logits for e in explainer.explain(images)]
    _randomize(explainer, kind)
    try:
        U = explainer.U
        assert not torch.allclose(U, torch.eye(U.shape[0]))
        if kind == "orthogonal":
            torch.testing.assert_close(U @ U.T, torch.eye(U.shape[0]), atol=1e-4, rtol=0)
        for explanation, logits in zip(explainer.explain(images), before):
            torch.testing.assert_close(explanation.logits, logits, rtol=1e-4, atol=1e-5)
            total = explanation.contributions.sum() + explanation.bias
            assert torch.isclose(total.double(), explanation.logits[explanation.target_index].double(), atol=1e-5)
        fmap = explainer.feature_map(images, transformed=False)
        transformed = explainer.feature_map(images)
        torch.testing.assert_close(transformed, torch.einsum("ij,bjhw->bihw", U, fmap), atol=1e-5, rtol=1e-5)
    finally:
        _randomize(explainer, "orthogonal", seed=0)
        with torch.no_grad():
            explainer.disentangler.S.zero_()


def test_channel_entries(explainer):
    explanation = explainer.explain(_images(1)[0], top_k=2)
    assert len(explanation.channels) == min(2, explainer.num_channels)
    height, width = explanation.image.size[1], explanation.image.size[0]
    contributions = [c.contribution for c in explanation.channels]
    assert contributions == sorted(contributions, reverse=True)
    assert contributions[0] == pytest.approx(float(explanation.contributions.max()))
    for channel in explanation.channels:
        x0, y0, x1, y1 = channel.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert channel.heatmap.shape == (height, width)
        assert channel.prototypes == []


def test_target_by_index_and_label(explainer):
    image = _images(1)[0]
    by_label = explainer.explain(image, target="square")
    assert by_label.target_index == 1 and by_label.target_label == "square"
    assert explainer.explain(image, target=2).target_index == 2
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        explainer.explain(image, target=3)
    with pytest.raises(ValueError, match="unknown target label 'robin'"):
        explainer.explain(image, target="robin")


@pytest.mark.parametrize(
    "config",
    [
        ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, num_labels=3),
        DeiTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, num_labels=3),
    ],
    ids=["vit", "deit"],
)
def test_cls_token_models_are_refused_at_load(config, tmp_path):
    model_class = DeiTForImageClassification if config.model_type == "deit" else ViTForImageClassification
    model_class(config).save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="CLS token") as info:
        EpicExplainer.from_pretrained(str(tmp_path))
    assert "resnet" in str(info.value) and "convnext" in str(info.value)


def test_beit_without_mean_pooling_is_refused():
    config = TINY_CONFIGS["beit"]()
    config.use_mean_pooling = False
    with pytest.raises(UnsupportedModelError, match="CLS token"):
        EpicExplainer(AutoModelForImageClassification.from_config(config), tiny_processor())


def test_max_pooled_efficientnet_is_refused():
    config = EfficientNetConfig(image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128,
                                pooling_type="max", num_labels=3)
    with pytest.raises(UnsupportedModelError, match="max-pools"):
        EpicExplainer(AutoModelForImageClassification.from_config(config), tiny_processor())


def test_headless_model_is_refused():
    model = AutoModelForImageClassification.from_config(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=0))
    with pytest.raises(UnsupportedModelError, match="classification head"):
        EpicExplainer(model, tiny_processor())


def test_a_model_that_breaks_the_identity_is_refused():
    model = AutoModelForImageClassification.from_config(TINY_CONFIGS["resnet"]())
    model.classifier.append(torch.nn.Tanh())  # a non-linearity after the head: not A.avg(F)+b
    with torch.no_grad():
        model.classifier[1].weight.mul_(50)
    with pytest.raises(UnsupportedModelError, match="relative error"):
        EpicExplainer(model, tiny_processor())
