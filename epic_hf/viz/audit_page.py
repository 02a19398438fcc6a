"""``audit.html``: every finding of an audit with its prototypes, boxes and numbers, in the atlas's style.

One static page, readable from ``file://`` with no script: the atlas's stylesheet (copied beside it,
the same file an atlas in that folder uses) plus a few rules of its own, the pictures in
``audit-images/<key>.jpg`` (the model's input, as the findings' boxes refer to it), boxes drawn as
percentages of the picture so they need no script either. Drawn from the report as plain data
(``AuditReport.to_dict()``), so the page and ``audit.json`` never disagree. Every label and message is
escaped: a dataset's class names may hold anything.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from ..aliases import JSONDict
from ..atomic import write_atomic
from ..naming import display_name
from .atlas import HIDDEN_AUDIT_LINK

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
.finding { background: var(--paper); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
           margin-bottom: 12px; }
.finding-head { display: flex; gap: 14px; align-items: baseline; font-size: 14px; }
.kind { font-weight: 600; }
.finding p { margin: 6px 0 8px; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; }
.strip figure { margin: 0; font-size: 11px; color: var(--muted); text-align: center; }
.strip .full { width: 84px; height: 84px; }
.strip .full img { width: 84px; height: 84px; }
.suspects { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
.suspects .finding { margin-bottom: 0; }
.numbers { font-size: 12px; color: var(--muted); margin-top: 6px; overflow-wrap: anywhere; }
"""


def write_audit_page(report: JSONDict, pictures: dict[int, bytes], path: str | Path) -> Path:
    """Write ``path`` (``audit.html``), its pictures and the atlas stylesheet beside it; returns ``path``."""
    target = Path(path)
    root = target.parent
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    for key, data in pictures.items():
        write_atomic(root / IMAGES_DIR / f"{int(key)}.jpg", data)
    assets = resources.files(__package__).joinpath("atlas_assets")
    write_atomic(root / "atlas.css", assets.joinpath("atlas.css").read_bytes())
    atlas = root / ATLAS_PAGE
    has_atlas = atlas.is_file() and HIDDEN_AUDIT_LINK in atlas.read_text(encoding="utf-8")
    write_atomic(target, _page(report, set(pictures), has_atlas or _links_audit(atlas)))
    if has_atlas:  # the atlas in this folder shows its link to the audit now
        write_atomic(atlas, atlas.read_text(encoding="utf-8").replace(HIDDEN_AUDIT_LINK, 'id="audit-link"'))
    return target


def _links_audit(atlas: Path) -> bool:
    """Whether ``atlas`` is an atlas page that already links to its audit."""
    return atlas.is_file() and 'id="audit-link"' in atlas.read_text(encoding="utf-8")


def _page(report: JSONDict, pictures: set[int], has_atlas: bool) -> str:
    labels = [str(label) for label in report.get("labels", [])]
    model = display_name((report.get("model") or {}).get("base_model"))
    title = f"{model}: EPIC audit" if model else "EPIC audit"
    findings = report.get("findings", [])
    counts = {kind: sum(1 for f in findings if f["kind"] == kind) for kind in _HEADINGS}
    summary = [f"{report.get('num_samples', 0)} samples", f"{len(findings)} findings",
               "fit's index reused" if report.get("reused_index") else "own pass over the data",
               f"backbone on {report.get('backbone_images', 0)} images", f"{float(report.get('seconds', 0)):.1f} s"]
    atlas = f'<a href="{ATLAS_PAGE}">Atlas</a>' if has_atlas else ""
    nav = "".join(f'<a href="#{kind}">{html.escape(_HEADINGS[kind][0])} ({counts[kind]})</a>' for kind in _HEADINGS)
    parts = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title>", '<link rel="stylesheet" href="atlas.css">',
             f"<style>{_STYLE}</style>\n</head>\n<body>\n<header>\n  <div class=\"bar\">",
             f'    <a class="brand" href="#">{html.escape(title)}</a>', f"    <nav>{atlas}{nav}</nav>", "  </div>",
             '  <p class="summary">' + "".join(f"<span>{html.escape(s)}</span>" for s in summary) + "</p>",
             "</header>\n<main>"]
    for note in report.get("notes", []):
        parts.append(f'<p class="note muted">{html.escape(str(note))}</p>')
    size = report.get("input_size") or [1, 1]
    names = {int(key): str(name) for key, name in (report.get("sample_names") or {}).items()}
    for kind, (heading, about) in _HEADINGS.items():
        parts.append(f'<h2 id="{kind}">{html.escape(heading)}</h2><p class="muted">{html.escape(about)}</p>')
        chosen = [f for f in findings if f["kind"] == kind]
        if not chosen:
            parts.append('<p class="muted">None found.</p>')
        cards = [_finding(finding, labels, pictures, size, names) for finding in chosen]
        # one picture each: suspect labels sit side by side, as the atlas's cards do
        parts.append(f'<div class="suspects">{"".join(cards)}</div>' if kind == "suspect_label" else "".join(cards))
    parts.append(_confusion(report.get("confusion"), labels))
    parts.append("</main>\n</body>\n</html>\n")
    return "\n".join(parts)


def _finding(finding: JSONDict, labels: list[str], pictures: set[int], size: list[int], names: dict[int, str]) -> str:
    classes = ", ".join(labels[k] if 0 <= k < len(labels) else f"class {k}" for k in finding["classes"])
    channel = (f"channel {finding['channel']}" if finding["channel"] >= 0
               else "channels " + ", ".join(map(str, finding.get("channels", []))))
    boxes = finding.get("boxes") or []
    figures = []
    for position, key in enumerate(finding["samples"]):
        box = boxes[position] if position < len(boxes) else None
        figures.append(_figure(int(key), box, size, int(key) in pictures, names.get(int(key))))
    numbers = "; ".join(f"{name} = {_number(value)}" for name, value in (finding.get("numbers") or {}).items())
    return (f'<section class="finding"><div class="finding-head"><span class="kind">{html.escape(channel)}</span>'
            f'<span class="label">{html.escape(classes)}</span><span class="muted">score '
            f'{float(finding["score"]):.3f}</span></div><p>{html.escape(finding["message"])}</p>'
            f'<div class="strip">{"".join(figures)}</div><div class="numbers">{html.escape(numbers)}</div></section>')


def _figure(key: int, box: list[int] | None, size: list[int], present: bool, name: str | None) -> str:
    image = (f'<img src="{IMAGES_DIR}/{key}.jpg" alt="sample {key}">' if present
             else '<span class="missing">no picture</span>')
    drawn = ""
    if box is not None:
        height, width = max(1, int(size[0])), max(1, int(size[1]))
        x0, y0, x1, y1 = box
        drawn = (f'<span class="box" style="left:{100 * x0 / width:.2f}%;top:{100 * y0 / height:.2f}%;'
                 f'width:{100 * (x1 - x0) / width:.2f}%;height:{100 * (y1 - y0) / height:.2f}%"></span>')
    title = f' title="{html.escape(name)}"' if name else ""  # the file name (and label) on hover
    return f'<figure{title}><div class="full">{image}{drawn}</div><figcaption>#{key}</figcaption></figure>'


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "(" + ", ".join(_number(v) for v in value) + ")"
    return str(value)


def _confusion(matrix: list[list[int]] | None, labels: list[str]) -> str:
    if not matrix:
        return ""
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = "".join(f"<tr><td>{html.escape(labels[i])}</td>" + "".join(f'<td class="num">{v}</td>' for v in row)
                   + "</tr>" for i, row in enumerate(matrix))
    return ('<h2 id="confusion">Confusions on this data</h2><p class="muted">Rows: label; columns: prediction.</p>'
            f'<table class="evidence"><tr><th>label \\ predicted</th>{head}</tr>{rows}</table>')
