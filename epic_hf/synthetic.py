"""Planted-concept images and a tiny classifier trained on them: data with a known answer.

Each class is one coloured shape on textured noise. A classifier that learns them should have
channels that fire on the shapes, so a good prototype bank shows shapes of the right class.
Used by ``epic-hf demo`` (which must run on a fresh machine with no network), the tests and
the benchmarks.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

CONCEPTS = ("red circle", "green square", "blue triangle", "yellow cross")
_COLORS = {"red circle": (220, 30, 30), "green square": (30, 190, 40), "blue triangle": (40, 60, 230),
           "yellow cross": (235, 210, 20)}


def planted_image(concept: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One image: textured grey-brown noise with ``concept`` drawn at a random place and scale."""
    return planted_shape(concept, rng, size)[0]


def planted_shape(concept: str, rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, tuple[int, int, int]]:
    """:func:`planted_image` and where its shape is: (image, (centre x, centre y, radius)) in its pixels.

    Why: part-grounded metrics need keypoints whose truth is known; the shape's centre and extent are.
    """
    base = rng.integers(60, 140, size=3)
    noise = rng.normal(0, 28, size=(size // 4, size // 4, 3))
    texture = np.kron(noise, np.ones((4, 4, 1)))[:size, :size] + rng.normal(0, 10, size=(size, size, 3))
    image = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    radius = int(rng.integers(size // 8, size // 4))
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, size=2))
    color = _COLORS[concept]
    if concept == "red circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
    elif concept == "green square":
        draw.rectangle([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
    elif concept == "blue triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=color)
    else:
        width = max(2, radius // 3)
        draw.rectangle([cx - radius, cy - width, cx + radius, cy + width], fill=color)
        draw.rectangle([cx - width, cy - radius, cx + width, cy + radius], fill=color)
    return image, (cx, cy, radius)


def planted_dataset(num_images: int, num_classes: int = 3, size: int = 64, seed: int = 0, parts: bool = False):
    """A ``datasets.Dataset`` with an ``image`` (Image) and a ``label`` (ClassLabel) column.

    With ``parts``, also a ``parts`` column of keypoints ``{name: [x, y, visible]}`` where the shape is: its
    ``centre`` and its ``left tip`` and ``right tip`` (the ends of its horizontal diameter), for the
    part-grounded metrics (``evaluate(..., parts=True)``). The images are the same either way.
    """
    import datasets

    if not 1 <= num_classes <= len(CONCEPTS):
        raise ValueError(f"num_classes must be in [1, {len(CONCEPTS)}], got {num_classes}")
    rng = np.random.default_rng(seed)
    names = list(CONCEPTS[:num_classes])
    labels = [i % num_classes for i in range(num_images)]
    shapes = [planted_shape(names[label], rng, size) for label in labels]
    columns = {"image": [image for image, _ in shapes], "label": labels}
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    if parts:
        columns["parts"] = [{"centre": [cx, cy, 1.0], "left tip": [cx - r, cy, 1.0], "right tip": [cx + r, cy, 1.0]}
                            for _, (cx, cy, r) in shapes]
        features["parts"] = {name: datasets.Sequence(datasets.Value("float32"), length=3)
                             for name in ("centre", "left tip", "right tip")}
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def tiny_resnet(num_classes: int = 3, hidden_sizes: tuple[int, ...] = (16, 32), seed: int = 0,
                image_size: int = 64, labels: list[str] | None = None):
    """A small ResNet classifier and a processor that feeds it ``image_size`` square images (64 x 64 by default).

    ``labels``: the class names (by default the first ``num_classes`` planted concepts)."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    names = list(labels) if labels is not None else list(CONCEPTS[:num_classes])
    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=16, hidden_sizes=list(hidden_sizes), depths=[1] * len(hidden_sizes),
                          id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0)
    return ResNetForImageClassification(config), processor


def tiny_vit(num_classes: int = 3, layers: int = 4, width: int = 64, seed: int = 0):
    """A small ViT classifier (8 px patches on 64 px: an 8 x 8 grid) that reads its CLS token, and its processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    names = list(CONCEPTS[:num_classes])
    torch.manual_seed(seed)
    config = ViTConfig(image_size=64, patch_size=8, hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                       intermediate_size=2 * width, id2label=dict(enumerate(names)),
                       label2id={n: i for i, n in enumerate(names)})
    return ViTForImageClassification(config), ViTImageProcessor(size={"height": 64, "width": 64})


def train_classifier(model, processor, dataset, epochs: int = 4, batch_size: int = 32, lr: float = 3e-3,
                     seed: int = 0, validation=None) -> float:
    """Train ``model`` in place on ``dataset`` (image, label); returns its training accuracy.

    With ``validation`` (another image/label dataset) the accuracy on it is measured after every
    epoch and the model keeps the weights of its best epoch (the latest of equals), not its last:
    a small ViT's accuracy swings from epoch to epoch (it reached 1.000 and ended at 0.891 on
    held-out images), and a demo should explain the classifier at its best. The returned training
    accuracy is that epoch's.
    """
    torch.manual_seed(seed)
    pixel_values = processor(images=[im.convert("RGB") for im in dataset["image"]], return_tensors="pt")["pixel_values"]
    labels = torch.tensor(dataset["label"])
    checked = None if validation is None else (
        processor(images=[im.convert("RGB") for im in validation["image"]], return_tensors="pt")["pixel_values"],
        torch.tensor(validation["label"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    accuracy = 0.0
    best: tuple[float, float, dict[str, torch.Tensor] | None] = (-1.0, 0.0, None)  # validation, training, weights
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels))
        correct = 0
        for start in range(0, len(order), batch_size):
            batch = order[start: start + batch_size]
            out = model(pixel_values=pixel_values[batch], labels=labels[batch])
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            correct += int((out.logits.argmax(-1) == labels[batch]).sum())
        accuracy = correct / len(labels)
        if checked is None:
            logger.info("classifier epoch %d: training accuracy %.3f", epoch + 1, accuracy)
            continue
        score = _accuracy(model, *checked, batch_size)
        logger.info("classifier epoch %d: training accuracy %.3f, validation accuracy %.3f", epoch + 1, accuracy, score)
        if score >= best[0]:
            best = (score, accuracy, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if best[2] is not None:
        model.load_state_dict(best[2])
        accuracy = best[1]
        logger.info("classifier: kept the best epoch, validation accuracy %.3f", best[0])
    model.eval()
    return accuracy


def classifier_accuracy(model, processor, dataset, batch_size: int = 32) -> float:
    """The fraction of ``dataset``'s images (image, label) that ``model`` classifies right."""
    pixel_values = processor(images=[im.convert("RGB") for im in dataset["image"]], return_tensors="pt")["pixel_values"]
    return _accuracy(model, pixel_values, torch.tensor(dataset["label"]), batch_size)


def _accuracy(model, pixel_values: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """The fraction of ``labels`` the model gets right, in eval mode and without gradients."""
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(pixel_values=pixel_values[start: start + batch_size]).logits.argmax(-1)
                               for start in range(0, len(labels), batch_size)])
    return float((predicted == labels).float().mean())


#: The tag that :func:`shortcut_dataset` stamps on one class: a small two-tone square in the bottom-right corner.
TAG_COLORS = ((250, 250, 250), (20, 20, 20))


def stamp_tag(image: Image.Image, fraction: float = 0.16) -> Image.Image:
    """A copy of ``image`` with the shortcut tag in its bottom-right corner (a white square with a dark centre)."""
    stamped = image.copy()
    width, height = stamped.size
    side = max(4, int(round(min(width, height) * fraction)))
    x0, y0 = width - side - 1, height - side - 1
    draw = ImageDraw.Draw(stamped)
    draw.rectangle([x0, y0, x0 + side, y0 + side], fill=TAG_COLORS[0])
    inner = side // 3
    draw.rectangle([x0 + inner, y0 + inner, x0 + side - inner, y0 + side - inner], fill=TAG_COLORS[1])
    return stamped


def shortcut_dataset(num_images: int, size: int = 64, seed: int = 0, flipped: int = 0):
    """Planted data with a known shortcut and known label errors: what an audit must find.

    Three classes: ``red circle``, ``tagged circle`` and ``green square``. A tagged circle is
    drawn exactly like a red circle and carries the tag of :func:`stamp_tag` in its bottom-right
    corner, so the tag is the only way to tell the first two classes apart: a classifier that
    learns them relies on a fixed-position shortcut. ``flipped`` labels of green squares are then
    set to ``red circle`` (label errors a confident model disagrees with); their row indices are
    in ``dataset.info.description`` as ``flipped=1,2,...`` and returned by :func:`flipped_rows`.
    """
    import datasets

    rng = np.random.default_rng(seed)
    names = ["red circle", "tagged circle", "green square"]
    labels = [i % 3 for i in range(num_images)]
    images = []
    for label in labels:
        image = planted_image("green square" if label == 2 else "red circle", rng, size)
        images.append(stamp_tag(image) if label == 1 else image)
    squares = [row for row, label in enumerate(labels) if label == 2]
    flips = sorted(int(row) for row in rng.choice(squares, size=min(flipped, len(squares)), replace=False))
    for row in flips:
        labels[row] = 0
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    info = datasets.DatasetInfo(description="flipped=" + ",".join(map(str, flips)), features=features)
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features, info=info)


def flipped_rows(dataset) -> list[int]:
    """The rows whose labels :func:`shortcut_dataset` flipped (its planted label errors)."""
    description = dataset.info.description or ""
    found = description.split("flipped=", 1)[1] if "flipped=" in description else ""
    return [int(part) for part in found.split(",") if part]
