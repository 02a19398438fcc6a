"""Part-grounded metrics on a CUB-200-2011 folder made here: planted shapes whose part keypoints are known.

Each image is a planted shape (epic_hf.synthetic) on noise, padded left and right and upscaled 2x,
so that the processor's resize and centre crop both have to be undone. Its parts: "centre" (the
shape's centre), "left tip" and "right tip" (the shape's left and right edge: one part "tip" when
sides merge), and "decoy" (a point in the background, away from the shape). Some decoys and left tips
are not visible, written "0 0 0" as CUB writes them. Purity, consistency and stability are
recomputed here from the feature maps, U, the head, the peak cells, the boxes and the keypoints alone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BitImageProcessor, ConvNextImageProcessor, ViTImageProcessor

from epic_hf import EpicExplainer
from epic_hf.bank_format import read_config
from epic_hf.cli import main
from epic_hf.config import EpicConfig
from epic_hf.data import resolve_dataset
from epic_hf.errors import BankFormatError
from epic_hf.evaluation.draws import sample_seed
from epic_hf.images import box_in_original
from epic_hf.synthetic import CONCEPTS, planted_dataset, planted_shape, tiny_resnet, train_classifier

NUM_IMAGES, NUM_CLASSES, SIZE, PAD, SCALE, TOP_N = 96, 4, 64, 8, 2, 5
THRESHOLD = 0.4  # the evaluation's consistency threshold here (0.8 by default): low enough that some pairs pass
PARTS = ("centre", "left tip", "right tip", "decoy")


def write_cub(folder, num_images=NUM_IMAGES, seed=0, test_every=4):
    """A folder laid out as CUB-200-2011 ships; returns {image_id: {visible part: (x, y)}} in original pixels."""
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
        Image.fromarray(big).save(folder / "images" / relative)
        x, y = (cx + PAD) * SCALE, cy * SCALE
        decoy_x = ((cx + SIZE // 2) % SIZE + PAD) * SCALE  # half an image away from the shape
        points = {"centre": (x, y), "left tip": (x - radius * SCALE, y), "right tip": (x + radius * SCALE, y),
                  "decoy": (decoy_x, (SIZE - 1 - cy) * SCALE)}
        hidden = {"decoy"} if image_id % 3 == 0 else set()  # not visible here: written as CUB does, "0 0 0"
        hidden |= {"left tip"} if image_id % 5 == 0 else set()
        truth[image_id] = {name: point for name, point in points.items() if name not in hidden}
        lines["images"].append(f"{image_id} {relative}")
        lines["labels"].append(f"{image_id} {label + 1}")
        lines["split"].append(f"{image_id} {0 if image_id % test_every == 0 else 1}")
        lines["boxes"].append(f"{image_id} {x - radius * SCALE} {y - radius * SCALE} {2 * radius * SCALE} "
                              f"{2 * radius * SCALE}")
        lines["locs"] += [f"{image_id} {part + 1} 0 0 0" if name in hidden else f"{image_id} {part + 1} {px} {py} 1"
                          for part, (name, (px, py)) in enumerate(points.items())]
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
    report = explainer.evaluate(folder, split="train", parts=True, parts_threshold=THRESHOLD, noise_std=0.0,
                                shift_pixels=0, random_draws=1)
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
    third = test.dataset[2]  # image 12: its decoy is not visible
    assert third["image_id"] == 12 and third["parts"]["decoy"] == [0.0, 0.0, 0.0] and "decoy" not in truth[12]


def test_a_missing_file_is_named(tmp_path):
    folder = tmp_path / "CUB_200_2011"
    write_cub(folder, num_images=4)
    (folder / "parts" / "parts.txt").unlink()
    with pytest.raises(FileNotFoundError, match="parts/parts.txt"):
        resolve_dataset(folder)


def recomputed(explainer, folder, truth, transformed, threshold):
    """Part purity, consistency and stability from first principles: feature maps, U, the head, peak cells, the
    cell footprints mapped back to original pixels by hand (crop PAD px each side, then 2x), and the keypoints."""
    source = resolve_dataset(folder, split="train")
    keys = list(range(len(source)))
    ids = source.dataset.select_columns(["image_id"])["image_id"]
    images = [image for _, image in source.iter_images(keys)]
    pixels = explainer.classifier.preprocess(images)
    noise = torch.stack([torch.randn(tuple(pixels.shape[1:]), generator=torch.Generator().manual_seed(
        sample_seed(0, key))) for key in keys])  # the evaluation's per-sample draw (seed 0), in input units
    F = explainer.feature_map(pixels, transformed=False)
    F_noisy = explainer.feature_map(pixels + 0.2 * noise, transformed=False)
    A = explainer.classifier.head().weight.double()
    U = explainer.U.float() if transformed else torch.eye(F.shape[1])
    A_view = A @ torch.linalg.inv(U.double()) if transformed else A  # A' = A U^-1
    pooled = F.double().mean(dim=(2, 3)) @ U.double().T  # (B, D): the mean of G_c
    bias = explainer.classifier.head().bias.double()
    predicted = (F.double().mean(dim=(2, 3)) @ A.T + bias).argmax(dim=1).tolist()
    grid_h, grid_w = F.shape[-2:]

    def hits(fmap, key, channel):
        G = torch.einsum("d,dhw->hw", U[channel], fmap[key])
        row, col = divmod(int(G.flatten().argmax()), grid_w)
        x0, x1 = col * SIZE // grid_w, -(-(col + 1) * SIZE // grid_w)
        y0, y1 = row * SIZE // grid_h, -(-(row + 1) * SIZE // grid_h)
        box = ((x0 + PAD) * SCALE, y0 * SCALE, (x1 + PAD) * SCALE, y1 * SCALE)
        inside = {name for name, (x, y) in truth[ids[key]].items() if box[0] <= x <= box[2] and box[1] <= y <= box[3]}
        return {part for part in ("centre", "tip", "decoy") if any(name.endswith(part) for name in inside)}

    purities = {}
    for channel in range(F.shape[1]):
        order = sorted(keys, key=lambda k: (-float(pooled[k, channel]), k))[:TOP_N]
        found = [hits(F, key, channel) for key in order]
        purities[channel] = max(sum(part in hit for hit in found) for part in ("centre", "tip", "decoy")) / TOP_N
    consistent, shares, stable = [], [], []
    for k in sorted(set(predicted)):
        members = [key for key in keys if predicted[key] == k]
        evidence = A_view[k] * pooled[members].mean(dim=0)
        visible = {part: sum(any(name.endswith(part) for name in truth[ids[key]]) for key in members)
                   for part in ("centre", "tip", "decoy")}  # "tip" is visible where either side is
        for channel in evidence.argsort(descending=True, stable=True)[:4].tolist():
            found = [hits(F, key, channel) for key in members]
            ratio = max(sum(part in hit for hit in found) / count for part, count in visible.items() if count)
            consistent.append(ratio >= threshold)
            shares.append(ratio)
            stable.append(sum(hit == hits(F_noisy, key, channel) for key, hit in zip(members, found)) / len(members))
    return {"purity": purities, "consistency": sum(consistent) / len(consistent),
            "best_part_share": sum(shares) / len(shares), "stability": sum(stable) / len(stable)}


@pytest.mark.parametrize("view", ["epic", "identity"])
def test_metrics_recompute_independently(cub, fitted, view):
    """Some decoys and left tips are not visible (CUB's "0 0 0"): they never hit, and consistency divides by
    the class's images where the part is visible."""
    folder, truth = cub
    explainer, report = fitted
    expected = recomputed(explainer, folder, truth, view == "epic", THRESHOLD)
    purities = expected["purity"]
    parts = report.parts
    assert parts["purity"][view] == pytest.approx(sum(purities.values()) / len(purities), abs=1e-9)
    assert parts["channels_over_half"][view] == sum(p > 0.5 for p in purities.values())
    assert {row["channel"]: row["purity"] for row in parts["per_channel"][view]} == pytest.approx(purities, abs=1e-9)
    for name in ("consistency", "best_part_share", "stability"):
        assert parts[name][view] == pytest.approx(expected[name], abs=1e-9), name


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
    assert "part purity (annotated parts)" in (tmp_path / "bank" / "README.md").read_text()


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


def test_sheet_atlas_and_app_name_channels_by_parts(cub, fitted, tmp_path):
    """"channel 17 · centre, 0.60": beside the number in the explanation, the prototype sheet, the app and the atlas."""
    from epic_hf.app.views import channel_markdown
    from epic_hf.viz.atlas import write_atlas
    from epic_hf.viz.captions import channel_title, legend_fields

    folder, _ = cub
    explainer, report = fitted
    bank = explainer.bank
    channel, (part, purity) = next(iter(report.channel_parts().items()))
    expected = f"channel {channel} · {part}, {purity:.2f}"
    assert channel_title(int(channel), bank.channel_part(int(channel))) == expected
    assert channel_markdown(bank, int(channel)).startswith(f"### {expected}")
    source = resolve_dataset(folder, split="test")
    explanation = explainer.explain(next(source.iter_images([0]))[1], top_k=bank.num_channels)
    named = {c.channel: c for c in explanation.channels if c.part is not None}
    assert named and all(c.part == bank.channel_part(c.channel) for c in named.values())
    shown = next(iter(named.values()))
    assert legend_fields(explanation, shown)[0] == channel_title(shown.channel, shown.part)
    assert explanation.to_dict()["channels"][explanation.channels.index(shown)]["part"] == list(shown.part)
    explanation.to_image()  # the sheet draws the named title
    write_atlas(bank, tmp_path / "atlas")
    meta = (tmp_path / "atlas" / "data" / "meta.js").read_text(encoding="ascii")
    assert json.loads(meta[meta.index("{"): meta.rindex("}") + 1])["channelParts"][channel] == [part, round(purity, 2)]


def test_any_dataset_with_a_parts_column_streamed_sides_apart(fitted):
    """A plain datasets stream with a parts column (planted_dataset(parts=True)), left and right counted apart."""
    explainer, _ = fitted
    data = planted_dataset(12, num_classes=NUM_CLASSES, seed=3, parts=True).to_iterable_dataset()
    report = explainer.evaluate(data, parts=True, parts_keep_sides=True, max_samples=8, batch_size=8)
    assert report.parts["part_names"] == ["centre", "left tip", "right tip"]
    assert report.parts["images_with_parts"] == 8 and report.parts["merge_sides"] is False


def test_a_missing_parts_column_is_refused_before_the_stream(fitted):
    explainer, _ = fitted
    with pytest.raises(ValueError, match="no 'parts' column"):
        explainer.evaluate(planted_dataset(4, num_classes=NUM_CLASSES), parts=True)


@pytest.mark.parametrize("processor", [
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875),
    ConvNextImageProcessor(size={"shortest_edge": 384}),
    ViTImageProcessor(size={"height": 48, "width": 40}),
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}),
], ids=["convnext-crop", "convnext-warp", "vit-warp", "bit-crop"])
@pytest.mark.parametrize("original", [(90, 150), (150, 90)])
def test_a_box_at_the_input_maps_back_to_the_original(processor, original):
    """A white block in the original, found at the model input, maps back to where it was (within an input pixel)."""
    height, width = original
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[40:50, 60:70] = 255
    values = processor(images=[Image.fromarray(array)], return_tensors="pt", do_normalize=False)["pixel_values"][0, 0]
    rows, cols = np.nonzero(values.numpy() > 0.5)
    box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    mapped = box_in_original(box, original, tuple(values.shape), processor)
    pixel = max(height / values.shape[0], width / values.shape[1])  # one input pixel, in original pixels
    assert mapped == pytest.approx((60, 40, 70, 50), abs=pixel + 0.2)


def test_a_capped_run_extended_gives_the_same_parts(cub, fitted, tmp_path):
    """The per-class sums that rank class_channels are resumable state: 12 images, then the rest, equals one run."""
    folder, _ = cub
    explainer, _ = fitted
    settings = dict(split="test", parts=True, parts_threshold=THRESHOLD, noise_std=0.0, shift_pixels=0,
                    random_draws=1)
    whole = explainer.evaluate(folder, **settings).parts
    assert explainer.evaluate(folder, max_samples=12, output_dir=tmp_path, **settings).parts["images_with_parts"] == 12
    assert explainer.evaluate(folder, output_dir=tmp_path, **settings).parts == whole


@pytest.mark.parametrize("named", [{"999": ["beak", 0.5]}, {"1": ["x" * 101, 0.5]}, {"1": ["beak", 1.5]},
                                   {"1": ["beak"]}, {"one": ["beak", 0.5]}])
def test_a_bank_with_bad_channel_parts_is_refused(fitted, tmp_path, named):
    explainer, _ = fitted
    explainer.save_pretrained(tmp_path / "bank")
    path = tmp_path / "bank" / "epic_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "channel_parts": named}))
    with pytest.raises(BankFormatError, match="channel_parts"):
        read_config(path)
