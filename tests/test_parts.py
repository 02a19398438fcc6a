"""Part-grounded metrics on a CUB-200-2011 folder made here: planted shapes whose part keypoints are known.

Each image is a planted shape (epic_hf.synthetic) on noise, padded left and right and upscaled 2x,
so that the processor's resize and centre crop both have to be undone. Its parts: "centre" (the
shape's centre), "left tip" and "right tip" (the shape's left and right edge: one part "tip" when
sides merge), and "decoy" (a visible point in the background, away from the shape). Purity is
recomputed here from the feature maps, U, the peak cells, the boxes and the keypoints alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from epic_hf import EpicExplainer
from epic_hf.cli import main
from epic_hf.config import EpicConfig
from epic_hf.data import resolve_dataset
from epic_hf.synthetic import CONCEPTS, planted_shape, tiny_resnet, train_classifier

NUM_IMAGES, NUM_CLASSES, SIZE, PAD, SCALE, TOP_N = 96, 4, 64, 8, 2, 5
PARTS = ("centre", "left tip", "right tip", "decoy")


def write_cub(folder, num_images=NUM_IMAGES, seed=0, test_every=4):
    """A folder laid out as CUB-200-2011 ships; returns {image_id: {part: (x, y)}} in original pixels."""
    rng = np.random.default_rng(seed)
    (folder / "parts").mkdir(parents=True)
    truth, lines = {}, {name: [] for name in ("images", "labels", "split", "boxes", "locs")}
    for image_id in range(1, num_images + 1):
        label = (image_id - 1) % NUM_CLASSES
        image, (cx, cy, radius) = planted_shape(CONCEPTS[label], rng, SIZE)
        canvas = np.asarray(image)
        noise = rng.integers(60, 140, size=(SIZE, PAD, 3)).astype(np.uint8)
        canvas = np.concatenate([noise, canvas, noise[:, ::-1]], axis=1)
        big = np.kron(canvas, np.ones((SCALE, SCALE, 1), dtype=np.uint8))
        relative = f"{label + 1:03d}.{CONCEPTS[label].replace(' ', '_')}/img_{image_id:04d}.png"
        (folder / "images" / relative).parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(big).save(folder / "images" / relative)
        x, y = (cx + PAD) * SCALE, cy * SCALE
        decoy_x = ((cx + SIZE // 2) % SIZE + PAD) * SCALE  # half an image away from the shape
        points = {"centre": (x, y), "left tip": (x - radius * SCALE, y), "right tip": (x + radius * SCALE, y),
                  "decoy": (decoy_x, (SIZE - 1 - cy) * SCALE)}
        truth[image_id] = points
        lines["images"].append(f"{image_id} {relative}")
        lines["labels"].append(f"{image_id} {label + 1}")
        lines["split"].append(f"{image_id} {0 if image_id % test_every == 0 else 1}")
        lines["boxes"].append(f"{image_id} {x - radius * SCALE} {y - radius * SCALE} {2 * radius * SCALE} "
                              f"{2 * radius * SCALE}")
        lines["locs"] += [f"{image_id} {part + 1} {px} {py} 1" for part, (px, py) in enumerate(points.values())]
    classes = [f"{i + 1} {i + 1:03d}.{CONCEPTS[i].replace(' ', '_')}" for i in range(NUM_CLASSES)]
    for name, rows in (("images.txt", lines["images"]), ("image_class_labels.txt", lines["labels"]),
                       ("classes.txt", classes), ("train_test_split.txt", lines["split"]),
                       ("bounding_boxes.txt", lines["boxes"]), ("parts/part_locs.txt", lines["locs"]),
                       ("parts/parts.txt", [f"{i + 1} {name}" for i, name in enumerate(PARTS)])):
        (folder / name).write_text("\n".join(rows) + "\n")
    return truth


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cub") / "CUB_200_2011"
    return folder, write_cub(folder)


@pytest.fixture(scope="module")
def fitted(cub):
    """A tiny ResNet trained on the folder's train split, an invertible U fit on it, evaluated with parts."""
    folder, _ = cub
    train = resolve_dataset(folder, split="train").dataset.cast_column("image", __import__("datasets").Image())
    model, processor = tiny_resnet(NUM_CLASSES, (16, 16))
    train_classifier(model, processor, train, epochs=4)
    explainer = EpicExplainer(model, processor, matrix="invertible")
    explainer.fit(folder, split="train", prototypes_per_channel=TOP_N, schedule_start=15, schedule_end=TOP_N,
                  schedule_steps=3, batch_size=64, train_batch_size=32, lr=1e-2)
    report = explainer.evaluate(folder, split="train", parts=True, noise_std=0.0, shift_pixels=0, random_draws=1)
    return explainer, report


def test_cub_folder_is_a_dataset(cub):
    """Splits from train_test_split.txt, labels from the class files, boxes and visible keypoints from the part files."""
    folder, truth = cub
    train, test = resolve_dataset(folder, split="train"), resolve_dataset(folder.parent, split="test")
    assert len(train) == NUM_IMAGES * 3 // 4 and len(test) == NUM_IMAGES // 4
    first = test.dataset[0]
    assert first["image_id"] == 4 and test.dataset.features["label"].int2str(first["label"]) == "004.yellow_cross"
    assert first["parts"]["centre"] == [float(v) for v in (*truth[4]["centre"], 1.0)]
    assert first["bbox"][2] == first["parts"]["right tip"][0] - first["parts"]["left tip"][0]


def test_a_missing_file_is_named(tmp_path):
    folder = tmp_path / "CUB_200_2011"
    write_cub(folder, num_images=4)
    (folder / "parts" / "parts.txt").unlink()
    with pytest.raises(FileNotFoundError, match="parts/parts.txt"):
        resolve_dataset(folder)


def recomputed_purity(explainer, folder, truth, transformed):
    """Part purity from first principles: top-N images by mean G_c, peak cell, its box in original pixels, hits."""
    source = resolve_dataset(folder, split="train")
    keys = list(range(len(source)))
    ids = source.dataset.select_columns(["image_id"])["image_id"]
    images = [image for _, image in source.iter_images(keys)]
    F = torch.cat([explainer.feature_map(images[i: i + 32], transformed=False) for i in range(0, len(images), 32)])
    U = explainer.U.float() if transformed else torch.eye(F.shape[1])
    pooled = F.double().mean(dim=(2, 3)) @ U.double().T  # (B, D): the mean of G_c
    grid_h, grid_w = F.shape[-2:]
    purities = {}
    for channel in range(F.shape[1]):
        order = sorted(keys, key=lambda k: (-float(pooled[k, channel]), k))[:TOP_N]
        hits = {"centre": 0, "tip": 0, "decoy": 0}
        for key in order:
            G = torch.einsum("d,dhw->hw", U[channel], F[key])
            row, col = divmod(int(G.flatten().argmax()), grid_w)
            # cell footprint at the 64 x 64 input, then undo the crop (PAD px each side) and the 2x scale
            x0, x1 = col * SIZE // grid_w, -(-(col + 1) * SIZE // grid_w)
            y0, y1 = row * SIZE // grid_h, -(-(row + 1) * SIZE // grid_h)
            box = ((x0 + PAD) * SCALE, y0 * SCALE, (x1 + PAD) * SCALE, y1 * SCALE)
            points = truth[ids[key]]
            inside = {name for name, (x, y) in points.items() if box[0] <= x <= box[2] and box[1] <= y <= box[3]}
            for part in hits:
                hits[part] += any(name.endswith(part) for name in inside)
        purities[channel] = max(hits.values()) / TOP_N
    return purities


@pytest.mark.parametrize("view", ["epic", "identity"])
def test_purity_recomputes_independently(cub, fitted, view):
    folder, truth = cub
    explainer, report = fitted
    purities = recomputed_purity(explainer, folder, truth, transformed=view == "epic")
    mean = sum(purities.values()) / len(purities)
    assert report.parts["purity"][view] == pytest.approx(mean, abs=1e-9)
    assert report.parts["channels_over_half"][view] == sum(p > 0.5 for p in purities.values())
    per_channel = {row["channel"]: row["purity"] for row in report.parts["per_channel"][view]}
    assert per_channel == pytest.approx(purities, abs=1e-9)


def test_shape_parts_not_the_decoy_name_pure_channels(fitted):
    _, report = fitted
    pure = [row for row in report.parts["per_channel"]["epic"] if row["purity"] > 0.5]
    assert pure, report.parts["per_channel"]["epic"]
    assert all(row["part"] in ("centre", "tip") for row in pure)
    assert report.parts["part_names"] == ["centre", "tip", "decoy"]
    for name in ("consistency", "stability"):
        for view in ("epic", "identity"):
            assert 0.0 <= report.parts[name][view] <= 1.0


def test_channels_named_by_parts_survive_saving(fitted, tmp_path):
    explainer, report = fitted
    named = report.channel_parts()
    assert named and all(part in ("centre", "tip") for part, _ in named.values() if _ > 0.5)
    assert explainer.bank.config.channel_parts == named
    explainer.save_pretrained(tmp_path / "bank")
    assert EpicConfig.from_json((tmp_path / "bank" / "epic_config.json").read_text()).channel_parts == named
    assert "part purity" in report.to_markdown()


def test_cli_parts_flag(cub, fitted, tmp_path):
    """epic-hf evaluate BANK CUB_FOLDER --parts: the part rows in the table, the channel names in the saved bank."""
    folder, _ = cub
    explainer, _ = fitted
    explainer.model.save_pretrained(tmp_path / "classifier")
    explainer.image_processor.save_pretrained(tmp_path / "classifier")
    explainer.save_pretrained(tmp_path / "bank")
    assert main(["evaluate", str(tmp_path / "bank"), str(folder), "--split", "test", "--parts", "--max-samples", "12",
                 "--base-model", str(tmp_path / "classifier"), "--output-dir", str(tmp_path / "ev")]) == 0
    assert "part purity" in (tmp_path / "ev" / "evaluation.md").read_text()
    stored = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["parts"]
    assert stored["images_with_parts"] == 12 and set(stored["purity"]) == {"epic", "identity"}
