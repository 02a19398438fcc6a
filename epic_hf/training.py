"""The EPIC fit: one backbone pass, then a schedule of (re-mine, train U) steps, then the bank.

Work is placed where it is cheap:

* the backbone runs over the data exactly once (the pooled-vector index, :mod:`epic_hf.mining`);
* re-mining under a new U is a matrix product on that index;
* the backbone runs again only on prototype images, whose feature maps are cached within
  ``feature_cache_mb`` and recomputed beyond it;
* each optimizer step computes U (a ``matrix_exp``) once for the whole minibatch, and purity
  transforms only the channel's map and one vector per pair (:func:`purity_of_features`).

The same code runs in one process or under ``accelerate launch`` with several: each process
indexes a disjoint share, the shares are gathered and merged by sample key, and each
minibatch is split across processes with its gradient summed over them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import torch
from tqdm.auto import tqdm

from .checkpoint import FitCheckpoint
from .data import ImageSource, SkippedSamples, resolve_dataset
from .disentangle import cell_box, purity_and_peaks, purity_of_features
from .images import encode_jpeg, pixel_values_to_image
from .mining import IndexWriter, PooledIndex, merge_shards
from .schedules import schedule as make_schedule

if TYPE_CHECKING:
    from .bank import PrototypeBank
    from .explainer import EpicExplainer

logger = logging.getLogger(__name__)


@dataclass
class FitReport:
    """What a fit did and how well: purity as DESIGN.md defines it, timings and sample counts."""

    purity_before: float
    purity_after: float
    step_prototypes: list[int] = field(default_factory=list)
    step_purity: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    index_seconds: float = 0.0
    total_seconds: float = 0.0
    num_samples: int = 0
    num_skipped: int = 0
    skipped_keys: list[int] = field(default_factory=list)
    resumed_from_step: int = 0
    num_processes: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- distributed helpers ----------------------------------------------------------------
def _cpu_only_distributed() -> bool:
    """Several processes and no GPU: accelerate then needs ``cpu=True`` to set up gloo."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _check_process_group(accelerator) -> None:
    """Refuse to run N independent copies of the fit when a launcher started N processes."""
    import os

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate set up "
            f"{accelerator.num_processes}; check the launcher's flags (`accelerate launch --multi_gpu "
            "--num_processes N` and torchrun both work on CPU-only machines)"
        )


def _gather_index(accelerator, vectors: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All processes' (vectors, keys), merged: padded gather, unpadded by counts, dedup by key."""
    if accelerator.num_processes == 1:
        if keys.numel() == 0 or bool((keys[1:] > keys[:-1]).all()):
            return vectors, keys  # already sorted and unique: keep a memmap as it is
        return merge_shards([(vectors, keys)])
    device = accelerator.device
    counts = accelerator.gather(torch.tensor([keys.numel()], device=device)).cpu().tolist()
    padded_vectors = accelerator.pad_across_processes(torch.as_tensor(vectors).to(device), dim=0)
    padded_keys = accelerator.pad_across_processes(keys.to(device), dim=0)
    all_vectors = accelerator.gather(padded_vectors).cpu()
    all_keys = accelerator.gather(padded_keys).cpu()
    width = all_keys.shape[0] // len(counts)
    shards = [
        (all_vectors[i * width: i * width + count], all_keys[i * width: i * width + count])
        for i, count in enumerate(counts)
    ]
    return merge_shards(shards)


def _gather_skipped(accelerator, skipped: SkippedSamples) -> list[int]:
    if accelerator.num_processes == 1:
        return sorted(skipped.keys)
    from accelerate.utils import gather_object

    return sorted(set(gather_object(list(skipped.keys))))


# -- feature maps of prototype images ----------------------------------------------------
class FeatureStore:
    """Feature maps F of prototype images by index row, cached within a byte budget."""

    def __init__(self, explainer: "EpicExplainer", source: ImageSource, index: PooledIndex,
                 budget_bytes: int, batch_size: int, autocast) -> None:
        self.explainer = explainer
        self.source = source
        self.index = index
        self.budget_bytes = budget_bytes
        self.batch_size = batch_size
        self.autocast = autocast
        self.cache: dict[int, torch.Tensor] = {}
        self.cached_bytes = 0

    @property
    def map_bytes(self) -> int:
        height, width = self.index.grid_size
        return self.explainer.num_channels * height * width * 4  # float32

    def _compute(self, rows: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
        """(row, F) for ``rows``, batch by batch as their images arrive: O(batch) images in memory."""
        row_of = {int(self.index.keys[row]): row for row in rows}
        batch_rows: list[int] = []
        batch_images: list = []
        for key, image in self.source.iter_images(row_of):
            batch_rows.append(row_of[key])
            batch_images.append(image)
            if len(batch_rows) == self.batch_size:
                yield from self._forward(batch_rows, batch_images)
                batch_rows, batch_images = [], []
        if batch_rows:
            yield from self._forward(batch_rows, batch_images)

    def _forward(self, rows: list[int], images: list) -> Iterator[tuple[int, torch.Tensor]]:
        pixel_values = self.explainer.preprocess(images)
        with torch.no_grad(), self.autocast():
            fmap = self.explainer.adapter.feature_map(pixel_values).float()
        return zip(rows, fmap)

    def _keep(self, row: int, fmap: torch.Tensor) -> None:
        size = fmap.numel() * fmap.element_size()
        if self.cached_bytes + size <= self.budget_bytes:
            self.cache[row] = fmap.clone()  # its own storage, not a view that pins the whole batch
            self.cached_bytes += size

    def prefetch(self, rows: torch.Tensor | list[int]) -> None:
        """Compute and cache the maps of ``rows`` in full batches, with one fetch of their images.

        Called once per schedule step, so a stream is re-read once per step rather than once per
        minibatch. Only as many rows as the budget holds are computed; the rest are left to
        :meth:`maps` to recompute when a minibatch needs them.
        """
        capacity = max(0, self.budget_bytes - self.cached_bytes) // self.map_bytes
        missing = sorted(set(int(r) for r in rows) - set(self.cache))[:capacity]
        for row, fmap in self._compute(missing):
            self._keep(row, fmap)

    def maps(self, rows: torch.Tensor | list[int]) -> torch.Tensor:
        """(len(rows), D, H, W); computes the missing rows in one batch of fetches."""
        rows = [int(r) for r in rows]
        missing = sorted(set(r for r in rows if r not in self.cache))
        fresh = dict(self._compute(missing))
        for row, fmap in fresh.items():
            self._keep(row, fmap)
        return torch.stack([self.cache[r] if r in self.cache else fresh[r] for r in rows])


# -- the fit ------------------------------------------------------------------------------
def _pairs(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten (D, N) prototype rows into (row, channel) pairs."""
    dim, count = rows.shape
    channels = torch.arange(dim).repeat_interleave(count)
    return rows.reshape(-1), channels


def _local_share(order: torch.Tensor, batch_size: int, rank: int, world: int) -> torch.Tensor:
    """The positions of ``order`` this process trains on: its slice of every minibatch."""
    if world == 1:
        return order
    return torch.cat([order[start: start + batch_size][rank::world] for start in range(0, order.numel(), batch_size)])


def _mean_purity(store: FeatureStore, rows: torch.Tensor, U: torch.Tensor, orthogonal: bool,
                 chunk: int) -> tuple[float, torch.Tensor]:
    """Mean purity over the (D, N) prototype pairs under U, and each pair's peak cell (D, N)."""
    pair_rows, channels = _pairs(rows)
    store.prefetch(pair_rows)
    values, cells = [], []
    with torch.no_grad():
        for start in range(0, pair_rows.numel(), chunk):
            fmaps = store.maps(pair_rows[start: start + chunk])
            purity, peaks = purity_and_peaks(fmaps, channels[start: start + chunk].to(fmaps.device),
                                             U.to(fmaps.device), orthogonal)
            values.append(purity.cpu())
            cells.append(peaks.cpu())
    return float(torch.cat(values).mean()), torch.cat(cells).reshape(rows.shape)


def _build_index(explainer, source, accelerator, batch_size, budget_bytes, spill_dir, skipped) -> PooledIndex:
    writer: IndexWriter | None = None
    grid: tuple[int, int] | None = None
    rank, world = accelerator.process_index, accelerator.num_processes
    total = None if source.streaming else (len(source) + world - 1) // world
    progress = tqdm(total=total, desc="EPIC index pass", unit="img", disable=not accelerator.is_local_main_process)
    for keys, images in source.batches(batch_size, skipped, rank, world):
        pixel_values = explainer.preprocess(images)
        with torch.no_grad(), accelerator.autocast():
            fmap = explainer.adapter.feature_map(pixel_values)
        if writer is None:
            grid = tuple(fmap.shape[-2:])  # type: ignore[assignment]
            writer = IndexWriter(fmap.shape[1], budget_bytes, spill_dir)
        writer.add(keys, fmap.float().mean(dim=(2, 3)))
        progress.update(len(keys))
    progress.close()
    vectors, keys = writer.finish() if writer is not None else (torch.zeros(0, explainer.num_channels),
                                                                torch.zeros(0, dtype=torch.int64))
    if world > 1:  # every process needs the grid even if its share was empty
        grid_tensor = torch.tensor(list(grid) if grid else [0, 0], device=accelerator.device)
        grid = tuple(int(v) for v in accelerator.reduce(grid_tensor, reduction="max").tolist())  # type: ignore
    vectors, keys = _gather_index(accelerator, vectors, keys)
    if writer is not None and writer.spill_path is not None:
        writer.spill_path.unlink()  # the mapping stays valid; the space is freed when it is dropped
    if keys.numel() == 0:
        raise ValueError(
            f"no readable images in the dataset ({len(skipped)} skipped as unreadable): EPIC needs images "
            "to mine prototypes from"
        )
    return PooledIndex(vectors=vectors, keys=keys, grid_size=grid)  # type: ignore[arg-type]


def fit(
    explainer: "EpicExplainer",
    dataset: Any,
    *,
    split: str | None = None,
    image_column: str | None = None,
    key_column: str | None = None,
    streaming: bool = False,
    prototypes_per_channel: int = 5,
    schedule: str = "linear",
    schedule_start: int = 100,
    schedule_end: int = 5,
    schedule_steps: int = 10,
    epochs_per_step: int = 2,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    batch_size: int = 64,
    train_batch_size: int | None = None,
    seed: int = 0,
    output_dir: str | None = None,
    mixed_precision: str | None = None,
    feature_cache_mb: float = 2048,
    index_memory_mb: float = 4096,
    thumbnail_size: int = 112,
    thumbnail_quality: int = 80,
    accelerator: Any = None,
) -> FitReport:
    """Learn U and mine the prototype bank; sets ``explainer.bank`` and returns a :class:`FitReport`.

    Args:
        dataset: a ``datasets.Dataset``, ``IterableDataset`` (streaming), ``DatasetDict`` (with
            ``split``), a local image folder, or a Hub dataset id.
        split: the split of a DatasetDict / Hub dataset (default: its only split, or "train").
        image_column: the column holding images (default: the first ``Image`` feature).
        key_column: an integer column whose values become sample keys (default: row index, or
            position in the unshuffled stream). With several processes and a stream, a key
            column lets each process read only its own shards.
        streaming: load a folder / Hub id as a stream.
        prototypes_per_channel: prototypes kept per channel in the final bank (paper: 5).
        schedule, schedule_start, schedule_end, schedule_steps: the prototype-count schedule
            (``linear`` | ``exponential`` | ``logarithmic``; paper: linear 100 -> 5 over 10 steps).
        epochs_per_step: training epochs over the re-mined pairs at each step (paper: 2).
        lr, weight_decay: Adam on S (paper: 1e-3, 1e-5).
        batch_size: images per backbone batch.
        train_batch_size: (image, channel) pairs per optimizer step; defaults to ``batch_size``.
            Larger values mean fewer ``matrix_exp`` evaluations, the main cost once the
            backbone is out of the loop.
        seed: seeds the pair shuffling.
        output_dir: checkpoints (index, U and optimizer state per step) and the final bank; a
            killed run started again with the same arguments resumes.
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` for the backbone (accelerate).
        feature_cache_mb: memory for cached prototype feature maps; beyond it they are recomputed.
        index_memory_mb: memory for the pooled index; beyond it the index is memory-mapped on disk.
        thumbnail_size, thumbnail_quality: the bank's JPEG thumbnails (long side, quality).
        accelerator: an ``accelerate.Accelerator`` to use; by default one is made from the
            environment (``accelerate launch`` / torchrun set it), with ``mixed_precision``.
    """
    from accelerate import Accelerator

    started = time.perf_counter()
    if prototypes_per_channel < 1:
        raise ValueError(f"prototypes_per_channel must be at least 1, got {prototypes_per_channel}")
    steps_plan = make_schedule(schedule, schedule_start, schedule_end, schedule_steps)
    train_batch_size = train_batch_size or batch_size
    if accelerator is None:
        accelerator = Accelerator(mixed_precision=mixed_precision, cpu=_cpu_only_distributed())
    _check_process_group(accelerator)
    explainer.model.to(accelerator.device)
    explainer.disentangler.to(accelerator.device)
    source = resolve_dataset(dataset, split=split, image_column=image_column, key_column=key_column,
                             streaming=streaming)
    args = {
        "base_model": explainer.base_model_name_or_path, "base_model_revision": explainer.base_model_revision,
        "model_type": explainer.model.config.model_type, "num_channels": explainer.num_channels,
        "matrix": explainer.matrix, "dataset": source.fingerprint(), "split": source.split,
        "image_column": source.image_column, "key_column": key_column,
        "prototypes_per_channel": prototypes_per_channel, "schedule": schedule, "schedule_start": schedule_start,
        "schedule_end": schedule_end, "schedule_steps": schedule_steps, "epochs_per_step": epochs_per_step,
        "lr": lr, "weight_decay": weight_decay, "train_batch_size": train_batch_size, "seed": seed,
        "thumbnail_size": thumbnail_size, "thumbnail_quality": thumbnail_quality,
    }
    checkpoint = FitCheckpoint(output_dir, args, is_main=accelerator.is_main_process)
    finished = _load_finished(explainer, checkpoint)
    if finished is not None:
        return finished

    # 1. the one backbone pass
    index_started = time.perf_counter()
    stored = checkpoint.load_index()
    if stored is not None:
        index = PooledIndex(stored["vectors"], stored["keys"], tuple(stored["grid_size"].tolist()))
        skipped_keys = stored["skipped_keys"].tolist()
    else:
        skipped = SkippedSamples()
        index = _build_index(explainer, source, accelerator, batch_size, int(index_memory_mb * 2**20),
                             checkpoint.directory, skipped)
        skipped_keys = _gather_skipped(accelerator, skipped)
        checkpoint.save_index(index.vectors, {"keys": index.keys, "grid_size": torch.tensor(index.grid_size),
                                              "skipped_keys": torch.tensor(skipped_keys, dtype=torch.int64)})
    index_seconds = time.perf_counter() - index_started
    accelerator.wait_for_everyone()
    if skipped_keys:
        logger.warning("%d unreadable samples were skipped (keys %s%s)", len(skipped_keys), skipped_keys[:10],
                       "..." if len(skipped_keys) > 10 else "")
    if len(index) < prototypes_per_channel:
        logger.warning("only %d samples: keeping %d prototypes per channel", len(index), len(index))
    store = FeatureStore(explainer, source, index, int(feature_cache_mb * 2**20), batch_size, accelerator.autocast)
    disentangler = explainer.disentangler
    orthogonal = disentangler.orthogonal
    eval_chunk = max(batch_size, train_batch_size)

    # 2. purity before, under U = I
    identity = torch.eye(explainer.num_channels, device=accelerator.device)
    _, rows_before = index.top_prototypes(identity, prototypes_per_channel)
    purity_before, _ = _mean_purity(store, rows_before, identity, orthogonal, eval_chunk)
    logger.info("purity before training (U = I): %.4f", purity_before)

    _log_training_plan(steps_plan, len(index), explainer.num_channels, epochs_per_step, train_batch_size,
                       accelerator.device)

    # 3. the schedule, from S = 0 (U = I) even if this explainer was fitted before
    with torch.no_grad():
        disentangler.S.zero_()
    optimizer = torch.optim.Adam(disentangler.parameters(), lr=lr, weight_decay=weight_decay)
    state = checkpoint.load_state()
    report = FitReport(purity_before=purity_before, purity_after=float("nan"), index_seconds=index_seconds,
                       num_samples=len(index), num_skipped=len(skipped_keys), skipped_keys=skipped_keys,
                       num_processes=accelerator.num_processes)
    first_step = 0
    if state is not None:
        tensors, meta = state
        _restore_training(disentangler, optimizer, tensors)
        first_step = int(meta["finished_steps"])
        report.step_prototypes, report.step_purity = meta["step_prototypes"], meta["step_purity"]
        report.step_seconds = meta["step_seconds"]
        report.resumed_from_step = first_step
        logger.info("resuming the schedule after step %d of %d", first_step, len(steps_plan))
    rank, world = accelerator.process_index, accelerator.num_processes
    for step in tqdm(range(first_step, len(steps_plan)), desc="EPIC schedule", initial=first_step,
                     total=len(steps_plan), disable=not accelerator.is_local_main_process):
        step_started = time.perf_counter()
        count = steps_plan[step]
        with torch.no_grad():
            _, rows = index.top_prototypes(disentangler.matrix().detach(), count)
        pair_rows, pair_channels = _pairs(rows)
        orders = [
            torch.randperm(pair_rows.numel(), generator=torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + e))
            for e in range(epochs_per_step)
        ]
        store.prefetch(pair_rows[torch.cat([_local_share(order, train_batch_size, rank, world) for order in orders])])
        epoch_purity: list[float] = []
        for order in orders:
            sums, seen = 0.0, 0
            for start in range(0, order.numel(), train_batch_size):
                batch = order[start: start + train_batch_size]
                local = batch[rank::world]
                optimizer.zero_grad(set_to_none=False)
                U = disentangler.matrix()
                if local.numel():
                    fmaps = store.maps(pair_rows[local])
                    purity = purity_of_features(fmaps, pair_channels[local].to(fmaps.device), U, orthogonal)
                    loss = -purity.sum() / batch.numel()
                    sums += float(purity.detach().sum())
                else:
                    loss = U.sum() * 0.0
                loss.backward()
                if world > 1:
                    disentangler.S.grad = accelerator.reduce(disentangler.S.grad, reduction="sum")
                optimizer.step()
                seen += batch.numel()
            if world > 1:
                sums = float(accelerator.reduce(torch.tensor(sums, device=accelerator.device), reduction="sum"))
            epoch_purity.append(sums / max(seen, 1))
        report.step_prototypes.append(count)
        report.step_purity.append(epoch_purity[-1])
        report.step_seconds.append(time.perf_counter() - step_started)
        logger.info("step %d/%d: N=%d, %d pairs, training purity %.4f", step + 1, len(steps_plan), count,
                    pair_rows.numel(), epoch_purity[-1])
        checkpoint.save_state(
            _training_tensors(disentangler, optimizer),
            {"finished_steps": step + 1, "step_prototypes": report.step_prototypes,
             "step_purity": report.step_purity, "step_seconds": report.step_seconds},
        )
        accelerator.wait_for_everyone()

    # 4. the final bank
    bank = _final_bank(explainer, source, index, store, prototypes_per_channel, thumbnail_size, thumbnail_quality,
                       eval_chunk)
    report.purity_after = float(bank.config["purity_after"])
    report.total_seconds = time.perf_counter() - started
    bank.config.update(
        purity_before=purity_before, num_samples=len(index), num_skipped=len(skipped_keys),
        dataset=source.describe(), fit={k: v for k, v in args.items() if k not in ("base_model", "dataset")},
    )
    explainer.set_bank(bank, check_base_model=False)
    logger.info("purity %.4f -> %.4f in %.1f s", purity_before, report.purity_after, report.total_seconds)
    if checkpoint.bank_dir is not None and accelerator.is_main_process:
        bank.save_pretrained(checkpoint.bank_dir)
        (checkpoint.directory / "fit_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    accelerator.wait_for_everyone()
    return report


def _log_training_plan(steps_plan: list[int], samples: int, dim: int, epochs: int, pairs_per_step: int,
                       device: torch.device) -> None:
    """Say up front how many optimizer steps (one D x D matrix exponential each) the fit will take."""
    pairs = sum(min(count, samples) for count in steps_plan) * dim * epochs
    steps = sum(-(-min(count, samples) * dim // pairs_per_step) for count in steps_plan) * epochs
    logger.info("training plan: %d schedule steps, %d (image, channel) pairs, %d optimizer steps on %dx%d U",
                len(steps_plan), pairs, steps, dim, dim)
    if device.type == "cpu" and dim >= 1024 and steps > 1000:
        logger.warning(
            "%d optimizer steps, each a %dx%d matrix exponential and its gradient: on a CPU that is hours. "
            "Fit on a GPU, or raise train_batch_size (fewer, larger steps).", steps, dim, dim,
        )


def _training_tensors(disentangler, optimizer) -> dict[str, torch.Tensor]:
    tensors = {"S": disentangler.S.detach()}
    state = optimizer.state.get(disentangler.S, {})
    for name in ("step", "exp_avg", "exp_avg_sq"):
        if name in state:
            tensors[f"adam.{name}"] = torch.as_tensor(state[name]).detach()
    return tensors


def _restore_training(disentangler, optimizer, tensors: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        disentangler.S.copy_(tensors["S"].to(disentangler.S))
    if "adam.exp_avg" in tensors:
        device = disentangler.S.device
        optimizer.state[disentangler.S] = {
            "step": tensors["adam.step"].float().cpu(),
            "exp_avg": tensors["adam.exp_avg"].to(device),
            "exp_avg_sq": tensors["adam.exp_avg_sq"].to(device),
        }


def _load_finished(explainer, checkpoint: FitCheckpoint) -> FitReport | None:
    """A completed fit in ``output_dir``: load its bank and report instead of fitting again."""
    if checkpoint.directory is None:
        return None
    report_path = checkpoint.directory / "fit_report.json"
    if not report_path.is_file() or checkpoint.bank_dir is None or not checkpoint.bank_dir.is_dir():
        return None
    from .bank import PrototypeBank

    explainer.set_bank(PrototypeBank.from_pretrained(checkpoint.bank_dir), check_base_model=False)
    logger.info("%s holds a finished fit: loaded its bank", checkpoint.directory)
    return FitReport(**json.loads(report_path.read_text()))


def _final_bank(explainer, source: ImageSource, index: PooledIndex, store: FeatureStore, count: int,
                thumbnail_size: int, thumbnail_quality: int, chunk: int) -> "PrototypeBank":
    """Top-``count`` prototypes per channel under the trained U, with boxes and thumbnails."""
    from .bank import PrototypeBank

    disentangler = explainer.disentangler
    with torch.no_grad():
        U = disentangler.matrix().detach()
    scores, rows = index.top_prototypes(U, count)
    purity_after, peaks = _mean_purity(store, rows, U, disentangler.orthogonal, chunk)
    grid = index.grid_size
    thumbnails: dict[int, bytes] = {}
    input_size = None
    for key, image in source.iter_images(index.keys[rows.reshape(-1)].tolist()):
        pixel_values = explainer.preprocess([image])[0]  # the processed input, as the model saw it
        input_size = tuple(pixel_values.shape[-2:])
        thumbnails[key] = encode_jpeg(pixel_values_to_image(pixel_values, explainer.image_processor),
                                      thumbnail_size, thumbnail_quality)
    width = grid[1]
    boxes = torch.tensor(
        [cell_box(cell // width, cell % width, grid, input_size) for cell in peaks.reshape(-1).tolist()],
        dtype=torch.int64,
    ).reshape(*rows.shape, 4)
    sample_keys = index.keys[rows.reshape(-1)].reshape(rows.shape)
    return PrototypeBank(
        sample_keys=sample_keys.clone(), scores=scores.float(), boxes=boxes, S=disentangler.S.detach().cpu().clone(),
        matrix=disentangler.kind, thumbnails=thumbnails, input_size=input_size, grid_size=grid,
        config={
            "base_model_name_or_path": explainer.base_model_name_or_path,
            "base_model_revision": explainer.base_model_revision,
            "model_type": explainer.model.config.model_type,
            "purity_after": purity_after,
        },
    )


def bank_purity(explainer: "EpicExplainer", dataset: Any, *, split: str | None = None,
                image_column: str | None = None, key_column: str | None = None, streaming: bool = False,
                batch_size: int = 64) -> float:
    """Mean purity of the current bank's (channel, prototype) pairs, recomputed from ``dataset``."""
    if explainer.bank is None:
        raise ValueError("this explainer has no prototype bank yet: call explainer.fit(dataset) first")
    source = resolve_dataset(dataset, split=split, image_column=image_column, key_column=key_column,
                             streaming=streaming)
    bank = explainer.bank
    keys = torch.unique(bank.sample_keys)
    index = PooledIndex(vectors=torch.zeros(keys.numel(), 0), keys=keys, grid_size=bank.grid_size)
    rows = torch.searchsorted(keys, bank.sample_keys)
    store = FeatureStore(explainer, source, index, 2**62, batch_size, contextlib.nullcontext)
    purity, _ = _mean_purity(store, rows, explainer.U, explainer.disentangler.orthogonal, batch_size)
    return purity
