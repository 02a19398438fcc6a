"""Loading a classifier by name, and finding a bank's base model again, wherever it is now.

A bank names its classifier portably: a Hub id plus the resolved commit, or the absolute path a
local folder had when the bank was saved (plus a fingerprint of its weights, checked when the
two are paired). When that folder has moved, ``base_model=`` (``--base-model`` on the CLI)
says where it is now.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from .adapters import adapter_class_for
from .aliases import ImageProcessor
from .backbone import ModelReference
from .config import EpicConfig
from .errors import BaseModelNotFoundError, UnsupportedModelError
from .hub import hub_download_kwargs

logger = logging.getLogger(__name__)


def looks_like_path(value: str) -> bool:
    """A local path rather than a Hub id: absolute, relative with ./ or ../, ~, or more than one slash."""
    return value.startswith(("/", "./", "../", "~", ".\\")) or value.count("/") > 1 or "\\" in value


def load_classifier(name_or_path: str | Path, revision: str | None = None, *, trust_remote_code: bool = False,
                    **hub_kwargs: Any) -> tuple[nn.Module, ImageProcessor, ModelReference]:
    """(model, image processor, reference) of an image classifier in a folder or on the Hub.

    An unsupported family is refused from its config, before any weights are downloaded. A
    folder is referenced by its absolute path, so a bank made from it loads from anywhere.
    Code that ships with a model (a config's ``auto_map``) never runs unless
    ``trust_remote_code=True`` is passed for this call: transformers is told ``False``, so it
    neither runs that code nor asks on the terminal, and such a model is refused with one line.
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification  # heavy: ~2 s

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        name = str(local.resolve())
    elif looks_like_path(name):
        raise FileNotFoundError(f"{name_or_path} is not a folder holding a classifier (it does not exist)")
    trust = {**hub_kwargs, "trust_remote_code": bool(trust_remote_code)}
    try:
        config = AutoConfig.from_pretrained(name, revision=revision, **trust)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise UnsupportedModelError(
            f"{name_or_path} asks to run its own code to load (a custom model type); epic_hf never runs foreign "
            "code unless told to: pass trust_remote_code=True (--trust-remote-code) if you trust its author") from None
    adapter_class_for(config.model_type, config)  # refuse before any weights download
    model = AutoModelForImageClassification.from_pretrained(name, revision=revision, **trust)
    processor = AutoImageProcessor.from_pretrained(name, revision=revision, **trust)
    commit = None if local.is_dir() else _resolved_commit(name, revision, model, hub_kwargs)
    return model, processor, ModelReference(name, commit)


def _resolved_commit(name: str, revision: str | None, model: nn.Module,
                     hub_kwargs: dict[str, Any]) -> str | None:  # Any: **kwargs passed on
    """The commit a Hub model was loaded at, so that a bank can pin its base model exactly."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return commit
    from huggingface_hub import hf_hub_download

    try:  # a cache hit: the snapshot folder of the file is named by its commit
        config_path = Path(hf_hub_download(name, "config.json", revision=revision, **hub_download_kwargs(hub_kwargs)))
    except Exception as error:  # noqa: BLE001 - the revision stays as given
        logger.debug("could not resolve the commit of %s: %s", name, error)
        return revision
    folder = config_path.parent.name
    return folder if len(folder) == 40 and all(c in "0123456789abcdef" for c in folder) else revision


def resolve_base_model(config: EpicConfig, base_model: str | Path | None,
                       bank_location: str | Path) -> tuple[str, str | None]:
    """(name_or_path, revision) of the classifier to pair with a bank."""
    if base_model is not None:
        return str(base_model), None
    stored = config.base_model_name_or_path
    if not stored:
        raise BaseModelNotFoundError(
            f"the bank at {bank_location} does not name its base model; pass base_model=<folder or Hub id> "
            "(--base-model on the command line)")
    if looks_like_path(stored) or Path(stored).expanduser().is_absolute():
        if not Path(stored).expanduser().is_dir():
            raise BaseModelNotFoundError(
                f"the bank at {bank_location} was fit on the local classifier {stored}, which is not there any "
                "more; pass base_model=<where it is now> (--base-model PATH on the command line): the bank is "
                "checked against it by its weights' fingerprint")
        return stored, None
    if Path(stored).is_dir():  # a relative folder name stored by an older release, and it is here
        return stored, None
    return stored, config.base_model_revision
