"""The pixel-map tables of docs/evaluation.md: EPIC beside Grad-CAM and the rest, on three trained models.

For each model: train the classifier here, fit EPIC with the demo's settings, then
``explainer.evaluate(held_out, faithfulness=True)`` and print its pixel-map table (RISE deletion and
insertion AUC, the sanity checks' rank correlations), the same rows ``evaluation.md`` gets.

* ``cnn``: the demo's tiny ResNet on planted shapes (``epic-hf demo``);
* ``vit``: the demo's tiny ViT (``epic-hf demo --architecture vit``), explained through the held linearisation;
* ``photos``: a small ResNet trained on real photographs, the ones scikit-image ships
  (``pip install scikit-image``): ten photos, each a class, seen as random crops (a third to
  two thirds of the shorter side, flipped at random, 96 px); held-out images are other crops of
  the same photos. A model of real image statistics (faces, fur, metal, cells, stars, bricks), not
  of a real task: the only real photographs this offline machine has.

Run::

    python scripts/faithfulness_tables.py                      # all three: about 15 min on 2 CPU cores
    python scripts/faithfulness_tables.py --models photos --images 16
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: scikit-image's colour and grey photographs used as classes (the ones in its wheel, no download).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "coins",
          "camera", "retina", "brick")
PHOTO_SIZE = 96


def photo_dataset(num_images: int, seed: int):
    """``num_images`` random crops of scikit-image's photos, one class per photo, as a datasets.Dataset."""
    import datasets
    from PIL import Image, ImageOps

    try:
        import skimage.data
    except ImportError as error:
        raise SystemExit("the photos model needs scikit-image: pip install scikit-image") from error
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(num_images):
        label = index % len(PHOTOS)
        photo = photos[label]
        side = int(min(photo.size) * rng.uniform(1 / 3, 2 / 3))
        x, y = int(rng.integers(0, photo.width - side + 1)), int(rng.integers(0, photo.height - side + 1))
        crop = photo.crop((x, y, x + side, y + side)).resize((PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.BICUBIC)
        images.append(ImageOps.mirror(crop) if rng.random() < 0.5 else crop)
        labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(PHOTOS))})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def photo_explainer(seed: int):
    """A small ResNet (D = 128) trained on :func:`photo_dataset`, with its held-out crops."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    from epic_hf import EpicExplainer
    from epic_hf.synthetic import classifier_accuracy, train_classifier

    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 1, 1],
                          id2label=dict(enumerate(PHOTOS)), label2id={n: i for i, n in enumerate(PHOTOS)})
    model = ResNetForImageClassification(config)
    processor = ConvNextImageProcessor(size={"shortest_edge": PHOTO_SIZE}, crop_pct=1.0)
    train = photo_dataset(400, seed)
    train_classifier(model, processor, train, epochs=10, lr=3e-3, seed=seed)
    held_out = photo_dataset(160, seed + 1)
    logging.info("photos classifier: %.3f held-out accuracy", classifier_accuracy(model, processor, held_out))
    return EpicExplainer(model, processor, matrix="invertible"), train, held_out


def demo_explainer(architecture: str, seed: int, workdir: Path):
    """The demo's classifier and bank (``epic-hf demo``), with held-out planted images."""
    from epic_hf import EpicExplainer
    from epic_hf.demo import run_demo
    from epic_hf.synthetic import planted_dataset

    summary = run_demo(workdir / architecture, seed=seed, architecture=architecture)
    return EpicExplainer.from_pretrained(summary["bank_dir"]), None, planted_dataset(64, num_classes=4, size=64,
                                                                                     seed=seed + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=("cnn", "vit", "photos"), default=["cnn", "vit", "photos"])
    parser.add_argument("--images", type=int, default=32, help="held-out images scored per model")
    parser.add_argument("--steps", type=int, default=32, help="steps of the deletion and insertion curves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--road", action="store_true", help="also ROAD MoRF/LeRF (about a minute more per model)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("epic_hf", "transformers", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            started = time.perf_counter()
            if name == "photos":
                explainer, train, held_out = photo_explainer(args.seed)
                explainer.fit(train, prototypes_per_channel=5, schedule_start=20, schedule_end=5, schedule_steps=5,
                              batch_size=64, train_batch_size=32, lr=1e-2, seed=args.seed)
            else:
                explainer, _, held_out = demo_explainer("resnet" if name == "cnn" else "vit", args.seed,
                                                        Path(workdir))
            report = explainer.evaluate(held_out, faithfulness=True, faithfulness_steps=args.steps,
                                        max_samples=args.images, seed=args.seed, road=args.road)
            table = report.to_markdown()
            print(f"\n## {name}: D = {explainer.num_channels}, {args.images} held-out images, "
                  f"{time.perf_counter() - started:.0f} s\n")
            print(table[table.index("Pixel maps on the same images"):].split("\n\n*")[0])


if __name__ == "__main__":
    main()
