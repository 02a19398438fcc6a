"""What does an EPIC fit cost at the feature widths real classifiers have (D = 1280, D = 2048)?

The other benchmarks use narrow models (D <= 256), where the backbone dominates. At real widths
every optimizer step computes a D x D matrix exponential and its gradient, O(D^3), and the
number of optimizer steps grows like D (``D * sum(N) * epochs / train_batch_size``), so the
training cost grows like D^4 while the index pass grows with the number of images only.

(a) real width, measured end to end: an EfficientNet-B0-shaped classifier (width and depth
    coefficients 1.0, D = 1280 from its top convolution; the size of EfficientNet-Lite0's
    feature map) on ``planted_dataset(300)`` at 224 px, ``explainer.fit`` with the schedule
    linear 20 -> 5 over 3 steps, 2 epochs per step, 512 pairs per optimizer step. Prints the
    index-pass time, the training time, the total, total / index pass, purity before and after,
    and the per-step purity curve. Goal stated in the issue: the whole fit in under 120 s on
    2 CPU cores, and purity rises.
(b) ResNet-50 shape (``ResNetConfig()``: bottleneck stages 3/4/6/3 of 256/512/1024/2048
    channels, D = 2048): the index pass per image, measured on a few images, and the seconds
    per optimizer step (``Trainer.train_step`` on 512 pairs), measured over a few steps at
    S = 0 (the very first step: the cheapest approximant) and at a generator ``S - S^T`` of
    1-norm ``--late-norm`` (default: the norm (a)'s fit ended at). Adam moves every entry of S
    by about the learning rate at every step, so the norm grows fast (to ~34 after (a)'s 226
    steps at D = 1280) and with it the approximant's degree and squarings: the late norm is the
    realistic cost, and still a lower bound for a longer fit (each doubling of the norm adds a
    squaring, about 3 more D x D products forward + backward). Next to each step, timed in the
    same interleaved rounds: the matrix exponential alone (forward + backward, dense upstream
    gradient) and the gather of the pairs' feature maps alone (``FeatureStore.maps``); the
    remainder of a step is the purity, its gradient and Adam. From these, the
    projected time of a fit on 10,000 images at the paper's full schedule (linear 100 -> 5 over
    10 steps, 2 epochs, 512 pairs per step): ``10,000 x (index s / image) + (optimizer steps) x
    (s / step)``, with ``optimizer steps = sum over steps of ceil(D * N / 512) x epochs``.

Weights are random (no download). Random HF initialisation leaves some BatchNorm scales near 0,
which silences a deep network (EfficientNet's feature map is exactly 0), so every BatchNorm is
reset to weight 1, bias 0 and its running statistics are set from the data with one no-grad pass
in train mode: the activations then have the scale of a trained model's. The classifier itself is
not trained (timings do not depend on it; purity does, a little).

Run::

    python benchmarks/bench_real_width.py            # both cases; several minutes on 2 busy cores
    python benchmarks/bench_real_width.py --small    # tiny models at 64 px: seconds (the test suite)
    python benchmarks/bench_real_width.py --skip-resnet50 / --skip-real-width
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epic_hf import EpicExplainer, FitConfig  # noqa: E402
from epic_hf.backbone import FrozenClassifier  # noqa: E402
from epic_hf.disentangle import Disentangler  # noqa: E402
from epic_hf.expm import choose_approximant  # noqa: E402
from epic_hf.fit.checkpoint import FitCheckpoint  # noqa: E402
from epic_hf.fit.distributed import make_accelerator  # noqa: E402
from epic_hf.fit.features import FeatureStore  # noqa: E402
from epic_hf.fit.index_pass import build_index  # noqa: E402
from epic_hf.data import open_source  # noqa: E402
from epic_hf.fit.schedules import schedule as make_schedule  # noqa: E402
from epic_hf.data import SkippedSamples  # noqa: E402
from epic_hf.fit.trainer import Trainer, optimizer_steps  # noqa: E402
from epic_hf.synthetic import CONCEPTS, planted_dataset  # noqa: E402

logger = logging.getLogger("bench_real_width")

FIT_GOAL_SECONDS = 120.0
PAPER = dict(schedule="linear", schedule_start=100, schedule_end=5, schedule_steps=10, epochs_per_step=2,
             train_batch_size=512)
PROJECTED_IMAGES = 10_000
_MB = 2**20


# -- models ------------------------------------------------------------------------------------
def _labels(num_classes: int) -> dict:
    names = list(CONCEPTS[:num_classes])
    return dict(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def efficientnet(num_classes: int, small: bool, seed: int):
    """(model, processor, description): EfficientNet-B0 shape (D = 1280), or a tiny one."""
    from transformers import ConvNextImageProcessor, EfficientNetConfig, EfficientNetForImageClassification

    torch.manual_seed(seed)
    if small:
        config = EfficientNetConfig(image_size=64, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128,
                                    **_labels(num_classes))
        size, name = 64, "tiny EfficientNet (width 0.1, depth 0.1, D=128, 64px)"
    else:
        config = EfficientNetConfig(image_size=224, width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280,
                                    dropout_rate=0.2, **_labels(num_classes))
        size, name = 224, "EfficientNet-B0 shape (width 1.0, depth 1.0, D=1280, 224px, 4.0M parameters)"
    processor = ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0)
    return EfficientNetForImageClassification(config), processor, name


def resnet50(num_classes: int, small: bool, seed: int):
    """(model, processor, description): ``ResNetConfig()`` = the ResNet-50 architecture, or a tiny bottleneck net."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    if small:
        config = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="bottleneck",
                              **_labels(num_classes))
        processor = ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=1.0)
        return ResNetForImageClassification(config), processor, "tiny bottleneck ResNet (D=64, 64px)"
    config = ResNetConfig(**_labels(num_classes))  # depths 3/4/6/3, widths 256/512/1024/2048: ResNet-50
    processor = ConvNextImageProcessor(size={"shortest_edge": 224})  # resize 256, center crop 224
    return ResNetForImageClassification(config), processor, "ResNetConfig() = ResNet-50 shape (D=2048, 224px)"


def calibrate_batchnorm(model: nn.Module, processor, images) -> None:
    """BatchNorm at weight 1, bias 0, running statistics from ``images`` (train-mode pass, no dropout)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()
            module.momentum = None  # a cumulative average over the calibration batch
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    pixel_values = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        model(pixel_values=pixel_values)
    model.eval()


def generator_norm(S: torch.Tensor) -> float:
    """1-norm of the orthogonal kind's generator ``S - S^T``: what sets the approximant's cost."""
    return float(torch.linalg.matrix_norm((S - S.T).double(), ord=1))


# -- (a) the real-width fit --------------------------------------------------------------------
@dataclass
class FitResult:
    model: str
    dim: int
    images: int
    report: object
    plan: list[int]
    optimizer_steps: int
    final_norm: float
    grid: tuple[int, int]
    trivialization: str = "dynamic"


def real_width_fit(args, trivialization: str = "dynamic") -> FitResult:
    dataset = planted_dataset(args.images, num_classes=3, size=args.image_size, seed=args.seed)
    model, processor, name = efficientnet(3, args.small, args.seed)
    calibrate_batchnorm(model, processor, dataset.select(range(args.calibration_images))["image"])
    explainer = EpicExplainer(model, processor)
    config = FitConfig(schedule="linear", schedule_start=args.schedule_start, schedule_end=args.schedule_end,
                       schedule_steps=args.schedule_steps, epochs_per_step=args.epochs_per_step,
                       train_batch_size=args.train_batch_size, batch_size=args.batch_size, seed=args.seed,
                       trivialization=trivialization)
    plan = make_schedule(config.schedule, config.schedule_start, config.schedule_end, config.schedule_steps)
    logger.info("(a) %s: fitting on %d images, plan %s, trivialization %s", name, args.images, plan, trivialization)
    report = explainer.fit(dataset, config)
    steps = optimizer_steps(plan, report.num_samples, explainer.num_channels, config.epochs_per_step,
                            config.train_batch_size)
    return FitResult(name, explainer.num_channels, args.images, report, plan, steps,
                     generator_norm(explainer.disentangler.S.detach()), explainer.bank.grid_size, trivialization)


# -- (b) seconds per optimizer step ------------------------------------------------------------
@dataclass
class StepProfile:
    model: str
    dim: int
    grid: tuple[int, int]
    index_seconds_per_image: float
    rows: list[dict]  # one per generator norm: norm, degree, squarings, step, expm, maps seconds


def _set_generator_norm(disentangler: Disentangler, norm: float, seed: int) -> None:
    """S such that ``S - S^T`` has 1-norm ``norm`` (0: S = 0, U = I)."""
    with torch.no_grad():
        if norm == 0:
            disentangler.S.zero_()
            return
        S = torch.randn(disentangler.dim, disentangler.dim, generator=torch.Generator().manual_seed(seed))
        disentangler.S.copy_(S * (norm / generator_norm(S)))


def _interleaved_medians(cases: dict, repeats: int, setup) -> dict[str, float]:
    """Median seconds of each case after one warm-up round; rounds interleave the cases so that
    load from other jobs hits them alike; ``setup()`` runs untimed before every call."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats + 1):
        for name, fn in cases.items():
            setup()
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def step_profile(args, norms: list[float]) -> StepProfile:
    """Index pass per image and seconds per ``Trainer.train_step`` of the ResNet-50-shaped model.

    Each timed step starts from S set to the given generator norm: an Adam step moves every entry
    of S by about the learning rate, so without the reset the norm (and the cost) would creep up.
    """
    model, processor, name = resnet50(3, args.small, args.seed)
    dataset = planted_dataset(args.step_images, num_classes=3, size=args.image_size, seed=args.seed)
    calibrate_batchnorm(model, processor, dataset.select(range(args.calibration_images))["image"])
    classifier = FrozenClassifier(model, processor)
    config = FitConfig(train_batch_size=args.train_batch_size, batch_size=args.batch_size, trivialization="none")
    accelerator = make_accelerator(None)
    store = FeatureStore(classifier, open_source(dataset, config.data), 2**62, config.batch_size, accelerator.autocast)
    started = time.perf_counter()
    index = build_index(classifier, store.source, accelerator, config.batch_size, 4096 * _MB, None,
                        SkippedSamples(), keep_maps=store.offer)
    per_image = (time.perf_counter() - started) / len(index)
    disentangler = Disentangler(classifier.num_channels)
    trainer = Trainer(disentangler, index, store, config, accelerator, FitCheckpoint(None, {}))
    generator = torch.Generator().manual_seed(args.seed)
    batch = config.train_batch_size
    keys = index.keys[torch.randint(0, len(index), (batch,), generator=generator)]
    channels = torch.randint(0, disentangler.dim, (batch,), generator=generator)
    upstream = torch.randn(disentangler.dim, disentangler.dim, generator=generator)

    def expm_forward_backward() -> None:
        disentangler.S.grad = None
        (disentangler.matrix() * upstream).sum().backward()

    rows = []
    for norm in norms:
        def reset(norm: float = norm) -> None:
            _set_generator_norm(disentangler, norm, args.seed)

        reset()
        actual = generator_norm(disentangler.S.detach())
        degree, squarings = choose_approximant(actual, torch.float32)
        row = _interleaved_medians({"step": lambda: trainer.train_step(keys, channels, batch),
                                    "expm": expm_forward_backward,
                                    "maps": lambda: store.maps(keys.tolist())}, args.step_repeats, reset)
        rows.append(dict(norm=actual, degree=degree, squarings=squarings, how="paper: Adam on S", **row))
        logger.info("(b) generator norm %.3g: %.3f s/step (alone: expm fwd+bwd %.3f s, map gather %.3f s)", actual,
                    row["step"], row["expm"], row["maps"])
    dynamic = Trainer(Disentangler(classifier.num_channels), index, store, config.replace(trivialization="dynamic"),
                      accelerator, FitCheckpoint(None, {}))
    row = _interleaved_medians({"step": lambda: dynamic.train_step(keys, channels, batch),
                                "maps": lambda: store.maps(keys.tolist())}, args.step_repeats, lambda: None)
    rows.append(dict(norm=0.0, degree="-", squarings="-", expm=None, how="dynamic trivialization", **row))
    logger.info("(b) dynamic trivialization: %.3f s/step", row["step"])
    return StepProfile(name, disentangler.dim, index.grid_size, per_image, rows)


def _cell(seconds: float | None) -> str:
    """Seconds for a table, or "-" where the case has no such part (no matrix exponential)."""
    return "-" if seconds is None else f"{seconds:.4f}"


def paper_steps(dim: int) -> int:
    plan = make_schedule(PAPER["schedule"], PAPER["schedule_start"], PAPER["schedule_end"], PAPER["schedule_steps"])
    return optimizer_steps(plan, PROJECTED_IMAGES, dim, PAPER["epochs_per_step"], PAPER["train_batch_size"])


def projection_cells(dim: int, grid: tuple[int, int], per_image: float, per_step: float) -> list[str]:
    steps = paper_steps(dim)
    index_s, train_s = PROJECTED_IMAGES * per_image, steps * per_step
    cache_gb = PROJECTED_IMAGES * dim * grid[0] * grid[1] * 4 / 1e9
    return [f"{steps}", f"{index_s:.0f}", f"{train_s:.0f}", f"{(index_s + train_s) / 3600:.2f} h",
            f"{cache_gb:.2f} GB"]


# -- the tables --------------------------------------------------------------------------------
def print_fit(result: FitResult, args) -> None:
    report = result.report
    train = sum(step.seconds for step in report.steps)
    other = report.total_seconds - report.index_seconds - train
    print(f"### (a) real width: {result.model}, trivialization {result.trivialization!r}")
    print()
    print(f"data: planted_dataset({result.images}, 3 classes, {args.image_size}px); schedule linear "
          f"{args.schedule_start} -> {args.schedule_end} over {args.schedule_steps} steps {result.plan}, "
          f"{args.epochs_per_step} epochs/step, {args.train_batch_size} pairs per optimizer step "
          f"({result.optimizer_steps} optimizer steps); backbone batch {args.batch_size}; backbone ran on "
          f"{report.backbone_images} images for {report.num_samples} samples")
    print()
    print("| D | index pass s | training s | other s | total s | total / index pass | purity before | "
          "purity after | s / optimizer step | generator 1-norm at the end |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {result.dim} | {report.index_seconds:.1f} | {train:.1f} | {other:.1f} | {report.total_seconds:.1f} | "
          f"{report.total_seconds / report.index_seconds:.2f}x | {report.purity_before:.4f} | "
          f"{report.purity_after:.4f} | {train / max(result.optimizer_steps, 1):.3f} | {result.final_norm:.3g} |")
    print()
    met_time = report.total_seconds < FIT_GOAL_SECONDS
    rose = report.purity_after > report.purity_before
    print(f"goal: whole fit < {FIT_GOAL_SECONDS:.0f} s on 2 CPU cores: {report.total_seconds:.1f} s "
          f"({'met' if met_time else 'NOT met'}); purity rises: {report.purity_before:.4f} -> "
          f"{report.purity_after:.4f} ({'met' if rose else 'NOT met'})")
    print()
    print("| step | N | pairs | optimizer steps | seconds | purity of the mined prototypes before | after training |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for number, step in enumerate(report.steps, 1):
        count = min(step.prototypes, report.num_samples)
        opt = optimizer_steps([count], report.num_samples, result.dim, args.epochs_per_step, args.train_batch_size)
        print(f"| {number} | {step.prototypes} | {result.dim * count} | {opt} | {step.seconds:.1f} | "
              f"{step.purity_before:.4f} | {step.purity_after:.4f} |")
    print()


def print_profile(profile: StepProfile | None, fit: FitResult | None, args) -> None:
    print("### (b) seconds per optimizer step, and a fit of 10,000 images at the paper's schedule projected")
    print()
    print(f"paper schedule: linear 100 -> 5 over 10 steps, 2 epochs/step, {PAPER['train_batch_size']} pairs per "
          f"optimizer step; projection = {PROJECTED_IMAGES:,} x (index s / image) + optimizer steps x (s / step); "
          "feature cache = the memory that keeps every map (beyond `feature_cache_mb`, default 2048 MB, "
          "uncached prototype maps are recomputed by the backbone whenever a minibatch needs them)")
    print()
    print("| model | D | how | generator 1-norm | Padé m, s | index s / image | s / step | expm fwd+bwd alone | "
          "map gather alone | optimizer steps (paper) | index s (10k) | training s | projected total | "
          "feature cache |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    if fit is not None:
        report = fit.report
        per_step = sum(s.seconds for s in report.steps) / max(fit.optimizer_steps, 1)
        per_image = report.index_seconds / report.num_samples
        cells = projection_cells(fit.dim, fit.grid, per_image, per_step)
        print(f"| {fit.model} | {fit.dim} | (a)'s fit: training s / optimizer steps | 0 -> {fit.final_norm:.3g} | - | "
              f"{per_image:.4f} | {per_step:.4f} | - | - | " + " | ".join(cells) + " |")
    if profile is not None:
        for row in profile.rows:
            cells = projection_cells(profile.dim, profile.grid, profile.index_seconds_per_image, row["step"])
            print(f"| {profile.model} | {profile.dim} | {row['how']}: `train_step`, median of {args.step_repeats} | "
                  f"{row['norm']:.3g} | {row['degree']}, {row['squarings']} | "
                  f"{profile.index_seconds_per_image:.4f} | {row['step']:.4f} | {_cell(row['expm'])} | "
                  f"{row['maps']:.4f} | " + " | ".join(cells) + " |")
    print()


def print_comparison(fit: FitResult, paper: FitResult) -> None:
    """The default (dynamic trivialization) against the paper's Adam on S, same data, same settings."""
    ours, theirs = fit.report, paper.report
    train_ours = sum(step.seconds for step in ours.steps)
    train_theirs = sum(step.seconds for step in theirs.steps)
    print("### (a) dynamic trivialization against the paper's Adam on S (same data, same settings)")
    print()
    print("| trivialization | training s | total s | purity after | per-step purity after training |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, report, train in (("dynamic (default)", ours, train_ours), ("none (paper)", theirs, train_theirs)):
        curve = ", ".join(f"{step.purity_after:.4f}" for step in report.steps)
        print(f"| {name} | {train:.1f} | {report.total_seconds:.1f} | {report.purity_after:.4f} | {curve} |")
    print()
    print(f"training {train_theirs / max(train_ours, 1e-9):.2f}x faster, whole fit "
          f"{theirs.total_seconds / max(ours.total_seconds, 1e-9):.2f}x; purity after "
          f"{ours.purity_after - theirs.purity_after:+.4f} against the paper's path")
    print()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny models, 24 images at 64px: seconds")
    parser.add_argument("--images", type=int, default=300, help="(a): generated images")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--schedule-start", type=int, default=20)
    parser.add_argument("--schedule-end", type=int, default=FitConfig().schedule_end)
    parser.add_argument("--schedule-steps", type=int, default=3)
    parser.add_argument("--epochs-per-step", type=int, default=FitConfig().epochs_per_step)
    parser.add_argument("--train-batch-size", type=int, default=FitConfig().train_batch_size,
                        help="pairs per optimizer step")
    parser.add_argument("--batch-size", type=int, default=64, help="images per backbone batch")
    parser.add_argument("--calibration-images", type=int, default=16, help="images that set the BatchNorm statistics")
    parser.add_argument("--step-images", type=int, default=32, help="(b): images indexed (index s / image)")
    parser.add_argument("--step-repeats", type=int, default=3, help="(b): timed optimizer steps per norm")
    parser.add_argument("--late-norm", type=float, default=None,
                        help="(b): 1-norm of S - S^T for the later-in-the-fit measurement (default: the norm "
                             "(a)'s fit ended at, or 30 without (a))")
    parser.add_argument("--skip-real-width", action="store_true")
    parser.add_argument("--no-paper-baseline", action="store_true",
                        help="(a): skip the second fit with the paper's Adam on S (trivialization 'none')")
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 with --small)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.small:
        args.images, args.image_size, args.schedule_start, args.schedule_end = 24, 64, 4, 2
        args.schedule_steps, args.epochs_per_step, args.train_batch_size = 2, 1, 64
        args.batch_size, args.calibration_images, args.step_images, args.step_repeats = 16, 8, 8, 1
        args.threads = args.threads or 1  # tiny ops: OpenMP threads on shared cores cost more than they give
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("accelerate", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    fit = None if args.skip_real_width else real_width_fit(args)
    paper = None if args.skip_real_width or args.no_paper_baseline else real_width_fit(args, "none")
    # the paper's path ends at a large generator norm (the dynamic fit keeps S at zero): time that too
    late_norm = args.late_norm or next((r.final_norm for r in (paper, fit) if r is not None and r.final_norm), 30.0)
    profile = None if args.skip_resnet50 else step_profile(args, [0.0, late_norm])
    print()
    print(f"## bench_real_width: {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPU cores, load average {load_before:.1f} at the "
          f"start, {os.getloadavg()[0]:.1f} at the end")
    print()
    if fit is not None:
        print_fit(fit, args)
    if paper is not None:
        print_fit(paper, args)
        print_comparison(fit, paper)
    print_profile(profile, fit, args)
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
