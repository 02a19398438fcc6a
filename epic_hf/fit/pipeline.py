"""The EPIC fit, end to end: source -> index pass -> feature store -> trainer -> bank builder.

Work is placed where it is cheap: the backbone runs over the data exactly once (the pooled
index, plus the feature maps the store can keep); re-mining under a new U is a matrix product
on the index; the backbone runs again only on prototype images whose maps were not kept. The
same code runs in one process or under ``accelerate launch`` / torchrun with several.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..aliases import JSONDict
from ..backbone import FrozenClassifier
from ..bank import PrototypeBank
from ..config import FitConfig
from ..data import DatasetLike, ImageSource, SkippedSamples, open_source
from ..disentangle import Disentangler, MatrixKind
from ..errors import EpicError
from ..locks import DirectoryLock
from ..results import purity_drop_note
from .bank_builder import build_bank
from .checkpoint import FitCheckpoint
from .distributed import gather_keys, make_accelerator
from .features import FeatureStore, mean_purity
from .index import KEEP_INDEX_BYTES, KeptIndex, PooledIndex, index_identity
from .index_pass import build_index
from .report import FitReport
from .trainer import Trainer

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

_MB = 2**20
#: A cache budget that never binds: purity of a finished bank reads each prototype map once.
UNBOUNDED_BYTES = 2**62


def run_fit(classifier: FrozenClassifier, dataset: DatasetLike, config: FitConfig, matrix: MatrixKind = "orthogonal",
            output_dir: str | None = None, accelerator: Accelerator | None = None,
            write_extras: Callable[[Path, FitReport], None] | None = None) -> tuple[PrototypeBank, FitReport]:
    """Learn a ``matrix`` U from U = I and mine a new bank, which owns it; resumes from ``output_dir``.

    Nothing is changed on the caller's side: the U being trained lives in this call, and the
    bank it returns holds a frozen copy of it. ``write_extras(output_dir, report)`` is how a
    caller adds its own files (the purity picture): called on the main process while the
    directory's lock is still held, so that a second run cannot start between the fit's last
    file and the caller's.
    """
    started = time.perf_counter()
    # opened before the output dir is made: an input that is missing or empty fails leaving nothing behind
    source = open_source(dataset, config.data)
    accelerator = accelerator or make_accelerator(config.mixed_precision)
    # one writer per output dir: only the main process writes, so only it holds the lock
    lock = DirectoryLock(output_dir, "fit") if output_dir is not None and accelerator.is_main_process else None
    with lock or contextlib.nullcontext():
        bank, report = _fit(classifier, source, config, matrix, output_dir, accelerator, started)
        if output_dir is not None and write_extras is not None and accelerator.is_main_process:
            write_extras(Path(output_dir), report)
        return bank, report


def _fit(classifier: FrozenClassifier, source: ImageSource, config: FitConfig, matrix: MatrixKind, output_dir: str | None,
         accelerator: Accelerator, started: float) -> tuple[PrototypeBank, FitReport]:
    disentangler = Disentangler(classifier.num_channels, matrix)
    checkpoint = FitCheckpoint(output_dir, _fingerprint(classifier, disentangler, source, config),
                               is_main=accelerator.is_main_process)
    finished = _load_finished(checkpoint)
    if finished is not None:
        return finished
    with classifier.placed_on(accelerator.device):
        disentangler.to(accelerator.device)
        store = FeatureStore(classifier, source, int(config.feature_cache_mb * _MB), config.batch_size,
                             accelerator.autocast)
        index, skipped_keys, index_seconds = _index(classifier, source, accelerator, config, checkpoint, store)
        report = FitReport(purity_before=float("nan"), purity_after=float("nan"), index_seconds=index_seconds,
                           num_samples=len(index), num_skipped=len(skipped_keys), skipped_keys=skipped_keys,
                           num_processes=accelerator.num_processes, kept_index=_kept(classifier, source, index,
                                                                                     skipped_keys))
        chunk = max(config.batch_size, config.train_batch_size)
        identity = torch.eye(disentangler.dim, device=accelerator.device)
        _, rows_before = index.top_prototypes(identity, config.prototypes_per_channel)
        report.purity_before, _ = mean_purity(store, index.keys[rows_before], identity, disentangler.orthogonal,
                                              chunk)
        logger.info("purity before training (U = I): %.4f", report.purity_before)
        Trainer(disentangler, index, store, config, accelerator, checkpoint).run(report)
        bank = build_bank(classifier, disentangler, source, index, store, config)
    report.purity_after = float(bank.config.purity_after if bank.config.purity_after is not None else "nan")
    report.condition_number = bank.config.condition_number
    report.patch_share = bank.config.patch_share
    if report.patch_share is not None:
        logger.info("the image patches carry %.1f%% of |evidence| on average over the data, the CLS token's own "
                    "part and the model's constants (biases, LayerNorm betas) the rest", 100 * report.patch_share)
    report.backbone_images = len(index) + store.computed
    report.total_seconds = time.perf_counter() - started
    bank.config.purity_before = report.purity_before
    bank.config.num_samples, bank.config.num_skipped = len(index), len(skipped_keys)
    bank.config.dataset = source.describe()
    logger.info("purity %.4f -> %.4f in %.1f s (backbone ran on %d images for %d samples)", report.purity_before,
                report.purity_after, report.total_seconds, report.backbone_images, len(index))
    lowered = purity_drop_note(report.purity_before, report.purity_after)
    if lowered is not None:
        logger.warning("%s", lowered)
    bank.config.steps = [step.to_dict() for step in report.steps]
    if checkpoint.directory is not None and checkpoint.bank_dir is not None and accelerator.is_main_process:
        bank.save_pretrained(checkpoint.bank_dir)
        checkpoint.save_report(report.to_dict())
    accelerator.wait_for_everyone()
    return bank, report


def _kept(classifier: FrozenClassifier, source: ImageSource, index: PooledIndex,
          skipped_keys: list[int]) -> KeptIndex | None:
    """A copy of a small index (at most KEEP_INDEX_BYTES) for the audit; a fit with an output_dir also has it on disk."""
    if index.vectors.numel() * index.vectors.element_size() > KEEP_INDEX_BYTES:
        return None
    copy = PooledIndex(index.vectors.clone(), index.keys.clone(), index.grid_size)
    return KeptIndex(index_identity(classifier, source), copy, list(skipped_keys))


def _fingerprint(classifier: FrozenClassifier, disentangler: Disentangler, source: ImageSource,
                 config: FitConfig) -> JSONDict:
    """What a checkpoint must agree on to be resumed: the model, the data and the result settings."""
    return {"base_model": classifier.reference.name_or_path, "base_model_revision": classifier.reference.revision,
            "model_type": classifier.model_type, "num_channels": disentangler.dim, "matrix": disentangler.kind,
            "dataset": source.fingerprint(), **config.result_settings()}


def _index(classifier: FrozenClassifier, source: ImageSource, accelerator: Accelerator, config: FitConfig,
           checkpoint: FitCheckpoint, store: FeatureStore) -> tuple[PooledIndex, list[int], float]:
    """The pooled index: from the checkpoint, or from the one backbone pass (then saved)."""
    started = time.perf_counter()
    stored = checkpoint.load_index()
    if stored is not None:
        index = PooledIndex(stored["vectors"], stored["keys"], tuple(stored["grid_size"].tolist()),
                            stored.get("predictions"), stored.get("cls_terms"))
        return index, stored["skipped_keys"].tolist(), time.perf_counter() - started
    skipped = SkippedSamples()
    index = build_index(classifier, source, accelerator, config.batch_size, int(config.index_memory_mb * _MB),
                        checkpoint.directory, skipped, keep_maps=store.offer)
    skipped_keys = gather_keys(accelerator, skipped.keys)
    extra = {"keys": index.keys, "grid_size": torch.tensor(index.grid_size),
             "skipped_keys": torch.tensor(skipped_keys, dtype=torch.int64)}
    if index.predictions is not None:
        extra["predictions"] = index.predictions
    if index.cls_terms is not None:
        extra["cls_terms"] = index.cls_terms
    checkpoint.save_index(index.vectors, extra)
    accelerator.wait_for_everyone()
    if skipped_keys:
        logger.warning("%d unreadable samples were skipped (keys %s%s)", len(skipped_keys), skipped_keys[:10],
                       "..." if len(skipped_keys) > 10 else "")
    if len(index) < config.prototypes_per_channel:
        logger.warning("only %d samples: keeping %d prototypes per channel", len(index), len(index))
    return index, skipped_keys, time.perf_counter() - started


def _load_finished(checkpoint: FitCheckpoint) -> tuple[PrototypeBank, FitReport] | None:
    """A completed fit in ``output_dir``: its bank and report instead of fitting again.

    The report is written after the bank, so a report that verifies means a whole bank; a bank
    that was damaged afterwards is named and built again from the training state.
    """
    if checkpoint.bank_dir is None or not checkpoint.bank_dir.is_dir():
        return None
    report = checkpoint.load_report()
    if report is None:
        return None
    try:
        bank = PrototypeBank.from_pretrained(checkpoint.bank_dir)
    except EpicError as error:
        logger.warning("the finished fit's bank in %s is damaged (%s): building it again", checkpoint.bank_dir, error)
        return None
    logger.info("%s holds a finished fit: loaded its bank", checkpoint.directory)
    return bank, FitReport.from_dict(report)


def bank_purity(classifier: FrozenClassifier, bank: PrototypeBank, U: torch.Tensor, dataset: DatasetLike,
                config: FitConfig) -> float:
    """Mean purity of ``bank``'s (channel, prototype) pairs under U, recomputed from ``dataset``."""
    source = open_source(dataset, config.data)
    store = FeatureStore(classifier, source, UNBOUNDED_BYTES, config.batch_size, contextlib.nullcontext)
    purity, _ = mean_purity(store, bank.sample_keys, U, bank.matrix == "orthogonal", config.batch_size)
    return purity
