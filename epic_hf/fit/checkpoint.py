"""Checkpoints in a fit's ``output_dir``, so a killed run resumes without redoing finished work.

Layout (all safetensors / JSON / raw float32, written atomically, only by the main process, each
recorded with its size and checksum in ``manifest.json``: see :mod:`.integrity`):

* ``fit_args.json``: the arguments that determine the result; a resume with other
  arguments is refused rather than silently mixing two runs.
* ``index_vectors.f32`` + ``index.safetensors``: the pooled-vector index after the one backbone
  pass (raw float32 vectors, memory-mapped on resume; keys, grid and skipped samples).
* ``train_state.safetensors``: S, the Adam state and the number of finished schedule steps.
* ``bank/``: the final EPIC repo, written when the fit completes, then ``fit_report.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..aliases import JSONDict
from ..atomic import atomic_path, atomic_stream, write_atomic
from ..bank_format import CONFIG_NAME, WEIGHTS_NAME
from ..errors import CheckpointMismatchError
from .integrity import Manifest

logger = logging.getLogger(__name__)

ARGS_NAME = "fit_args.json"
INDEX_NAME = "index.safetensors"
VECTORS_NAME = "index_vectors.f32"
STATE_NAME = "train_state.safetensors"
REPORT_NAME = "fit_report.json"
BANK_DIR = "bank"
#: The bank's files, as the manifest names them (written by ``save_pretrained`` into ``bank/``).
BANK_FILES = (f"{BANK_DIR}/{CONFIG_NAME}", f"{BANK_DIR}/{WEIGHTS_NAME}")
#: Rows of the pooled index written at a time: bounded memory when the index is memory-mapped.
WRITE_CHUNK_ROWS = 65536


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as partial:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(partial), metadata=metadata)


class FitCheckpoint:
    """Reads and writes one fit's checkpoint directory (a no-op when ``directory`` is None).

    Only files whose size and checksum match the manifest are read (:mod:`.integrity`); a
    damaged one is named in a warning and its piece of work is done again.
    """

    def __init__(self, directory: str | Path | None, args: JSONDict, is_main: bool = True) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.args = json.loads(json.dumps(args, sort_keys=True, default=str))
        self.is_main = is_main
        if self.directory is None:
            self.manifest = None
            return
        if is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.directory)
        recorded_path = self.directory / ARGS_NAME
        if recorded_path.is_file():
            recorded = self._recorded_args(recorded_path)
            if recorded != self.args:
                changed = sorted(k for k in set(recorded) | set(self.args) if recorded.get(k) != self.args.get(k))
                raise CheckpointMismatchError(
                    f"{self.directory} holds a checkpoint of a fit with other arguments (differing: {changed}); "
                    "use another output_dir, or delete this one to start over"
                )
        elif is_main:
            self._write(ARGS_NAME, json.dumps(self.args, indent=2, sort_keys=True).encode())

    def _recorded_args(self, path: Path) -> JSONDict:
        assert self.manifest is not None
        problem = self.manifest.problem(ARGS_NAME) if ARGS_NAME in self.manifest.entries else None
        try:
            recorded = json.loads(path.read_bytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            recorded, problem = None, problem or "it is not valid JSON"
        if problem is not None or not isinstance(recorded, dict):
            raise CheckpointMismatchError(
                f"{path} is damaged ({problem or 'it is not an object'}): it cannot say which fit this directory "
                "holds; delete the directory to start over, or use another output_dir")
        return recorded

    def _write(self, name: str, data: bytes) -> None:
        assert self.directory is not None and self.manifest is not None
        write_atomic(self.directory / name, data)
        self.manifest.record(name)

    def _readable(self, *names: str) -> bool:
        """Whether every file of one piece of work matches the manifest; if one does not, it is named and dropped."""
        if self.manifest is None:
            return False
        for name in names:
            if not (self.manifest.directory / name).exists():
                return False  # never written, or removed on purpose: the work is simply done
            problem = self.manifest.problem(name)
            if problem is not None:
                logger.warning("checkpoint file %s is not used: %s; that part of the fit is done again",
                               self.manifest.directory / name, problem)
                if self.is_main:
                    for dropped in names:
                        (self.manifest.directory / dropped).unlink(missing_ok=True)
                        self.manifest.forget(dropped)
                return False
        return True

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, name: str) -> Path | None:
        return self.directory / name if self.directory is not None else None

    # -- index ---------------------------------------------------------------------------
    def load_index(self) -> dict[str, torch.Tensor] | None:
        """The saved index; its vectors are memory-mapped read-only (copy on write), never extended."""
        path, vectors_path = self._path(INDEX_NAME), self._path(VECTORS_NAME)
        if path is None or vectors_path is None or not self._readable(INDEX_NAME, VECTORS_NAME):
            return None
        logger.info("resuming: loading the pooled index from %s", path)
        tensors = load_file(str(path))
        rows, dim = (int(v) for v in tensors.pop("vectors_shape").tolist())
        mapped = np.memmap(vectors_path, dtype=np.float32, mode="c", shape=(rows, dim))
        tensors["vectors"] = torch.from_numpy(np.asarray(mapped))
        return tensors

    def save_index(self, vectors: torch.Tensor, tensors: dict[str, torch.Tensor]) -> None:
        """Vectors as a raw float32 file written in chunks (an index may exceed memory), then the rest."""
        path, target = self._path(INDEX_NAME), self._path(VECTORS_NAME)
        if path is None or target is None or self.manifest is None or not self.is_main:
            return
        array = vectors.numpy()
        with atomic_stream(target) as handle:
            for start in range(0, array.shape[0], WRITE_CHUNK_ROWS):
                rows = array[start: start + WRITE_CHUNK_ROWS]
                handle.write(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
        self.manifest.record(VECTORS_NAME)
        _atomic_save({**tensors, "vectors_shape": torch.tensor(array.shape, dtype=torch.int64)}, path)
        self.manifest.record(INDEX_NAME)

    # -- training state ------------------------------------------------------------------
    def load_state(self) -> tuple[dict[str, torch.Tensor], JSONDict] | None:
        path = self._path(STATE_NAME)
        if path is None or not self._readable(STATE_NAME):
            return None
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads(handle.metadata()["state"])
        return load_file(str(path)), metadata

    def save_state(self, tensors: dict[str, torch.Tensor], metadata: JSONDict) -> None:
        path = self._path(STATE_NAME)
        if path is not None and self.manifest is not None and self.is_main:
            _atomic_save(tensors, path, metadata={"state": json.dumps(metadata)})
            self.manifest.record(STATE_NAME)

    # -- the finished fit ----------------------------------------------------------------
    def load_report(self) -> JSONDict | None:
        """The finished fit's report, if it was written whole (then the bank beside it is complete too)."""
        path = self._path(REPORT_NAME)
        if path is None or not self.finished_files_intact():
            return None
        return json.loads(path.read_bytes().decode("utf-8"))

    def save_report(self, report: JSONDict) -> None:
        """The report, after the bank's files are recorded: together they mark a finished fit."""
        if self.directory is not None and self.manifest is not None and self.is_main:
            for name in BANK_FILES:
                self.manifest.record(name)
            self._write(REPORT_NAME, json.dumps(report, indent=2).encode())

    def finished_files_intact(self) -> bool:
        """Whether the report and the bank files match what the finished fit wrote (else they are dropped)."""
        return self._readable(REPORT_NAME) and self._readable(*BANK_FILES)

    @property
    def bank_dir(self) -> Path | None:
        return self._path(BANK_DIR)
