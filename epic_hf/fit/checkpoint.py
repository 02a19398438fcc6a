"""Checkpoints in a fit's ``output_dir``, so a killed run resumes without redoing finished work.

Layout (all safetensors / JSON, written atomically, only by the main process):

* ``fit_args.json``: the arguments that determine the result; a resume with other
  arguments is refused rather than silently mixing two runs.
* ``index_vectors.f32`` + ``index.safetensors``: the pooled-vector index after the one backbone
  pass (raw float32 vectors, memory-mapped on resume; keys, grid and skipped samples).
* ``train_state.safetensors``: S, the Adam state and the number of finished schedule steps.
* ``bank/``: the final EPIC repo, written when the fit completes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointMismatchError

logger = logging.getLogger(__name__)

ARGS_NAME = "fit_args.json"
INDEX_NAME = "index.safetensors"
VECTORS_NAME = "index_vectors.f32"
STATE_NAME = "train_state.safetensors"
BANK_DIR = "bank"
#: Rows of the pooled index written at a time: bounded memory when the index is memory-mapped.
WRITE_CHUNK_ROWS = 65536


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    partial = path.with_name(path.name + ".partial")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(partial), metadata=metadata)
    os.replace(partial, path)


class FitCheckpoint:
    """Reads and writes one fit's checkpoint directory (a no-op when ``directory`` is None)."""

    def __init__(self, directory: str | Path | None, args: dict[str, Any], is_main: bool = True) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.args = json.loads(json.dumps(args, sort_keys=True, default=str))
        self.is_main = is_main
        if self.directory is None:
            return
        recorded_path = self.directory / ARGS_NAME
        if recorded_path.is_file():
            recorded = json.loads(recorded_path.read_text())
            if recorded != self.args:
                changed = sorted(k for k in set(recorded) | set(self.args) if recorded.get(k) != self.args.get(k))
                raise CheckpointMismatchError(
                    f"{self.directory} holds a checkpoint of a fit with other arguments (differing: {changed}); "
                    "use another output_dir, or delete this one to start over"
                )
        elif is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            recorded_path.write_text(json.dumps(self.args, indent=2, sort_keys=True))

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, name: str) -> Path | None:
        return self.directory / name if self.directory is not None else None

    # -- index ---------------------------------------------------------------------------
    def load_index(self) -> dict[str, torch.Tensor] | None:
        """The saved index; its vectors are memory-mapped, not read into memory."""
        path, vectors_path = self._path(INDEX_NAME), self._path(VECTORS_NAME)
        if path is None or vectors_path is None or not path.is_file():
            return None
        logger.info("resuming: loading the pooled index from %s", path)
        tensors = load_file(str(path))
        rows, dim = (int(v) for v in tensors.pop("vectors_shape").tolist())
        mapped = np.memmap(vectors_path, dtype=np.float32, mode="r+", shape=(rows, dim))
        tensors["vectors"] = torch.from_numpy(np.asarray(mapped))
        return tensors

    def save_index(self, vectors: torch.Tensor, tensors: dict[str, torch.Tensor]) -> None:
        """Vectors as a raw float32 file written in chunks (an index may exceed memory), then the rest."""
        path, target = self._path(INDEX_NAME), self._path(VECTORS_NAME)
        if path is None or target is None or not self.is_main:
            return
        array = vectors.numpy()
        partial = target.with_name(target.name + ".partial")
        with open(partial, "wb") as handle:
            for start in range(0, array.shape[0], WRITE_CHUNK_ROWS):
                rows = array[start: start + WRITE_CHUNK_ROWS]
                handle.write(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
        os.replace(partial, target)
        _atomic_save({**tensors, "vectors_shape": torch.tensor(array.shape, dtype=torch.int64)}, path)

    # -- training state ------------------------------------------------------------------
    def load_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        path = self._path(STATE_NAME)
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads(handle.metadata()["state"])
        return load_file(str(path)), metadata

    def save_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        path = self._path(STATE_NAME)
        if path is not None and self.is_main:
            _atomic_save(tensors, path, metadata={"state": json.dumps(metadata)})

    @property
    def bank_dir(self) -> Path | None:
        return self._path(BANK_DIR)
