"""The one backbone pass over the data: pooled vectors, predictions, and the first feature maps.

Every image is decoded and run through the backbone once. What is kept per sample is small
(``avg_hw F`` and the predicted class); the feature maps themselves go to the
:class:`~epic_hf.fit.features.FeatureStore`, which keeps as many as its budget allows, so that
the prototype images of a small dataset never need the backbone again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..backbone import FrozenClassifier
from ..data import ImageSource, SkippedSamples
from ..progress import progress_bar
from .distributed import gather_index, max_over_processes
from .index import IndexWriter, PooledIndex

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

MapSink = Callable[[list[int], torch.Tensor], None]


def build_index(classifier: FrozenClassifier, source: ImageSource, accelerator: Accelerator, batch_size: int,
                budget_bytes: int, spill_dir: str | Path | None, skipped: SkippedSamples,
                keep_maps: MapSink | None = None) -> PooledIndex:
    """Run the backbone over this process's share, then gather every share into one sorted index.

    ``keep_maps(keys, fmap)`` is offered each batch's feature maps (float32, (B, D, H, W)), except for
    models whose pooled vector is much cheaper than F (``adapter.pooled_is_cheaper``: the held
    linearisation of a CLS token), whose maps are computed again for the prototype images alone.
    """
    cheap_pool = bool(classifier.adapter.pooled_is_cheaper)
    writer = IndexWriter(classifier.num_channels, budget_bytes, spill_dir)
    predictions: list[torch.Tensor] = []
    cls_terms: list[torch.Tensor] = []
    grid: list[int] = [0, 0]
    rank, world = accelerator.process_index, accelerator.num_processes
    total = None if source.streaming else (len(source) + world - 1) // world
    progress = progress_bar(total=total, desc="EPIC index pass", unit="img",
                            disable=not accelerator.is_local_main_process)
    for keys, images, _ in source.batches(batch_size, skipped, rank, world):
        if not keys:  # the last records were all unreadable
            continue
        pixel_values = classifier.preprocess(images)
        with accelerator.autocast():  # the model's own forward, checked against its terms at the autocast's dtype
            forward = classifier.forward(pixel_values, pooled=cheap_pool)
        # where F costs more than its mean (cheap_pool), only the mean is kept; F comes later, for prototypes only
        pooled, extra, grid = forward.pooled.pooled.float(), forward.pooled.extra_logits, list(forward.pooled.grid)
        if keep_maps is not None and forward.fmap is not None:
            keep_maps(keys, forward.fmap.float())
        writer.add(keys, pooled)
        predicted = forward.logits.float().argmax(dim=1)
        predictions.append(predicted.cpu())
        if extra is not None:  # the CLS term of the predicted class, for the patches' share of the evidence
            cls_terms.append(extra.float().gather(1, predicted[:, None])[:, 0].abs().cpu())
        progress.update(len(keys))
    progress.close()
    vectors, key_tensor = writer.finish()
    grid = max_over_processes(accelerator, grid)  # every process needs the grid, even with an empty share
    local_predictions = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)
    has_cls = bool(classifier.adapter.has_extra_logits)
    local_cls = torch.cat(cls_terms) if cls_terms else torch.zeros(0)
    columns = (local_predictions, local_cls) if has_cls else (local_predictions,)
    vectors, key_tensor, merged_predictions, *merged_cls = gather_index(accelerator, vectors, key_tensor, *columns)
    if writer.spill_path is not None:
        writer.spill_path.unlink()  # the mapping stays valid; the space is freed when it is dropped
    if key_tensor.numel() == 0:
        raise ValueError(
            f"no readable images in the dataset ({len(skipped)} skipped as unreadable): EPIC needs images "
            "to mine prototypes from"
        )
    return PooledIndex(vectors=vectors, keys=key_tensor, grid_size=(grid[0], grid[1]),
                       predictions=merged_predictions, cls_terms=merged_cls[0] if merged_cls else None)
