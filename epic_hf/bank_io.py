"""The EPIC repo format: a JSON config, one safetensors file and a model card.

Like a PEFT adapter, an EPIC repo holds only what EPIC adds and *names* its base model
(``base_model_name_or_path`` plus the resolved commit); loading it loads the base model.

Files:

* ``epic_config.json``: format version, base model and commit, model_type, D, feature grid,
  input size, matrix kind, fit hyperparameters, dataset, purity before/after.
* ``epic_bank.safetensors``: ``S`` and ``U`` (D, D); ``sample_keys`` (D, N) int64; ``scores``
  (D, N) float32; ``boxes`` (D, N, 4) int64; thumbnails as one uint8 buffer of concatenated
  JPEGs (``thumbnail_data``) with ``thumbnail_keys`` (M,) and ``thumbnail_offsets`` (M+1,),
  one entry per distinct prototype image.
* ``README.md``: a model card.

Nothing here unpickles: safetensors and JSON only.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .bank import PrototypeBank
from .errors import BankFormatError, BankMismatchError

if TYPE_CHECKING:
    from .explainer import EpicExplainer

logger = logging.getLogger(__name__)

CONFIG_NAME = "epic_config.json"
WEIGHTS_NAME = "epic_bank.safetensors"
FORMAT_VERSION = 1
_HUB_DOWNLOAD_KWARGS = ("token", "cache_dir", "local_files_only", "force_download", "proxies", "repo_type")


# -- thumbnails <-> one buffer ----------------------------------------------------------
def pack_thumbnails(thumbnails: dict[int, bytes]) -> dict[str, torch.Tensor]:
    keys = sorted(thumbnails)
    sizes = [len(thumbnails[k]) for k in keys]
    offsets = torch.zeros(len(keys) + 1, dtype=torch.int64)
    if sizes:
        offsets[1:] = torch.cumsum(torch.tensor(sizes, dtype=torch.int64), 0)
    data = torch.frombuffer(bytearray(b"".join(thumbnails[k] for k in keys)), dtype=torch.uint8) if keys else \
        torch.zeros(0, dtype=torch.uint8)
    return {
        "thumbnail_keys": torch.tensor(keys, dtype=torch.int64),
        "thumbnail_offsets": offsets,
        "thumbnail_data": data.clone(),
    }


def unpack_thumbnails(keys: torch.Tensor, offsets: torch.Tensor, data: torch.Tensor) -> dict[int, bytes]:
    if offsets.numel() != keys.numel() + 1 or (keys.numel() and int(offsets[-1]) != data.numel()):
        raise BankFormatError("thumbnail offsets do not match the thumbnail buffer: the bank file is corrupt")
    raw = data.numpy().tobytes()
    bounds = offsets.tolist()
    return {int(k): raw[bounds[i]: bounds[i + 1]] for i, k in enumerate(keys.tolist())}


# -- local files -----------------------------------------------------------------------
def bank_config(bank: PrototypeBank) -> dict[str, Any]:
    from . import __version__

    config = dict(bank.config)
    config.update(
        format="epic",
        format_version=FORMAT_VERSION,
        library_version=__version__,
        num_channels=bank.num_channels,
        prototypes_per_channel=bank.prototypes_per_channel,
        matrix=bank.matrix,
        input_size=list(bank.input_size),
        grid_size=list(bank.grid_size),
    )
    return config


def _readable_like_other_files(path: Path) -> None:
    """safetensors writes 0600 files; give the bank the mode ``open()`` would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def save_bank(bank: PrototypeBank, directory: Path) -> Path:
    """Write ``epic_config.json``, ``epic_bank.safetensors`` and ``README.md`` to ``directory``."""
    from .model_card import model_card

    directory.mkdir(parents=True, exist_ok=True)
    config = bank_config(bank)
    with torch.no_grad():
        tensors = {
            "S": bank.S.detach().float().cpu().contiguous(),
            "U": bank.U.detach().float().cpu().contiguous(),
            "sample_keys": bank.sample_keys.to(torch.int64).cpu().contiguous(),
            "scores": bank.scores.float().cpu().contiguous(),
            "boxes": bank.boxes.to(torch.int64).cpu().contiguous(),
            **pack_thumbnails(bank.thumbnails),
        }
    weights = directory / WEIGHTS_NAME
    save_file(tensors, str(weights), metadata={"format": "epic", "format_version": str(FORMAT_VERSION)})
    _readable_like_other_files(weights)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True))
    (directory / "README.md").write_text(model_card(config))
    logger.info("saved EPIC bank (%d channels x %d prototypes) to %s", bank.num_channels,
                bank.prototypes_per_channel, directory)
    return directory


def hub_download_kwargs(hub_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of from_pretrained keyword arguments that ``hf_hub_download`` understands."""
    return {k: v for k, v in hub_kwargs.items() if k in _HUB_DOWNLOAD_KWARGS}


def _resolve_file(path_or_repo_id: str | Path, filename: str, revision: str | None, **hub_kwargs: Any) -> Path:
    local = Path(path_or_repo_id)
    if local.is_dir():
        candidate = local / filename
        if not candidate.is_file():
            raise BankFormatError(f"{local} is not an EPIC bank directory: {filename} is missing")
        return candidate
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(path_or_repo_id), filename, revision=revision, **hub_download_kwargs(hub_kwargs)))


def is_epic_repo(path_or_repo_id: str | Path, revision: str | None = None, **hub_kwargs: Any) -> bool:
    """True when the directory or Hub repo holds an ``epic_config.json``."""
    local = Path(path_or_repo_id)
    if local.is_dir():
        return (local / CONFIG_NAME).is_file()
    if local.exists():
        return False
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    try:
        _resolve_file(path_or_repo_id, CONFIG_NAME, revision, **hub_kwargs)
    except (EntryNotFoundError, HFValidationError):
        return False
    except Exception as error:  # repo missing, offline...: let the classifier loader report it
        logger.debug("no EPIC config found for %s: %s", path_or_repo_id, error)
        return False
    return True


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BankFormatError(f"{path.name} is not valid JSON ({error}); the bank is corrupt") from None
    if not isinstance(config, dict) or config.get("format") != "epic":
        raise BankFormatError(f"{path.name} is not an EPIC bank config (missing format='epic')")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise BankFormatError(
            f"the bank uses format version {version!r}; this epic_hf reads version {FORMAT_VERSION}. "
            "Upgrade epic_hf (pip install -U epic_hf) to read banks written by a newer release."
        )
    return config


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise BankFormatError(f"{path.name} is corrupt or truncated ({error}); download or save it again") from None
    missing = {"S", "sample_keys", "scores", "boxes", "thumbnail_keys", "thumbnail_offsets", "thumbnail_data"} - set(tensors)
    if missing:
        raise BankFormatError(f"{path.name} lacks the tensors {sorted(missing)}; it is not an EPIC bank file")
    return tensors


def load_bank(path_or_repo_id: str | Path, revision: str | None = None, **hub_kwargs: Any) -> PrototypeBank:
    """Read a bank from a directory or a Hub repo (config first, so a future version fails fast)."""
    config = read_config(_resolve_file(path_or_repo_id, CONFIG_NAME, revision, **hub_kwargs))
    tensors = read_tensors(_resolve_file(path_or_repo_id, WEIGHTS_NAME, revision, **hub_kwargs))
    dim = int(config.get("num_channels", -1))
    if tensors["S"].shape != (dim, dim) or tensors["sample_keys"].shape[0] != dim:
        raise BankFormatError(
            f"the bank tensors (S {tuple(tensors['S'].shape)}, sample_keys {tuple(tensors['sample_keys'].shape)}) "
            f"do not match num_channels={dim} in its config; the bank is corrupt"
        )
    try:
        return PrototypeBank(
            sample_keys=tensors["sample_keys"],
            scores=tensors["scores"],
            boxes=tensors["boxes"],
            S=tensors["S"],
            matrix=config["matrix"],
            thumbnails=unpack_thumbnails(tensors["thumbnail_keys"], tensors["thumbnail_offsets"], tensors["thumbnail_data"]),
            input_size=tuple(config["input_size"]),
            grid_size=tuple(config["grid_size"]),
            config=config,
        )
    except (KeyError, ValueError) as error:
        raise BankFormatError(f"the bank is inconsistent: {error}") from None


def push_folder(directory: Path, repo_id: str, *, private: bool, token: str | None, commit_message: str,
                revision: str | None = None) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), commit_message=commit_message,
                             revision=revision)
    return str(getattr(info, "commit_url", info))


def push_bank_to_hub(bank: PrototypeBank, repo_id: str, *, private: bool = False, token: str | None = None,
                     commit_message: str = "Upload EPIC prototype bank", revision: str | None = None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        save_bank(bank, Path(tmp))
        return push_folder(Path(tmp), repo_id, private=private, token=token, commit_message=commit_message,
                           revision=revision)


# -- explainers ------------------------------------------------------------------------
def _require_bank(explainer: "EpicExplainer") -> PrototypeBank:
    if explainer.bank is None:
        raise ValueError("this explainer has no prototype bank yet: call explainer.fit(dataset) first")
    return explainer.bank


def save_explainer(explainer: "EpicExplainer", directory: Path) -> Path:
    return save_bank(_require_bank(explainer), directory)


def push_explainer_to_hub(explainer: "EpicExplainer", repo_id: str, **kwargs: Any) -> str:
    return push_bank_to_hub(_require_bank(explainer), repo_id, **kwargs)


def load_explainer_from_epic_repo(cls, path_or_repo_id: str | Path, revision: str | None = None,
                                  **hub_kwargs: Any) -> "EpicExplainer":
    """Load the bank, then the base model it names at its pinned commit, and pair them."""
    bank = load_bank(path_or_repo_id, revision=revision, **hub_kwargs)
    base = bank.config.get("base_model_name_or_path")
    if not base:
        raise BankFormatError("the bank's config does not name its base model (base_model_name_or_path)")
    base_revision = bank.config.get("base_model_revision")
    logger.info("loading base model %s (revision %s) for EPIC bank %s", base, base_revision, path_or_repo_id)
    explainer = cls.from_classifier(base, revision=base_revision, matrix=bank.matrix, **hub_kwargs)
    explainer.set_bank(bank)
    return explainer


def check_bank_matches(bank: PrototypeBank, model_type: str, num_channels: int, base_model: str | None) -> None:
    """Refuse a bank fit on another model: D, model_type and base model must agree."""
    if bank.num_channels != num_channels:
        raise BankMismatchError(
            f"the bank has {bank.num_channels} channels but this model's feature map has {num_channels}: "
            "it was fit on another model"
        )
    bank_type = bank.config.get("model_type")
    if bank_type is not None and bank_type != model_type:
        raise BankMismatchError(f"the bank was fit on a {bank_type!r} model, not on this {model_type!r} model")
    bank_base = bank.config.get("base_model_name_or_path")
    if bank_base and base_model and str(bank_base) != str(base_model):
        raise BankMismatchError(
            f"the bank was fit on base model {bank_base!r}, not {base_model!r}; load it with "
            f"EpicExplainer.from_pretrained(<bank repo>) so that its own base model is loaded, or pass "
            "check_base_model=False to set_bank if both names refer to the same weights"
        )
