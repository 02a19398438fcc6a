"""evaluate(): purity, class consistency, stability and exact deletion on planted concepts, under U and U = I;
JSON and table written, resumable (a killed stream, a capped run extended), streams accepted."""

from __future__ import annotations

import contextlib
import io
import json
import math

import datasets
import pytest

from epic_hf import EpicExplainer
from epic_hf.cli import main
from epic_hf.errors import CheckpointMismatchError
from epic_hf.evaluation import EvaluationReport, evaluate_explainer
from epic_hf.evaluation.state import REPORT_NAME, STATE_NAME, TABLE_NAME
from epic_hf.synthetic import planted_dataset, tiny_resnet, train_classifier

NUM_IMAGES = 120
VIEWS = ("epic", "identity")


@pytest.fixture(scope="module")
def fitted():
    """The demo's recipe, smaller: planted shapes, a tiny ResNet, an invertible U fit with lr 1e-2."""
    data = planted_dataset(NUM_IMAGES, num_classes=4, seed=0)
    model, processor = tiny_resnet(4, (16, 16))
    train_classifier(model, processor, data, epochs=4)
    explainer = EpicExplainer(model, processor, matrix="invertible")
    fit = explainer.fit(data, prototypes_per_channel=5, schedule_start=20, schedule_end=5, schedule_steps=5,
                        batch_size=64, train_batch_size=32, lr=1e-2)
    return explainer, data, fit


@pytest.fixture(scope="module")
def evaluated(fitted, tmp_path_factory):
    explainer, data, _ = fitted
    directory = tmp_path_factory.mktemp("evaluation")
    return explainer.evaluate(data, output_dir=directory), directory


@pytest.fixture(scope="module")
def unperturbed(fitted):
    """The first 32 images with zero noise and zero shift."""
    explainer, data, _ = fitted
    return evaluate_explainer(explainer, data, noise_std=0.0, shift_pixels=0, max_samples=32)


def close(first: dict, second: dict, tolerance: float = 1e-9) -> bool:
    """Two nested dicts of numbers agree (float sums may differ in the last bits with the batching)."""
    if first.keys() != second.keys():
        return False
    for key, a in first.items():
        b = second[key]
        if isinstance(a, dict):
            if not close(a, b, tolerance):
                return False
        elif isinstance(a, float) or isinstance(b, float):
            if a is None or b is None or not math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance):
                return False
        elif a != b:
            return False
    return True


def test_purity_agrees_with_the_fit_and_with_bank_purity(fitted, evaluated):
    explainer, data, fit = fitted
    report, _ = evaluated
    purity = report.purity
    assert purity["recorded_before"] == fit.purity_before and purity["recorded_after"] == fit.purity_after
    assert purity["bank"] == pytest.approx(explainer.purity(data), abs=1e-6)  # the existing bank_purity machinery
    assert purity["mined"]["identity"] == pytest.approx(fit.purity_before, abs=1e-5)  # same data: same top-N under I
    assert purity["mined"]["epic"] == pytest.approx(fit.purity_after, abs=1e-5)
    assert purity["mined"]["epic"] > purity["mined"]["identity"] + 0.05
    assert purity["bank_check"]["thumbnails_checked"] == len(explainer.bank.thumbnails)


def test_channels_prototypes_share_a_class(evaluated):
    consistency = evaluated[0].consistency
    assert consistency["label_column"] == "label"
    assert consistency["bank"] == consistency["mined"]["epic"]  # the bank is the top-5 under U of this very data
    # measured 0.81 (U) and 0.84 (U = I); shuffled labels give 0.48 and random prototypes 0.53
    assert consistency["mined"]["epic"] > 0.7
    assert 0.25 <= consistency["mined"]["identity"] <= 1.0


def test_deleting_the_explanations_channels_costs_more_than_deleting_random_ones(evaluated):
    for view in VIEWS:
        deletion = evaluated[0].deletion[view]
        assert deletion["images"] == NUM_IMAGES
        assert deletion["top_k_logit_drop"] > 2 * deletion["random_logit_drop"], (view, deletion)
        assert deletion["top_k_class_change_rate"] > deletion["random_class_change_rate"], (view, deletion)
        assert 0 < deletion["mean_deleted_channels"] <= 4


def test_deletion_is_exact_the_explanations_own_contributions(fitted, unperturbed):
    explainer, data, _ = fitted
    images = list(data.select(range(32))["image"])
    explanations = explainer.explain(images, top_k=4)
    pooled = explainer.feature_map(images).double().mean(dim=(2, 3))  # avg G
    weight = explainer.decomposer.weight.double()  # A' = A U^-1
    drops, changed = [], []
    for explanation, g in zip(explanations, pooled):
        channels = [channel.channel for channel in explanation.channels]
        drops.append(sum(channel.contribution for channel in explanation.channels))
        after = explanation.logits.double() - weight[:, channels] @ g[channels]  # every class loses A'_{c,j} avg(G)_j
        changed.append(int(after.argmax()) != explanation.target_index)
    deletion = unperturbed.deletion["epic"]
    assert deletion["images"] == 32
    assert deletion["top_k_logit_drop"] == pytest.approx(sum(drops) / 32, rel=1e-5)
    assert deletion["top_k_class_change_rate"] == pytest.approx(sum(changed) / 32)
    assert deletion["mean_deleted_channels"] == pytest.approx(sum(len(e.channels) for e in explanations) / 32)


def test_stability_is_a_share_and_one_without_perturbation(evaluated, unperturbed):
    report, _ = evaluated
    for view in VIEWS:
        for perturbation in ("noise", "shift"):
            scores = report.stability[view][perturbation]
            assert 0 <= scores["channel_jaccard"] <= 1 and 0 <= scores["peak_kept"] <= 1
            assert scores["images"] == NUM_IMAGES
            assert unperturbed.stability[view][perturbation]["channel_jaccard"] == 1.0
            assert unperturbed.stability[view][perturbation]["peak_kept"] == 1.0
    assert report.stability["epic"]["noise"]["channel_jaccard"] > 0.8
    assert unperturbed.decision_kept == {"noise": 1.0, "shift": 1.0}


def test_identity_numbers_table_headline_and_files(evaluated):
    report, directory = evaluated
    headline = report.headline()
    assert all(value is not None for value in headline.values()), headline
    table = report.to_markdown()
    assert "| metric | EPIC (U) | raw channels (U = I) |" in table
    assert table.count("\n| ") == 18 and "n/a |" in table  # the bank-only rows have no U = I number
    assert json.loads((directory / REPORT_NAME).read_text()) == report.to_dict()
    assert (directory / TABLE_NAME).read_text() == table
    assert EvaluationReport.from_dict(report.to_dict()).to_dict() == report.to_dict()
    assert json.loads((directory / STATE_NAME).read_text())["consumed"] == NUM_IMAGES


def test_a_killed_stream_resumes_and_a_capped_run_is_extended(fitted, evaluated, tmp_path):
    explainer, data, _ = fitted
    crash = {"after": 50}

    def examples():
        for position, example in enumerate(data):
            if position == crash["after"]:
                raise RuntimeError("killed")
            yield example

    stream = datasets.IterableDataset.from_generator(examples, features=data.features)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_explainer(explainer, stream, output_dir=tmp_path, batch_size=16)
    assert json.loads((tmp_path / STATE_NAME).read_text())["consumed"] == 48  # three whole batches were kept
    crash["after"] = None
    capped = evaluate_explainer(explainer, stream, output_dir=tmp_path, batch_size=16, max_samples=80)
    assert capped.num_samples == 80 and capped.settings["dataset"]["streaming"] is True
    with pytest.raises(ValueError, match="already holds an evaluation of 80 samples"):
        evaluate_explainer(explainer, stream, output_dir=tmp_path, max_samples=40)
    with pytest.raises(CheckpointMismatchError, match="differing: \\['seed'\\]"):
        evaluate_explainer(explainer, stream, output_dir=tmp_path, seed=1)
    full = evaluate_explainer(explainer, stream, output_dir=tmp_path, batch_size=32)  # other batches: same numbers
    baseline = evaluated[0].to_dict()
    for family in ("stability", "deletion", "purity", "consistency", "decision_kept"):
        assert close(full.to_dict()[family], baseline[family]), family
    assert evaluate_explainer(explainer, stream, output_dir=tmp_path).to_dict() == full.to_dict()  # stored result


def test_the_banks_numbers_are_withheld_on_another_dataset(fitted):
    explainer, _, _ = fitted
    other = planted_dataset(NUM_IMAGES, num_classes=4, seed=7)
    report = evaluate_explainer(explainer, other, max_samples=16)
    assert report.purity["bank"] is None and report.consistency["bank"] is None
    assert any("not the dataset the bank was fit on" in note for note in report.notes)
    assert report.purity["mined"]["epic"] is not None and report.num_samples == 16


def test_cli_evaluates_a_saved_bank_on_an_image_folder(fitted, tmp_path):
    explainer, data, _ = fitted
    classifier_dir = tmp_path / "classifier"
    explainer.model.save_pretrained(classifier_dir)
    explainer.image_processor.save_pretrained(classifier_dir)
    explainer.bank.save_pretrained(tmp_path / "bank")
    folder = tmp_path / "images"
    names = data.features["label"].names
    for index in range(24):
        example = data[index]
        (folder / names[example["label"]].replace(" ", "_")).mkdir(parents=True, exist_ok=True)
        example["image"].save(folder / names[example["label"]].replace(" ", "_") / f"{index:03d}.png")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["evaluate", str(tmp_path / "bank"), str(folder), "--output-dir", str(tmp_path / "out"),
                     "--base-model", str(classifier_dir), "--max-samples", "20", "--top-k", "3",
                     "--batch-size", "8"]) == 0
    stored = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    assert stored["num_samples"] == 20 and stored["settings"]["top_k"] == 3
    assert stored["consistency"]["label_column"] == "label"
    assert "| metric | EPIC (U) | raw channels (U = I) |" in printed.getvalue()


def test_the_model_card_shows_the_headline_numbers(fitted, evaluated, tmp_path):
    explainer, _, _ = fitted
    report, _ = evaluated
    assert explainer.bank.config.evaluation == report.headline()
    explainer.save_pretrained(tmp_path / "bank")
    card = (tmp_path / "bank" / "README.md").read_text()
    assert "## Evaluation" in card and f"{report.headline()['purity']:.4f}" in card
    assert f"{report.headline()['deletion_drop_top_k']:.4f}" in card
