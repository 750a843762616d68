"""Text in a box: the bundled DejaVu Sans font, word wrap, and labels that shrink to fit.

This module owns the font files the grids draw with (assets/fonts, so a grid looks the
same on every machine) and fitting text into a width: wrapping at spaces, shrinking the
size until no word has to be broken, and, at the smallest size, breaking long words and
cutting lines that do not fit the height with "…".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_DIR = Path(__file__).resolve().parent.parent / "assets" / "fonts"
FONT_PATH = FONT_DIR / "DejaVuSans.ttf"
BOLD_FONT_PATH = FONT_DIR / "DejaVuSans-Bold.ttf"
MIN_FONT = 7
MAX_LABEL_LINES = 3


@lru_cache(maxsize=64)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """The bundled DejaVu Sans (bold for titles) at `size` pixels."""
    return ImageFont.truetype(str(BOLD_FONT_PATH if bold else FONT_PATH), size)


@dataclass(frozen=True)
class TextBlock:
    """Text wrapped to a width, in one font."""

    lines: tuple[str, ...]
    font: ImageFont.FreeTypeFont
    line_height: int

    @property
    def height(self) -> int:
        return len(self.lines) * self.line_height

    @property
    def width(self) -> int:
        return max((text_width(self.font, line) for line in self.lines), default=0)


def text_width(f: ImageFont.FreeTypeFont, text: str) -> int:
    # The ink box, not the advance: some glyphs overhang their advance by a pixel.
    left, _, right, _ = f.getbbox(text) if text else (0, 0, 0, 0)
    return max(int(right), int(f.getlength(text) + 0.999)) - min(int(left), 0)


def _break_word(word: str, f: ImageFont.FreeTypeFont, width: int) -> list[str]:
    pieces, piece = [], ""
    for ch in word:
        if piece and text_width(f, piece + ch) > width:
            pieces.append(piece)
            piece = ch
        else:
            piece += ch
    return pieces + [piece] if piece else pieces


def wrap(text: str, f: ImageFont.FreeTypeFont, width: int, hard: bool) -> list[str] | None:
    """Greedy word wrap to `width` pixels; a word wider than that is broken into pieces when
    `hard`, else the text does not fit at this size (None)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if text_width(f, candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            if text_width(f, word) <= width:
                line = word
            elif not hard:
                return None
            else:
                *full, line = _break_word(word, f, width)
                lines.extend(full)
        lines.append(line)
    return lines


def fit_text(text: str, width: int, size: int, *, bold: bool = False, max_height: int | None = None,
             max_lines: int | None = MAX_LABEL_LINES) -> TextBlock:
    """`text` wrapped into `width` pixels at the largest size from `size` down to MIN_FONT at
    which no word is broken, at most `max_lines` lines and `max_height` pixels tall. At
    MIN_FONT words are broken and lines past `max_height` are cut, ending in "…"."""
    width = max(1, width)
    s = max(size, MIN_FONT)
    while True:
        f = font(s, bold)
        ascent, descent = f.getmetrics()
        line_h = ascent + descent
        last = s == MIN_FONT
        lines = wrap(text, f, width, hard=last)
        if lines is not None:
            fits_h = max_height is None or len(lines) * line_h <= max_height
            if last or (fits_h and (max_lines is None or len(lines) <= max_lines)):
                break
        s = max(MIN_FONT, min(s - 1, int(s * 0.9)))
    if max_height is not None and len(lines) * line_h > max_height:
        keep = max(1, max_height // line_h)
        lines = lines[:keep]
        lines[-1] = _ellipsize(lines[-1], f, width)
    return TextBlock(tuple(lines), f, line_h)


def _ellipsize(line: str, f: ImageFont.FreeTypeFont, width: int) -> str:
    while line and text_width(f, line + "…") > width:
        line = line[:-1]
    return line + "…" if text_width(f, line + "…") <= width else line
