"""timm classifiers through TimmWrapper: exact for average-pooled heads, refused with the reason otherwise.

timm is an optional extra. CI installs it (and sets CI=true), so there a missing or broken timm
fails this module instead of skipping it; elsewhere the module is skipped without timm.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageClassification

if os.environ.get("CI"):
    import timm  # noqa: F401 - CI installs the timm extra: these tests must run there, never skip
else:
    pytest.importorskip("timm", reason="the timm extra is not installed: pip install -e '.[timm]'")

from epic_hf import EpicExplainer, UnsupportedModelError, supported_model_types  # noqa: E402
from epic_hf.adapters import HeldTokenAdapter, adapter_for  # noqa: E402
from epic_hf.adapters.timm_heads import HeadReader, SelectPoolReader  # noqa: E402
from epic_hf.adapters.timm_readers import HEAD_READERS, Where, reader_for  # noqa: E402
from epic_hf.adapters.timm_tokens import token_grid  # noqa: E402
from epic_hf.adapters.timm_vit import TimmTokenViTAdapter, TokenViTReader  # noqa: E402
from epic_hf.adapters.timm_wrapper import (  # noqa: E402
    TimmHead,
    TimmWrapperAdapter,
    check_head_is_pool_then_linear,
    read_timm_head,
)
from epic_hf.disentangle import Disentangler  # noqa: E402
from tiny_timm import EXACT, IMAGE_SIZE, REFUSED, TINY_TIMM, make_tiny_timm, randomize, save_tiny_timm  # noqa: E402

REFUSAL_REASONS = {
    "resnet_max_refused": r"global_pool='max'",
    "eva02_token_refused": r"CLS token \(global_pool='token'\)",
}
#: global_pool='token' is supported for a VisionTransformer: only the built model's class says it is an Eva.
REFUSED_FROM_THE_MODEL_ONLY = {"eva02_token_refused"}


@pytest.fixture(scope="module", params=EXACT)
def explainer(request, tmp_path_factory):
    path = save_tiny_timm(request.param, tmp_path_factory.mktemp(request.param))
    assert sum(f.stat().st_size for f in path.iterdir()) < 2_000_000
    loaded = EpicExplainer.from_pretrained(str(path))
    assert loaded.model.config.model_type == "timm_wrapper"
    return loaded


def _images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (50 + 7 * i, 70, 3), dtype=np.uint8)) for i in range(count)]


def _assert_exact(explainer: EpicExplainer, images: list[Image.Image], expected: torch.Tensor) -> None:
    for explanation, logits in zip(explainer.explain(images), expected):
        torch.testing.assert_close(explanation.logits, logits, rtol=1e-4, atol=1e-5)
        total = explanation.contributions.sum() + explanation.bias + explanation.cls_contribution
        assert torch.isclose(total.double(), explanation.logits[explanation.target_index].double(), atol=1e-5)
        assert explanation.target_index == int(logits.argmax())


def test_timm_wrapper_is_registered():
    assert "timm_wrapper" in supported_model_types()


def test_logits_match_the_model_and_decompose_exactly(explainer):
    images = _images(3)
    with torch.no_grad():
        expected = explainer.model(pixel_values=explainer.preprocess(images)).logits
    _assert_exact(explainer, images, expected)
    fmap = explainer.feature_map(images, transformed=False)
    assert fmap.shape[1] == explainer.num_channels and fmap.shape[2] * fmap.shape[3] > 1  # a real spatial map


@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
def test_a_random_U_keeps_predictions_and_the_decomposition(explainer, kind):
    images = _images(2, seed=3)
    with torch.no_grad():
        expected = explainer.model(pixel_values=explainer.preprocess(images)).logits
    width = explainer.num_channels
    explainer.disentangler = Disentangler(width, kind)
    with torch.no_grad():  # entries ~ 1.2/sqrt(D): the spectrum of S stays O(1) at any width, so U is well conditioned
        explainer.disentangler.S.copy_(torch.randn(width, width, generator=torch.Generator().manual_seed(1))
                                       * 1.2 / width**0.5)
    try:
        U = explainer.U
        assert not torch.allclose(U, torch.eye(U.shape[0]))
        _assert_exact(explainer, images, expected)
    finally:
        explainer.disentangler = Disentangler(explainer.num_channels, "orthogonal")


def test_the_explanation_image_is_the_input(explainer):
    """timm's processor normalises with data_config's mean/std: the shown image must undo exactly that."""
    image = _images(1)[0].resize((IMAGE_SIZE, IMAGE_SIZE))
    shown = np.asarray(explainer.explain(image).image).astype(int)
    assert np.abs(shown - np.asarray(image).astype(int)).mean() < 2


@pytest.mark.parametrize("name", REFUSED)
def test_non_linear_heads_are_refused_with_the_reason(name, tmp_path):
    path = save_tiny_timm(name, tmp_path / name)
    assert sum(f.stat().st_size for f in path.iterdir()) < 2_000_000
    with pytest.raises(UnsupportedModelError, match=REFUSAL_REASONS[name]) as info:
        EpicExplainer.from_pretrained(str(path))
    message = str(info.value)
    assert repr(TINY_TIMM[name][0]) in message  # names the timm architecture
    assert "Supported timm heads" in message and "global_pool='avg'" in message


@pytest.mark.parametrize("name", [name for name in REFUSED if name not in REFUSED_FROM_THE_MODEL_ONLY])
def test_config_json_alone_is_enough_to_refuse(name, tmp_path):
    """The pool type and MobileNetV3-style architectures are refused before any weights are read."""
    config = AutoConfig.from_pretrained(str(save_tiny_timm(name, tmp_path / name)))
    with pytest.raises(UnsupportedModelError, match=REFUSAL_REASONS[name]):
        TimmWrapperAdapter.check_config(config)


@pytest.mark.parametrize("name", REFUSED)
def test_the_timm_module_itself_is_refused(name):
    """Without a telling config.json (no global_pool recorded), the head read off the module refuses."""
    with pytest.raises(UnsupportedModelError, match=REFUSAL_REASONS[name]):
        read_timm_head(make_tiny_timm(name), TINY_TIMM[name][0])


def _built_from_class(name: str) -> torch.nn.Module:
    """timm models whose registered names fix depths and widths, so no tiny one loads through TimmWrapper."""
    from timm.models.efficientformer_v2 import EfficientFormerV2
    from timm.models.levit import LevitDistilled
    from timm.models.metaformer import MetaFormer

    if name in ("poolformer_head", "metaformer_mlp_head"):
        return MetaFormer(num_classes=3, depths=(1, 1, 1, 1), dims=(8, 8, 16, 16),
                          use_mlp_head=name == "metaformer_mlp_head")
    if name == "levit_distilled":  # tokens (B, N, C); head and head_dist are NormLinears (BatchNorm1d, Linear)
        return LevitDistilled(img_size=64, num_classes=3, embed_dim=(16, 16), key_dim=8, depth=(1, 1),
                              num_heads=(2, 2))
    return EfficientFormerV2(depths=(1, 1, 1, 1), embed_dims=(8, 8, 16, 16), img_size=64, num_classes=3)


@pytest.mark.parametrize("name", ["poolformer_head", "metaformer_mlp_head", "levit_distilled",
                                  "efficientformerv2_distilled"])
def test_heads_of_models_built_from_their_class_decompose_exactly(name):
    """PoolFormer's pool, LayerNorm2d and Linear; ConvFormer/CAFormer's MlpHead after them (its activation's
    gate held, its LayerNorm folded); LeViT's and EfficientFormerV2's two heads averaged on one pooled vector
    (LeViT's BatchNorm1d folded): the mean of F through the one classifier read is the model's logits."""
    torch.manual_seed(0)
    model = randomize(_built_from_class(name))
    head = read_timm_head(model, name)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(pixels)
    grid = token_grid(model, (64, 64), features.shape[1] - head.prefix_tokens) if features.ndim == 3 else (0, 0)
    check_head_is_pool_then_linear(model, head, features, grid, Where(name))
    assert (head.gated is not None) == (name == "metaformer_mlp_head")
    with torch.no_grad():
        fmap = head.to_map(features, grid)
        logits = fmap.mean(dim=(2, 3)) @ head.fc.weight.T + head.fc.bias
        expected = model(pixels)
    assert fmap.shape[2] * fmap.shape[3] > 1  # a real spatial map
    assert head.fc.weight.abs().max() > 0.05 and not torch.allclose(expected[0], expected[1], atol=1e-3)  # not vacuous
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-6)


def test_the_head_probe_catches_a_post_pool_layer_the_reading_missed():
    """Leave ConvNeXt's post-pool LayerNorm out of the head: the probe on random features must see it."""
    model = make_tiny_timm("convnext")
    features, where = _features(model), Where("convnext_atto")
    with pytest.raises(UnsupportedModelError, match=r"applies head\.norm \(LayerNorm2d\) between the global pool"):
        check_head_is_pool_then_linear(model, TimmHead(fc=model.head.fc), features, (0, 0), where)
    check_head_is_pool_then_linear(model, TimmHead(fc=model.head.fc, norm=model.head.norm), features, (0, 0), where)


def _features(model: torch.nn.Module) -> torch.Tensor:
    """The model's own forward_features on two random 64 px images: the shape its forward_head reads."""
    with torch.no_grad():
        return model.forward_features(torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)))


def test_a_width_change_after_the_pool_is_refused():
    """A head read as pool + Linear that meets MobileNetV3's widening conv_head is refused (the gated reading
    is what serves MobileNetV3; this guards the probe itself)."""
    model = make_tiny_timm("mobilenetv3")
    with pytest.raises(UnsupportedModelError, match="changes the width after the pool"):
        check_head_is_pool_then_linear(model, TimmHead(fc=model.classifier), _features(model), (0, 0),
                                       Where("mobilenetv3_small_050"))


def test_ghostnet_head_is_read_with_its_gate_held():
    """GhostNet (a conv_head with a bias, then ReLU, after the pool; too large to save as a tiny repo here):
    the gated map's mean through the classifier is exactly the model's logits."""
    import timm

    model = timm.create_model("ghostnet_050", pretrained=False, num_classes=3).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1 and "bias" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    head = read_timm_head(model, "ghostnet_050")
    assert head.gated is not None and model.conv_head.bias is not None
    check_head_is_pool_then_linear(model, head, _features(model), (0, 0), Where("ghostnet_050"))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fmap = head.to_map(model.forward_features(images), (0, 0))
        logits = fmap.mean(dim=(2, 3)) @ head.fc.weight.T + head.fc.bias
        torch.testing.assert_close(logits, model(images), rtol=1e-4, atol=1e-5)


def _on_meta(name: str, **model_args) -> torch.nn.Module:
    """A timm model at full size on the meta device: its modules and shapes, no weights and no arithmetic."""
    import timm

    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=3, **model_args).eval()


def test_every_architecture_a_reader_lists_is_matched_and_read_by_it():
    """The generated timm table is true: each architecture a reader lists as checked at full size is served by
    that reader (no other matches first) and read without a refusal."""
    for reader in HEAD_READERS:
        for entry in reader.checked:
            name, _, pool = entry.partition(" (global_pool=")
            model = _on_meta(name, **({"global_pool": pool.strip("')")} if pool else {}))
            assert reader_for(model, name) is reader, entry
            if isinstance(reader, HeadReader):
                reader.read(model, Where(name))
            else:
                assert isinstance(reader, TokenViTReader)
                reader.stack(model, Where(name), 1)


def test_a_reader_that_matches_and_fails_names_itself():
    with pytest.raises(UnsupportedModelError, match=r"read by timm head reader 'NormMlpClassifierHead', applies a "
                                                    r"hidden Linear and tanh"):
        read_timm_head(_on_meta("maxvit_tiny_tf_224"), "maxvit_tiny_tf_224")


def test_a_head_no_reader_matches_is_refused_with_every_reader_named():
    with pytest.raises(UnsupportedModelError, match="no timm head reader matches") as info:
        read_timm_head(_on_meta("mambaout_femto"), "mambaout_femto")
    assert all(f"({reader.name})" in str(info.value) for reader in HEAD_READERS)


def test_two_readers_of_one_rank_that_match_one_model_are_a_registry_bug():
    class Copy(SelectPoolReader):
        name = "a copy of SelectAdaptivePool2d"

    HEAD_READERS.append(Copy())
    try:
        with pytest.raises(RuntimeError, match="SelectAdaptivePool2d, a copy of SelectAdaptivePool2d all match"):
            reader_for(make_tiny_timm("resnet"), "resnet18")
    finally:
        HEAD_READERS.pop()


def test_token_vits_get_the_held_adapter_and_its_pooled_against_full_check(tmp_path):
    """A token-pooled timm ViT is served as transformers' ViT is: a HeldTokenAdapter, whose load-time check
    compares the pooled split (what the index pass uses) with the full one."""
    model = AutoModelForImageClassification.from_pretrained(str(save_tiny_timm("vit_token_regs_scaled", tmp_path))).eval()
    adapter = adapter_for(model)
    assert isinstance(adapter, TimmTokenViTAdapter) and isinstance(adapter, HeldTokenAdapter)
    assert adapter.prefix_tokens() == 3  # the class token and two registers
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    assert adapter.verify(pixels) < 1e-4

    class RegistersCountedAsPatches(TimmTokenViTAdapter):
        def prefix_tokens(self) -> int:
            return 1

    with pytest.raises(UnsupportedModelError, match="pooled split of its CLS token differs from the full split"):
        RegistersCountedAsPatches(model).verify(pixels)


def test_a_timm_token_vit_fits_saves_and_explains_from_its_bank(tmp_path):
    """The whole path for a timm ViT that reads its CLS token: fit, save the bank, load it with its base model,
    explain, and the terms add up to the model's own logit (computed here on its own)."""
    from epic_hf.synthetic import planted_dataset

    model_dir = save_tiny_timm("vit_token", tmp_path / "vit_token")
    explainer = EpicExplainer.from_pretrained(str(model_dir))
    assert isinstance(explainer.adapter, TimmTokenViTAdapter)
    data = planted_dataset(16, num_classes=3, size=IMAGE_SIZE, seed=0)
    explainer.fit(data, prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1,
                  batch_size=8, train_batch_size=16, lr=1e-2, seed=0)
    explainer.save_pretrained(tmp_path / "bank")
    reloaded = EpicExplainer.from_pretrained(str(tmp_path / "bank"))
    image = data[5]["image"].convert("RGB")
    explanation = reloaded.explain(image)
    assert all(channel.prototypes for channel in explanation.channels)
    with torch.no_grad():
        own = reloaded.model(pixel_values=reloaded.preprocess([image])).logits[0]
    total = explanation.contributions.sum() + explanation.cls_contribution + explanation.bias
    assert torch.isclose(total.double(), own[explanation.target_index].double(), rtol=1e-4, atol=1e-5)
    assert 0.0 < explanation.patch_share < 1.0
