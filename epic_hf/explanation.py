"""The result of :meth:`EpicExplainer.explain`: an exact decomposition of one logit, with its pictures.

The numbers live in :mod:`epic_hf.results`; :class:`Explanation` adds what a person looks at:
the one-page sheet, saving to PNG or JSON, and notebook displays, drawn by :mod:`epic_hf.viz`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from .atomic import atomic_path, write_atomic
from .results import Box, ChannelExplanation, ExplanationData, PrototypeMatch
from .viz import explanation_html, render_explanation

__all__ = ["Box", "ChannelExplanation", "Explanation", "PrototypeMatch"]


class Explanation(ExplanationData):
    """Why the model gave ``target_label``: channel contributions, boxes and prototypes (see ExplanationData)."""

    def to_image(self, overlay: str | Sequence[int] | None = None) -> Image.Image:
        """A one-page picture: the input with boxes, the exact decomposition, a row per channel.

        ``overlay="shown"`` (or ``"all"``, or channel indices) draws the input under the pixel map of
        those channels, :meth:`attribution_map`: the map the field's deletion and insertion metrics score.
        """
        return render_explanation(self, overlay=overlay)

    def save(self, path: str | Path, overlay: str | Sequence[int] | None = None) -> Path:
        """Write :meth:`to_image` (png/jpg by extension; ``overlay`` as there) or :meth:`to_dict` (``.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            write_atomic(path, json.dumps(self.to_dict(), indent=2))
        else:
            with atomic_path(path) as partial:  # the partial name keeps the suffix that picks the format
                self.to_image(overlay).save(partial)
        return path

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.to_image().save(buffer, format="PNG")
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        return explanation_html(self)
