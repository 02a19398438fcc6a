"""How fast is an EPIC fit next to the backbone alone and next to the reference algorithm?

Goals (from the issue):

* the EPIC index pass (``epic_hf.fit.index_pass.build_index``: decode, preprocess, backbone,
  pooled vectors, predictions, and the feature maps offered to the fit's ``FeatureStore``) runs
  at >= 0.9x the images/s of a plain forward loop over the same data;
* ``explainer.fit(...)`` at the default schedule (linear 100 -> 5 over 10 steps, 2 epochs per
  step) is >= 10x faster than the reference-style fit.

One run, one model, one dataset (``epic_hf.synthetic.planted_dataset``), measures:

(a) a plain forward loop over the dataset: decode + image processor + ``model(...).logits``,
    batch ``--batch-size``;
(b) the EPIC index pass (``build_index`` feeding a ``FeatureStore``, as the fit runs it) on the
    same data; and the ``index_seconds`` of (c);
(c) ``explainer.fit(dataset)`` at the default schedule, total wall time (``train_batch_size``
    512, the library's and the paper's default);
(d) a reference-style fit built here from the library's pieces, as the reference implementation
    does the work: at each schedule step the backbone re-runs over ALL the data to mine the
    top-N per channel (score = sum over cells of ``U F``); then, for each epoch, every minibatch
    of (prototype image, channel) pairs re-runs the backbone on the pairs' images and
    transforms the WHOLE maps (``transform`` + ``purity_of_maps``). Same optimizer (Adam on S,
    lr, weight decay), same minibatch size, same schedule, same pair order. Purity before and
    after are computed the same way (backbone pass to mine the top-5, backbone on the pairs).

If (d) is too slow in full, ``--ref-steps`` runs only the first k schedule steps and
``--ref-max-batches`` only the first m minibatches of each epoch; the rest is extrapolated
linearly (per mining pass, per minibatch) and the table says so.

Run (wall times measured on 2 CPU cores shared with other jobs, ``--threads 1``; see
benchmarks/README.md)::

    python benchmarks/bench_fit.py          # ResNet-18 shape at half width, 512 images at 112px: 119 s
    python benchmarks/bench_fit.py --small  # tiny ResNet, 96 images at 64px, reference in full: 5-16 s
    python benchmarks/bench_fit.py --model tiny --image-size 64 --ref-steps 0 --ref-max-batches 0  # 34 s
    python benchmarks/bench_fit.py --model resnet18 --image-size 64   # full-width ResNet-18 (D=512): slower
    python benchmarks/bench_fit.py --model vit-base --image-size 224 --num-images 64 --batch-size 16 --skip-reference

Timings swing by 2x with the load other jobs put on the cores (the default run took 228 s once,
beside a heavier job). The third line was documented as "~30 s" by an earlier release and took
189 s in a later run with torch's default 2 threads: on loaded cores, 2 OpenMP threads made small
tensor ops 10-80x slower than 1 thread in our measurements, the likely cause; ``--threads 1`` avoids it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epic_hf import EpicExplainer, FitConfig  # noqa: E402
from epic_hf.disentangle import Disentangler, purity_of_maps, transform  # noqa: E402
from epic_hf.fit.distributed import make_accelerator  # noqa: E402
from epic_hf.fit.features import FeatureStore  # noqa: E402
from epic_hf.fit.index_pass import build_index  # noqa: E402
from epic_hf.fit.schedules import schedule as make_schedule  # noqa: E402
from epic_hf.data import SkippedSamples, resolve_dataset  # noqa: E402
from epic_hf.synthetic import CONCEPTS, planted_dataset, tiny_resnet, train_classifier  # noqa: E402

logger = logging.getLogger("bench_fit")

INDEX_GOAL = 0.9
SPEEDUP_GOAL = 10.0
#: The paper's settings, as FitConfig holds them (the one place they are written).
PAPER = FitConfig()

RESNETS = {
    "resnet18": dict(embedding_size=64, hidden_sizes=[64, 128, 256, 512]),
    "resnet18-half": dict(embedding_size=32, hidden_sizes=[32, 64, 128, 256]),
}


def build_model(name: str, num_classes: int, image_size: int, seed: int):
    """(model, processor, description)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification, ConvNextImageProcessor, ResNetConfig
    from transformers import ResNetForImageClassification

    names = list(CONCEPTS[:num_classes])
    labels = dict(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0)
    if name == "tiny":
        model, _ = tiny_resnet(num_classes, (16, 32), seed=seed)
        return model, processor, "tiny_resnet (hidden 16/32, D=32)"
    if name in RESNETS:
        torch.manual_seed(seed)
        config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], **RESNETS[name], **labels)
        widths = "/".join(str(w) for w in RESNETS[name]["hidden_sizes"])
        return (ResNetForImageClassification(config), processor,
                f"ResNet-18 shape ({widths}, D={RESNETS[name]['hidden_sizes'][-1]})")
    if name == "vit-base":  # google/vit-base-patch16-224's architecture: a CLS-token model, split per image
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        torch.manual_seed(seed)
        vit = ViTConfig(image_size=image_size, **labels)
        return (ViTForImageClassification(vit), ViTImageProcessor(size={"height": image_size, "width": image_size}),
                f"ViTConfig() = ViT-B/16 shape (random weights, D=768, {image_size}px, held linearisation)")
    model = AutoModelForImageClassification.from_pretrained(name, num_labels=num_classes, ignore_mismatched_sizes=True,
                                                            **labels)
    return model, AutoImageProcessor.from_pretrained(name), name


# -- (a) plain forward loop -------------------------------------------------------------------
def plain_forward_loop(model, processor, dataset, batch_size: int) -> float:
    """Seconds for decode + processor + model forward over every image of ``dataset``."""
    started = time.perf_counter()
    with torch.no_grad():
        for batch in dataset.iter(batch_size=batch_size):
            pixel_values = processor(images=[image.convert("RGB") for image in batch["image"]],
                                     return_tensors="pt")["pixel_values"]
            model(pixel_values=pixel_values).logits
    return time.perf_counter() - started


def index_pass(explainer: EpicExplainer, dataset, batch_size: int) -> float:
    """Seconds of the fit's index pass: ``build_index`` offering every batch's maps to a ``FeatureStore``."""
    config = FitConfig()
    source = resolve_dataset(dataset)
    accelerator = make_accelerator(None)
    store = FeatureStore(explainer.classifier, source, int(config.feature_cache_mb * 2**20), batch_size,
                         accelerator.autocast)
    started = time.perf_counter()
    build_index(explainer.classifier, source, accelerator, batch_size, int(config.index_memory_mb * 2**20), None,
                SkippedSamples(), keep_maps=store.offer)
    return time.perf_counter() - started


# -- (d) the reference-style fit ---------------------------------------------------------------
@dataclass
class ReferenceStep:
    count: int
    pairs: int
    batches_per_epoch: int
    mine_seconds: float
    epochs: int
    batch_seconds: list[float] = field(default_factory=list)
    batches_run: int = 0
    purity: float = float("nan")

    @property
    def complete(self) -> bool:
        return self.batches_run == self.batches_per_epoch * self.epochs


@dataclass
class ReferenceResult:
    purity_before: float
    purity_before_seconds: float
    steps: list[ReferenceStep]
    purity_after: float = float("nan")
    final_seconds: float = float("nan")


class ReferenceFit:
    """The reference algorithm's work pattern: the backbone runs on every pair, every epoch."""

    def __init__(self, explainer: EpicExplainer, dataset, batch_size: int, train_batch_size: int) -> None:
        self.explainer = explainer
        self.source = resolve_dataset(dataset)
        self.batch_size = batch_size
        self.train_batch_size = train_batch_size
        self.dim = explainer.num_channels

    def backbone(self, images) -> torch.Tensor:
        return self.explainer.classifier.feature_map(self.explainer.preprocess(images))

    def mine(self, U: torch.Tensor, count: int) -> torch.Tensor:
        """(D, count) sample keys: a full backbone pass, scores = sum over cells of U F."""
        scores, keys = [], []
        with torch.no_grad():
            for batch_keys, images, _ in self.source.batches(self.batch_size, SkippedSamples()):
                scores.append(transform(self.backbone(images), U).sum(dim=(2, 3)))
                keys.extend(batch_keys)
        scores_t = torch.cat(scores).T  # (D, n)
        count = min(count, scores_t.shape[1])
        order = torch.sort(scores_t, dim=1, descending=True, stable=True).indices[:, :count]
        return torch.tensor(keys)[order]

    def pair_maps(self, keys: torch.Tensor) -> torch.Tensor:
        """The backbone re-run on each pair's image (duplicates included, as a per-pair loader does)."""
        images = self.source.fetch(keys.tolist())
        return self.backbone([images[int(k)] for k in keys])

    def purity(self, prototype_keys: torch.Tensor, U: torch.Tensor) -> float:
        keys = prototype_keys.reshape(-1)
        channels = torch.arange(self.dim).repeat_interleave(prototype_keys.shape[1])
        values = []
        with torch.no_grad():
            for start in range(0, keys.numel(), self.train_batch_size):
                part = slice(start, start + self.train_batch_size)
                values.append(purity_of_maps(transform(self.pair_maps(keys[part]), U), channels[part]))
        return float(torch.cat(values).mean())

    def run(self, plan: list[int], epochs: int, lr: float, weight_decay: float, seed: int, kind: str,
            prototypes: int, max_steps: int, max_batches: int) -> ReferenceResult:
        disentangler = Disentangler(self.dim, kind)  # type: ignore[arg-type]
        optimizer = torch.optim.Adam(disentangler.parameters(), lr=lr, weight_decay=weight_decay)
        identity = torch.eye(self.dim)
        started = time.perf_counter()
        purity_before = self.purity(self.mine(identity, prototypes), identity)
        result = ReferenceResult(purity_before, time.perf_counter() - started, [])
        logger.info("reference: purity before %.4f (%.1f s)", purity_before, result.purity_before_seconds)
        for step, count in enumerate(plan[:max_steps]):
            mine_started = time.perf_counter()
            with torch.no_grad():
                keys = self.mine(disentangler.matrix().detach(), count)
            pair_keys = keys.reshape(-1)
            pair_channels = torch.arange(self.dim).repeat_interleave(keys.shape[1])
            record = ReferenceStep(count=keys.shape[1], pairs=pair_keys.numel(),
                                   batches_per_epoch=math.ceil(pair_keys.numel() / self.train_batch_size),
                                   mine_seconds=time.perf_counter() - mine_started, epochs=epochs)
            sums, seen = 0.0, 0
            for epoch in range(epochs):
                generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + epoch)
                order = torch.randperm(pair_keys.numel(), generator=generator)
                sums, seen = 0.0, 0
                for number, start in enumerate(range(0, order.numel(), self.train_batch_size)):
                    if max_batches and number >= max_batches:
                        break
                    batch_started = time.perf_counter()
                    batch = order[start: start + self.train_batch_size]
                    fmaps = self.pair_maps(pair_keys[batch])
                    optimizer.zero_grad(set_to_none=False)
                    U = disentangler.matrix()
                    purity = purity_of_maps(transform(fmaps, U), pair_channels[batch])
                    (-purity.mean()).backward()
                    optimizer.step()
                    sums += float(purity.detach().sum())
                    seen += batch.numel()
                    record.batch_seconds.append(time.perf_counter() - batch_started)
                    record.batches_run += 1
            record.purity = sums / max(seen, 1)
            result.steps.append(record)
            logger.info("reference step %d/%d: N=%d, %d pairs, mining %.1f s, %d/%d minibatches at %.3f s, "
                        "training purity %.4f", step + 1, len(plan), record.count, record.pairs, record.mine_seconds,
                        record.batches_run, record.batches_per_epoch * epochs,
                        statistics.mean(record.batch_seconds) if record.batch_seconds else 0.0, record.purity)
        if len(result.steps) == len(plan) and all(s.complete for s in result.steps):
            final_started = time.perf_counter()
            with torch.no_grad():
                U = disentangler.matrix().detach()
            result.purity_after = self.purity(self.mine(U, prototypes), U)
            result.final_seconds = time.perf_counter() - final_started
            logger.info("reference: purity after %.4f", result.purity_after)
        return result


def reference_step_seconds(result: ReferenceResult, plan: list[int], dim: int, num_images: int,
                           train_batch_size: int, epochs: int) -> list[tuple[float, str]]:
    """Per schedule step: (seconds, 'measured' | 'extrapolated'); unmeasured work scaled linearly."""
    all_batches = [t for s in result.steps for t in s.batch_seconds]
    per_batch = statistics.mean(all_batches) if all_batches else float("nan")
    per_mine = statistics.mean(s.mine_seconds for s in result.steps) if result.steps else float("nan")
    out = []
    for step, count in enumerate(plan):
        batches = math.ceil(dim * min(count, num_images) / train_batch_size) * epochs
        if step < len(result.steps):
            record = result.steps[step]
            if record.complete:
                out.append((record.mine_seconds + sum(record.batch_seconds), "measured"))
            else:
                step_batch = statistics.mean(record.batch_seconds)
                out.append((record.mine_seconds + batches * step_batch,
                            f"extrapolated ({record.batches_run}/{batches} minibatches run)"))
        else:
            out.append((per_mine + batches * per_batch, "extrapolated"))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="tiny ResNet, 96 images at 64px, short schedule, reference in full, 1 thread: seconds")
    parser.add_argument("--model", default="resnet18-half",
                        help="tiny | resnet18 | resnet18-half (random init, trained briefly here), or a local "
                             "dir / Hub id")
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=112, help="side of the generated images and model input")
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=2,
                        help="train the classifier on the data first so that channels mean something (0: skip)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per backbone batch")
    parser.add_argument("--train-batch-size", type=int, default=PAPER.train_batch_size,
                        help="(image, channel) pairs per optimizer step, for (c) and (d) alike "
                             "(default: the library's)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of (a) and (b), median reported")
    parser.add_argument("--schedule-start", type=int, default=PAPER.schedule_start)
    parser.add_argument("--schedule-end", type=int, default=PAPER.schedule_end)
    parser.add_argument("--schedule-steps", type=int, default=PAPER.schedule_steps)
    parser.add_argument("--epochs-per-step", type=int, default=PAPER.epochs_per_step)
    parser.add_argument("--lr", type=float, default=PAPER.lr)
    parser.add_argument("--weight-decay", type=float, default=PAPER.weight_decay)
    parser.add_argument("--matrix", default="orthogonal", choices=["orthogonal", "invertible"])
    parser.add_argument("--ref-steps", type=int, default=2,
                        help="schedule steps of the reference fit to run (0: all); the rest is extrapolated")
    parser.add_argument("--ref-max-batches", type=int, default=5,
                        help="minibatches per epoch of the reference fit to run (0: all); the rest is extrapolated")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 with --small)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.small:
        args.model, args.num_images, args.image_size, args.train_epochs, args.repeats = "tiny", 96, 64, 1, 1
        args.batch_size, args.schedule_start, args.schedule_end, args.schedule_steps = 32, 10, 5, 2
        args.ref_steps, args.ref_max_batches = 0, 0
        args.threads = args.threads or 1  # tiny ops: OpenMP threads on shared cores cost more than they give
    return args


def measure_backbone(explainer: EpicExplainer, dataset, args) -> tuple[float, float]:
    """Median seconds of (a) the plain forward loop and (b) the index pass, interleaved."""
    plain, indexed = [], []
    warm = dataset.select(range(min(args.batch_size, len(dataset))))
    index_pass(explainer, warm, args.batch_size)
    plain_forward_loop(explainer.model, explainer.image_processor, warm, args.batch_size)
    for repeat in range(args.repeats):
        plain.append(plain_forward_loop(explainer.model, explainer.image_processor, dataset, args.batch_size))
        indexed.append(index_pass(explainer, dataset, args.batch_size))
        logger.info("repeat %d/%d: plain forward loop %.2f s, index pass %.2f s", repeat + 1, args.repeats,
                    plain[-1], indexed[-1])
    return statistics.median(plain), statistics.median(indexed)


def library_fit(model, processor, dataset, args) -> tuple[object, float]:
    """(FitReport, wall seconds) of ``explainer.fit`` at the benchmark's settings."""
    explainer = EpicExplainer(model, processor, matrix=args.matrix)
    settings = dict(schedule_start=args.schedule_start, schedule_end=args.schedule_end,
                    schedule_steps=args.schedule_steps, epochs_per_step=args.epochs_per_step,
                    batch_size=args.batch_size, train_batch_size=args.train_batch_size, lr=args.lr,
                    weight_decay=args.weight_decay, seed=args.seed)
    logger.info("library fit: %s", settings)
    started = time.perf_counter()
    report = explainer.fit(dataset, **settings)
    seconds = time.perf_counter() - started
    logger.info("library fit: %.1f s, purity %.4f -> %.4f", seconds, report.purity_before, report.purity_after)
    return report, seconds


def print_backbone_table(plain_s: float, index_s: float, report, args) -> None:
    n = args.num_images
    print("### backbone pass")
    print()
    print("| case | seconds (median) | images/s | ratio vs (a) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| (a) plain forward loop (decode + processor + model) | {plain_s:.2f} | {n / plain_s:.1f} | 1.000 |")
    print(f"| (b) EPIC index pass (`build_index` + `FeatureStore.offer`) | {index_s:.2f} | {n / index_s:.1f} | "
          f"{plain_s / index_s:.3f} |")
    print(f"| (b') `FitReport.index_seconds` of (c) | {report.index_seconds:.2f} | {n / report.index_seconds:.1f} | "
          f"{plain_s / report.index_seconds:.3f} |")
    ratio = plain_s / index_s
    print()
    print(f"goal (b)/(a) >= {INDEX_GOAL}: {ratio:.3f} ({'met' if ratio >= INDEX_GOAL else 'NOT met'}); "
          f"medians of {args.repeats} interleaved repeats")
    print()


def print_step_table(report, reference, plan: list[int], dim: int, args) -> list | None:
    n = args.num_images
    ref_steps = None
    if reference is not None:
        ref_steps = reference_step_seconds(reference, plan, dim, n, args.train_batch_size, args.epochs_per_step)
    print("| step | N | pairs | (c) library s | (d) reference s | (d) how | (c) purity before -> after training | "
          "(d) train purity |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for step, count in enumerate(plan):
        lib = report.steps[step] if step < len(report.steps) else None
        ref_s, how, ref_purity = float("nan"), "-", ""
        if ref_steps is not None:
            ref_s, how = ref_steps[step]
            if step < len(reference.steps):
                ref_purity = f"{reference.steps[step].purity:.4f}"
                if not reference.steps[step].complete:
                    ref_purity += " (partial)"
        lib_cells = f"{lib.seconds:.2f} | {ref_s:.2f} | {how} | {lib.purity_before:.4f} -> {lib.purity_after:.4f}"
        print(f"| {step + 1} | {min(count, n)} | {dim * min(count, n)} | {lib_cells} | {ref_purity or '-'} |")
    print()
    return ref_steps


def print_fit_tables(report, fit_s: float, reference, plan: list[int], dim: int, args) -> None:
    print("### fit")
    print()
    ref_steps = print_step_table(report, reference, plan, dim, args)
    print("| case | seconds | purity before | purity after | notes |")
    print("| --- | ---: | ---: | ---: | --- |")
    schedule_s = sum(step.seconds for step in report.steps)
    other = fit_s - report.index_seconds - schedule_s
    print(f"| (c) `explainer.fit` | {fit_s:.1f} | {report.purity_before:.4f} | {report.purity_after:.4f} | "
          f"index {report.index_seconds:.1f} s + schedule {schedule_s:.1f} s + purity/bank/other {other:.1f} s; "
          f"backbone ran on {report.backbone_images} images |")
    if reference is None or ref_steps is None:
        return
    measured_all = all(how == "measured" for _, how in ref_steps) and not math.isnan(reference.final_seconds)
    final_s = reference.final_seconds if not math.isnan(reference.final_seconds) else reference.purity_before_seconds
    total = reference.purity_before_seconds + sum(s for s, _ in ref_steps) + final_s
    runs = "measured in full" if measured_all else (
        f"EXTRAPOLATED: ran {len(reference.steps)} of {len(plan)} steps"
        + (f", at most {args.ref_max_batches} minibatches per epoch" if args.ref_max_batches else "")
        + "; unmeasured mining passes and minibatches scaled linearly, final bank pass taken equal to the "
          "purity-before pass")
    after = f"{reference.purity_after:.4f}" if not math.isnan(reference.purity_after) else "n/a (partial run)"
    print(f"| (d) reference-style fit | {total:.1f} | {reference.purity_before:.4f} | {after} | {runs} |")
    speedup = total / fit_s
    print()
    print(f"speedup (d)/(c) = {speedup:.1f}x (goal >= {SPEEDUP_GOAL:.0f}x: "
          f"{'met' if speedup >= SPEEDUP_GOAL else 'NOT met'})"
          + ("" if measured_all else "; (d) partly extrapolated, see above"))
    print()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("epic_hf", "accelerate", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("epic_hf.fit.trainer").setLevel(logging.INFO)
    logging.getLogger("epic_hf.fit.estimate").setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    wall_started, load_before = time.perf_counter(), os.getloadavg()[0]

    logger.info("generating %d planted images at %dpx", args.num_images, args.image_size)
    dataset = planted_dataset(args.num_images, num_classes=args.num_classes, size=args.image_size, seed=args.seed)
    model, processor, model_name = build_model(args.model, args.num_classes, args.image_size, args.seed)
    if args.train_epochs:
        accuracy = train_classifier(model, processor, dataset, epochs=args.train_epochs, seed=args.seed)
        model_name += f", trained {args.train_epochs} epochs here (train acc {accuracy:.2f})"
    model.eval()
    explainer = EpicExplainer(model, processor, matrix=args.matrix)
    logger.info("model: %s", model_name)
    plain_s, index_s = measure_backbone(explainer, dataset, args)
    report, fit_s = library_fit(model, processor, dataset, args)
    plan = make_schedule("linear", args.schedule_start, args.schedule_end, args.schedule_steps)
    reference = None
    if not args.skip_reference:
        ref_started = time.perf_counter()
        reference = ReferenceFit(EpicExplainer(model, processor, matrix=args.matrix), dataset, args.batch_size,
                                 args.train_batch_size).run(
            plan, args.epochs_per_step, args.lr, args.weight_decay, args.seed, args.matrix, 5,
            args.ref_steps or len(plan), args.ref_max_batches)
        logger.info("reference fit (as run): %.1f s", time.perf_counter() - ref_started)

    print()
    print(f"## bench_fit: {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPU cores, load average {load_before:.1f} at the "
          f"start, {os.getloadavg()[0]:.1f} at the end")
    print()
    print(f"model: {model_name}; data: planted_dataset({args.num_images}, {args.num_classes} classes, "
          f"{args.image_size}px); backbone batch {args.batch_size}, {args.train_batch_size} pairs per optimizer step; "
          f"schedule linear {args.schedule_start} -> {args.schedule_end} over {args.schedule_steps} steps, "
          f"{args.epochs_per_step} epochs/step; Adam lr {args.lr}, wd {args.weight_decay}; matrix {args.matrix}")
    print()
    print_backbone_table(plain_s, index_s, report, args)
    print_fit_tables(report, fit_s, reference, plan, explainer.num_channels, args)
    print(f"benchmark wall time {time.perf_counter() - wall_started:.0f} s")


if __name__ == "__main__":
    main()
