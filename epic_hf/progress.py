"""Progress bars for long work (tqdm, as transformers and datasets use), which a caller can switch off."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

_enabled = True


def disable_progress_bars() -> None:
    """No more epic_hf progress bars in this process (``epic-hf -q`` calls it)."""
    global _enabled
    _enabled = False


def enable_progress_bars() -> None:
    global _enabled
    _enabled = True


def progress_bar(*args: Any, disable: bool = False, **kwargs: Any) -> tqdm:
    return tqdm(*args, disable=disable or not _enabled, **kwargs)
