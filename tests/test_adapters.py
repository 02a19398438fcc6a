"""Every supported family decomposes its own logits exactly, under any U, on its true spatial grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageClassification,
    EfficientNetConfig,
    HieraConfig,
    HieraForImageClassification,
    ResNetConfig,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from epic_hf import ADAPTERS, EpicExplainer, ModelAdapter, UnsupportedModelError, register_adapter
from epic_hf.adapters import REFUSED, adapter_class_for, adapter_for
from tiny_models import (
    TINY_CONFIGS,
    TINY_MODELS,
    make_tiny_model,
    model_logits,
    own_logits,
    processor_for,
    save_tiny_model,
    tiny_model_types,
    tiny_processor,
)

FAMILIES = sorted(set(ADAPTERS) - {"timm_wrapper"})  # timm models (an optional extra): tests/test_timm.py
TINY = sorted(TINY_MODELS)
SQUARES_ONLY = {TINY_CONFIGS[name]().model_type for name in TINY if TINY_MODELS[name].squares_only}
WITH_CLS_TERM = [name for name in TINY if adapter_class_for(TINY_CONFIGS[name]().model_type).has_extra_logits]


def test_every_registered_family_has_a_tiny_model():
    assert set(FAMILIES) <= tiny_model_types(), "add a tiny config for each new adapter"


def test_every_transformers_image_classifier_is_served_or_refused_with_a_reason():
    unaccounted = set(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES) - set(ADAPTERS) - set(REFUSED) - {"timm_wrapper"}
    assert not unaccounted, f"decide (adapter or REFUSED entry with a reason) for {sorted(unaccounted)}"
    assert not set(ADAPTERS) & set(REFUSED), "a registered family is also listed as refused"


def _images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 36, 3), dtype=np.uint8)) for i in range(count)]


# -- adapter level: every family, DINOv2's CLS term included ---------------------------------------
@pytest.fixture(scope="module", params=TINY)
def adapted(request):
    model = make_tiny_model(request.param)
    size = TINY_MODELS[request.param].image_size
    pixel_values = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        adapter = adapter_for(model)
        adapter.bind_processor(processor_for(request.param))
        logits = adapter.model_logits(pixel_values)
        if type(adapter).model_logits is ModelAdapter.model_logits:  # the model takes the pipeline's pixel values
            torch.testing.assert_close(logits, model_logits(model, pixel_values))
        features = adapter.features(pixel_values)
    return adapter, pixel_values, logits, features


def _random_U(dim: int, kind: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    S = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.3
    if kind == "orthogonal":
        U = torch.linalg.matrix_exp(S - S.T)
        return U, U.T
    return torch.linalg.matrix_exp(S), torch.linalg.matrix_exp(-S)


@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
def test_adapter_decomposes_the_logits_under_any_U(adapted, kind):
    """``A U^-1 avg(U F) + b + extra == logits``, and per-channel contributions add up to each logit."""
    adapter, _, logits, features = adapted
    head = adapter.head()
    fmap = features.fmap.double()
    assert fmap.ndim == 4 and head.weight.shape == (logits.shape[1], fmap.shape[1])
    assert (features.extra_logits is not None) == adapter.has_extra_logits
    extra = features.extra_logits.double() if features.extra_logits is not None else torch.zeros_like(logits).double()
    U, U_inv = _random_U(fmap.shape[1], kind)
    G = torch.einsum("ij,bjhw->bihw", U, fmap)
    A_prime = head.weight.double() @ U_inv
    pooled = G.mean(dim=(2, 3))
    torch.testing.assert_close(pooled @ A_prime.T + head.bias.double() + extra, logits.double(), rtol=1e-4, atol=1e-5)
    target = logits.argmax(dim=1)
    contributions = A_prime[target] * pooled  # (B, D)
    totals = contributions.sum(dim=1) + head.bias.double()[target] + extra.gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(totals, logits.double().gather(1, target[:, None])[:, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("adapted", WITH_CLS_TERM, indirect=True)
def test_the_cls_term_is_real_where_declared(adapted):
    """For DINOv2 the CLS share is not negligible, so leaving it out would break the identity."""
    adapter, _, logits, features = adapted
    head = adapter.head()
    spatial_only = features.fmap.mean(dim=(2, 3)) @ head.weight.T + head.bias
    assert (spatial_only - logits).abs().max() > 1e-2 * logits.abs().max()
    torch.testing.assert_close(spatial_only + features.extra_logits, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adapter.feature_map(adapted[1]), features.fmap)


# -- explainer level: every family; DINOv2's CLS term is explanation.cls_contribution -------------
@pytest.fixture(scope="module", params=TINY)
def explainer(request, tmp_path_factory):
    path = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    assert sum(f.stat().st_size for f in path.iterdir()) < 1_000_000
    return EpicExplainer.from_pretrained(str(path))


def _randomize(explainer: EpicExplainer, kind: str, seed: int = 1) -> None:
    from epic_hf.disentangle import Disentangler

    explainer.disentangler = Disentangler(explainer.num_channels, kind)
    with torch.no_grad():
        explainer.disentangler.S.copy_(torch.randn(explainer.num_channels, explainer.num_channels,
                                                   generator=torch.Generator().manual_seed(seed)) * 0.3)


def test_logits_match_the_model_and_decompose_exactly(explainer):
    images = _images(3)
    if explainer.classifier.model_type in SQUARES_ONLY:
        images = [image.resize((40, 40)) for image in images]
    explanations = explainer.explain(images)
    with torch.no_grad():  # the model on its own processor's output: pixel values, or ImageGPT's cluster ids
        expected = own_logits(explainer.model, explainer.image_processor, images)
    for explanation, logits in zip(explanations, expected):
        torch.testing.assert_close(explanation.logits, logits, rtol=1e-4, atol=1e-5)
        total = explanation.contributions.sum() + explanation.cls_contribution + explanation.bias
        assert torch.isclose(total.double(), logits[explanation.target_index].double(), atol=1e-5)
        assert explanation.target_index == int(logits.argmax())
        assert explanation.contributions.shape == (explainer.num_channels,)
        assert (explanation.cls_contribution != 0.0) == explainer.adapter.has_extra_logits


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
            total = explanation.contributions.sum() + explanation.cls_contribution + explanation.bias
            assert torch.isclose(total.double(), logits[explanation.target_index].double(), atol=1e-5)
        fmap = explainer.feature_map(images, transformed=False)
        transformed = explainer.feature_map(images)
        torch.testing.assert_close(transformed, torch.einsum("ij,bjhw->bihw", U, fmap), atol=1e-5, rtol=1e-5)
    finally:
        _randomize(explainer, "orthogonal", seed=0)
        with torch.no_grad():
            explainer.disentangler.S.zero_()


def test_channel_entries(explainer):
    """Shown channels: the top_k by positive evidence A'_kj relu(avg G_j), each with a box in the image."""
    image = _images(1)[0]
    explanation = explainer.explain(image, top_k=2)
    pooled = explainer.feature_map(image)[0].double().mean(dim=(1, 2))  # avg_hw(G)
    evidence = torch.where(pooled > 0, explanation.contributions.double(), torch.zeros_like(pooled))
    expected = [int(c) for c in evidence.argsort(descending=True)[:2] if evidence[c] > 0]
    assert [c.channel for c in explanation.channels] == expected
    height, width = explanation.image.size[1], explanation.image.size[0]
    for channel in explanation.channels:
        assert channel.contribution == pytest.approx(float(explanation.contributions[channel.channel]))
        assert channel.evidence == pytest.approx(channel.contribution) and channel.evidence > 0
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


# -- the true spatial layout -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["swin", "swinv2", "donut-swin", "focalnet"])
def test_token_grids_match_the_models_own_spatial_layout(name):
    """On a non-square input with odd sides (padding at every merge), F is the model's own H x W map."""
    model = make_tiny_model(name)
    pixel_values = torch.randn(1, 3, 36, 52, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fmap = adapter_for(model).feature_map(pixel_values)
        out = model.base_model(pixel_values=pixel_values, output_hidden_states=True)
        reference = out.reshaped_hidden_states[-1]  # (B, D, H, W) before the final per-token norm
        norm = getattr(model.base_model, "layernorm", None)
        if norm is not None:
            reference = norm(reference.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert fmap.shape == reference.shape and fmap.shape[-2] != fmap.shape[-1]
    torch.testing.assert_close(fmap, reference)


def test_hiera_features_land_in_the_right_cell():
    """Hiera's tokens are unrolled; after reroll, a change in one input region moves exactly one cell.

    With attention and MLP outputs zeroed every block is a per-token map (plus max-pooling within
    query windows), and patches do not overlap, so the input region of final cell (i, j) can only
    change F[:, :, i, j]. A row-major reading of the unrolled tokens would put it elsewhere.
    """
    config = HieraConfig(image_size=[32, 32], patch_size=[4, 4], patch_stride=[4, 4], patch_padding=[0, 0],
                         embed_dim=8, num_heads=[1, 1, 2], depths=[1, 1, 1], query_stride=[2, 2],
                         masked_unit_size=[4, 4], masked_unit_attention=[True, False, False], num_query_pool=1,
                         num_labels=3)
    torch.manual_seed(0)
    model = HieraForImageClassification(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".attn.proj." in name or ".mlp.fc2." in name:
                parameter.zero_()
    adapter = adapter_for(model)
    base = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = adapter.token_grid(base)
        assert reference.shape[-2:] == (4, 4)  # 8 x 8 patches, one query pooling: 4 x 4 cells of 8 px
        for i, j in [(0, 3), (2, 1), (3, 0)]:
            moved = base.clone()
            moved[..., 8 * i:8 * i + 8, 8 * j:8 * j + 8] += 5.0
            changed = (adapter.token_grid(moved) - reference).abs().amax(dim=(0, 1)) > 0
            expected = torch.zeros(4, 4, dtype=torch.bool)
            expected[i, j] = True
            assert torch.equal(changed, expected), f"cell {(i, j)}: changed cells\n{changed.int()}"


# -- refusals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_refusals_name_the_model_type_what_breaks_and_what_is_supported(model_type):
    with pytest.raises(UnsupportedModelError) as info:
        adapter_class_for(model_type)
    message = str(info.value)
    assert repr(model_type) in message and REFUSED[model_type].reason in message
    assert "resnet" in message and "convnext" in message
    if REFUSED[model_type].kind == "cls_token":
        assert "CLS token" in message or "latent" in message


@pytest.mark.parametrize("name", ["vit", "deit-teacher", "cvt"])
def test_cls_token_models_load_and_split_their_cls_token(name, tmp_path):
    """The families once refused for reading a CLS token load, and their CLS's own share is the extra term."""
    explainer = EpicExplainer.from_pretrained(str(save_tiny_model(name, tmp_path / name)))
    image = _images(1)[0]
    explanation = explainer.explain(image)
    assert explanation.cls_contribution != 0.0 and explanation.contributions.abs().sum() > 0
    total = explanation.contributions.sum() + explanation.cls_contribution + explanation.bias
    with torch.no_grad():
        own = own_logits(explainer.model, explainer.image_processor, [image])[0]
    assert torch.isclose(total.double(), own[explanation.target_index].double(), atol=1e-5)


def test_deit_with_teacher_stacks_both_heads_halved():
    model = make_tiny_model("deit-teacher")
    adapter = adapter_for(model)
    width = model.config.hidden_size
    assert adapter.head().weight.shape == (3, 2 * width)
    torch.testing.assert_close(adapter.head().weight[:, :width], model.cls_classifier.weight / 2)
    torch.testing.assert_close(adapter.head().weight[:, width:], model.distillation_classifier.weight / 2)
    torch.testing.assert_close(adapter.head().bias,
                               (model.cls_classifier.bias + model.distillation_classifier.bias) / 2)


def test_the_head_follows_the_model_to_another_device():
    """DeiT's two heads are read once, at load; a fit moves the model (FrozenClassifier.placed_on), and the
    head it reads must move with it ("meta" stands in for a GPU on a CPU-only machine)."""
    from epic_hf.backbone import FrozenClassifier

    classifier = FrozenClassifier(make_tiny_model("deit-teacher"), tiny_processor())
    assert classifier.head().weight.device.type == "cpu"
    classifier.model.to("meta")  # no way back from "meta": this classifier ends here
    head = classifier.head()
    assert head.weight.device.type == "meta" and head.bias.device.type == "meta"


def test_cvt_without_a_last_stage_cls_token_is_refused_from_its_config():
    config = TINY_CONFIGS["cvt"]()
    config.cls_token = [False, False]
    with pytest.raises(UnsupportedModelError, match=r"cls_token\[-1\]=False"):
        adapter_class_for("cvt", config)


def test_beit_without_mean_pooling_is_refused():
    config = TINY_CONFIGS["beit"]()
    config.use_mean_pooling = False
    with pytest.raises(UnsupportedModelError, match="'beit'.*CLS token"):
        adapter_class_for("beit", config)  # from the config alone, before any weights
    with pytest.raises(UnsupportedModelError, match="CLS token"):
        EpicExplainer(AutoModelForImageClassification.from_config(config), tiny_processor())


def test_max_pooled_efficientnet_is_refused():
    config = EfficientNetConfig(image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128,
                                pooling_type="max", num_labels=3)
    with pytest.raises(UnsupportedModelError, match="'efficientnet'.*max-pools"):
        EpicExplainer(AutoModelForImageClassification.from_config(config), tiny_processor())


def test_levit_head_with_batch_statistics_is_refused():
    model = make_tiny_model("levit").train()
    with pytest.raises(UnsupportedModelError, match="batch statistics"):
        adapter_for(model).head()


def test_headless_model_is_refused():
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=0)
    model = AutoModelForImageClassification.from_config(config)
    with pytest.raises(UnsupportedModelError, match="classification head"):
        EpicExplainer(model, tiny_processor())


def test_a_model_that_breaks_the_identity_is_refused():
    model = AutoModelForImageClassification.from_config(TINY_CONFIGS["resnet"]())
    model.classifier.append(torch.nn.Tanh())  # a non-linearity after the head: not A.avg(F)+b
    with torch.no_grad():
        model.classifier[1].weight.mul_(50)
    with pytest.raises(UnsupportedModelError, match="relative error"):
        EpicExplainer(model, tiny_processor())


def test_a_model_whose_parts_are_not_what_the_adapter_reads_is_refused_by_name():
    model = make_tiny_model("convnext")
    model.convnext.layernorm = torch.nn.Identity()  # the post-pool norm the adapter folds into F
    with pytest.raises(UnsupportedModelError, match=r"ConvNextModel\.layernorm has type Identity, not the LayerNorm"):
        adapter_for(model).feature_map(torch.zeros(1, 3, 32, 32))
    del model.classifier
    with pytest.raises(UnsupportedModelError, match="has no module 'classifier'"):
        adapter_for(model).head()


# -- the registry ----------------------------------------------------------------------------------
def test_register_adapter_refuses_a_silent_overwrite():
    original = ADAPTERS["resnet"]

    class Impostor(ModelAdapter):
        model_types = ("resnet",)
        family = "not ResNet"

    with pytest.raises(ValueError, match="'resnet' is already served by .*ConvNetAdapter.*override=True"):
        register_adapter(Impostor)
    assert ADAPTERS["resnet"] is original
    try:
        assert register_adapter(override=True)(Impostor) is Impostor
        assert ADAPTERS["resnet"] is Impostor
    finally:
        register_adapter(original, override=True)
    assert register_adapter(original) is original  # re-registering the same class is not an overwrite


HELD = [name for name in TINY if adapter_class_for(TINY_CONFIGS[name]().model_type).pooled_is_cheaper]


@pytest.mark.parametrize("name", HELD)
def test_the_pooled_split_equals_the_mean_of_the_full_one(name):
    """The index pass stores the cheap pooled split (prefix tokens tracked, patches summed): it must be F's mean."""
    model = make_tiny_model(name)
    size = TINY_MODELS[name].image_size
    pixel_values = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(5))
    adapter = adapter_for(model)
    with torch.no_grad():
        full, pooled = adapter.features(pixel_values), adapter.pooled_features(pixel_values)
    assert pooled.grid == tuple(full.fmap.shape[-2:])
    torch.testing.assert_close(pooled.pooled, full.fmap.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pooled.extra_logits, full.extra_logits, rtol=1e-4, atol=1e-5)


def test_held_families_are_the_cls_token_ones():
    assert {TINY_CONFIGS[name]().model_type for name in HELD} == {"vit", "vit_msn", "deit", "cvt", "pvt"}


# -- ImageGPT: colour-cluster ids made from the pipeline's pixel values -----------------------------
def test_imagegpt_sees_the_ids_its_own_processor_makes():
    processor = processor_for("imagegpt")
    adapter = adapter_for(make_tiny_model("imagegpt"))
    adapter.bind_processor(processor)
    images = [image.convert("RGB") for image in _images(4, seed=5)]
    pixel_values = processor(images=images, return_tensors="pt", do_color_quantize=False)["pixel_values"]
    own_ids = processor(images=images, return_tensors="pt")["input_ids"]
    assert pixel_values.shape == (4, 3, 8, 8) and own_ids.shape == (4, 64)
    assert torch.equal(adapter.input_ids(pixel_values), own_ids)
    assert len(own_ids.unique()) > 3  # the images use several clusters: the test could tell a wrong order


def test_imagegpt_without_its_colour_clusters_is_refused_at_load():
    with pytest.raises(UnsupportedModelError, match="no colour clusters.*ImageGPTImageProcessor"):
        EpicExplainer(make_tiny_model("imagegpt"), tiny_processor(8))


@pytest.mark.parametrize("name", ["imagegpt", "siglip2"])
def test_a_bank_of_a_model_that_takes_other_inputs_fits_saves_and_explains_exactly(name, tmp_path):
    """The pipeline carries images; the adapter makes the model's own inputs (cluster ids, NaFlex patches)."""
    from epic_hf.synthetic import planted_dataset

    explainer = EpicExplainer.from_pretrained(str(save_tiny_model(name, tmp_path / "model")))
    data = planted_dataset(16, num_classes=3, size=32, seed=0)
    explainer.fit(data, prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1, batch_size=8,
                  train_batch_size=16, lr=1e-2, seed=0)
    explainer.save_pretrained(tmp_path / "bank")
    reloaded = EpicExplainer.from_pretrained(str(tmp_path / "bank"))
    image = data[3]["image"].convert("RGB")
    explanation = reloaded.explain(image)
    assert explanation.contributions.shape == (16,) and explanation.cls_contribution == 0.0
    with torch.no_grad():
        own = own_logits(reloaded.model, reloaded.image_processor, [image])[0]
    torch.testing.assert_close(explanation.logits, own, rtol=1e-4, atol=1e-5)
    total = explanation.contributions.sum() + explanation.bias
    assert torch.isclose(total.double(), own[explanation.target_index].double(), atol=1e-5)
    assert all(channel.prototypes for channel in explanation.channels)
    assert explanation.to_image().size[0] > 0


# -- SigLIP 2: NaFlex patch sequences made from the pipeline's square images ----------------------
def test_siglip2_sees_what_its_own_processor_makes_of_a_square_image():
    explainer = EpicExplainer(make_tiny_model("siglip2"), processor_for("siglip2"))
    processor = explainer.image_processor
    rng = np.random.default_rng(3)
    for side in (32, 47, 90):  # the processor's own size, and two it resizes itself
        image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        own = processor(images=[image], return_tensors="pt")
        inputs = explainer.adapter.model_inputs(explainer.preprocess([image]))
        assert torch.equal(inputs["spatial_shapes"], own["spatial_shapes"])
        torch.testing.assert_close(inputs["pixel_values"], own["pixel_values"][:, :16], rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(explainer.explain(image).logits, explainer.model(**own).logits[0],
                                       rtol=1e-4, atol=1e-5)


def test_siglip2_squashes_other_images_to_its_square_grid():
    explainer = EpicExplainer(make_tiny_model("siglip2"), processor_for("siglip2"))
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (30, 70, 3), dtype=np.uint8))
    assert tuple(explainer.preprocess([image]).shape) == (1, 3, 32, 32)
    squashed = image.resize((32, 32), Image.Resampling.BILINEAR)
    with torch.no_grad():
        own = explainer.model(**explainer.image_processor(images=[squashed], return_tensors="pt")).logits[0]
    explanation = explainer.explain(image)
    torch.testing.assert_close(explanation.logits, own, rtol=1e-4, atol=1e-5)
    total = explanation.contributions.sum() + explanation.bias
    assert torch.isclose(total.double(), own[explanation.target_index].double(), atol=1e-5)


def test_siglip2_with_a_plain_processor_is_refused_at_load():
    with pytest.raises(UnsupportedModelError, match="NaFlex image processor"):
        EpicExplainer(make_tiny_model("siglip2"), tiny_processor())


# -- DINOv2 with split_cls: the CLS half of the head split over the tokens too ----------------------
@pytest.mark.parametrize("name", ["dinov2", "dinov2_with_registers"])
@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
def test_dinov2_split_cls_decomposes_exactly_with_2d_channels(name, kind):
    model = make_tiny_model(name)
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    plain, split = adapter_for(model), adapter_for(model, split_cls=True)
    with torch.no_grad():
        logits = model_logits(model, pixel_values).double()
        features, pooled = split.features(pixel_values), split.pooled_features(pixel_values)
        plain_features = plain.features(pixel_values)
    width = model.config.hidden_size
    assert features.fmap.shape[1] == 2 * width and split.head().weight.shape == (3, 2 * width)
    torch.testing.assert_close(features.fmap[:, :width], plain_features.fmap)  # the patch tokens, as before
    U, U_inv = _random_U(2 * width, kind)
    G = torch.einsum("ij,bjhw->bihw", U, features.fmap.double())
    total = G.mean(dim=(2, 3)) @ (split.head().weight.double() @ U_inv).T + split.head().bias.double()
    torch.testing.assert_close(total + features.extra_logits.double(), logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pooled.pooled, features.fmap.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    # what left the CLS term is what the new channels carry: the CLS half's share of the patches
    moved = plain_features.extra_logits - features.extra_logits
    torch.testing.assert_close(moved, features.fmap[:, width:].mean(dim=(2, 3)) @ split.head().weight[:, width:].T,
                               rtol=1e-4, atol=1e-5)
    assert moved.abs().max() > 1e-3 * plain_features.extra_logits.abs().max()


def test_split_cls_is_refused_where_there_is_no_cls_half():
    with pytest.raises(UnsupportedModelError, match="split_cls=True.*'resnet'"):
        EpicExplainer(make_tiny_model("resnet"), tiny_processor(), split_cls=True)
    config = TINY_CONFIGS["dinov2"]()
    config.use_swiglu_ffn = True
    model = AutoModelForImageClassification.from_config(config).eval()
    with pytest.raises(UnsupportedModelError, match="SwiGLU"):
        EpicExplainer(model, tiny_processor(), split_cls=True)
    EpicExplainer(model, tiny_processor())  # without the split, its CLS half is the exact CLS term


def test_a_split_cls_bank_records_it_and_refuses_the_other_setting(tmp_path):
    from epic_hf import BankMismatchError
    from epic_hf.synthetic import planted_dataset

    model_dir = save_tiny_model("dinov2", tmp_path / "model")
    explainer = EpicExplainer.from_pretrained(str(model_dir), split_cls=True)
    assert explainer.num_channels == 32
    explainer.fit(planted_dataset(16, num_classes=3, size=32, seed=0), prototypes_per_channel=2, schedule_start=4,
                  schedule_end=2, schedule_steps=1, batch_size=8, train_batch_size=16, lr=1e-2, seed=0)
    explainer.save_pretrained(tmp_path / "bank")
    reloaded = EpicExplainer.from_pretrained(str(tmp_path / "bank"))
    assert reloaded.bank.config.split_cls and reloaded.num_channels == 32
    image = _images(1, seed=6)[0]
    explanation = reloaded.explain(image)
    total = explanation.contributions.sum() + explanation.cls_contribution + explanation.bias
    with torch.no_grad():
        own = own_logits(reloaded.model, reloaded.image_processor, [image])[0]
    assert torch.isclose(total.double(), own[explanation.target_index].double(), atol=1e-5)
    with pytest.raises(BankMismatchError, match="split_cls=True"):
        EpicExplainer.from_pretrained(str(tmp_path / "bank"), split_cls=False)
    with pytest.raises(BankMismatchError, match="without it"):
        EpicExplainer.from_pretrained(str(model_dir)).set_bank(reloaded.bank)
