"""The data layer reads what `datasets` users hold: save_to_disk folders, Parquet, CSV and JSON-lines files.

Each form is checked against the in-memory Dataset it was written from: the same sample keys
and the same pixels, and, through the command line, the same fitted bank.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import FIT_FLAGS, assert_one_line_error, epic_hf
from tiny_models import save_tiny_model

from epic_hf.data import SkippedSamples, open_source, resolve_dataset
from epic_hf.synthetic import planted_dataset


def read_all(source, batch_size: int = 7) -> tuple[list[int], list[np.ndarray], SkippedSamples]:
    skipped = SkippedSamples()
    keys: list[int] = []
    pixels: list[np.ndarray] = []
    for batch in source.batches(batch_size, skipped):
        keys += batch.keys
        pixels += [np.asarray(image) for image in batch.images]
    return keys, pixels, skipped


@pytest.fixture(scope="module")
def planted() -> datasets.Dataset:
    return planted_dataset(24, size=32)


@pytest.fixture(scope="module")
def expected(planted) -> list[np.ndarray]:
    return [np.asarray(example["image"].convert("RGB")) for example in planted]


@pytest.fixture(scope="module")
def path_table(tmp_path_factory, planted) -> Path:
    """The images as PNG files beside a table naming them by relative path, with their labels."""
    root = tmp_path_factory.mktemp("table")
    (root / "pictures").mkdir()
    rows = []
    for index, example in enumerate(planted):
        name = f"pictures/{index:02d}.png"
        example["image"].save(root / name)
        rows.append({"file_name": name, "label": int(example["label"])})
    return root, rows


@pytest.mark.parametrize("whole_dict", [False, True])
def test_a_save_to_disk_folder_reads_as_the_dataset_it_was(tmp_path, planted, expected, whole_dict):
    target = tmp_path / "saved"
    (datasets.DatasetDict({"train": planted}) if whole_dict else planted).save_to_disk(str(target))
    keys, pixels, skipped = read_all(resolve_dataset(str(target)))
    assert keys == list(range(len(planted))) and not len(skipped)
    assert all(np.array_equal(a, b) for a, b in zip(pixels, expected))
    streamed = read_all(resolve_dataset(str(target), streaming=True))
    assert streamed[0] == keys and all(np.array_equal(a, b) for a, b in zip(streamed[1], expected))


def test_a_parquet_file_keeps_its_image_column(tmp_path, planted, expected):
    planted.to_parquet(str(tmp_path / "planted.parquet"))
    source = open_source(str(tmp_path / "planted.parquet"))
    assert source.image_column == "image" and source.label_column == "label"
    keys, pixels, _ = read_all(source)
    assert keys == list(range(len(planted))) and all(np.array_equal(a, b) for a, b in zip(pixels, expected))


def test_a_parquet_file_of_raw_bytes_is_read_too(tmp_path, planted, expected):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    encoded = []
    for example in planted:
        buffer = io.BytesIO()
        example["image"].save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    pq.write_table(pa.table({"img": encoded}), tmp_path / "raw.parquet")  # no Hugging Face feature metadata
    keys, pixels, _ = read_all(open_source(str(tmp_path / "raw.parquet")))
    assert keys == list(range(len(planted))) and all(np.array_equal(a, b) for a, b in zip(pixels, expected))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_table_of_relative_paths_reads_the_files_beside_it(path_table, expected, suffix, tmp_path):
    root, rows = path_table
    table = root / f"index{suffix}"
    rows = rows + [{"file_name": "pictures/missing.png", "label": 0}]  # one listed file is not there
    if suffix == ".csv":
        with table.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file_name", "label"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)  # relative paths are the table's, not the working directory's
        source = open_source(str(table))
        keys, pixels, skipped = read_all(source)
    assert source.image_column == "file_name"
    assert keys == list(range(len(expected))) and all(np.array_equal(a, b) for a, b in zip(pixels, expected))
    assert skipped.keys == [len(expected)] and "missing.png" in skipped.reasons[0]
    names = [name for _, _, name in source.iter_named_images([0])]
    assert names == ["00.png (0)"]


def test_a_file_that_is_no_table_is_refused_naming_what_is_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="Parquet|parquet") as refused:
        open_source(str(tmp_path / "notes.txt"))
    assert "save_to_disk" in str(refused.value)


def test_a_table_without_an_image_column_says_which_to_name(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="image_column"):
        open_source(str(tmp_path / "t.csv"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model("resnet", tmp_path_factory.mktemp("model") / "resnet")


@pytest.mark.slow
def test_fit_and_evaluate_from_a_saved_folder_and_a_parquet_file_give_the_in_memory_bank(tmp_path, planted,
                                                                                         model_dir):
    from epic_hf import EpicExplainer

    saved, parquet = tmp_path / "saved", tmp_path / "planted.parquet"
    planted.save_to_disk(str(saved))
    planted.to_parquet(str(parquet))
    reference = EpicExplainer.from_pretrained(str(model_dir))
    reference.fit(planted, schedule_start=6, schedule_end=2, schedule_steps=2, prototypes_per_channel=2,
                  batch_size=16)
    for name, data in (("saved", saved), ("parquet", parquet)):
        run = tmp_path / f"run-{name}"
        summary = json.loads(epic_hf("fit", str(model_dir), str(data), "--output-dir", str(run), *FIT_FLAGS).stdout)
        assert summary["num_samples"] == len(planted) and summary["num_skipped"] == 0
        bank = EpicExplainer.from_pretrained(run / "bank").bank
        assert torch.equal(bank.sample_keys, reference.bank.sample_keys), name
        assert summary["purity_after"] == pytest.approx(reference.bank.config.purity_after, abs=1e-6)
        epic_hf("evaluate", str(run), str(data), "--output-dir", str(run / "evaluation"), "--max-samples", "16")
        report = json.loads((run / "evaluation" / "evaluation.json").read_text())
        assert report["num_samples"] == 16
        assert report["purity"]["bank"] is not None, report["notes"]  # the bank's own data: its purity is scored
        assert report["consistency"]["label_column"] == "label"


def test_a_missing_table_is_one_clear_line(tmp_path, model_dir):
    completed = epic_hf("fit", str(model_dir), str(tmp_path / "nope.parquet"), "--output-dir", str(tmp_path / "o"),
                        check=False)
    assert_one_line_error(completed, "nope.parquet")


def test_an_unreadable_picture_in_a_table_is_skipped(path_table):
    root, rows = path_table
    (root / "pictures" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    table = root / "broken.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in
                             rows[:3] + [{"file_name": "pictures/broken.png", "label": 1}]))
    keys, pixels, skipped = read_all(open_source(str(table)))
    assert keys == [0, 1, 2] and skipped.keys == [3]
    assert Image.open(root / rows[0]["file_name"]).size == pixels[0].shape[1::-1]
