"""Feature maps F of prototype candidates, by sample key, kept within a memory budget.

The index pass offers every batch's maps (:meth:`FeatureStore.offer`); while the budget lasts
all are kept, so on a dataset whose maps fit in memory the backbone sees each image exactly
once. Beyond the budget the store keeps the maps most likely to become prototypes: those whose
pooled vector stands out most in some channel (the largest z-score against the running channel
statistics), since a channel's prototypes are the samples that score highest on it. Maps that
are not kept are recomputed from the images when a training step needs them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

import torch

from ..backbone import FrozenClassifier
from ..data import ImageSource
from ..disentangle import purity_of_pairs


class FeatureMaps(Protocol):
    """What training and purity read: F (len(keys), D, H, W) by sample key (a :class:`FeatureStore`, or any
    in-memory table of maps)."""

    def maps(self, keys: Iterable[int]) -> torch.Tensor: ...

    def prefetch(self, keys: Iterable[int]) -> None: ...


class FeatureStore:
    """F (D, H, W) float32 per sample key: cached within ``budget_bytes``, computed on demand beyond."""

    def __init__(self, classifier: FrozenClassifier, source: ImageSource, budget_bytes: int, batch_size: int,
                 autocast: Callable[[], AbstractContextManager[object]]) -> None:
        self.classifier = classifier
        self.source = source
        self.budget_bytes = budget_bytes
        self.batch_size = batch_size
        self.autocast = autocast
        self.cache: dict[int, torch.Tensor] = {}
        self.cached_bytes = 0
        self.computed = 0  # maps computed after the index pass (backbone work beyond the one pass)
        self._priority: list[tuple[float, int]] = []  # min-heap of (priority, key) of offered maps
        self._stats: tuple[int, torch.Tensor, torch.Tensor] | None = None  # running (n, mean, M2) of pooled

    # -- from the index pass ---------------------------------------------------------------------
    def offer(self, keys: list[int], fmap: torch.Tensor) -> None:
        """Keep the index pass's maps while the budget lasts; then the likeliest prototypes only."""
        pooled = fmap.mean(dim=(2, 3)).double().cpu()
        priorities = self._z_scores(pooled).amax(dim=1).tolist()
        for key, priority, one in zip(keys, priorities, fmap):
            size = one.numel() * one.element_size()
            while self.cached_bytes + size > self.budget_bytes and self._priority and self._priority[0][0] < priority:
                _, evicted = heapq.heappop(self._priority)
                self.cached_bytes -= self._size(self.cache.pop(evicted))
            if self.cached_bytes + size <= self.budget_bytes:
                self.cache[int(key)] = one.detach().cpu().clone()
                self.cached_bytes += size
                heapq.heappush(self._priority, (priority, int(key)))

    def _z_scores(self, pooled: torch.Tensor) -> torch.Tensor:
        """z-scores of a batch of pooled vectors against the running per-channel statistics (Chan et al.)."""
        count, mean = pooled.shape[0], pooled.mean(dim=0)
        m2 = ((pooled - mean) ** 2).sum(dim=0)
        if self._stats is not None:
            n, old_mean, old_m2 = self._stats
            delta = mean - old_mean
            total = n + count
            mean = old_mean + delta * count / total
            m2 = old_m2 + m2 + delta**2 * n * count / total
            count = total
        self._stats = (count, mean, m2)
        std = (m2 / max(count - 1, 1)).sqrt().clamp_min(1e-12)
        return (pooled - mean) / std

    @staticmethod
    def _size(fmap: torch.Tensor) -> int:
        return fmap.numel() * fmap.element_size()

    # -- after the index pass ----------------------------------------------------------------------
    def _compute(self, keys: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
        """(key, F) for ``keys``, batch by batch as their images arrive: O(batch) images in memory."""
        batch_keys: list[int] = []
        batch_images: list = []
        for key, image in self.source.iter_images(keys):
            batch_keys.append(key)
            batch_images.append(image)
            if len(batch_keys) == self.batch_size:
                yield from self._forward(batch_keys, batch_images)
                batch_keys, batch_images = [], []
        if batch_keys:
            yield from self._forward(batch_keys, batch_images)

    def _forward(self, keys: list[int], images: list) -> Iterator[tuple[int, torch.Tensor]]:
        pixel_values = self.classifier.preprocess(images)
        with self.autocast():
            fmap = self.classifier.feature_map(pixel_values)
        self.computed += len(keys)
        return zip(keys, fmap.float())

    def _keep(self, key: int, fmap: torch.Tensor) -> None:
        size = self._size(fmap)
        if self.cached_bytes + size <= self.budget_bytes:
            self.cache[key] = fmap.clone()  # its own storage, not a view that pins the whole batch
            self.cached_bytes += size

    def prefetch(self, keys: Iterable[int]) -> None:
        """Compute and cache the maps of ``keys`` in full batches, with one fetch of their images.

        Called once per schedule step, so a stream is re-read once per step rather than once per
        minibatch. Only as many as the budget holds are computed; the rest are left to
        :meth:`maps` to recompute when a minibatch needs them.
        """
        missing = sorted(set(int(k) for k in keys) - set(self.cache))
        if not missing:
            return
        map_bytes = self._map_bytes()
        capacity = max(0, self.budget_bytes - self.cached_bytes) // map_bytes if map_bytes else len(missing)
        for key, fmap in self._compute(missing[:capacity]):
            self._keep(key, fmap)

    def _map_bytes(self) -> int:
        return self._size(next(iter(self.cache.values()))) if self.cache else 0

    def maps(self, keys: Iterable[int]) -> torch.Tensor:
        """(len(keys), D, H, W); computes the missing ones in one batch of fetches."""
        keys = [int(k) for k in keys]
        missing = sorted(set(k for k in keys if k not in self.cache))
        fresh = dict(self._compute(missing)) if missing else {}
        for key, fmap in fresh.items():
            self._keep(key, fmap)
        return torch.stack([self.cache[k] if k in self.cache else fresh[k] for k in keys])


def pairs(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten (D, N) prototype keys into (key, channel) pairs."""
    dim, count = keys.shape
    return keys.reshape(-1), torch.arange(dim).repeat_interleave(count)


def mean_purity(store: FeatureMaps, keys: torch.Tensor, U: torch.Tensor, orthogonal: bool,
                chunk: int) -> tuple[float, torch.Tensor]:
    """Mean purity over the (D, N) prototype pairs under U, and each pair's peak cell (D, N)."""
    pair_keys, channels = pairs(keys)
    store.prefetch(pair_keys.tolist())
    purity, cells = purity_of_pairs(store.maps, pair_keys.tolist(), channels.tolist(), U, orthogonal, chunk)
    return float(purity.mean()), cells.reshape(keys.shape)
