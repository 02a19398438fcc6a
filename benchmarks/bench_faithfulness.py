"""What do RISE deletion/insertion AUC cost in epic_hf, next to their limit and to Quantus on the same images?

One run, the same model, images and EPIC map for every case:

* ``forward``: one ``model(pixel_values=pv)`` of the B images (no_grad);
* the limit of a curve of n steps is n such forwards (each step must run the model on B perturbed
  images): ``n x forward`` for deletion, ``2n x forward`` for deletion + insertion;
* ``epic_hf deletion``: :func:`epic_hf.evaluation.faithfulness.curves` (deletion only), the code
  ``evaluate(faithfulness=True)`` runs per method;
* ``epic_hf deletion + insertion``: the same for both curves;
* ``quantus PixelFlipping``: Quantus's deletion curve of the same map, black baseline; it checks
  ``features_in_step`` against H*W but replaces one colour value per feature, so ``H*W / n`` per step
  gives 3n steps (limit: 3n forwards); it perturbs and predicts one image at a time;
* ``grad-cam ROAD (MoRF, 9 percentiles)``: pytorch-grad-cam has no RISE deletion; its ROAD is a
  different metric (a noisy linear imputer instead of black pixels), timed for scale only.

Ratios are against ``forward`` measured in the same run. Cases run round-robin, the median is reported.

Run::

    python benchmarks/bench_faithfulness.py            # ResNet-18 shape, 16 x 112 px, 32 steps
    python benchmarks/bench_faithfulness.py --small    # tiny ResNet, 4 x 64 px, 8 steps: seconds
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_explain import time_round_robin  # noqa: E402 - one round-robin timer for every benchmark

logger = logging.getLogger("bench_faithfulness")


def build(small: bool, seed: int):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    from epic_hf import EpicExplainer
    from epic_hf.disentangle import Disentangler
    from epic_hf.synthetic import tiny_resnet

    if small:
        model, processor = tiny_resnet(4, (16, 32), seed=seed)
        size = 64
    else:
        torch.manual_seed(seed)
        config = ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                              layer_type="basic", num_labels=10)
        model = ResNetForImageClassification(config).eval()
        size = 112
        processor = ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0, do_center_crop=False)
    explainer = EpicExplainer(model, processor, matrix="invertible")
    generator = torch.Generator().manual_seed(seed)
    explainer.disentangler = Disentangler.frozen(0.01 * torch.randn(explainer.num_channels, explainer.num_channels,
                                                                    generator=generator), "invertible")
    return explainer, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny ResNet, 4 x 64 px, 8 steps (the test suite)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or (4 if args.small else 16)
    steps = args.steps or (8 if args.small else 32)
    repeats = args.repeats or (1 if args.small else 3)

    from epic_hf.evaluation.channels import EPIC, IDENTITY, ChannelView
    from epic_hf.evaluation.faithfulness import DELETION, Scorer, curves
    from epic_hf.evaluation.maps import EPIC_METHOD, MapMaker
    from epic_hf.synthetic import planted_dataset

    explainer, size = build(args.small, args.seed)
    classifier = explainer.classifier
    images = [im.convert("RGB") for im in planted_dataset(batch, num_classes=4, size=size, seed=args.seed)["image"]]
    pixel_values = classifier.preprocess(images)
    decomposer = explainer.decomposer
    maker = MapMaker(classifier, ChannelView(EPIC, decomposer.U.float(), decomposer.weight.double()),
                     ChannelView(IDENTITY, None, classifier.head().weight.double()), 4, args.seed)
    with torch.no_grad():
        targets = classifier.logits(pixel_values).argmax(dim=1)
    maps = maker.maps([EPIC_METHOD], list(range(batch)), pixel_values, targets)
    scorer = Scorer(classifier, batch)
    model = explainer.model.eval()

    def forward() -> None:
        with torch.no_grad():
            model(pixel_values=pixel_values)

    cases: dict[str, Callable[[], object]] = {
        "forward": forward,
        "epic_hf deletion": lambda: curves(scorer, pixel_values, targets, maps, steps, modes=(DELETION,)),
        "epic_hf deletion + insertion": lambda: curves(scorer, pixel_values, targets, maps, steps),
    }
    notes = []
    try:
        import quantus

        from epic_hf.evaluation.baselines import LogitsModule

        logits_model = LogitsModule(classifier).eval()
        channels, height, width = pixel_values.shape[1:]
        x_batch, y_batch = pixel_values.numpy(), targets.numpy()
        a_batch = maps[EPIC_METHOD][:, None].numpy()
        # Quantus checks features_in_step against H*W but flips colour values one at a time: 3n steps of H*W/n
        metric = quantus.PixelFlipping(features_in_step=height * width // steps, perturb_baseline="black",
                                       disable_warnings=True, normalise=False, abs=False)
        cases["quantus PixelFlipping"] = lambda: metric(model=logits_model, x_batch=x_batch, y_batch=y_batch,
                                                        a_batch=a_batch.copy(), device="cpu")
    except ImportError:
        notes.append('quantus is not installed (pip install "epic_hf[compare]"): its row is missing')
    try:
        from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        from epic_hf.evaluation.baselines import LogitsModule

        road_model = LogitsModule(classifier).eval()
        road = ROADMostRelevantFirstAverage()
        road_targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
        road_maps = maps[EPIC_METHOD].numpy()

        def run_road() -> None:
            with torch.no_grad():
                road(pixel_values, road_maps, road_targets, road_model)

        cases["grad-cam ROAD (MoRF, 9 percentiles)"] = run_road
    except ImportError:
        notes.append('pytorch-grad-cam is not installed (pip install "epic_hf[compare]"): its row is missing')
    times = time_round_robin(cases, warmup=1, repeats=repeats)
    median = {name: statistics.median(values) for name, values in times.items()}
    forward_time = median["forward"]
    limits = {"forward": 1, "epic_hf deletion": steps, "epic_hf deletion + insertion": 2 * steps,
              "quantus PixelFlipping": 3 * steps, "grad-cam ROAD (MoRF, 9 percentiles)": 9}
    print(f"\n## bench_faithfulness: RISE deletion/insertion cost, {type(model).__name__}, {batch} images of {size} px, n = {steps} "
          f"steps, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} CPUs\n")
    print("| case | seconds (median) | its limit (forwards of the batch) | ratio vs forward | ratio vs its limit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds in median.items():
        limit = limits.get(name, 1)
        print(f"| {name} | {seconds:.3f} | {limit} | {seconds / forward_time:.1f} | "
              f"{seconds / (limit * forward_time):.2f} |")
    if "quantus PixelFlipping" in median:
        print(f"\nquantus PixelFlipping / epic_hf deletion = {median['quantus PixelFlipping'] / median['epic_hf deletion']:.1f}x "
              "(the deletion curve of the same map, black baseline; Quantus's has 3n steps, so per forward "
              f"it is {median['quantus PixelFlipping'] / (3 * median['epic_hf deletion']):.1f}x)")
    print("goal: epic_hf deletion + insertion <= 1.5x its limit (2n forwards of the batch)")
    for note in notes:
        print(f"* {note}")


if __name__ == "__main__":
    main()
