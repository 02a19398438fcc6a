"""What the audit's and the comparison's static pages share: the atlas's stylesheet, the head, pictures, figures.

Each page is one static file readable from ``file://`` with no script: the atlas's stylesheet
(copied beside it, the same file an atlas in that folder uses) plus a few rules of its own
(:data:`CARD_STYLE`), its pictures as JPEG files in a folder beside it, boxes drawn as percentages of
the picture so they need no script either. Every label and message is escaped: a dataset's class
names may hold anything.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from ..atomic import write_atomic

#: The rules both pages add to the atlas's stylesheet: cards, strips of pictures, numbers.
CARD_STYLE = """
.finding { background: var(--paper); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
           margin-bottom: 12px; }
.finding-head { display: flex; gap: 14px; align-items: baseline; font-size: 14px; }
.kind { font-weight: 600; }
.finding p { margin: 6px 0 8px; }
.strip { display: flex; flex-wrap: wrap; gap: 6px; }
.strip figure { margin: 0; font-size: 11px; color: var(--muted); text-align: center; }
.strip .full { width: 84px; height: 84px; }
.strip .full img { width: 84px; height: 84px; }
.strip.small .full, .strip.small .full img { width: 56px; height: 56px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
.cards .finding { margin-bottom: 0; }
.numbers { font-size: 12px; color: var(--muted); margin-top: 6px; overflow-wrap: anywhere; }
"""


def write_pictures(root: Path, folder: str, pictures: Mapping[int, bytes]) -> None:
    """``root/folder/<key>.jpg`` for each picture, byte for byte."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for key, data in pictures.items():
        write_atomic(root / folder / f"{int(key)}.jpg", data)


def copy_stylesheet(root: Path) -> None:
    """The atlas's stylesheet, ``atlas.css``, into ``root`` (the same file an atlas there uses)."""
    assets = resources.files(__package__).joinpath("atlas_assets")
    write_atomic(root / "atlas.css", assets.joinpath("atlas.css").read_bytes())


def page_start(title: str, style: str, nav: Iterable[str], summary: Iterable[str]) -> list[str]:
    """The page up to ``<main>``: head, the atlas's bar with ``nav`` (HTML links) and the ``summary`` (text)."""
    return ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>", '<link rel="stylesheet" href="atlas.css">',
            f"<style>{CARD_STYLE}{style}</style>\n</head>\n<body>\n<header>\n  <div class=\"bar\">",
            f'    <a class="brand" href="#">{html.escape(title)}</a>', f"    <nav>{''.join(nav)}</nav>", "  </div>",
            '  <p class="summary">' + "".join(f"<span>{html.escape(s)}</span>" for s in summary) + "</p>",
            "</header>\n<main>"]


PAGE_END = "</main>\n</body>\n</html>\n"


def figure(src: str | None, key: int, box: list[int] | None = None, size: list[int] | None = None,
           name: str | None = None, caption: str | None = None) -> str:
    """One picture (``src``, or a "no picture" notice) with its box drawn over it and ``#key`` (or ``caption``) below."""
    image = (f'<img src="{html.escape(src)}" alt="sample {key}">' if src is not None
             else '<span class="missing">no picture</span>')
    drawn = ""
    if box is not None and size is not None:
        height, width = max(1, int(size[0])), max(1, int(size[1]))
        x0, y0, x1, y1 = box
        drawn = (f'<span class="box" style="left:{100 * x0 / width:.2f}%;top:{100 * y0 / height:.2f}%;'
                 f'width:{100 * (x1 - x0) / width:.2f}%;height:{100 * (y1 - y0) / height:.2f}%"></span>')
    title = f' title="{html.escape(name)}"' if name else ""  # the file name (and label) on hover
    text = html.escape(caption) if caption is not None else f"#{key}"
    return f'<figure{title}><div class="full">{image}{drawn}</div><figcaption>{text}</figcaption></figure>'


def number(value: object) -> str:
    """A measured value as the pages print it: three significant digits, tuples in parentheses."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "(" + ", ".join(number(v) for v in value) + ")"
    return str(value)


def class_name(labels: list[str], k: int) -> str:
    return labels[k] if 0 <= k < len(labels) else f"class {k}"
