"""Pictures and pages of explanations and prototype banks, drawn with PIL alone.

* :func:`render_explanation`: the one-page sheet of an :class:`~epic_hf.Explanation`;
* :func:`render_prototype_sheet`: one channel's prototypes from a bank (``bank.show(c)``);
* :func:`write_html_report`: a self-contained HTML page for a batch of explanations.

Modules, each with one job: ``colors`` (palette, heatmap ramp), ``fonts`` (per-character font
fallback), ``layout`` (arithmetic geometry), ``draw`` (boxes, cells, tags), ``captions`` (all the
wording), ``prototypes``, ``sheet`` and ``report``. Nothing here imports the result classes, the
bank or the explainer at run time: they are read by attribute, so ``epic_hf.explanation`` can
import this package without a cycle.
"""

from .colors import CHANNEL_COLORS, MAX_CHANNELS_SHOWN, channel_color, heatmap_overlay
from .layout import ExplanationLayout, Metrics, SheetLayout, explanation_layout, prototype_sheet_layout
from .prototypes import render_prototype_sheet
from .report import explanation_html, render_html_report, write_html_report
from .sheet import NO_PROTOTYPES_TEXT, layout_for, render_explanation

__all__ = [
    "CHANNEL_COLORS",
    "MAX_CHANNELS_SHOWN",
    "NO_PROTOTYPES_TEXT",
    "ExplanationLayout",
    "Metrics",
    "SheetLayout",
    "channel_color",
    "explanation_html",
    "explanation_layout",
    "heatmap_overlay",
    "layout_for",
    "prototype_sheet_layout",
    "render_explanation",
    "render_html_report",
    "render_prototype_sheet",
    "write_html_report",
]
