"""A fit on a CLS-token model (ViT, split by the held linearisation): the pooled index, the bank, the share.

The index pass stores only pooled vectors for these models (the cheap split), so the prototype maps
are computed again for the prototype images alone; the bank they give must explain exactly, and
the fit's mean patch share must be the mean of what each explanation reports.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from epic_hf import EpicExplainer
from epic_hf.synthetic import planted_dataset
from tiny_models import make_tiny_model, save_tiny_model, tiny_processor


@pytest.fixture(scope="module")
def vit_fit(tmp_path_factory):
    data = planted_dataset(24, num_classes=3, size=32, seed=0)
    model_dir = save_tiny_model("vit", tmp_path_factory.mktemp("vit"))
    explainer = EpicExplainer.from_pretrained(str(model_dir), matrix="invertible")
    report = explainer.fit(data, prototypes_per_channel=3, schedule_start=6, schedule_end=3, schedule_steps=2,
                           batch_size=8, train_batch_size=16, lr=1e-2, seed=0)
    return explainer, report, data


def test_the_fit_reports_the_patches_mean_share_as_the_explanations_do(vit_fit):
    explainer, report, data = vit_fit
    explanations = explainer.explain([image.convert("RGB") for image in data["image"]])
    mean_share = statistics.mean(e.patch_share for e in explanations)
    assert report.patch_share == pytest.approx(mean_share, rel=1e-4)
    assert explainer.bank.config.patch_share == report.patch_share
    assert 0.0 < report.patch_share < 1.0


def test_a_bank_of_a_cls_token_model_explains_exactly(vit_fit):
    explainer, _, data = vit_fit
    image = data[0]["image"].convert("RGB")
    explanation = explainer.explain(image)
    total = explanation.contributions.sum() + explanation.cls_contribution + explanation.bias
    with torch.no_grad():  # the model's own forward, run here on its own
        own = explainer.model(pixel_values=explainer.preprocess([image])).logits[0]
    assert torch.isclose(total.double(), own[explanation.target_index].double(), atol=1e-5)
    assert all(channel.prototypes for channel in explanation.channels)


def test_the_card_shows_the_share(vit_fit, tmp_path):
    explainer, report, _ = vit_fit
    explainer.save_pretrained(tmp_path / "bank")
    card = (tmp_path / "bank" / "README.md").read_text(encoding="utf-8")
    assert "share of the evidence" in card and f"{report.patch_share:.1%}" in card
    reloaded = EpicExplainer.from_pretrained(str(tmp_path / "bank"))
    assert reloaded.bank.config.patch_share == pytest.approx(report.patch_share)


def test_a_cnn_bank_has_no_share_row(tmp_path):
    data = planted_dataset(12, num_classes=3, size=32, seed=0)
    explainer = EpicExplainer(make_tiny_model("resnet"), tiny_processor())
    report = explainer.fit(data, prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=2,
                           batch_size=8, train_batch_size=16, seed=0)
    assert report.patch_share is None and explainer.bank.config.patch_share is None
