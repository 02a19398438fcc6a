"""EPIC repos on a (local, Hub-compatible) server, through the real huggingface_hub client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from epic_hf import BankFormatError, BankMismatchError, EpicExplainer, PrototypeBank
from epic_hf.bank_format import CONFIG_NAME, WEIGHTS_NAME
from epic_hf.synthetic import planted_dataset, tiny_resnet
from epic_hf.viz import render_prototype_sheet
from tiny_models import make_tiny_model, push_tiny_resnet, tiny_processor

pytestmark = pytest.mark.slow  # subprocesses or the local Hub server

FIT = dict(prototypes_per_channel=3, schedule_start=8, schedule_end=3, schedule_steps=2, lr=1e-2)


@pytest.fixture(scope="module")
def pushed(hub_server, tmp_path_factory):
    """A classifier on the hub, an explainer loaded from it, fitted and pushed as an EPIC repo."""
    data = planted_dataset(60, num_classes=3, size=32, seed=4)
    push_tiny_resnet("tiny-org/resnet-tiny", data, seed=2)
    explainer = EpicExplainer.from_pretrained("tiny-org/resnet-tiny")
    explainer.fit(data, **FIT)
    url = explainer.push_to_hub("tiny-org/resnet-tiny-epic", commit_message="EPIC bank for tests")
    return explainer, data, url


def test_classifier_loads_from_the_hub_with_its_commit(pushed):
    explainer, _, _ = pushed
    head = HfApi().model_info("tiny-org/resnet-tiny").sha
    assert explainer.base_model_name_or_path == "tiny-org/resnet-tiny"
    assert explainer.base_model_revision == head


def test_epic_repo_files_and_card(pushed):
    _, _, url = pushed
    assert "resnet-tiny-epic" in url
    files = set(HfApi().list_repo_files("tiny-org/resnet-tiny-epic"))
    assert {CONFIG_NAME, WEIGHTS_NAME, "README.md"} <= files
    card = Path(HfApi().hf_hub_download("tiny-org/resnet-tiny-epic", "README.md")).read_text()
    assert "base_model: tiny-org/resnet-tiny" in card and "- explainability" in card and "- epic" in card
    config = json.loads(Path(HfApi().hf_hub_download("tiny-org/resnet-tiny-epic", CONFIG_NAME)).read_text())
    assert config["base_model_name_or_path"] == "tiny-org/resnet-tiny"
    assert config["base_model_revision"] == HfApi().model_info("tiny-org/resnet-tiny").sha
    assert config["model_type"] == "resnet" and config["num_channels"] == 8
    assert config["fit"]["schedule_start"] == 8 and config["purity_after"] == pytest.approx(pushed[0].bank.config.purity_after)


def test_pull_in_a_fresh_cache_is_bit_identical(pushed, tmp_path):
    explainer, data, _ = pushed
    pulled = EpicExplainer.from_pretrained("tiny-org/resnet-tiny-epic", cache_dir=str(tmp_path / "cache"))
    assert any((tmp_path / "cache").iterdir())
    original, loaded = explainer.bank, pulled.bank
    for name in ("sample_keys", "scores", "boxes", "S"):
        assert torch.equal(getattr(original, name), getattr(loaded, name)), name
    assert original.thumbnails == loaded.thumbnails
    assert torch.equal(explainer.U, pulled.U)
    images = list(planted_dataset(3, num_classes=3, size=32, seed=8)["image"])
    for a, b in zip(explainer.explain(images), pulled.explain(images)):
        assert torch.equal(a.logits, b.logits) and torch.equal(a.contributions, b.contributions)
        assert a.to_dict() == b.to_dict()
        assert [p.image.tobytes() for p in a.channels[0].prototypes] == [p.image.tobytes() for p in b.channels[0].prototypes]


def test_bank_renders_without_the_dataset(pushed, tmp_path):
    pulled = EpicExplainer.from_pretrained("tiny-org/resnet-tiny-epic", cache_dir=str(tmp_path / "cache"))
    explanation = pulled.explain(planted_dataset(1, size=32, seed=11)["image"][0])
    assert explanation.channels[0].prototypes
    assert explanation.to_image().size[0] > 0
    assert render_prototype_sheet(pulled.bank, 0).size[0] > 0


def test_bank_alone_round_trips(pushed, tmp_path):
    bank = pushed[0].bank
    bank.push_to_hub("tiny-org/bank-only")
    again = PrototypeBank.from_pretrained("tiny-org/bank-only", cache_dir=str(tmp_path))
    assert torch.equal(again.sample_keys, bank.sample_keys) and again.thumbnails == bank.thumbnails
    saved = bank.save_pretrained(tmp_path / "local")
    assert torch.equal(PrototypeBank.from_pretrained(saved).scores, bank.scores)


# -- refusals -------------------------------------------------------------------------------------
@pytest.fixture
def saved_bank(pushed, tmp_path) -> Path:
    return pushed[0].save_pretrained(tmp_path / "bank")


def test_bank_of_another_width_is_refused(pushed):
    other = EpicExplainer(make_tiny_model("convnext"), tiny_processor())  # D = 16, convnext
    with pytest.raises(BankMismatchError, match="8 channels but this model's feature map has 16"):
        other.set_bank(pushed[0].bank)


def test_bank_of_another_family_is_refused(pushed):
    other = EpicExplainer(make_tiny_model("regnet"), tiny_processor())
    bank = pushed[0].bank
    fields = {name: getattr(bank, name) for name in bank.__dataclass_fields__}
    fake = PrototypeBank(**{**fields, "S": torch.zeros(16, 16), "base": None,
                            "sample_keys": torch.zeros(16, 3, dtype=torch.int64), "scores": torch.zeros(16, 3),
                            "boxes": torch.ones(16, 3, 4, dtype=torch.int64)})
    with pytest.raises(BankMismatchError, match="fit on a 'resnet' model, not on this 'regnet' model"):
        other.set_bank(fake)


def test_bank_of_another_base_model_is_refused(pushed, tmp_path):
    model, processor = tiny_resnet(3, (8, 8), seed=5)
    model.save_pretrained(tmp_path / "other")
    processor.save_pretrained(tmp_path / "other")
    other = EpicExplainer.from_pretrained(str(tmp_path / "other"))
    with pytest.raises(BankMismatchError, match="fit on base model 'tiny-org/resnet-tiny'"):
        other.set_bank(pushed[0].bank)
    other.set_bank(pushed[0].bank, check_base_model=False)  # the escape hatch for renamed copies


def test_truncated_bank_is_refused(saved_bank):
    weights = saved_bank / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(BankFormatError, match="corrupt or truncated"):
        EpicExplainer.from_pretrained(str(saved_bank))


def test_corrupt_config_is_refused(saved_bank):
    (saved_bank / CONFIG_NAME).write_text("{not json")
    with pytest.raises(BankFormatError, match="not valid JSON"):
        PrototypeBank.from_pretrained(saved_bank)


def test_future_version_is_refused_from_the_hub(saved_bank, tmp_path):
    config = json.loads((saved_bank / CONFIG_NAME).read_text())
    config["format_version"] = 99
    (saved_bank / CONFIG_NAME).write_text(json.dumps(config))
    HfApi().create_repo("tiny-org/future-bank", exist_ok=True)
    HfApi().upload_folder(repo_id="tiny-org/future-bank", folder_path=str(saved_bank))
    with pytest.raises(BankFormatError, match="format version 99.*Upgrade epic_hf"):
        EpicExplainer.from_pretrained("tiny-org/future-bank", cache_dir=str(tmp_path))


def test_inconsistent_tensors_are_refused(saved_bank):
    tensors = load_file(str(saved_bank / WEIGHTS_NAME))
    tensors["thumbnail_offsets"] = tensors["thumbnail_offsets"][:-1]
    save_file(tensors, str(saved_bank / WEIGHTS_NAME))
    with pytest.raises(BankFormatError, match="thumbnail offsets"):
        PrototypeBank.from_pretrained(saved_bank)


def test_missing_tensor_is_refused(saved_bank):
    tensors = load_file(str(saved_bank / WEIGHTS_NAME))
    del tensors["scores"]
    save_file(tensors, str(saved_bank / WEIGHTS_NAME))
    with pytest.raises(BankFormatError, match=r"lacks the tensors \['scores'\]"):
        PrototypeBank.from_pretrained(saved_bank)


def test_directory_without_a_bank_is_a_classifier_or_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises((OSError, ValueError)):
        EpicExplainer.from_pretrained(str(tmp_path / "empty"))


def test_nothing_in_the_package_unpickles():
    package = Path(__file__).parent.parent / "epic_hf"
    for source in package.rglob("*.py"):
        text = source.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, source


def test_the_card_names_its_own_repo(pushed):
    card = Path(HfApi().hf_hub_download("tiny-org/resnet-tiny-epic", "README.md")).read_text()
    assert 'EpicExplainer.from_pretrained("tiny-org/resnet-tiny-epic")' in card
    assert "<this repo>" not in card


def test_a_card_already_on_the_hub_is_updated_not_overwritten(pushed, tmp_path):
    explainer = pushed[0]
    api = HfApi()
    api.create_repo("tiny-org/carded", exist_ok=True)
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\ntags:\n- my-tag\n---\n\n# My notes\n\nWritten by hand before the bank.\n")
    api.upload_file(path_or_fileobj=str(readme), path_in_repo="README.md", repo_id="tiny-org/carded")
    for _ in range(2):  # pushing twice keeps one EPIC section
        explainer.push_to_hub("tiny-org/carded")
    card = Path(api.hf_hub_download("tiny-org/carded", "README.md", force_download=True)).read_text()
    assert "Written by hand before the bank." in card and "license: mit" in card
    assert "- my-tag" in card and "- epic" in card and "base_model: tiny-org/resnet-tiny" in card
    assert card.count("# EPIC prototype bank for") == 1


def test_a_stream_from_an_image_folder_pushed_to_the_hub(pushed, tmp_path):
    explainer, data, _ = pushed
    folder = tmp_path / "shapes"
    names = data.features["label"].names
    for index, example in enumerate(data.select(range(24))):
        target = folder / names[example["label"]].replace(" ", "_")
        target.mkdir(parents=True, exist_ok=True)
        example["image"].save(target / f"{index:03d}.png")
    HfApi().create_repo("tiny-org/shapes", repo_type="dataset", exist_ok=True)
    HfApi().upload_folder(folder_path=str(folder), repo_id="tiny-org/shapes", repo_type="dataset")
    report = explainer.fit("tiny-org/shapes", streaming=True, **FIT)
    assert report.num_samples == 24 and report.num_skipped == 0
    bank = explainer.bank
    assert bank.config.dataset["name"] == "tiny-org/shapes" and bank.config.dataset["streaming"] is True
    labels = {name.replace(" ", "_") for name in names}
    for key, name in bank.sample_names.items():  # a streamed Hub folder has no paths: label and key
        assert name.endswith(f"#{key}") and name.split(" #")[0] in labels


def test_a_bank_of_local_files_goes_to_the_hub_without_this_machines_paths(hub_server, tmp_path, caplog):
    """A local base model is named by fingerprint only, a local dataset folder by its own name; both are said."""
    import logging

    from test_cli import make_image_folder
    from tiny_models import save_tiny_model

    model_dir = save_tiny_model("resnet", tmp_path / "secret-home" / "model")
    folder = make_image_folder(tmp_path / "secret-home" / "photos", num_images=16)
    explainer = EpicExplainer.from_pretrained(str(model_dir))
    explainer.fit(str(folder), prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1)
    assert explainer.bank.config.base_model_name_or_path == str(model_dir.resolve())  # kept locally
    with caplog.at_level(logging.WARNING):
        explainer.push_to_hub("tiny-org/local-epic")
    assert "weights fingerprint only" in caplog.text and "photos" in caplog.text
    for name in HfApi().list_repo_files("tiny-org/local-epic"):
        text = Path(HfApi().hf_hub_download("tiny-org/local-epic", name)).read_bytes()
        assert b"secret-home" not in text and str(tmp_path).encode() not in text, name
    config = json.loads(Path(HfApi().hf_hub_download("tiny-org/local-epic", CONFIG_NAME)).read_text())
    assert config["base_model_name_or_path"] is None and config["dataset"]["name"] == "photos"
    assert config["base_model_fingerprint"] == explainer.bank.config.base_model_fingerprint
    pulled = EpicExplainer.from_pretrained("tiny-org/local-epic", base_model=str(model_dir))
    assert torch.equal(pulled.bank.sample_keys, explainer.bank.sample_keys)
    assert explainer.bank.config.base_model_name_or_path == str(model_dir.resolve())  # the push changed nothing here


def test_a_streamed_hub_dataset_is_identified_by_its_commit(hub_server, tmp_path):
    """A stream has no arrow fingerprint: its checkpoint identity is its name and revision, resolved to the
    commit it was read at, so the same Hub id at another commit (or main after a push) is other data."""
    from epic_hf.data import resolve_dataset
    from epic_hf.errors import CheckpointMismatchError
    from epic_hf.fit.checkpoint import FitCheckpoint

    folder = tmp_path / "moving"
    folder.mkdir()
    images = planted_dataset(5, size=32)["image"]
    for index, image in enumerate(images[:4]):
        image.save(folder / f"{index}.png")
    api = HfApi()
    api.create_repo("tiny-org/moving", repo_type="dataset", exist_ok=True)
    first = api.upload_folder(folder_path=str(folder), repo_id="tiny-org/moving", repo_type="dataset").oid
    images[4].save(folder / "4.png")
    second = api.upload_folder(folder_path=str(folder), repo_id="tiny-org/moving", repo_type="dataset").oid
    at_first = resolve_dataset("tiny-org/moving", streaming=True, revision=first)
    at_second = resolve_dataset("tiny-org/moving", streaming=True, revision=second)
    at_main = resolve_dataset("tiny-org/moving", streaming=True)  # main, resolved to the commit it names now
    assert at_first.streaming and (at_first.revision, at_main.revision) == (first, second)
    assert (len(list(at_first.records())), len(list(at_second.records()))) == (4, 5)  # each reads its commit
    assert at_first.fingerprint() != at_second.fingerprint() == at_main.fingerprint()
    assert first in at_first.fingerprint()
    FitCheckpoint(tmp_path / "run", {"dataset": at_first.fingerprint()})
    with pytest.raises(CheckpointMismatchError, match="differing: \\['dataset'\\]"):
        FitCheckpoint(tmp_path / "run", {"dataset": at_second.fingerprint()})
