"""``compare.html``: two banks on the same data, in the audit's and the atlas's style.

One static page (:mod:`.page_parts`): the matched channel pairs with their overlap and a few of the
images both channels fire on most, the concepts found only in A or only in B with their top images,
and the classes whose evidence moved, with the numbers. Pictures are the model's input (of A's
processor) in ``compare-images/<key>.jpg``. Drawn from ``CompareReport.to_dict()``, so the page and
``compare.json`` never disagree.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..aliases import JSONDict
from ..atomic import write_atomic
from ..naming import display_name
from .page_parts import PAGE_END, copy_stylesheet, figure, number, page_start, write_pictures

IMAGES_DIR = "compare-images"
#: The matched pairs the page shows with pictures, best overlap first (all of them are in compare.json).
PAIRS_SHOWN = 48
#: Pictures per pair and per lone concept.
PICTURES_SHOWN = 4
_STYLE = """
.cards .finding-head .overlap { margin-left: auto; }
"""


def write_compare_page(report: JSONDict, pictures: dict[int, bytes], path: str | Path) -> Path:
    """Write ``path`` (``compare.html``), its pictures and the atlas stylesheet beside it; returns ``path``."""
    target = Path(path)
    write_pictures(target.parent, IMAGES_DIR, pictures)
    copy_stylesheet(target.parent)
    write_atomic(target, _page(report, set(pictures)))
    return target


def _page(report: JSONDict, pictures: set[int]) -> str:
    named = list(report.get("models") or []) + ["", ""]
    models = [display_name(named[0]) or "model A", display_name(named[1]) or "model B"]
    title = f"{models[0]} vs {models[1]}: EPIC comparison"
    matches = report.get("matches", [])
    only_a, only_b = report.get("only_a", []), report.get("only_b", [])
    summary = [f"{report.get('num_samples', 0)} samples", f"{len(matches)} matched channel pairs",
               f"{len(only_a)} concepts only in A", f"{len(only_b)} only in B"]
    nav = [f'<a href="#matched">Matched ({len(matches)})</a>', f'<a href="#only-a">Only in A ({len(only_a)})</a>',
           f'<a href="#only-b">Only in B ({len(only_b)})</a>', '<a href="#moved">Evidence moved</a>']
    names = {int(key): str(name) for key, name in (report.get("sample_names") or {}).items()}

    def strip(keys: list[int]) -> str:
        return "".join(figure(f"{IMAGES_DIR}/{int(key)}.jpg" if int(key) in pictures else None, int(key),
                              name=names.get(int(key))) for key in keys)

    parts = page_start(title, _STYLE, nav, summary)
    parts.append(f'<p class="muted">A: {html.escape(models[0])}; B: {html.escape(models[1])}. Channels are '
                 "matched one to one by the overlap (Jaccard index) of their top activations on this data.</p>")
    parts.append('<h2 id="matched">Matched channels</h2><p class="muted">Best overlap first, with images both '
                 "channels fire on most.</p>")
    shared = report.get("shared") or []
    cards = []
    for index, (a, b, overlap) in enumerate(matches[:PAIRS_SHOWN]):
        keys = shared[index] if index < len(shared) else []
        cards.append(_card(f"A {a} = B {b}", "", f"overlap {float(overlap):.2f}", strip(keys)))
    parts.append(f'<div class="cards">{"".join(cards)}</div>' if cards else '<p class="muted">None.</p>')
    if len(matches) > PAIRS_SHOWN:
        parts.append(f'<p class="muted">{len(matches) - PAIRS_SHOWN} more pairs in compare.json.</p>')
    least = number(float(report.get("match_overlap", 0.2)))
    for anchor, side, rows in (("only-a", "A", only_a), ("only-b", "B", only_b)):
        parts.append(f'<h2 id="{anchor}">Concepts only in {side}</h2><p class="muted">Channels that drive a class in '
                     f"{side} and overlap no channel of the other model by {least} or more, with their top images.</p>")
        cards = [_card(f"channel {row['channel']}", str(row["label"]),
                       f"evidence share {number(float(row['evidence_share']))}, best overlap "
                       f"{number(float(row['best_overlap']))}", strip(row.get("samples") or [])) for row in rows]
        parts.append(f'<div class="cards">{"".join(cards)}</div>' if cards else '<p class="muted">None.</p>')
    parts.append(_moved(report.get("moved", [])))
    parts.append(PAGE_END)
    return "\n".join(parts)


def _card(head: str, label: str, numbers: str, figures: str) -> str:
    return (f'<section class="finding"><div class="finding-head"><span class="kind">{html.escape(head)}</span>'
            f'<span class="label">{html.escape(label)}</span><span class="muted overlap">{html.escape(numbers)}'
            f'</span></div><div class="strip">{figures}</div></section>')


def _moved(rows: list[JSONDict]) -> str:
    head = ('<h2 id="moved">Evidence moved</h2><p class="muted">Per class, 1 - the overlap of the samples its '
            "strongest channels fire on in A and in B: 0 is the same evidence, 1 none in common.</p>")
    if not rows:
        return head + '<p class="muted">No class in common.</p>'
    body = "".join(f'<tr><td>{html.escape(str(row["label"]))}</td><td class="num">{float(row["moved"]):.2f}</td>'
                   f'<td>{html.escape(", ".join(map(str, row["channels_a"])))}</td>'
                   f'<td>{html.escape(", ".join(map(str, row["channels_b"])))}</td></tr>' for row in rows)
    return (head + '<table class="evidence"><tr><th>class</th><th>moved</th><th>A\'s channels</th>'
            f"<th>B's channels</th></tr>{body}</table>")
