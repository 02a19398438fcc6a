"""fit(): purity rises on planted concepts, bad data is skipped or refused with its error."""

from __future__ import annotations

import logging

import datasets
import pytest
import torch

from epic_hf import EpicExplainer
from epic_hf.disentangle import cell_box, purity_of_maps
from epic_hf.synthetic import planted_dataset, tiny_resnet, train_classifier

SHORT = dict(schedule_start=20, schedule_end=5, schedule_steps=5, epochs_per_step=4, lr=2e-2, train_batch_size=32)


@pytest.fixture(scope="module")
def trained():
    data = planted_dataset(240, num_classes=4, seed=0)
    model, processor = tiny_resnet(4, (16, 16))
    accuracy = train_classifier(model, processor, data, epochs=5)
    assert accuracy > 0.6
    return model, processor, data


@pytest.fixture(scope="module")
def fitted(trained):
    model, processor, data = trained
    explainer = EpicExplainer(model, processor, matrix="invertible")
    report = explainer.fit(data, **SHORT)
    return explainer, report


def test_fit_raises_purity_on_planted_concepts(fitted):
    explainer, report = fitted
    assert report.purity_after > report.purity_before + 0.1, (report.purity_before, report.purity_after)
    assert len(report.step_purity) == len(report.step_prototypes) == 5
    assert report.step_prototypes == [20, 17, 14, 11, 8]
    assert report.num_samples == 240 and report.num_skipped == 0


def test_bank_contents(fitted):
    explainer, _ = fitted
    bank = explainer.bank
    dim = explainer.num_channels
    assert bank.sample_keys.shape == (dim, 5) and bank.scores.shape == (dim, 5) and bank.boxes.shape == (dim, 5, 4)
    assert torch.all(bank.scores[:, :-1] >= bank.scores[:, 1:])  # best first
    assert set(bank.thumbnails) == set(bank.sample_keys.reshape(-1).tolist())
    height, width = bank.input_size
    assert torch.all(bank.boxes[..., 2] <= width) and torch.all(bank.boxes[..., 3] <= height)
    assert torch.all(bank.boxes[..., 0] < bank.boxes[..., 2])
    torch.testing.assert_close(bank.U, explainer.U)


def test_bank_scores_are_the_channel_sums_of_G(fitted, trained):
    explainer, _ = fitted
    data = trained[2]
    keys = explainer.bank.sample_keys[:, 0]
    G = explainer.feature_map([data[int(k)]["image"] for k in keys])
    sums = G.sum(dim=(2, 3))[torch.arange(len(keys)), torch.arange(len(keys))]
    torch.testing.assert_close(sums, explainer.bank.scores[:, 0], rtol=1e-4, atol=1e-4)
    grid = tuple(G.shape[-2:])
    for channel in range(len(keys)):  # each box is the cell where the prototype's G_c peaks
        cell = int(G[channel, channel].flatten().argmax())
        expected = cell_box(cell // grid[1], cell % grid[1], grid, explainer.bank.input_size)
        assert tuple(explainer.bank.boxes[channel, 0].tolist()) == expected


def test_purity_recomputed_on_the_dataset_matches_the_report(fitted, trained):
    explainer, report = fitted
    assert explainer.purity(trained[2]) == pytest.approx(report.purity_after, abs=1e-5)


def test_explanations_use_bank_prototypes(fitted):
    explainer, _ = fitted
    held_out = planted_dataset(4, num_classes=4, seed=99)
    with torch.no_grad():  # the model's own forward, run here on its own
        own = explainer.model(pixel_values=explainer.preprocess(list(held_out["image"]))).logits
    for explanation, logits in zip(explainer.explain(list(held_out["image"])), own):
        assert explanation.channels
        for channel in explanation.channels:
            assert [p.sample_key for p in channel.prototypes] == explainer.bank.sample_keys[channel.channel].tolist()
            thumb = channel.prototypes[0].image
            assert thumb.size == (explainer.bank.input_size[1], explainer.bank.input_size[0])
        total = explanation.contributions.sum() + explanation.bias
        assert float(total) == pytest.approx(float(logits[explanation.target_index]), abs=1e-5)


def test_orthogonal_fit_runs_and_reports(trained):
    model, processor, data = trained
    explainer = EpicExplainer(model, processor)
    report = explainer.fit(data, prototypes_per_channel=3, schedule_start=6, schedule_end=3, schedule_steps=2)
    U, bank = explainer.U, explainer.bank
    torch.testing.assert_close(U @ U.T, torch.eye(U.shape[0]), atol=1e-4, rtol=0)
    assert bank.prototypes_per_channel == 3 and len(report.steps) == 2
    # the prototypes are each channel's top 3 by sum_hw G_c over the whole dataset, under the trained U
    G = explainer.feature_map(list(data["image"]))
    scores = G.sum(dim=(2, 3))  # (samples, D)
    top = scores.topk(3, dim=0).indices.T  # (D, 3): sample keys are row indices here
    assert torch.equal(bank.sample_keys, top)
    # and the reported purity is the definition's, on whole transformed maps of those prototypes
    pairs = G[bank.sample_keys.reshape(-1)]
    channels = torch.arange(explainer.num_channels).repeat_interleave(3)
    expected = float(purity_of_maps(pairs, channels).mean())
    assert report.purity_after == pytest.approx(expected, abs=1e-5)
    assert report.purity_after == pytest.approx(bank.config.purity_after)


def test_corrupt_image_is_skipped_and_reported(trained):
    model, processor, data = trained
    small = data.select(range(30)).cast_column("image", datasets.Image(decode=False))
    records = small.to_dict()
    records["image"][7] = {"bytes": b"definitely not a png", "path": "broken.png"}
    broken = datasets.Dataset.from_dict(records, features=small.features).cast_column("image", datasets.Image())
    explainer = EpicExplainer(model, processor)
    report = explainer.fit(broken, prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1)
    assert report.num_skipped == 1 and report.skipped_keys == [7] and report.num_samples == 29
    assert 7 not in explainer.bank.sample_keys.reshape(-1).tolist()


def test_dataset_without_image_column_is_refused(trained):
    model, processor, _ = trained
    table = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    with pytest.raises(ValueError, match=r"no Image column \(columns: \['text', 'label'\]\)"):
        EpicExplainer(model, processor).fit(table)


def test_empty_dataset_is_refused(trained):
    model, processor, data = trained
    with pytest.raises(ValueError, match=r"holds no images \(0 rows\)"):
        EpicExplainer(model, processor).fit(data.select([]))


def test_imagefolder_path_and_dataset_dict(trained, tmp_path):
    model, processor, data = trained
    for i, example in enumerate(data.select(range(12))):
        folder = tmp_path / data.features["label"].int2str(example["label"]).replace(" ", "_")
        folder.mkdir(exist_ok=True)
        example["image"].save(folder / f"{i}.png")
    explainer = EpicExplainer(model, processor)
    report = explainer.fit(str(tmp_path), prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1)
    assert report.num_samples == 12
    dataset_dict = datasets.DatasetDict({"train": data.select(range(10)), "test": data.select(range(10, 20))})
    with pytest.raises(ValueError, match="pass split="):
        EpicExplainer(model, processor).fit(datasets.DatasetDict({"a": data, "b": data}))
    report = EpicExplainer(model, processor).fit(dataset_dict, split="test", prototypes_per_channel=2,
                                                 schedule_start=4, schedule_end=2, schedule_steps=1)
    assert report.num_samples == 10


def test_an_index_beyond_its_memory_budget_is_memory_mapped_with_the_same_result(fitted, trained, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="epic_hf")
    model, processor, data = trained
    explainer = EpicExplainer(model, processor, matrix="invertible")
    explainer.fit(data, index_memory_mb=0.001, output_dir=str(tmp_path), **SHORT)
    assert "spilling to memory-mapped" in caplog.text
    assert not list(tmp_path.glob("epic-index-*.f32")), "the spill file is removed once the index is built"
    assert (tmp_path / "index_vectors.f32").stat().st_size == 240 * explainer.num_channels * 4
    assert torch.equal(explainer.bank.sample_keys, fitted[0].bank.sample_keys)
    torch.testing.assert_close(explainer.bank.S, fitted[0].bank.S)


def test_fitting_again_starts_from_the_identity(trained):
    model, processor, data = trained
    small = data.select(range(40))
    args = dict(prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=2, lr=1e-2)
    explainer = EpicExplainer(model, processor)
    first = explainer.fit(small, **args)
    S_first = explainer.bank.S.clone()
    again = explainer.fit(small, **args)
    torch.testing.assert_close(explainer.bank.S, S_first)
    assert again.purity_after == pytest.approx(first.purity_after)


def test_feature_maps_beyond_the_cache_budget_are_recomputed_with_the_same_result(fitted, trained):
    model, processor, data = trained
    explainer = EpicExplainer(model, processor, matrix="invertible")
    report = explainer.fit(data, feature_cache_mb=0.01, **SHORT)  # room for a few maps only
    assert torch.equal(explainer.bank.sample_keys, fitted[0].bank.sample_keys)
    torch.testing.assert_close(explainer.bank.S, fitted[0].bank.S)
    assert report.purity_after == pytest.approx(fitted[1].purity_after, abs=1e-6)
