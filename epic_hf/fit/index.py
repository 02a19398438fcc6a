"""The pooled-vector index and exact top-N prototype mining under any U.

Because U is linear, ``sum_hw G(x) = HW * U avg_hw F(x)``: the score of every channel under
*any* U follows from the pooled vector alone. One backbone pass stores ``V = avg_hw F`` for
every sample; mining under a new U is then a chunked ``V U^T`` plus a running top-N merge,
exact whatever N and the chunk size (unlike a per-batch merge that drops candidates when
N exceeds the batch size).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import torch

from ..mining import TopN

if TYPE_CHECKING:
    from ..backbone import FrozenClassifier
    from ..data import ImageSource

logger = logging.getLogger(__name__)

#: Memory for one chunk's (D, chunk) float64 scores while mining: 128 MiB, about 8192 samples at D = 2048.
MINING_CHUNK_BYTES = 2**27


@dataclass
class PooledIndex:
    """``vectors`` (n, D) float32 = avg_hw F per sample, ``keys`` (n,) int64, sorted by key.

    ``predictions`` (n,) int64: the class the model predicted for each sample (kept from the
    same pass, for the bank's class evidence); None for an index that did not record them.
    """

    vectors: torch.Tensor
    keys: torch.Tensor
    grid_size: tuple[int, int]
    predictions: torch.Tensor | None = None
    cls_terms: torch.Tensor | None = None  # (n,) |CLS term| of the predicted class; None without a CLS term

    def __len__(self) -> int:
        return self.keys.shape[0]

    @property
    def cells(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def top_prototypes(self, U: torch.Tensor, count: int,
                       chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (D, count), rows (D, count)): each channel's best samples under U, best first.

        Scores are ``sum_hw G_c = HW * (U v)_c``. ``count`` is clamped to the index size.
        """
        return top_rows(self.vectors, U, count, chunk_size, scale=float(self.cells))



#: The largest pooled index a fit keeps in memory for the audit after it returns (a fit with an output_dir keeps
#: any size on disk): 256 MiB, 32768 samples at D = 2048.
KEEP_INDEX_BYTES = 256 * 2**20


@dataclass
class KeptIndex:
    """A finished fit's pooled index, kept for :meth:`EpicExplainer.audit` on the same data: the index, the keys
    it skipped, and ``identity`` (:func:`index_identity`), which the audit's data must match for the index to stand
    in for a pass over it."""

    identity: dict[str, object]
    index: PooledIndex
    skipped_keys: list[int]


def index_identity(classifier: FrozenClassifier, source: ImageSource) -> dict[str, object]:
    """What a pooled index was built from: the model and the data as it was read (its fingerprint and columns)."""
    return {"model_type": classifier.model_type, "num_channels": classifier.num_channels,
            "dataset": source.fingerprint(), "split": source.split, "image_column": source.image_column,
            "key_column": source.key_column}

def top_rows(vectors: torch.Tensor, U: torch.Tensor, count: int, chunk_size: int | None = None,
             scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``count`` rows of ``vectors @ U.T`` per column: (scores (D, count) float64, rows (D, count)).

    Chunk by chunk through the one miner (:class:`~epic_hf.mining.TopN`), so that ties keep the
    lower row first, as a full sort of the whole matrix would. By default a chunk's scores take
    about :data:`MINING_CHUNK_BYTES`.
    """
    total, dim = vectors.shape[0], U.shape[0]
    chunk_size = chunk_size or max(1, MINING_CHUNK_BYTES // (8 * max(dim, 1)))
    U = U.detach().float()
    top = TopN(dim, max(1, min(count, total)), device=U.device)
    for start in range(0, total, chunk_size):
        chunk = torch.as_tensor(vectors[start: start + chunk_size]).to(U.device, torch.float32)
        top.update(torch.arange(start, start + chunk.shape[0]), (chunk @ U.T).T * scale)
    return top.scores.cpu(), top.keys.cpu()


class IndexWriter:
    """Accumulates pooled vectors; spills to a memory-mapped file beyond ``budget_bytes``.

    The index pass therefore holds O(batch) images and at most the budget of vectors in RAM.
    """

    def __init__(self, dim: int, budget_bytes: int, spill_dir: str | Path | None = None) -> None:
        self.dim = dim
        self.budget_bytes = budget_bytes
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.chunks: list[np.ndarray] = []
        self.keys: list[int] = []
        self.bytes_in_memory = 0
        self.spill_path: Path | None = None
        self._spill_file: BinaryIO | None = None
        self.rows_spilled = 0

    def add(self, keys: list[int], vectors: torch.Tensor) -> None:
        array = vectors.detach().float().cpu().numpy()
        self.keys.extend(int(k) for k in keys)
        if self._spill_file is None and self.bytes_in_memory + array.nbytes > self.budget_bytes:
            self._start_spill()
        if self._spill_file is not None:
            self._spill_file.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())
            self.rows_spilled += array.shape[0]
        else:
            self.chunks.append(array)
            self.bytes_in_memory += array.nbytes

    def _start_spill(self) -> None:
        directory = self.spill_dir or Path(tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="epic-index-", suffix=".f32", dir=directory)
        self.spill_path = Path(name)
        spill = self._spill_file = os.fdopen(handle, "wb")
        for chunk in self.chunks:  # move what was in memory to the file, in order
            spill.write(np.ascontiguousarray(chunk, dtype=np.float32).tobytes())
            self.rows_spilled += chunk.shape[0]
        self.chunks, self.bytes_in_memory = [], 0
        logger.info("pooled index exceeds %.0f MB: spilling to memory-mapped %s", self.budget_bytes / 2**20, name)

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors, keys); vectors are backed by a memmap when the index spilled."""
        keys = torch.tensor(self.keys, dtype=torch.int64)
        if self._spill_file is not None and self.spill_path is not None:
            self._spill_file.close()
            self._spill_file = None
            mapped = np.memmap(self.spill_path, dtype=np.float32, mode="r+", shape=(self.rows_spilled, self.dim))
            return torch.from_numpy(np.asarray(mapped)), keys
        if not self.chunks:
            return torch.zeros(0, self.dim), keys
        return torch.from_numpy(np.concatenate(self.chunks)), keys


def merge_shards(shards: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Concatenate per-process (vectors, keys, *per-row extras), drop duplicate keys, sort by key.

    Sorting makes the index (and so mining, ties included) identical for any process count.
    Returns a tuple shaped like each shard: (vectors, keys, *extras).
    """
    if not shards:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
    keys = torch.cat([shard[1] for shard in shards])
    unique, first = np.unique(keys.numpy(), return_index=True)
    order = torch.from_numpy(first)
    columns = [torch.cat([torch.as_tensor(shard[i]) for shard in shards])[order] for i in range(len(shards[0]))]
    columns[1] = torch.from_numpy(unique)
    return tuple(columns)
