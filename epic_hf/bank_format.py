"""The EPIC bank files: ``epic_config.json`` and one ``epic_bank.safetensors``. Nothing unpickles.

* ``epic_config.json``: :class:`~epic_hf.config.EpicConfig` (format version, base model, its
  commit and weights fingerprint, model_type, D, grid, input size, matrix kind, fit settings,
  dataset, purity).
* ``epic_bank.safetensors``: ``S`` and ``U`` (D, D); ``sample_keys`` (D, N) int64; ``scores``
  (D, N) float32; ``boxes`` (D, N, 4) int64; thumbnails as one uint8 buffer of concatenated
  JPEGs (``thumbnail_data``) with ``thumbnail_keys`` (M,) and ``thumbnail_offsets`` (M+1,);
  optionally ``class_evidence`` (C, D) float32 and ``class_counts`` (C,) int64, and ``U_base``
  (D, D) float32 when a base is set and S is not zero (then ``U = U_base . exp(S - S^T)``); a
  dynamically trivialized fit ends at S = 0, and its metadata ``U_is_base = "1"`` says that ``U``
  is the base itself (one D x D matrix fewer: 16.8 MB at D = 2048). Its string
  metadata holds ``id2label`` and ``sample_names`` as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, write_atomic
from .config import FORMAT_VERSION, EpicConfig
from .errors import BankFormatError, shown

CONFIG_NAME = "epic_config.json"
WEIGHTS_NAME = "epic_bank.safetensors"
REQUIRED_TENSORS = ("S", "sample_keys", "scores", "boxes", "thumbnail_keys", "thumbnail_offsets", "thumbnail_data")


@dataclass
class BankFiles:
    """The contents of a bank's two files, before they become a :class:`PrototypeBank`."""

    config: EpicConfig
    tensors: dict[str, torch.Tensor]
    thumbnails: dict[int, bytes]
    id2label: dict[int, str] = field(default_factory=dict)
    sample_names: dict[int, str] = field(default_factory=dict)
    u_is_base: bool = False


def pack_thumbnails(thumbnails: dict[int, bytes]) -> dict[str, torch.Tensor]:
    """Distinct JPEGs as one byte buffer plus offsets: one tensor, however many images."""
    keys = sorted(thumbnails)
    sizes = [len(thumbnails[k]) for k in keys]
    offsets = torch.zeros(len(keys) + 1, dtype=torch.int64)
    if sizes:
        offsets[1:] = torch.cumsum(torch.tensor(sizes, dtype=torch.int64), 0)
    data = torch.frombuffer(bytearray(b"".join(thumbnails[k] for k in keys)), dtype=torch.uint8) if keys else \
        torch.zeros(0, dtype=torch.uint8)
    return {"thumbnail_keys": torch.tensor(keys, dtype=torch.int64), "thumbnail_offsets": offsets,
            "thumbnail_data": data.clone()}


def unpack_thumbnails(keys: torch.Tensor, offsets: torch.Tensor, data: torch.Tensor) -> dict[int, bytes]:
    if offsets.numel() != keys.numel() + 1 or (keys.numel() and int(offsets[-1]) != data.numel()):
        raise BankFormatError("thumbnail offsets do not match the thumbnail buffer: the bank file is corrupt")
    raw = data.numpy().tobytes()
    bounds = offsets.tolist()
    return {int(k): raw[bounds[i]: bounds[i + 1]] for i, k in enumerate(keys.tolist())}


def write_bank_files(directory: Path, files: BankFiles) -> None:
    """Write ``epic_config.json`` and ``epic_bank.safetensors`` to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in files.tensors.items()}
    tensors.update(pack_thumbnails(files.thumbnails))
    metadata = {"format": "epic", "format_version": str(FORMAT_VERSION),
                "id2label": json.dumps({str(k): v for k, v in files.id2label.items()}),
                "sample_names": json.dumps({str(k): v for k, v in files.sample_names.items()}),
                "U_is_base": "1" if files.u_is_base else "0"}
    with atomic_path(directory / WEIGHTS_NAME) as weights:  # gives the bank the mode open() would, not 0600
        save_file(tensors, str(weights), metadata=metadata)
    write_atomic(directory / CONFIG_NAME, files.config.to_json())


#: Tensors that hold real numbers, each of which must be finite.
FLOAT_TENSORS = ("S", "U", "U_base", "scores", "class_evidence")
#: Tensors of whole numbers, with their dtype.
#: The longest part name a bank may carry beside a channel number.
MAX_PART_NAME = 100
INTEGER_TENSORS = ("sample_keys", "boxes", "thumbnail_keys", "thumbnail_offsets", "class_counts")


def check_tensors(tensors: dict[str, torch.Tensor], config: EpicConfig, file_name: str) -> None:
    """Shapes, dtypes and values of a bank's tensors against its config: a corrupt or hostile file is refused here,
    with what is wrong, before anything computes with it."""
    dim = config.num_channels

    def refuse(problem: str) -> BankFormatError:
        return BankFormatError(f"{file_name}: {problem}; the bank is corrupt")

    for name in FLOAT_TENSORS:
        tensor = tensors.get(name)
        if tensor is None:
            continue
        if not tensor.is_floating_point():
            raise refuse(f"{name} must hold real numbers, not {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise refuse(f"{name} holds NaN or infinite values")
    for name in INTEGER_TENSORS:
        tensor = tensors.get(name)
        if tensor is not None and (tensor.is_floating_point() or tensor.dtype == torch.bool):
            raise refuse(f"{name} must hold whole numbers, not {tensor.dtype}")
    for name in ("S", "U", "U_base"):
        if name in tensors and tuple(tensors[name].shape) != (dim, dim):
            raise refuse(f"{name} has shape {tuple(tensors[name].shape)}, not ({dim}, {dim})")
    keys, boxes, scores = tensors["sample_keys"], tensors["boxes"], tensors["scores"]
    if keys.dim() != 2 or keys.shape[0] != dim or keys.shape[1] < 1:
        raise refuse(f"sample_keys has shape {tuple(keys.shape)}, not ({dim}, N)")
    if tuple(scores.shape) != tuple(keys.shape) or tuple(boxes.shape) != (*keys.shape, 4):
        raise refuse(f"scores {tuple(scores.shape)} and boxes {tuple(boxes.shape)} do not match sample_keys "
                     f"{tuple(keys.shape)}")
    height, width = config.input_size
    x0, y0, x1, y1 = boxes.unbind(-1)
    if not bool(((0 <= x0) & (x0 < x1) & (x1 <= width) & (0 <= y0) & (y0 < y1) & (y1 <= height)).all()):
        raise refuse(f"boxes lie outside the {width} x {height} input")
    evidence, counts = tensors.get("class_evidence"), tensors.get("class_counts")
    if (evidence is None) != (counts is None):
        raise refuse("class_evidence and class_counts come together")
    if evidence is not None and counts is not None:
        if evidence.dim() != 2 or evidence.shape[1] != dim or tuple(counts.shape) != (evidence.shape[0],):
            raise refuse(f"class_evidence {tuple(evidence.shape)} and class_counts {tuple(counts.shape)} do not "
                         f"describe (classes, {dim})")
        if bool((counts < 0).any()):
            raise refuse("class_counts holds negative counts")
    offsets = tensors["thumbnail_offsets"]
    if offsets.numel() and (int(offsets[0]) != 0 or bool((offsets[1:] < offsets[:-1]).any())):
        raise refuse("thumbnail_offsets do not increase from 0")


def read_config(path: Path) -> EpicConfig:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise BankFormatError(f"{path.name} is not UTF-8 text ({error.reason} at byte {error.start}); the bank is "
                              "corrupt") from None
    config = EpicConfig.from_json(text)
    check_channel_parts(config, path.name)
    return config


def check_channel_parts(config: EpicConfig, file_name: str) -> None:
    """``channel_parts`` maps a channel of the bank to [its best part's name, that part's purity in [0, 1]].

    Checked here because the sheet, the atlas and the app print the names beside channel numbers:
    a hostile or hand-edited file must not put long text or a channel that does not exist there.
    """
    for channel, named in config.channel_parts.items():
        ok = (str(channel).isdigit() and int(channel) < config.num_channels and isinstance(named, list)
              and len(named) == 2 and isinstance(named[0], str) and 0 < len(named[0]) <= MAX_PART_NAME
              and isinstance(named[1], (int, float)) and not isinstance(named[1], bool) and 0 <= named[1] <= 1)
        if not ok:
            raise BankFormatError(f"{file_name}: channel_parts[{shown(channel)}] must be [part name, purity in [0, 1]] "
                                  f"of one of the {config.num_channels} channels, got {shown(named)}; the bank is "
                                  "corrupt")


def read_bank_files(config_path: Path, weights_path: Path) -> BankFiles:
    """Read and check a bank (config first, so a future format version fails fast)."""
    config = read_config(config_path)
    try:
        tensors = load_file(str(weights_path))
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise BankFormatError(f"{weights_path.name} is corrupt or truncated ({error}); download or save it again") \
            from None
    missing = set(REQUIRED_TENSORS) - set(tensors)
    if missing:
        raise BankFormatError(f"{weights_path.name} lacks the tensors {sorted(missing)}; it is not an EPIC bank file")
    dim = config.num_channels
    if tensors["S"].shape != (dim, dim) or tensors["sample_keys"].shape[0] != dim:
        raise BankFormatError(
            f"the bank tensors (S {tuple(tensors['S'].shape)}, sample_keys {tuple(tensors['sample_keys'].shape)}) "
            f"do not match num_channels={dim} in its config; the bank is corrupt"
        )
    check_tensors(tensors, config, weights_path.name)
    thumbnails = unpack_thumbnails(tensors.pop("thumbnail_keys"), tensors.pop("thumbnail_offsets"),
                                   tensors.pop("thumbnail_data"))
    absent = set(tensors["sample_keys"].reshape(-1).tolist()) - set(thumbnails)
    if absent:
        raise BankFormatError(f"{weights_path.name} has no thumbnail for {len(absent)} of its prototypes (e.g. sample "
                              f"key {min(absent)}); the bank is corrupt")
    try:
        id2label = {int(k): str(v) for k, v in json.loads(metadata.get("id2label", "{}")).items()}
        names = {int(k): str(v) for k, v in json.loads(metadata.get("sample_names", "{}")).items()}
    except (json.JSONDecodeError, ValueError, AttributeError) as error:
        raise BankFormatError(f"{weights_path.name} has unreadable metadata ({error}); the bank is corrupt") from None
    u_is_base = metadata.get("U_is_base") == "1"
    if u_is_base and "U" not in tensors:
        raise BankFormatError(f"{weights_path.name} says U is its base but holds no U; the bank is corrupt")
    return BankFiles(config=config, tensors=tensors, thumbnails=thumbnails, id2label=id2label, sample_names=names,
                     u_is_base=u_is_base)
