"""``audit.html``: every finding of an audit with its prototypes, boxes and numbers, in the atlas's style.

One static page in the style :mod:`.page_parts` gives it (the atlas's stylesheet, no script): the
pictures in ``audit-images/<key>.jpg`` (the model's input, as the findings' boxes refer to it), and
for each suspect label the bank's top prototypes of the channels that carry the prediction, in
``audit-prototypes/<key>.jpg`` (the bank's thumbnails, byte for byte). Drawn from the report as plain
data (``AuditReport.to_dict()``), so the page and ``audit.json`` never disagree.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..aliases import JSONDict
from ..atomic import write_atomic
from ..naming import display_name
from .atlas import HIDDEN_AUDIT_LINK
from .page_parts import PAGE_END, class_name, copy_stylesheet, figure, number, page_start, write_pictures

IMAGES_DIR = "audit-images"
#: Where an atlas in the same folder is, and the marker its page carries for the audit's link.
ATLAS_PAGE = "index.html"
_HEADINGS = {
    "fixed_position": ("Fixed-position channels", "A channel that drives a class and peaks at the same place on "
                       "its top activations, far more than this data's peaks do: a tag, watermark, border or stamp "
                       "the model may rely on."),
    "off_class": ("Off-class channels", "A channel that drives a class while most of its top activations are "
                  "labelled another class."),
    "shared_confusion": ("Shared confusions", "For class pairs the model confuses on this data, the channels "
                         "with strong evidence for both."),
    "suspect_label": ("Suspect labels", "Samples whose label disagrees with a confident prediction, with the "
                      "channels that carry the prediction."),
}
_STYLE = """
.with-carriers { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.carriers { display: flex; flex-direction: column; gap: 4px; }
.carrier { display: flex; gap: 8px; align-items: center; font-size: 12px; }
.carrier > span { width: 78px; color: var(--muted); }
"""
#: Where the bank's prototype thumbnails of the suspects' channels are written (byte for byte, as the atlas's).
PROTOTYPES_DIR = "audit-prototypes"


def write_audit_page(report: JSONDict, pictures: dict[int, bytes], path: str | Path,
                     prototypes: dict[int, bytes] | None = None) -> Path:
    """Write ``path`` (``audit.html``), its pictures, the prototypes' and the atlas stylesheet beside it; returns ``path``."""
    target = Path(path)
    root = target.parent
    write_pictures(root, IMAGES_DIR, pictures)
    write_pictures(root, PROTOTYPES_DIR, prototypes or {})
    copy_stylesheet(root)
    atlas = root / ATLAS_PAGE
    has_atlas = atlas.is_file() and HIDDEN_AUDIT_LINK in atlas.read_text(encoding="utf-8")
    shown = _Shown(set(pictures), set(prototypes or {}), report.get("input_size") or [1, 1],
                   {int(key): str(name) for key, name in (report.get("sample_names") or {}).items()})
    write_atomic(target, _page(report, shown, has_atlas or _links_audit(atlas)))
    if has_atlas:  # the atlas in this folder shows its link to the audit now
        write_atomic(atlas, atlas.read_text(encoding="utf-8").replace(HIDDEN_AUDIT_LINK, 'id="audit-link"'))
    return target


class _Shown:
    """What the page can show: the samples' and the prototypes' pictures, the input size boxes refer to, names."""

    def __init__(self, pictures: set[int], prototypes: set[int], size: list[int], names: dict[int, str]) -> None:
        self.pictures, self.prototypes, self.size, self.names = pictures, prototypes, size, names


def _links_audit(atlas: Path) -> bool:
    """Whether ``atlas`` is an atlas page that already links to its audit."""
    return atlas.is_file() and 'id="audit-link"' in atlas.read_text(encoding="utf-8")


def _page(report: JSONDict, shown: _Shown, has_atlas: bool) -> str:
    labels = [str(label) for label in report.get("labels", [])]
    model = display_name((report.get("model") or {}).get("base_model"))
    title = f"{model}: EPIC audit" if model else "EPIC audit"
    findings = report.get("findings", [])
    counts = {kind: sum(1 for f in findings if f["kind"] == kind) for kind in _HEADINGS}
    summary = [f"{report.get('num_samples', 0)} samples", f"{len(findings)} findings",
               "fit's index reused" if report.get("reused_index") else "own pass over the data",
               f"backbone on {report.get('backbone_images', 0)} images", f"{float(report.get('seconds', 0)):.1f} s"]
    nav = ([f'<a href="{ATLAS_PAGE}">Atlas</a>'] if has_atlas else []) + [
        f'<a href="#{kind}">{html.escape(_HEADINGS[kind][0])} ({counts[kind]})</a>' for kind in _HEADINGS]
    parts = page_start(title, _STYLE, nav, summary)
    for note in report.get("notes", []):
        parts.append(f'<p class="note muted">{html.escape(str(note))}</p>')
    for kind, (heading, about) in _HEADINGS.items():
        parts.append(f'<h2 id="{kind}">{html.escape(heading)}</h2><p class="muted">{html.escape(about)}</p>')
        chosen = [f for f in findings if f["kind"] == kind]
        if not chosen:
            parts.append('<p class="muted">None found.</p>')
        cards = [_finding(finding, labels, shown) for finding in chosen]
        # one picture each: suspect labels sit side by side, as the atlas's cards do
        parts.append(f'<div class="cards">{"".join(cards)}</div>' if kind == "suspect_label" else "".join(cards))
    parts.append(_confusion(report.get("confusion"), labels))
    parts.append(PAGE_END)
    return "\n".join(parts)


def _finding(finding: JSONDict, labels: list[str], shown: _Shown) -> str:
    classes = ", ".join(class_name(labels, k) for k in finding["classes"])
    channel = (f"channel {finding['channel']}" if finding["channel"] >= 0
               else "channels " + ", ".join(map(str, finding.get("channels", []))))
    boxes = finding.get("boxes") or []
    figures = []
    for position, key in enumerate(finding["samples"]):
        box = boxes[position] if position < len(boxes) else None
        src = f"{IMAGES_DIR}/{int(key)}.jpg" if int(key) in shown.pictures else None
        figures.append(figure(src, int(key), box, shown.size, shown.names.get(int(key))))
    numbers = "; ".join(f"{name} = {number(value)}" for name, value in (finding.get("numbers") or {}).items())
    return (f'<section class="finding"><div class="finding-head"><span class="kind">{html.escape(channel)}</span>'
            f'<span class="label">{html.escape(classes)}</span><span class="muted">score '
            f'{float(finding["score"]):.3f}</span></div><p>{html.escape(finding["message"])}</p>'
            f'<div class="with-carriers"><div class="strip">{"".join(figures)}</div>{_carriers(finding, shown)}</div>'
            f'<div class="numbers">{html.escape(numbers)}</div></section>')


def _carriers(finding: JSONDict, shown: _Shown) -> str:
    """For a suspect label: each carrying channel's top prototypes in the bank, with their boxes (why the model
    says otherwise)."""
    rows = []
    for entry in finding.get("prototypes") or []:
        figures = "".join(figure(f"{PROTOTYPES_DIR}/{int(key)}.jpg" if int(key) in shown.prototypes else None,
                                 int(key), box, shown.size) for key, box in zip(entry["samples"], entry["boxes"]))
        rows.append(f'<div class="carrier"><span>channel {int(entry["channel"])}<br>prototypes</span>'
                    f'<div class="strip small">{figures}</div></div>')
    return f'<div class="carriers">{"".join(rows)}</div>' if rows else ""


def _confusion(matrix: list[list[int]] | None, labels: list[str]) -> str:
    if not matrix:
        return ""
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = "".join(f"<tr><td>{html.escape(labels[i])}</td>" + "".join(f'<td class="num">{v}</td>' for v in row)
                   + "</tr>" for i, row in enumerate(matrix))
    return ('<h2 id="confusion">Confusions on this data</h2><p class="muted">Rows: label; columns: prediction.</p>'
            f'<table class="evidence"><tr><th>label \\ predicted</th>{head}</tr>{rows}</table>')
