"""What the audit reads about every sample: pooled vectors, logits and labels, from the fit's index or one pass.

Reuse, honestly defined. A fit that was given an ``output_dir`` keeps its pooled index there
(``avg_hw F`` and the key of every sample, :mod:`epic_hf.fit.checkpoint`); any fit keeps a small one
(up to :data:`~epic_hf.fit.index.KEEP_INDEX_BYTES`) in memory, on its explainer. When the audit gets the
same data (the same dataset fingerprint and data settings) and that index, it reads the index
instead of running the backbone over the data again, and computes the logits from the pooled
vectors: ``A . avg_hw(F) + b`` is exactly the model's logit for a purely spatial model (checked
when the model loaded and on every batch the fit indexed). A model with a CLS term (DINOv2, ViT,
...) has a part of its logits that the index does not keep, so for those the audit runs its own
pass, and says so. Either way the backbone runs again only on the top-N images of the channels the
audit examines, for their peak places (a :class:`~epic_hf.fit.FeatureStore` keeps the maps of
the audit's own pass, so a small dataset needs no second pass at all).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbone import FrozenClassifier
from ..config import DataConfig
from ..data import ImageSource, SkippedSamples
from ..fit.checkpoint import ARGS_NAME, FitCheckpoint
from ..fit.features import FeatureStore
from ..fit.index import KeptIndex, index_identity
from ..naming import match_label
from ..progress import progress_bar

logger = logging.getLogger(__name__)

#: Pooled vectors turned into logits at a time when the fit's index is reused (a memory-mapped index stays bounded).
CHUNK_ROWS = 16384
#: Feature maps the audit's own pass keeps for the peak places (the maps of a small dataset all fit).
MAP_CACHE_BYTES = 256 * 2**20


@dataclass
class AuditData:
    """Per sample, sorted by key: ``keys`` (n,), ``vectors`` (n, D) = avg_hw F, ``probabilities`` (n, C) float32
    (the softmax of the logits), ``labels`` (n,) model class indices (-1 where unknown); the feature-map store
    for peak places."""

    keys: torch.Tensor
    vectors: torch.Tensor
    probabilities: torch.Tensor
    labels: torch.Tensor
    grid: tuple[int, int]
    store: FeatureStore
    reused_index: bool
    skipped: list[int]

    @property
    def predictions(self) -> torch.Tensor:
        return self.probabilities.argmax(dim=1)


def read_samples(classifier: FrozenClassifier, source: ImageSource, data: DataConfig, batch_size: int,
                 fit_dir: str | Path | None, kept: KeptIndex | None = None) -> AuditData:
    """The fit's index where it is this data's (see the module): ``kept`` in memory, else the one in ``fit_dir``;
    else one pass over the data."""
    store = FeatureStore(classifier, source, MAP_CACHE_BYTES, batch_size, contextlib.nullcontext)
    reused = _kept_index(classifier, source, kept) or _fit_index(classifier, source, data, fit_dir)
    if reused is not None:
        keys, vectors, grid, skipped = reused
        head = classifier.head()
        weight, bias = head.weight.detach().cpu().double(), head.bias.detach().cpu().double()
        probabilities = torch.cat([_softmax(torch.as_tensor(vectors[start: start + CHUNK_ROWS]).double() @ weight.T + bias)
                                   for start in range(0, len(keys), CHUNK_ROWS)])
        logger.info("audit: reusing the fit's pooled index (%d samples, no backbone pass over the data)", len(keys))
    else:
        keys, vectors, probabilities, grid, skipped = _pass(classifier, source, batch_size, store)
    labels = _labels(source, keys, classifier.id2label)
    return AuditData(keys, vectors, probabilities, labels, grid, store, reused is not None, skipped)


def _kept_index(classifier: FrozenClassifier, source: ImageSource, kept: KeptIndex | None
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], list[int]] | None:
    """(keys, vectors, grid, skipped keys) of the index a fit kept in memory, if it indexed this very data."""
    if kept is None or classifier.adapter.has_extra_logits:
        return None
    wanted = index_identity(classifier, source)
    if kept.identity != wanted:
        logger.info("audit: the last fit indexed other data or another model: running a pass")
        return None
    return kept.index.keys, kept.index.vectors, kept.index.grid_size, list(kept.skipped_keys)


def _fit_index(classifier: FrozenClassifier, source: ImageSource, data: DataConfig,
               fit_dir: str | Path | None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], list[int]] | None:
    """(keys, vectors, grid, skipped keys) of the fit in ``fit_dir``, if it indexed this very data; else None."""
    if fit_dir is None or not (Path(fit_dir) / ARGS_NAME).is_file():
        return None
    if classifier.adapter.has_extra_logits:
        logger.info("audit: the model has a CLS term the pooled index does not keep: running the audit's own pass")
        return None
    try:
        recorded = json.loads((Path(fit_dir) / ARGS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wanted = {"dataset": source.fingerprint(), "model_type": classifier.model_type,
              "num_channels": classifier.num_channels,
              **{name: getattr(data, name) for name in ("split", "image_column", "key_column") if name in recorded}}
    differing = sorted(name for name, value in wanted.items() if recorded.get(name) != value)
    if differing:
        logger.info("audit: the fit in %s indexed other data or another model (%s differ): running a pass",
                    fit_dir, ", ".join(differing))
        return None
    stored = FitCheckpoint(fit_dir, recorded, is_main=False).load_index()
    if stored is None:
        return None
    grid = (int(stored["grid_size"][0]), int(stored["grid_size"][1]))
    return stored["keys"], torch.as_tensor(stored["vectors"]), grid, stored["skipped_keys"].tolist()


def _pass(classifier: FrozenClassifier, source: ImageSource, batch_size: int, store: FeatureStore
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int], list[int]]:
    """One pass through the data's one batch loop: the model's own logits and avg_hw F, its maps offered to ``store``."""
    skipped = SkippedSamples()
    keys: list[int] = []
    vectors: list[torch.Tensor] = []
    probabilities: list[torch.Tensor] = []
    grid = (0, 0)
    total = None if source.streaming else len(source)
    bar = progress_bar(total=total, desc="EPIC audit pass", unit="img")
    for batch_keys, images, _ in source.batches(batch_size, skipped):
        if not batch_keys:
            continue
        forward = classifier.forward(classifier.preprocess(images))
        if forward.fmap is not None:
            store.offer(batch_keys, forward.fmap.float())
        keys.extend(batch_keys)
        vectors.append(forward.pooled.pooled.float().cpu())
        probabilities.append(_softmax(forward.logits.double().cpu()))
        grid = forward.pooled.grid
        bar.update(len(batch_keys))
    bar.close()
    if not keys:
        raise ValueError("no readable images in the dataset: the audit needs images")
    order = torch.tensor(keys).argsort()
    return (torch.tensor(keys)[order], torch.cat(vectors)[order], torch.cat(probabilities)[order], grid,
            list(skipped.keys))


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities in float32, from logits in float64 (a sample's values are all the audit keeps of them)."""
    return logits.softmax(dim=1).float()


def _labels(source: ImageSource, keys: torch.Tensor, id2label: dict[int, str]) -> torch.Tensor:
    """The model class of each sample's label (-1 where there is none, or it names no class of the model).

    A ClassLabel's names (and string labels) are matched to the model's labels by name; integer
    labels without names are taken as the model's class indices.
    """
    found = torch.full((len(keys),), -1, dtype=torch.int64)
    if source.label_column is None:
        return found
    values = source.labels(keys.tolist())
    feature = (source.dataset.features or {}).get(source.label_column)
    names = list(getattr(feature, "names", None) or [])
    by_name = {name: index for index, name in id2label.items()}
    matched: dict[str, int] = {}  # each distinct label matched once
    for row, key in enumerate(keys.tolist()):
        value = values.get(int(key))
        if isinstance(value, int) and not isinstance(value, bool) and names and 0 <= value < len(names):
            value = names[value]
        if isinstance(value, str):
            if value not in matched:
                name = match_label(value, by_name)
                matched[value] = by_name[name] if name is not None else -1
            found[row] = matched[value]
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < max(len(id2label), 1):
            found[row] = value
    return found
