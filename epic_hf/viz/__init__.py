"""Pictures and pages of explanations and prototype banks, drawn with PIL alone.

* :func:`render_explanation`: the one-page sheet of an :class:`~epic_hf.Explanation`;
* :func:`render_prototype_sheet`: one channel's prototypes from a bank;
* :func:`write_html_report`: a self-contained HTML page for a batch of explanations;
* :func:`write_atlas`: a static site of every channel and class of a bank (docs/atlas.md);
* :func:`render_purity_curve`: a fit's purity per schedule step (``purity.png``).

Modules, each with one job: ``colors`` (palette, heatmap ramp), ``fonts`` (per-character font
fallback), ``layout`` (arithmetic geometry), ``draw`` (boxes, cells, tags), ``captions`` (all the
wording), ``prototypes``, ``sheet``, ``report``, ``atlas`` and ``curve``. Rendering sits above the
data: this package reads the bank and the explanation's numbers (:mod:`epic_hf.results`), and
nothing below it (the bank, the fit, the results) imports it; ``epic_hf.explanation`` adds the
pictures to the numbers on top.
"""

from .atlas import write_atlas
from .colors import CHANNEL_COLORS, MAX_CHANNELS_SHOWN, channel_color, heatmap_overlay
from .curve import render_purity_curve
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
    "render_purity_curve",
    "write_atlas",
    "write_html_report",
]
