"""Faithful in the field's own terms: EPIC's pixel map, deletion/insertion AUC (RISE), sanity checks, Quantus.

Real tiny transformers models (a ResNet and a ViT from configs) on planted-concept images; the
comparison libraries (pytorch-grad-cam, captum, quantus) are the real ones, from the ``compare`` extra.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as nnf

from epic_hf import EpicExplainer
from epic_hf.disentangle import Disentangler
from epic_hf.synthetic import planted_dataset, tiny_resnet, tiny_vit


def _needs(module: str):
    """Skip without the compare extra locally; under CI (``CI`` set) a missing extra is a failure."""
    if os.environ.get("CI"):
        return __import__(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def data():
    return planted_dataset(12, num_classes=3, seed=1)


@pytest.fixture(scope="module")
def resnet():
    model, processor = tiny_resnet(3, (8, 16))
    return EpicExplainer(model, processor, matrix="invertible")


@pytest.fixture(scope="module")
def vit():
    model, processor = tiny_vit(3, layers=2, width=32)
    return EpicExplainer(model, processor)


def _random_U(dim: int, seed: int) -> Disentangler:
    generator = torch.Generator().manual_seed(seed)
    return Disentangler.frozen(0.3 * torch.randn(dim, dim, generator=generator), "invertible")


@pytest.mark.parametrize("which", ["resnet", "vit"])
def test_the_all_channel_map_averages_to_the_contributions_and_is_the_same_under_any_U(which, data, request):
    explainer = request.getfixturevalue(which)
    image = data[0]["image"]
    maps = []
    for seed in (1, 2):
        explainer.disentangler = _random_U(explainer.num_channels, seed)
        explanation = explainer.explain(image, top_k=3)
        grid = explanation.attribution_map("all", upsample=False)
        # the identity avg_hw(sum_j A'_kj G_j) = sum_j contributions_j, at the feature grid
        total = float(explanation.contributions.sum())
        assert abs(float(grid.double().mean()) - total) <= 1e-5 * max(1.0, abs(total))
        shown = [c.channel for c in explanation.channels]
        assert shown, "the planted image should have a channel arguing for its class"
        part = explanation.attribution_map(shown, upsample=False).double().mean()
        assert torch.isclose(part, explanation.contributions[shown].sum(), rtol=1e-5, atol=1e-6)
        assert torch.equal(explanation.attribution_map("shown"), explanation.attribution_map(shown))
        full = explanation.attribution_map("all")
        width, height = explanation.image.size
        assert full.shape == (height, width)
        assert torch.allclose(full, nnf.interpolate(grid[None, None], size=(height, width), mode="bilinear",
                                                    align_corners=False)[0, 0])
        maps.append((grid, explanation.attribution_map(shown, upsample=False)))
    # the CAM identity: A' U F = A F whatever U is; the shown part changes with U
    assert torch.allclose(maps[0][0], maps[1][0], rtol=1e-4, atol=1e-5)
    explainer.disentangler = Disentangler(explainer.num_channels, "invertible")  # back to U = I
    cam = explainer.explain(image, top_k=3).attribution_map("all", upsample=False)
    assert torch.allclose(maps[0][0], cam, rtol=1e-4, atol=1e-5)


def test_attribution_map_refuses_bad_channels(resnet, data):
    explanation = resnet.explain(data[0]["image"])
    with pytest.raises(ValueError, match="channel indices"):
        explanation.attribution_map([resnet.num_channels])
    with pytest.raises(ValueError, match="'shown', 'all'"):
        explanation.attribution_map("top")


def test_the_sheet_and_the_command_overlay_the_pixel_map(resnet, data, tmp_path):
    """The overlay is the map itself: where the map is hottest the main image is brighter than where it is coldest."""
    import numpy as np
    from PIL import Image

    from epic_hf.cli import main
    from epic_hf.viz import layout_for

    resnet.disentangler = _random_U(resnet.num_channels, 5)
    explanation = resnet.explain(data[1]["image"], top_k=2)
    plain, heat = explanation.to_image(), explanation.to_image(overlay="shown")
    assert plain.size == heat.size
    x0, y0, x1, y1 = layout_for(explanation).main_cell
    difference = np.abs(np.asarray(plain, float) - np.asarray(heat, float)).sum(-1)
    assert difference[y0:y1, x0:x1].mean() > 5  # the main image changed...
    difference[y0:y1, x0:x1] = 0
    changed_rows = np.flatnonzero(difference.any(1))
    assert changed_rows.size and changed_rows.max() < y0  # ...and elsewhere only the title line that names the map
    # the map's hottest feature cell is brighter on the sheet than its coldest (the ramp rises with the heat)
    grid = explanation.attribution_map("shown", upsample=False).numpy()
    shown = np.asarray(heat.crop((x0, y0, x1, y1)).convert("L"), float)
    rows = np.array_split(np.arange(shown.shape[0]), grid.shape[0])
    cols = np.array_split(np.arange(shown.shape[1]), grid.shape[1])
    brightness = np.array([[shown[np.ix_(r, c)].mean() for c in cols] for r in rows])
    hot, cold = np.unravel_index(np.argmax(grid), grid.shape), np.unravel_index(np.argmin(grid), grid.shape)
    assert brightness[hot] > brightness[cold] + 20
    assert not np.array_equal(np.asarray(heat), np.asarray(explanation.to_image(overlay="all")))
    with pytest.raises(ValueError, match="channel indices"):
        explanation.to_image(overlay=[resnet.num_channels])
    # the command draws the same overlay (a classifier directory, no bank: U = I)
    resnet.model.save_pretrained(tmp_path / "classifier")
    resnet.image_processor.save_pretrained(tmp_path / "classifier")
    data[1]["image"].save(tmp_path / "one.png")
    pictures = {}
    for flags in ([], ["--overlay", "shown"]):
        out = tmp_path / f"sheet{len(flags)}.png"
        assert main(["explain", str(tmp_path / "classifier"), str(tmp_path / "one.png"), "-o", str(out), *flags]) == 0
        pictures[bool(flags)] = np.asarray(Image.open(out).convert("RGB"), float)
    assert np.abs(pictures[True] - pictures[False])[y0:y1, x0:x1].mean() > 5


# -- deletion and insertion (RISE) ----------------------------------------------------------------------------
STEPS = 8


@pytest.fixture(scope="module")
def faithful(resnet, data):
    resnet.disentangler = _random_U(resnet.num_channels, 3)
    report = resnet.evaluate(data, faithfulness=True, faithfulness_steps=STEPS, max_samples=6, batch_size=4)
    return report


def _rise_by_hand(model, processor, images, mode: str) -> float:
    """The protocol, written out plainly: one image, one step, one forward at a time."""
    import torchvision.transforms.functional as tvf
    from PIL import Image

    model.eval()  # as the explainer runs it (a config-built model starts in train mode)
    aucs = []
    for image in images:
        x = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            logits = model(pixel_values=x).logits[0]
            k = int(logits.argmax())
            fmap = model.resnet(pixel_values=x).last_hidden_state[0].double()
        weight = model.classifier[-1].weight[k].double()
        cam = torch.einsum("d,dhw->hw", weight, fmap).float()
        _, _, height, width = x.shape
        cam = nnf.interpolate(cam[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        values = cam.reshape(-1).tolist()
        order = sorted(range(height * width), key=lambda p: (-values[p], p))
        black = processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")["pixel_values"]
        blurred = tvf.gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0])
        start, end = (x, black) if mode == "deletion" else (blurred, x)
        probabilities = []
        for i in range(STEPS + 1):
            count = round(i * height * width / STEPS)
            current = start.clone().reshape(1, 3, -1)
            chosen = torch.tensor(order[:count], dtype=torch.long)
            current[:, :, chosen] = end.reshape(1, 3, -1)[:, :, chosen]
            with torch.no_grad():
                probabilities.append(float(model(pixel_values=current.reshape(x.shape)).logits.softmax(-1)[0, k]))
        p = probabilities
        aucs.append((p[0] / 2 + sum(p[1:-1]) + p[-1] / 2) / STEPS)
    return sum(aucs) / len(aucs)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_deletion_and_insertion_auc_match_the_protocol_written_out(resnet, data, faithful, mode):
    found = faithful.faithfulness[mode]["all_channels"]
    expected = _rise_by_hand(resnet.model, resnet.image_processor, [data[i]["image"] for i in range(6)], mode)
    assert abs(found - expected) < 1e-6, (found, expected)


def test_the_faithfulness_report_has_every_method_and_its_curves(faithful):
    result = faithful.faithfulness
    methods = {"epic", "epic_identity", "all_channels", "random"}
    if not os.environ.get("CI"):
        pass
    assert methods <= set(result["deletion"]) and methods <= set(result["insertion"])
    for mode in ("deletion", "insertion"):
        for method, curve in result["curves"][mode].items():
            assert len(curve) == STEPS + 1 and all(0.0 <= p <= 1.0 for p in curve)
            assert 0.0 <= result[mode][method] <= 1.0
    # every method shares the end points: the clean input, the black image, the blurred input
    curves = result["curves"]
    assert len({round(c[0], 12) for c in curves["deletion"].values()}) == 1
    assert len({round(c[-1], 12) for c in curves["insertion"].values()}) == 1
    assert abs(curves["deletion"]["epic"][0] - curves["insertion"]["epic"][-1]) < 1e-12
    assert result["images"]["epic"] == 6


# -- sanity checks ------------------------------------------------------------------------------------------
def test_sanity_checks_randomise_a_copy_and_the_random_map_is_the_control(resnet, faithful):
    from epic_hf.backbone import weights_fingerprint

    sanity = faithful.sanity
    steps = sanity["steps"]
    assert steps[0] == "head" and steps[-1] == "all" and len(steps) == 2 + 2  # 2 ResNet stages in between
    # the seeded noise map knows nothing of the model: randomising it changes nothing
    assert all(rho == pytest.approx(1.0) for rho in sanity["randomisation"]["random"].values())
    # the class activation map depends on the weights: with every weight redrawn it is another map
    for method in ("all_channels", "epic", "epic_identity"):
        rho = sanity["randomisation"][method]["all"]
        assert rho is not None and -1.0 <= rho < 0.9, (method, rho)
    assert set(sanity["random_logit"]) >= {"epic", "all_channels", "random"}
    assert sanity["random_logit"]["random"] == pytest.approx(1.0)
    # the user's model was never touched
    assert weights_fingerprint(resnet.model) == resnet.classifier.fingerprint
    table = faithful.to_markdown()
    assert "| all_channels |" in table and "deletion AUC" in table


def test_spearman_agrees_with_scipy_ties_included():
    _needs("scipy")
    from scipy import stats

    from epic_hf.evaluation.sanity import spearman

    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, 5, (40,), generator=generator).float()  # many ties
    second = torch.randn(40, generator=generator)
    assert spearman(first, second) == pytest.approx(float(stats.spearmanr(first.numpy(), second.numpy())[0]), abs=1e-12)
    assert spearman(torch.ones(5), second[:5]) is None


# -- the baselines and Quantus ------------------------------------------------------------------------------
def test_gradcam_reads_the_last_stage_of_a_cnn_and_the_last_blocks_first_norm_of_a_vit(resnet, vit, data):
    _needs("pytorch_grad_cam")
    from epic_hf.evaluation.baselines import gradcam_layer, gradcam_maps

    for explainer, expected, tokens in ((resnet, resnet.model.resnet.encoder.stages[-1], False),
                                        (vit, vit.model.vit.layers[-1].layernorm_before, True)):
        pixel_values = explainer.classifier.preprocess([data[i]["image"] for i in range(2)])
        layer, is_tokens = gradcam_layer(explainer.classifier, pixel_values)
        assert layer is expected and is_tokens is tokens
        maps = gradcam_maps(explainer.classifier, pixel_values, torch.tensor([0, 1]))
        assert maps.shape == (2, *pixel_values.shape[-2:]) and float(maps.max()) > 0
        assert all(p.grad is None for p in explainer.model.parameters())  # the user's model gathered no gradient


def test_the_compared_libraries_are_in_the_table_when_installed(faithful):
    _needs("pytorch_grad_cam")
    _needs("captum")
    assert {"gradcam", "integrated_gradients"} <= set(faithful.faithfulness["deletion"])
    assert "gradcam" in faithful.sanity["randomisation"]


def test_quantus_runs_pixel_flipping_on_epics_map(resnet, data):
    quantus = _needs("quantus")
    import numpy as np

    resnet.disentangler = _random_U(resnet.num_channels, 4)
    explain = resnet.quantus_explain_func("shown", top_k=3)
    images = [data[i]["image"] for i in range(3)]
    x = resnet.classifier.preprocess(images)
    explanations = resnet.explain(images, top_k=3)
    y = np.array([e.target_index for e in explanations])
    found = explain(explain.model, x.numpy(), y)
    assert found.shape == (3, 1, *x.shape[-2:]) and found.dtype == np.float32
    for index, explanation in enumerate(explanations):  # the same map the explanation gives
        assert np.allclose(found[index, 0], explanation.attribution_map("shown").numpy(), rtol=1e-4, atol=1e-5)
    metric = quantus.PixelFlipping(features_in_step=256, perturb_baseline="black", disable_warnings=True)
    scores = metric(model=explain.model, x_batch=x.numpy(), y_batch=y, a_batch=None, explain_func=explain,
                    device="cpu")
    # Quantus flips the map's features over every colour channel: 3 * 64 * 64 / 256 steps
    assert len(scores) == 3 and all(len(curve) == 3 * 64 * 64 // 256 for curve in scores)
    assert all(0.0 <= p <= 1.0 for curve in scores for p in curve)


def test_the_flags_and_the_written_report_carry_faithfulness(resnet, data, tmp_path):
    import argparse

    from PIL import Image

    from epic_hf.cli.flags import add_config_flags, config_from_args
    from epic_hf.evaluation import EvaluationConfig

    parser = argparse.ArgumentParser()
    add_config_flags(parser, EvaluationConfig)
    config = config_from_args(EvaluationConfig, parser.parse_args(["--faithfulness", "--faithfulness-steps", "4"]))
    assert config.faithfulness and config.faithfulness_steps == 4
    assert not config_from_args(EvaluationConfig, parser.parse_args([])).faithfulness
    with pytest.raises(ValueError):
        EvaluationConfig(faithfulness_steps=0)
    report = resnet.evaluate(data, config.replace(max_samples=2), output_dir=tmp_path)
    curves = Image.open(tmp_path / "faithfulness_curves.png")
    assert curves.size[0] > 800 and len(set(curves.convert("RGB").getdata())) > 3  # lines in colours, not blank
    table = (tmp_path / "evaluation.md").read_text()
    assert "| epic | " in table and "insertion AUC" in table
    assert report.faithfulness["steps"] == 4 and len(report.faithfulness["curves"]["deletion"]["epic"]) == 5


def test_the_cascade_takes_a_few_steps_whatever_the_depth():
    from epic_hf.evaluation.sanity import cascade_depths

    assert cascade_depths(0) == [0]
    assert cascade_depths(2) == [0, 1, 2]
    assert cascade_depths(12) == [0, 1, 3, 6, 12]  # ViT-B: 5 copies + "all", not 14


def test_road_from_grad_cam_scores_every_map(resnet, data):
    _needs("pytorch_grad_cam")
    from epic_hf.evaluation.baselines import road_scores
    from epic_hf.evaluation.maps import random_maps

    pixel_values = resnet.classifier.preprocess([data[i]["image"] for i in range(2)])
    targets = resnet.classifier.logits(pixel_values).argmax(dim=1)
    cam = torch.stack([resnet.explain(data[i]["image"], target=int(t)).attribution_map("all")
                       for i, t in enumerate(targets)])
    maps = {"all_channels": cam, "random": random_maps(0, [0, 1], tuple(pixel_values.shape[-2:]))}
    found = road_scores(resnet.classifier, pixel_values, targets, maps, percentiles=(50,))
    again = road_scores(resnet.classifier, pixel_values, targets, maps, percentiles=(50,))
    assert found == again  # the imputer's noise is seeded
    assert set(found) == set(maps) and all(-1.0 <= v <= 1.0 for per in found.values() for v in per.values())
    assert found["all_channels"]["morf"] != found["all_channels"]["lerf"]


def test_evaluate_scores_road_per_method_as_grad_cams_metric_does(resnet, data):
    _needs("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from epic_hf.evaluation import EvaluationConfig
    from epic_hf.evaluation.baselines import ROAD_EVALUATED, LogitsModule
    from epic_hf.evaluation.maps import random_maps

    with pytest.raises(ValueError, match="faithfulness=True"):
        EvaluationConfig(road=True)
    report = resnet.evaluate(data, faithfulness=True, road=True, faithfulness_steps=2, max_samples=2, batch_size=2,
                             seed=3)
    road = report.faithfulness["road"]
    assert set(road) == set(report.faithfulness["deletion"])
    assert "ROAD MoRF" in report.to_markdown()
    # the random and the CAM rows, recomputed with the library's own metric on the same images (the CAM
    # computed here rounds differently under this U, which can swap near-tied pixels: a looser tolerance)
    images = [data[i]["image"] for i in range(2)]
    pixel_values = resnet.classifier.preprocess(images)
    targets = resnet.classifier.logits(pixel_values).argmax(dim=1)
    maps = {"all_channels": torch.stack([resnet.explain(image, target=int(t)).attribution_map("all")
                                         for image, t in zip(images, targets)]),
            "random": random_maps(3, [0, 1], tuple(pixel_values.shape[-2:]))}
    model = LogitsModule(resnet.classifier).eval()
    wanted = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    for method, tolerance in (("random", 1e-6), ("all_channels", 1e-3)):
        for order, metric in (("morf", ROADMostRelevantFirstAverage), ("lerf", ROADLeastRelevantFirstAverage)):
            torch.manual_seed(3)
            expected = metric(list(ROAD_EVALUATED))(pixel_values, maps[method].numpy(), wanted, model).mean()
            assert road[method][order] == pytest.approx(float(expected), abs=tolerance), (method, order)
    assert road["all_channels"]["morf"] < road["random"]["morf"]  # the CAM finds what the model uses; noise does not


def test_a_map_wiped_out_by_randomisation_is_counted_not_averaged():
    from epic_hf.evaluation.report import EvaluationReport
    from epic_hf.evaluation.sanity import Sanity

    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    wiped = maps.clone()
    wiped[0] = 0.0  # Grad-CAM's ReLU of a randomised model: one image's map is all zeros
    sanity = Sanity()
    sanity.update({"gradcam": maps}, {"gradcam": wiped}, "randomised:all")
    result = sanity.result(["all"])
    assert result["constant"] == {"randomised:all": {"gradcam": 1}}
    assert result["randomisation"]["gradcam"]["all"] == pytest.approx(1.0)  # the two images whose map survived
    again = Sanity.from_state(sanity.state_dict()).result(["all"])
    assert again == result
    report = EvaluationReport(model={}, settings={}, num_samples=3, num_skipped=0, purity={}, consistency={},
                              stability={}, decision_kept={}, deletion={},
                              faithfulness={"steps": 2, "deletion": {"gradcam": 0.5}}, sanity=result)
    assert "gradcam (all: 1)" in report.to_markdown()
