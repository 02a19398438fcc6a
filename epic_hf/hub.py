"""Persistence written once, after ``huggingface_hub.ModelHubMixin``.

The public ``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` orchestrate (folders, the
model card, repos, downloads); a class implements only the private ``_save_pretrained(directory)``,
``_from_pretrained(files, ...)`` and ``_model_card(repo_id)``. A model card already on the Hub is
updated (its metadata merged, EPIC's section replaced), never overwritten.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoCard, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from .atomic import atomic_path
from .errors import HubUnreachableError

logger = logging.getLogger(__name__)

T = TypeVar("T", bound="HubMixin")
C = TypeVar("C", bound=RepoCard)
HUB_DOWNLOAD_KWARGS = ("token", "cache_dir", "local_files_only", "force_download", "proxies", "repo_type")
#: Markers around the section of a model card that epic_hf writes; text outside them is the user's.
CARD_START, CARD_END = "<!-- epic_hf:start -->", "<!-- epic_hf:end -->"


#: Seconds to wait for the Hub's TCP handshake before working from the local cache only.
REACH_TIMEOUT = 3.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_is_reachable(timeout: float = REACH_TIMEOUT) -> bool:
    """Whether the Hub endpoint accepts a TCP connection within ``timeout`` seconds (no retries)."""
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_access(name_or_path: str | Path, hub_kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:  # Any: **kwargs
    """``hub_kwargs`` to load ``name_or_path`` with, failing fast and clearly when the Hub is out of reach.

    Without this, ``huggingface_hub`` retries a dead connection for about half a minute before a
    bare ``OSError``. A local folder, ``HF_HUB_OFFLINE=1`` or ``local_files_only`` need no network.
    When the endpoint cannot be reached, loading goes on from the local cache alone, and a file
    missing there raises :class:`HubUnreachableError` saying what to do.
    """
    if Path(str(name_or_path)).expanduser().is_dir() or constants.HF_HUB_OFFLINE or hub_kwargs.get("local_files_only"):
        yield hub_kwargs
        return
    if hub_is_reachable():
        yield hub_kwargs
        return
    logger.warning("cannot reach the Hugging Face Hub at %s: using the local cache only", hub_endpoint())
    try:
        yield {**hub_kwargs, "local_files_only": True}
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as error:
        if isinstance(error, HubUnreachableError):
            raise
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub at {hub_endpoint()}, and {name_or_path} is not in the local cache; "
            "work offline with HF_HUB_OFFLINE=1 and files already downloaded, or give a local folder") from None


def hub_download_kwargs(hub_kwargs: dict[str, Any]) -> dict[str, Any]:  # Any: **kwargs
    """The subset of from_pretrained keyword arguments that ``hf_hub_download`` understands."""
    return {k: v for k, v in hub_kwargs.items() if k in HUB_DOWNLOAD_KWARGS}


def file_resolver(name_or_path: str | Path, revision: str | None = None,
                  **hub_kwargs: Any) -> Callable[[str], Path]:
    """A function giving the local path of a repo file: in a folder, or downloaded from the Hub."""
    local = Path(name_or_path)

    def resolve(filename: str) -> Path:
        if local.is_dir():
            return local / filename
        return Path(hf_hub_download(str(name_or_path), filename, revision=revision,
                                    **hub_download_kwargs(hub_kwargs)))

    return resolve


def has_file(name_or_path: str | Path, filename: str, revision: str | None = None, **hub_kwargs: Any) -> bool:
    """True when the folder or Hub repo holds ``filename``; False when it or the repo does not exist."""
    local = Path(name_or_path)
    if local.is_dir():
        return (local / filename).is_file()
    if local.exists():
        return False
    try:
        file_resolver(name_or_path, revision, **hub_kwargs)(filename)
    except (EntryNotFoundError, HFValidationError, RepositoryNotFoundError):
        return False
    return True


def replace_section(text: str, section: str, start: str = CARD_START, end: str = CARD_END) -> str:
    """``text`` with its part between the ``start`` and ``end`` markers replaced by ``section`` (markers included).

    Why markers: files epic_hf writes into a repo (a model card, a Space's ``app.py``) may be edited
    by hand on the Hub. Pushing again rewrites only EPIC's marked part and keeps everything else;
    a file without the markers gets the section appended.
    """
    if start in text and end in text and text.index(start) < text.index(end):
        return text[:text.index(start)] + section + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + section + "\n" if text.strip() else section + "\n"


def marked_section(text: str, start: str = CARD_START, end: str = CARD_END) -> str:
    """The part of ``text`` from the ``start`` marker to the ``end`` marker, both included."""
    return text[text.index(start):text.index(end) + len(end)]


def merge_cards(existing: C | None, ours: C) -> C:
    """Our card, or the existing one with its metadata merged and EPIC's marked section replaced.

    Works for any ``RepoCard`` (a model card, a Space's README): the result is of ``ours``'s type.
    """
    if existing is None:
        return ours
    data = existing.data.to_dict()
    new = ours.data.to_dict()
    data["tags"] = sorted(set(data.get("tags") or []) | set(new.pop("tags", []) or []))
    data.update(new)
    text = replace_section(existing.text, marked_section(ours.text))
    card = type(ours)(text)
    card.data = type(ours.data)(**data)
    return card


class HubMixin:
    """``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` for any class implementing the private trio."""

    def _save_pretrained(self, directory: Path) -> None:
        raise NotImplementedError

    def _model_card(self, repo_id: str | None) -> ModelCard:
        raise NotImplementedError

    def _publishable(self) -> HubMixin:
        """What ``push_to_hub`` uploads: by default the object itself; a class whose files may record local paths
        returns a copy without them."""
        return self

    @classmethod
    def _from_pretrained(cls: type[T], resolve: Callable[[str], Path], name_or_path: str | Path,
                         revision: str | None, **hub_kwargs: Any) -> T:
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | Path, *, repo_id: str | None = None) -> Path:
        """Write the repo's files and its model card to ``save_directory``."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_pretrained(directory)
        card_path = directory / "README.md"
        existing = ModelCard.load(card_path) if card_path.is_file() else None
        with atomic_path(card_path) as partial:
            merge_cards(existing, self._model_card(repo_id)).save(partial)
        logger.info("saved %s to %s", type(self).__name__, directory)
        return directory

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload EPIC prototype bank", revision: str | None = None) -> str:
        """Create (or reuse) ``repo_id`` and upload the files; returns the commit URL."""
        info = self._push(repo_id, private=private, token=token, commit_message=commit_message, revision=revision)
        return str(getattr(info, "commit_url", info))

    def _push(self, repo_id: str, *, private: bool, token: str | None, commit_message: str,
              revision: str | None) -> CommitInfo:
        """The upload behind :meth:`push_to_hub`; returns ``huggingface_hub``'s ``CommitInfo`` (its ``oid``
        is the commit a Space pins)."""
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        published = self._publishable()
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            published._save_pretrained(directory)
            existing = _hub_card(api, repo_id, revision)
            with atomic_path(directory / "README.md") as partial:
                merge_cards(existing, published._model_card(repo_id)).save(partial)
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                     revision=revision)

    @classmethod
    def from_pretrained(cls: type[T], name_or_path: str | Path, revision: str | None = None, **hub_kwargs: Any) -> T:
        """Load from a local folder or a Hub repo (``token``, ``cache_dir``, ... go to ``huggingface_hub``)."""
        with hub_access(name_or_path, hub_kwargs) as access:
            return cls._from_pretrained(file_resolver(name_or_path, revision, **access), name_or_path, revision,
                                        **access)


def _hub_card(api: HfApi, repo_id: str, revision: str | None) -> ModelCard | None:
    """The model card on the Hub, if the repo has one."""
    try:
        path = api.hf_hub_download(repo_id, "README.md", revision=revision)
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    return ModelCard.load(path)
