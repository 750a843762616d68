"""Prepare the built-in model's training data: colour emoji with their Unicode names as captions.

The images are rendered from Debian's fonts-noto-color-emoji (Noto Color Emoji, SIL Open Font
Licence 1.1), a CBDT colour bitmap font with 136-pixel glyphs drawn at size 109. The captions are
the lower-cased Unicode character names from Python's unicodedata (Unicode Data Files, Unicode
licence), e.g. U+1F600 -> "grinning face". Only single code points are used, so no skin-tone
modifiers, ZWJ sequences or flags: each image has exactly one authoritative name.

Every glyph is drawn centred on a white canvas and downscaled to 64x64 with Lanczos filtering.
The training set is the themed subset of those (THEMES: faces, animals, plants, food and drink,
hearts, chosen by Unicode code-point ranges) with near-duplicates removed (an image whose pixel
RMSE to an already kept one is below DEDUP_RMSE is dropped, in code-point order). It is cached as
an .npz (images uint8 (N, 64, 64, 3), captions str (N,)) under ~/.cache/sampler-grid/ and is not
committed; a fresh machine rebuilds it with

    apt-get install -y fonts-noto-color-emoji
    python scripts/prepare_builtin_data.py
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
)
CACHE = Path.home() / ".cache" / "sampler-grid" / "emoji64-themes.npz"
FONT_SIZE = 109  # the only size CBDT Noto Color Emoji renders at
CANVAS = 160
SIZE = 64
# Blocks that hold emoji presentation characters (Unicode 15).
RANGES = ((0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x1F000, 0x1FAFF))
# The training subset: code-point ranges of the Unicode charts' picture themes.
THEMES = (
    (0x1F600, 0x1F64F),  # Emoticons: faces, cat faces, gestures
    (0x1F330, 0x1F37F),  # Misc Symbols and Pictographs: plants, food, drink
    (0x1F400, 0x1F43F),  # Misc Symbols and Pictographs: animals
    (0x2764, 0x2764), (0x1F493, 0x1F49F),  # hearts
    (0x1F950, 0x1F96F), (0x1F9C0, 0x1F9CB), (0x1FAD0, 0x1FADF),  # Supplemental: food and drink
    (0x1F980, 0x1F9AE), (0x1FAB0, 0x1FABF),  # Supplemental: animals, plants
)
DEDUP_RMSE = 0.12  # images closer than this (pixels in [0, 1]) teach two captions one picture


def find_font() -> Path:
    """The Noto Color Emoji font file, or exit with how to install it."""
    for path in FONT_PATHS:
        if path.is_file():
            return path
    sys.exit("NotoColorEmoji.ttf not found: apt-get install -y fonts-noto-color-emoji")


def candidates() -> list[tuple[str, str]]:
    """(character, caption) for every named code point in the emoji blocks."""
    out = []
    for lo, hi in RANGES:
        for cp in range(lo, hi + 1):
            name = unicodedata.name(chr(cp), "")
            if name and "MODIFIER" not in name and "REGIONAL INDICATOR" not in name:
                out.append((chr(cp), name.lower()))
    return out


def render(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray | None:
    """The glyph centred on white at SIZE x SIZE, or None when the font has no colour glyph."""
    canvas = Image.new("RGBA", (CANVAS, CANVAS), (255, 255, 255, 0))
    draw = ImageDraw.Draw(canvas)
    try:
        draw.text((CANVAS // 2, CANVAS // 2), char, font=font, embedded_color=True, anchor="mm")
    except (OSError, ValueError):
        return None
    alpha = np.asarray(canvas)[..., 3]
    if alpha.max() == 0:
        return None
    rgb = np.asarray(canvas)[..., :3].astype(np.int32)
    if np.ptp(rgb[alpha > 0], axis=0).max() < 40:  # monochrome outline glyph: not colour emoji
        return None
    box = canvas.getbbox()
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.size[0]) // 2, (side - glyph.size[1]) // 2))
    pad = side // 10  # a thin white margin, like the font's own glyph box
    framed = Image.new("RGBA", (side + 2 * pad, side + 2 * pad), (255, 255, 255, 255))
    framed.alpha_composite(square, (pad, pad))
    return np.asarray(framed.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS), dtype=np.uint8)


def in_themes(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in THEMES)


def dedup(images: list[np.ndarray], threshold: float = DEDUP_RMSE) -> list[int]:
    """Indices kept by a greedy pass: each image must be >= threshold pixel RMSE from all kept."""
    kept: list[np.ndarray] = []
    keep = []
    for i, img in enumerate(images):
        x = img.astype(np.float32).ravel() / 255
        if all(np.sqrt(((x - k) ** 2).mean()) >= threshold for k in kept):
            kept.append(x)
            keep.append(i)
    return keep


def build(font_path: Path, themed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Render every candidate the font draws in colour (the themed, de-duplicated subset by default)."""
    font = ImageFont.truetype(str(font_path), FONT_SIZE)
    images, captions, seen = [], [], set()
    notdef = render(font, "\U000E0000")  # the font's .notdef box, if it draws one
    for char, caption in candidates():
        if themed and not in_themes(char):
            continue
        img = render(font, char)
        if img is None or caption in seen:
            continue
        if notdef is not None and np.array_equal(img, notdef):
            continue
        images.append(img)
        captions.append(caption)
        seen.add(caption)
    keep = dedup(images) if themed else list(range(len(images)))
    return np.stack([images[i] for i in keep]), np.array([captions[i] for i in keep])


def load(path: Path = CACHE) -> tuple[np.ndarray, list[str]]:
    """The cached dataset (images uint8 (N, 64, 64, 3), captions), built first if missing."""
    if not path.is_file():
        main(["--out", str(path)])
    data = np.load(path)
    return data["images"], [str(c) for c in data["captions"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CACHE)
    parser.add_argument("--preview", type=Path, help="also write a contact sheet PNG here")
    parser.add_argument("--all", action="store_true",
                        help="every colour emoji of the blocks, not the themed de-duplicated subset")
    args = parser.parse_args(argv)
    images, captions = build(find_font(), themed=not args.all)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, captions=captions)
    print(f"{len(images)} emoji -> {args.out}")
    if args.preview:
        n = min(len(images), 256)
        cols = 16
        sheet = np.ones(((n + cols - 1) // cols * SIZE, cols * SIZE, 3), np.uint8) * 255
        for i in range(n):
            r, c = divmod(i, cols)
            sheet[r * SIZE:(r + 1) * SIZE, c * SIZE:(c + 1) * SIZE] = images[i]
        Image.fromarray(sheet).save(args.preview)


if __name__ == "__main__":
    main()
