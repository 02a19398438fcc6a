"""Text in any script: a chain of fonts, chosen per character by glyph coverage.

Why: labels come from model configs and datasets and file names from users' disks; they may be
Greek, accented, Chinese or anything else. PIL's bundled font covers basic Latin only and draws
every other character as a box. The chain is

1. **Noto Sans** (package ``fontpkg-noto-sans``, OFL-1.1): Latin, Greek, Cyrillic, Vietnamese,
   and the typographic signs the pictures use (− ÷ Σ … ·); variable, so titles can be bold;
2. **WenQuanYi Micro Hei** (package ``paperang-p2-fonts-cjk``, the optional ``cjk`` extra:
   ``pip install "epic_hf[cjk]"``; Apache-2.0 or GPL-3 with the font exception; byte-identical to
   Debian's ``fonts-wqy-microhei``): Chinese, Japanese kana, Korean Hangul and 34,600 characters
   in all, in about 5 MB. Without it such characters are drawn as boxes, and the first time one is
   met a warning says how to install it;
3. common system fonts where they exist (DejaVu, Noto CJK, and Symbola for emoji: colour emoji
   fonts such as Noto Color Emoji hold bitmaps at one size only, which PIL cannot scale to text);
4. PIL's bundled font, so text is still drawn when nothing else is installed.

Each character is drawn with the first font that has a glyph for it. A character none has is drawn
as a box, and a warning, once per kind of character (emoji, CJK, anything else), names the font
that is really missing: the CJK extra is suggested only for CJK text, and only when it is not
installed, since it has no emoji. A font "has" a character
when rendering it gives something other than the font's own missing-glyph box (``.notdef``),
checked once per (font, character) with PIL alone. Characters no font has are replaced by an
ASCII stand-in where one exists (``−`` -> ``-``), else drawn as the box.

Every piece of text is drawn on its baseline, so runs from different fonts line up.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from PIL import ImageDraw, ImageFont

logger = logging.getLogger(__name__)

Face = ImageFont.FreeTypeFont | ImageFont.ImageFont
Rect = tuple[int, int, int, int]

#: (importable package, file inside it) of the fonts installed with epic_hf, in chain order.
PACKAGED_FONTS: tuple[tuple[str, str], ...] = (
    ("fontpkg_noto_sans", "files/NotoSans[wdth,wght].ttf"),
    ("paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc"),
)
#: Fonts a Linux desktop often has, tried after the packaged ones.
SYSTEM_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",  # Debian's fonts-symbola: emoji, drawn in one colour
)
#: Stand-ins for signs when no font of the chain has them (PIL's bundled font has none).
ASCII_STAND_INS = {"−": "-", "÷": "/", "Σ": "sum", "…": "...", "·": "-", "—": "-", "×": "x", "≈": "~"}

#: How to get glyphs for CJK characters when the CJK extra is not installed (said once, the first time one is drawn).
CJK_HINT = 'install the CJK fonts with: pip install "epic_hf[cjk]" (or Debian\'s fonts-wqy-microhei)'
#: How to get glyphs for CJK characters the installed CJK fonts lack (rare ideographs).
WIDER_CJK_HINT = "install a CJK font with wider coverage, such as Debian's fonts-noto-cjk"
#: How to get emoji: a font PIL can draw at any size (colour emoji fonts hold bitmaps of one size).
EMOJI_HINT = ("no installed font has emoji; install an emoji font the pictures can draw, such as Debian's "
              "fonts-symbola (colour emoji fonts such as Noto Color Emoji cannot be drawn at text sizes)")
#: Code point ranges read as emoji and as CJK, for the warning's advice only.
_EMOJI_RANGES = ((0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0xFE00, 0xFE0F), (0x200D, 0x200D),
                 (0xE0020, 0xE007F))
_CJK_RANGES = ((0x1100, 0x11FF), (0x2E80, 0x2FDF), (0x3000, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7AF),
               (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))

_NOTDEF_PROBE = "\U0010fffd"  # a private-use code point no font maps: it renders as .notdef
_PROBE_SIZE = 32


@lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    """The font files of the chain that exist on this machine, in order."""
    found: list[Path] = []
    for package, name in PACKAGED_FONTS:
        try:
            path = Path(str(resources.files(package).joinpath(name)))
        except (ModuleNotFoundError, TypeError):
            continue
        if path.is_file():
            found.append(path)
    found.extend(Path(p) for p in SYSTEM_FONTS if Path(p).is_file())
    loadable = [path for path in found if _load(path, 12, False) is not None]
    if not loadable:
        logger.warning(
            "no TrueType font found (epic_hf depends on fontpkg-noto-sans; CJK fonts are the [cjk] extra): "
            "text is drawn with PIL's bundled font, and characters outside basic Latin show as boxes"
        )
    return tuple(loadable)


@lru_cache(maxsize=128)
def _load(path: Path, size: int, bold: bool) -> ImageFont.FreeTypeFont | None:
    """``path`` at ``size`` pixels (bold via the weight axis where the font has one)."""
    try:
        face = ImageFont.truetype(str(path), size)
    except OSError:
        return None
    if bold:
        try:
            face.set_variation_by_name("Bold")
        except (OSError, ValueError):  # not a variable font, or no "Bold" instance
            pass
    return face


@lru_cache(maxsize=32)
def _default(size: int) -> Face:
    """PIL's bundled font at ``size`` (a bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


@lru_cache(maxsize=16)
def faces(size: int, bold: bool = False) -> tuple[Face, ...]:
    """The chain at one size: every loadable font file, then PIL's bundled font."""
    loaded = [_load(path, size, bold) or _default(size) for path in font_files()]  # indices stay aligned
    return tuple(loaded) + (_default(size),)


def _signature(face: Face, text: str) -> tuple:
    mask = face.getmask(text)
    return (mask.size, bytes(mask))


@lru_cache(maxsize=16384)
def _has_glyph(index: int, char: str) -> bool:
    """Whether face ``index`` of the chain draws ``char`` as something other than ``.notdef``."""
    face = faces(_PROBE_SIZE)[index]
    return _signature(face, char) != _signature(face, _NOTDEF_PROBE)


def face_index_for(char: str) -> int | None:
    """Index in :func:`faces` of the first font with a glyph for ``char``; None if none has one."""
    for index in range(len(faces(_PROBE_SIZE))):
        if _has_glyph(index, char):
            return index
    return None


def missing_glyphs(text: str) -> list[str]:
    """The characters of ``text`` (whitespace aside) that no font of the chain can draw."""
    return [c for c in dict.fromkeys(text) if not c.isspace() and face_index_for(c) is None]


#: How control characters are written on a picture: visibly, as a Python string literal writes them.
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with control and format characters (a newline in a file name, a bidi override in a label) written
    as escapes (``\\n``, ``\\x1b``, ``\\u202e``): text engines refuse or reorder them, and a reader should see them.
    Every other character, private-use ones included, is kept."""
    if text.isprintable():
        return text
    return "".join(_escape(char) if unicodedata.category(char) in _INVISIBLE else char for char in text)


#: Unicode categories written as escapes: controls, format characters, line and paragraph separators, surrogates.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape(char: str) -> str:
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                                  else f"\\U{code:08x}")


def _runs(text: str) -> list[tuple[str, int]]:
    """``text`` (made :func:`printable`) split into (run, face index) with one font per run; whitespace joins any
    run."""
    text = printable(text)
    runs: list[tuple[str, int]] = []
    for char in text:
        if char.isspace() and runs:
            runs[-1] = (runs[-1][0] + char, runs[-1][1])
            continue
        index = face_index_for(char)
        if index is None:
            stand_in = ASCII_STAND_INS.get(char)
            if stand_in is not None and not missing_glyphs(stand_in):
                char, index = stand_in, face_index_for(stand_in[0]) or 0
            else:
                _warn_missing_once(char)
                index = 0
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0] + char, index)
        else:
            runs.append((char, index))
    return runs


_warned: set[str] = set()  # the kinds of character (emoji, cjk, other) already warned about


def glyph_kind(char: str) -> str:
    """``emoji``, ``cjk`` or ``other``: which font a character no installed font has calls for."""
    code = ord(char)
    if any(low <= code <= high for low, high in _EMOJI_RANGES):
        return "emoji"
    if any(low <= code <= high for low, high in _CJK_RANGES):
        return "cjk"
    return "other"


def cjk_extra_installed() -> bool:
    """Whether the ``cjk`` extra's font is in the chain (then suggesting it would be no help)."""
    return any(path.name == Path(PACKAGED_FONTS[1][1]).name for path in font_files())


def missing_font_hint(char: str, cjk_installed: bool | None = None) -> str:
    """What to install so that ``char``, which no installed font has, is drawn: the font that is really missing.

    An emoji asks for an emoji font; CJK text for the CJK extra, or when it is already installed
    for a font with more ideographs; any other script names the fonts tried, since no one
    package covers every script.
    """
    kind = glyph_kind(char)
    if kind == "emoji":
        return EMOJI_HINT
    installed = cjk_extra_installed() if cjk_installed is None else cjk_installed
    if kind == "cjk":
        return WIDER_CJK_HINT if installed else CJK_HINT
    tried = ", ".join(path.stem for path in font_files()) or "PIL's bundled font"
    return f"none of the fonts tried ({tried}) covers it; install a font for its script"


def _warn_missing_once(char: str) -> None:
    """Say once per run and kind of character that text is drawn with boxes, and which font would draw it."""
    kind = glyph_kind(char)
    if kind not in _warned:
        name = unicodedata.name(char, "unnamed character")
        logger.warning("no installed font draws %r (U+%04X, %s): it is drawn as a box; %s", char, ord(char), name,
                       missing_font_hint(char))
    _warned.add(kind)


@dataclass(frozen=True)
class ChainFont:
    """The font chain at one pixel size and weight; measures and draws mixed-script text."""

    size: int
    bold: bool = False

    @property
    def _faces(self) -> tuple[Face, ...]:
        return faces(self.size, self.bold)

    @property
    def ascent(self) -> int:
        primary = self._faces[0]
        return primary.getmetrics()[0] if isinstance(primary, ImageFont.FreeTypeFont) else self.size

    @property
    def descent(self) -> int:
        primary = self._faces[0]
        return primary.getmetrics()[1] if isinstance(primary, ImageFont.FreeTypeFont) else self.size // 4

    @property
    def name(self) -> str:
        """The primary font's family name (``Aileron`` is PIL's bundled font)."""
        primary = self._faces[0]
        family = primary.getname()[0] if isinstance(primary, ImageFont.FreeTypeFont) else None
        return family or "PIL bitmap"

    def getlength(self, text: str) -> float:
        """Width of ``text`` in pixels, each run measured with its own font."""
        return sum(self._faces[index].getlength(run) for run, index in _runs(text))

    def fit(self, text: str, max_width: float, middle: bool = False, tail: bool = False) -> str:
        """``text`` cut with an ellipsis to fit ``max_width``: its end cut, or its middle, or (``tail``) its start.

        ``tail`` keeps the end of a name, where a file name's useful part is (``…animals_0042.jpg``).
        """
        if max_width <= 0:
            return ""
        if self.getlength(text) <= max_width:
            return text
        low, high = 0, len(text)
        while low < high:  # the most characters kept that still fit with the ellipsis
            keep = (low + high + 1) // 2
            if self.getlength(_elide(text, keep, middle, tail)) <= max_width:
                low = keep
            else:
                high = keep - 1
        return _elide(text, low, middle, tail) if low else ""

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill,
             max_width: float | None = None, middle: bool = False) -> int:
        """Draw ``text`` with its top-left at ``xy`` (cut to ``max_width``); returns its width."""
        shown = text if max_width is None else self.fit(text, max_width, middle)
        x, top = xy
        baseline = top + self.ascent
        for run, index in _runs(shown):
            face = self._faces[index]
            if isinstance(face, ImageFont.FreeTypeFont):
                draw.text((x, baseline), run, font=face, fill=fill, anchor="ls")
            else:
                draw.text((x, top), run, font=face, fill=fill)
            x += face.getlength(run)
        return round(x - xy[0])

    def draw_centered(self, draw: ImageDraw.ImageDraw, rect: Rect, text: str, fill, middle: bool = False,
                      tail: bool = False) -> None:
        """``text`` centred both ways in ``rect``, cut to its width."""
        shown = self.fit(text, rect[2] - rect[0] - 4, middle, tail)
        x = rect[0] + (rect[2] - rect[0] - self.getlength(shown)) / 2
        y = rect[1] + (rect[3] - rect[1] - self.ascent - self.descent) / 2
        self.draw(draw, (round(x), round(y)), shown, fill)


def _elide(text: str, keep: int, middle: bool, tail: bool = False) -> str:
    """``keep`` characters of ``text`` and an ellipsis: at the end, in the middle, or (``tail``) at the start."""
    if tail:
        return "…" + text[len(text) - keep:].lstrip() if keep else "…"
    if not middle:
        return text[:keep].rstrip() + "…"
    head = (keep + 1) // 2
    return text[:head] + "…" + text[len(text) - (keep - head):] if keep - head else text[:head] + "…"
