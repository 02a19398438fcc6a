"""Banks written before the redesign still load and explain the same, and the caller's model is left alone.

``tests/data/bank_v0.1`` was written by epic_hf 0.1.0 (the release before the typed configs): a
bank whose config names its classifier by a path that does not exist here, the classifier
beside it, and the explanation 0.1.0 gave of one generated image.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from epic_hf import BaseModelNotFoundError, EpicExplainer, PrototypeBank
from epic_hf.synthetic import planted_dataset, tiny_resnet

OLD = Path(__file__).parent / "data" / "bank_v0.1"


def test_a_bank_written_by_the_previous_release_loads():
    bank = PrototypeBank.from_pretrained(OLD / "bank")
    assert bank.num_channels == 8 and bank.prototypes_per_channel == 3
    assert bank.config.model_type == "resnet" and bank.config.base_model_fingerprint is None
    assert bank.config.fit.schedule_start == 6 and bank.class_evidence is None and bank.sample_names == {}
    assert len(bank.thumbnails) > 0 and bank.thumbnail(int(bank.sample_keys[0, 0])).size == bank.input_size[::-1]


def test_it_explains_as_the_previous_release_did():
    with pytest.raises(BaseModelNotFoundError, match="/home/someone/models/tiny-resnet"):
        EpicExplainer.from_pretrained(OLD / "bank")
    explainer = EpicExplainer.from_pretrained(OLD / "bank", base_model=OLD / "classifier")
    expected = json.loads((OLD / "expected_explanation.json").read_text())
    image = planted_dataset(1, num_classes=3, size=32, seed=expected["seed"])["image"][0]
    explanation = explainer.explain(image)
    assert explanation.target_index == expected["target_index"]
    torch.testing.assert_close(explanation.logits, torch.tensor(expected["logits"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explanation.contributions, torch.tensor(expected["contributions"], dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)


def test_the_callers_model_keeps_requires_grad_and_device():
    model, processor = tiny_resnet(3, (8, 8), seed=1)
    model.requires_grad_(True)
    device = next(model.parameters()).device
    flags = [module.training for module in model.modules()]  # explaining runs in eval mode and restores these
    explainer = EpicExplainer(model, processor)
    explainer.fit(planted_dataset(12, num_classes=3, size=32), schedule_start=4, schedule_end=2, schedule_steps=1,
                  prototypes_per_channel=2)
    explainer.explain(planted_dataset(1, num_classes=3, size=32)["image"][0])
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert all(parameter.grad is None for parameter in model.parameters())
    assert next(model.parameters()).device == device
    assert [module.training for module in model.modules()] == flags


def _config_values() -> dict:
    return json.loads((OLD / "bank" / "epic_config.json").read_text())


def test_the_fit_settings_of_a_bank_are_a_typed_fit_config(caplog):
    from epic_hf import EpicConfig, FitConfig

    with caplog.at_level("WARNING", logger="epic_hf"):
        config = EpicConfig.from_dict(_config_values())
    assert isinstance(config.fit, FitConfig) and config.fit.thumbnail_size == 32 and config.fit.lr == 1e-3
    assert not caplog.records  # 0.1.0's model facts among the fit settings are known legacy, not news
    again = EpicConfig.from_json(config.to_json())
    assert again.fit == config.fit and again.to_dict() == config.to_dict()


def test_unknown_config_keys_are_named_not_dropped_silently(caplog):
    from epic_hf import EpicConfig

    values = _config_values()
    values["future_setting"] = 1
    values["fit"]["schedul_steps"] = 3  # a typo in a hand-edited file
    with caplog.at_level("WARNING", logger="epic_hf"):
        config = EpicConfig.from_dict(values)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "epic_config.json: ignoring unknown key(s) ['future_setting']" in messages
    assert "epic_config.json's fit settings: ignoring unknown key(s) ['schedul_steps']" in messages
    assert config.fit.schedule_steps == 2  # the bank's own value, untouched by the typo


@pytest.mark.parametrize("fit, problem", [({"lr": -1.0}, "lr must be at least 0"),
                                          ({"schedule": "cubic"}, "schedule must be one of"),
                                          ([1, 2], "'fit' must be an object")])
def test_invalid_fit_settings_in_a_bank_are_a_format_error(fit, problem):
    from epic_hf import BankFormatError, EpicConfig

    values = _config_values()
    values["fit"] = {**values["fit"], **fit} if isinstance(fit, dict) else fit
    with pytest.raises(BankFormatError, match=problem):
        EpicConfig.from_dict(values)


def test_every_field_of_a_bank_config_declares_its_checks():
    """EpicConfig is checked from field metadata, as FitConfig is: a new field without checks cannot pass."""
    import dataclasses

    from epic_hf import EpicConfig

    unchecked = [spec.name for spec in dataclasses.fields(EpicConfig) if "choices" not in spec.metadata]
    assert unchecked == [], f"declare these EpicConfig fields with _fact(...): {unchecked}"

    @dataclasses.dataclass
    class Extended(EpicConfig):
        forgotten: int = 0  # declared by hand: refused when checked, not let through

    with pytest.raises(RuntimeError, match="Extended.forgotten declares no checks"):
        Extended.from_dict(_config_values())  # not a bank's fault: not a BankFormatError


@pytest.mark.parametrize("value", ["yes", 2, None, [True]])
def test_a_bad_split_cls_in_a_bank_is_refused_by_name(value):
    from epic_hf import BankFormatError, EpicConfig

    values = {**_config_values(), "split_cls": value}
    with pytest.raises(BankFormatError, match=r"split_cls must be true or false, got") as refused:
        EpicConfig.from_dict(values)
    assert "epic_config.json" in str(refused.value)
    assert EpicConfig.from_dict({**_config_values(), "split_cls": True}).split_cls is True
