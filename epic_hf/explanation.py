"""The result of :meth:`EpicExplainer.explain`: an exact decomposition of one logit, with its pictures.

The numbers live in :mod:`epic_hf.results`; :class:`Explanation` adds what a person looks at:
the one-page sheet, saving to PNG or JSON, and notebook displays, drawn by :mod:`epic_hf.viz`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from .atomic import atomic_path, write_atomic
from .results import Box, ChannelExplanation, ExplanationData, PrototypeMatch
from .viz import explanation_html, render_explanation

__all__ = ["Box", "ChannelExplanation", "Explanation", "PrototypeMatch"]


class Explanation(ExplanationData):
    """Why the model gave ``target_label``: channel contributions, boxes and prototypes (see ExplanationData)."""

    def to_image(self) -> Image.Image:
        """A one-page picture: the input with boxes, the exact decomposition, a row per channel."""
        return render_explanation(self)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_image` (png/jpg by extension) or :meth:`to_dict` (``.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".json":
            write_atomic(path, json.dumps(self.to_dict(), indent=2))
        else:
            with atomic_path(path) as partial:  # the partial name keeps the suffix that picks the format
                self.to_image().save(partial)
        return path

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.to_image().save(buffer, format="PNG")
        return buffer.getvalue()

    def _repr_html_(self) -> str:
        return explanation_html(self)
