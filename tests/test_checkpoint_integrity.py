"""A damaged checkpoint is named and redone, never read: every resume gives the bank of an undamaged fit.

Each file of a finished fit's output directory is cut, extended or bit-flipped (seeded), then
the same fit runs again. It must end with the bank an uninterrupted fit writes (the same
prototypes, scores and thumbnails) or with one clear ``EpicError`` line, and a damaged file
must be named in a warning.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import torch

from epic_hf import CheckpointMismatchError, EpicExplainer
from epic_hf.fit.checkpoint import ARGS_NAME, INDEX_NAME, REPORT_NAME, STATE_NAME, VECTORS_NAME
from epic_hf.fit.integrity import MANIFEST_NAME
from epic_hf.synthetic import planted_dataset
from tiny_models import save_tiny_model

FIT = dict(prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=2, batch_size=16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    model_dir = save_tiny_model("resnet", root / "model")
    data = planted_dataset(40, size=32)
    run = root / "run"
    explainer = EpicExplainer.from_pretrained(str(model_dir))
    explainer.fit(data, output_dir=run, **FIT)
    return model_dir, data, run, explainer.bank


def _refit(model_dir: Path, data, run: Path):
    explainer = EpicExplainer.from_pretrained(str(model_dir))
    explainer.fit(data, output_dir=run, **FIT)
    return explainer.bank


def _same_bank(bank, reference) -> bool:
    return (torch.equal(bank.sample_keys, reference.sample_keys) and torch.allclose(bank.scores, reference.scores)
            and bank.thumbnails == reference.thumbnails)


def _damage(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    kind = rng.choice(["cut", "flip", "extend", "empty"])
    if kind == "cut":
        path.write_bytes(bytes(data[: rng.randrange(max(1, len(data)))]))
    elif kind == "flip":
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    elif kind == "extend":
        path.write_bytes(bytes(data) + b"\0" * rng.randint(1, 4096))
    else:
        path.write_bytes(b"")
    return kind


def test_a_cut_index_with_the_bank_removed_is_redone_not_padded(setup, tmp_path, caplog):
    """The reported case: head -c 1000 of the index vectors, bank/ and fit_report.json removed, fit again."""
    model_dir, data, run, reference = setup
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    vectors = copy / VECTORS_NAME
    vectors.write_bytes(vectors.read_bytes()[:1000])
    shutil.rmtree(copy / "bank")
    (copy / REPORT_NAME).unlink()
    with caplog.at_level(logging.WARNING):
        bank = _refit(model_dir, data, copy)
    assert _same_bank(bank, reference)
    assert any(VECTORS_NAME in record.getMessage() and "bytes" in record.getMessage() for record in caplog.records)
    assert (copy / VECTORS_NAME).stat().st_size == (run / VECTORS_NAME).stat().st_size


def test_a_damaged_record_of_the_arguments_is_refused_naming_it(setup, tmp_path):
    model_dir, data, run, _ = setup
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / ARGS_NAME).write_text((copy / ARGS_NAME).read_text()[:40])
    with pytest.raises(CheckpointMismatchError, match=ARGS_NAME) as refused:
        _refit(model_dir, data, copy)
    assert "\n" not in str(refused.value)


def test_every_checkpoint_file_is_recorded_with_its_size_and_checksum(setup):
    _, _, run, _ = setup
    manifest = json.loads((run / MANIFEST_NAME).read_text())
    for name in (ARGS_NAME, INDEX_NAME, VECTORS_NAME, STATE_NAME, REPORT_NAME):
        assert manifest[name]["bytes"] == (run / name).stat().st_size, name
    assert not list(run.glob("*.partial")) and not list(run.glob(".epic-partial-*"))


@pytest.mark.slow
def test_any_damaged_checkpoint_file_resumes_to_the_undamaged_bank(setup, tmp_path, caplog):
    model_dir, data, run, reference = setup
    rng = random.Random(1)
    names = [INDEX_NAME, VECTORS_NAME, STATE_NAME, REPORT_NAME, MANIFEST_NAME, "bank/epic_bank.safetensors",
             "bank/epic_config.json"]
    for case in range(21):
        copy = tmp_path / f"case{case}"
        shutil.copytree(run, copy)
        damaged = rng.sample(names, rng.randint(1, 2))
        kinds = [_damage(copy / name, rng) for name in damaged]
        if rng.random() < 0.5:  # as in a user's "start the last part again"
            shutil.rmtree(copy / "bank", ignore_errors=True)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            bank = _refit(model_dir, data, copy)
        assert _same_bank(bank, reference), f"case {case}: {list(zip(damaged, kinds))}"
        shutil.rmtree(copy)
