"""Animated grids: frames with a caption band, as GIF or WebP, and two ways to pick the frames.

This module owns the moving picture of a grid:

    animate(frames, captions, fmt="gif" | "webp", ms_per_frame=500, loop=True) -> bytes
    axis_frames(cells, results, axis="x")  -> (frames, captions)   one frame per value of an axis,
                                              each a smaller grid of the other axes
    trajectory_frames(cells, results, count=8) -> (frames, captions)   the whole grid at the same
                                              fraction of its steps in every cell, from the previews

GIF holds at most 256 colours. One palette for all frames (median cut over a sample of every
frame) keeps the colours from flickering between frames, and Floyd-Steinberg dithering keeps
gradients smooth; a frame's unchanged areas dither the same way, so they stay still.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import Any

from PIL import Image, ImageDraw

from core.cells import Cell, CellOutcome
from report.layout import CellImage, GridLabels, LayoutOptions, draw_grid, kind_tag
from report.textfit import fit_text, text_width

FORMATS = ("gif", "webp")
BAND_COLOUR = (255, 255, 255)
CAPTION_COLOUR = (0, 0, 0)
# Pixels sampled per frame to build the shared palette: enough for its colours, quick to quantize.
PALETTE_SAMPLE = 64_000
_POSITIONS = "xyz"


class AnimationError(ValueError):
    """Frames or options an animation cannot be made from; the message says what to change."""


# ---------------------------------------------------------------- encoding


def animate(frames: Sequence[Image.Image], captions: Sequence[str], fmt: str = "gif",
            ms_per_frame: int = 500, loop: bool = True, max_side: int | None = None) -> bytes:
    """The frames as an animated GIF or WebP, each under a band with its caption.

    Frames of different sizes are centred on the largest; `max_side` shrinks frames (before the
    captions are drawn, so text stays sharp) until neither side of a frame is longer.
    `loop`: repeat forever, else play once.
    """
    fmt = str(fmt).lower()
    _check(frames, captions, fmt, ms_per_frame, max_side)
    frames = [_shrink(f.convert("RGB"), max_side) for f in frames]
    size = (max(f.width for f in frames), max(f.height for f in frames))
    band = _band_height(captions, size[0])
    pictures = [_captioned(f, c, size, band) for f, c in zip(frames, captions, strict=True)]
    buf = BytesIO()
    if fmt == "gif":
        _save_gif(pictures, buf, ms_per_frame, loop)
    else:
        pictures[0].save(buf, format="WEBP", save_all=True, append_images=pictures[1:], duration=ms_per_frame,
                         loop=0 if loop else 1, quality=90, method=4)
    return buf.getvalue()


def _check(frames: Sequence[Any], captions: Sequence[str], fmt: str, ms: int, max_side: int | None) -> None:
    if fmt not in FORMATS:
        raise AnimationError(f"unknown animation format {fmt!r}; choose gif or webp")
    if not frames:
        raise AnimationError("an animation needs at least one frame")
    if len(captions) != len(frames):
        raise AnimationError(f"{len(frames)} frames need {len(frames)} captions, got {len(captions)}")
    if not all(isinstance(f, Image.Image) for f in frames):
        raise AnimationError("every frame must be a PIL image")
    # GIF counts in hundredths of a second, and browsers slow anything under 20 ms down to 100 ms.
    if not isinstance(ms, int) or not 20 <= ms <= 60_000:
        raise AnimationError(f"ms_per_frame must be a whole number from 20 to 60000, got {ms!r}")
    if max_side is not None and (not isinstance(max_side, int) or max_side < 16):
        raise AnimationError(f"max_side must be a whole number of pixels >= 16, got {max_side!r}")


def _shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _font_size(width: int) -> int:
    return max(12, min(32, width // 24))


def _band_height(captions: Sequence[str], width: int) -> int:
    """One band height for every frame (the tallest caption), so all frames are the same size."""
    size, pad = _font_size(width), _font_size(width) // 3
    return max(fit_text(c, width - 2 * pad, size, max_lines=2).height for c in captions) + 2 * pad


def _captioned(frame: Image.Image, caption: str, size: tuple[int, int], band: int) -> Image.Image:
    canvas = Image.new("RGB", (size[0], size[1] + band), BAND_COLOUR)
    canvas.paste(frame, ((size[0] - frame.width) // 2, band + (size[1] - frame.height) // 2))
    pad = _font_size(size[0]) // 3
    block = fit_text(caption, size[0] - 2 * pad, _font_size(size[0]), max_lines=2, max_height=band - 2 * pad)
    draw = ImageDraw.Draw(canvas)
    y = (band - block.height) // 2
    for line in block.lines:
        x = (size[0] - text_width(block.font, line)) // 2
        draw.text((x, y), line, font=block.font, fill=CAPTION_COLOUR, anchor="la")
        y += block.line_height
    return canvas


def shared_palette(pictures: Sequence[Image.Image]) -> Image.Image:
    """A 256-colour palette image (median cut) built from a sample of every frame's pixels."""
    per_frame = max(1, PALETTE_SAMPLE // len(pictures))
    samples = []
    for p in pictures:
        scale = min(1.0, (per_frame / (p.width * p.height)) ** 0.5)
        size = (max(1, int(p.width * scale)), max(1, int(p.height * scale)))
        samples.append(p if scale >= 1 else p.resize(size, Image.Resampling.BOX))
    mosaic = Image.new("RGB", (max(s.width for s in samples), sum(s.height for s in samples)))
    y = 0
    for s in samples:
        mosaic.paste(s, (0, y))
        y += s.height
    return mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT)


def _save_gif(pictures: list[Image.Image], buf: BytesIO, ms: int, loop: bool) -> None:
    palette = shared_palette(pictures)
    indexed = [p.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for p in pictures]
    extra = {"loop": 0} if loop else {}
    indexed[0].save(buf, format="GIF", save_all=True, append_images=indexed[1:], duration=ms,
                    disposal=1, optimize=False, **extra)


# ---------------------------------------------------------------- choosing frames


def _shape(cells: Sequence[Cell]) -> tuple[int, int, int]:
    return (max(c.ix for c in cells) + 1, max(c.iy for c in cells) + 1, max(c.iz for c in cells) + 1)


def _index(cell: Cell, pos: str) -> int:
    return {"x": cell.ix, "y": cell.iy, "z": cell.iz}[pos]


def labels_from_cells(cells: Sequence[Cell]) -> GridLabels:
    """A grid's labels read off its cells; an axis along which the sampler changes gets kind tags."""
    shape = _shape(cells)
    parts: dict[str, tuple] = {}
    for k, pos in enumerate(_POSITIONS):
        along = [next(c for c in cells if _index(c, pos) == i) for i in range(shape[k])]
        texts = [c.labels[k] for c in along]
        if any(t is None for t in texts):
            continue
        parts[pos] = tuple(texts)
        if len({c.spec.sampler for c in along}) > 1:
            parts[f"{pos}_tags"] = tuple(kind_tag(c.spec.sampler) for c in along)
    return GridLabels(**parts)


def _picture(result: CellOutcome) -> CellImage:
    return result.image if result.ok else (result.error or "no image")


def _check_cells(cells: Sequence[Cell], results: Sequence[CellOutcome]) -> None:
    if not cells or len(cells) != len(results):
        raise AnimationError(f"need one result per cell, got {len(results)} results for {len(cells)} cells")


def axis_frames(cells: Sequence[Cell], results: Sequence[CellOutcome], axis: str = "x", *,
                labels: GridLabels | None = None,
                options: LayoutOptions | None = None) -> tuple[list[Image.Image], list[str]]:
    """One frame per value of `axis` ("x", "y" or "z"): the grid of the other two axes at that
    value, in their usual places, captioned with the value's label ("Steps: 20").

    `cells` in grids.expand order with their `results`; `labels` default to the cells' own.
    """
    if axis not in _POSITIONS:
        raise AnimationError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    _check_cells(cells, results)
    labels = labels or labels_from_cells(cells)
    k = _POSITIONS.index(axis)
    shape = _shape(cells)
    frame_shape = tuple(1 if i == k else n for i, n in enumerate(shape))
    frame_labels = GridLabels(**{**{p: getattr(labels, p) for p in _POSITIONS},
                                 **{f"{p}_tags": labels.tags(p) for p in _POSITIONS if getattr(labels, p)},
                                 axis: (), f"{axis}_tags": ()})
    names = getattr(labels, axis) or ("",) * shape[k]
    frames, captions = [], []
    for value in range(shape[k]):
        picked = [(c, r) for c, r in zip(cells, results, strict=True) if _index(c, axis) == value]
        frames.append(draw_grid([_picture(r) for _, r in picked], frame_labels, frame_shape,
                                options or LayoutOptions()))
        captions.append(names[value])
    return frames, captions


def _preview_at(result: CellOutcome, fraction: float) -> Image.Image | None:
    """The cell's preview at `fraction` of its steps: the last one taken by then (the first if
    none was), scaled to the cell's size; None when the cell has no previews."""
    previews = getattr(result, "previews", None) or {}
    if not previews:
        return None
    steps = max(previews) + 1  # the last step always has a preview
    done = [s for s in sorted(previews) if (s + 1) / steps <= fraction + 1e-9]
    step = done[-1] if done else min(previews)
    picture = Image.fromarray(previews[step].cpu().numpy(), "RGB")
    size = result.image.size if result.image is not None else (result.spec.width, result.spec.height)
    if not size[0] or not size[1]:
        return picture
    return picture.resize(size, Image.Resampling.BILINEAR)


def cell_at_fraction(result: CellOutcome, fraction: float) -> CellImage:
    """A cell as it looked at `fraction` of its steps (its preview), its image if it has no
    previews, or why it failed."""
    if not result.ok:
        return _picture(result)
    preview = _preview_at(result, fraction)
    return result.image if preview is None else preview


def trajectory_frames(cells: Sequence[Cell], results: Sequence[CellOutcome], count: int = 8, *,
                      final: bool = True, labels: GridLabels | None = None,
                      options: LayoutOptions | None = None) -> tuple[list[Image.Image], list[str]]:
    """The whole grid `count` times, at 1/count, 2/count, ... of every cell's steps, from the
    cells' previews (pipeline RunOptions.preview_every); with `final`, then the finished images.

    Every cell shows the same fraction of its own steps, so a 10-step and a 40-step cell are
    both a quarter done in the same frame. A cell without previews (served from the cache, or
    rendered without them) shows its finished image throughout; a failed cell, why it failed.
    """
    if not isinstance(count, int) or count < 1:
        raise AnimationError(f"count must be a whole number >= 1, got {count!r}")
    _check_cells(cells, results)
    labels = labels or labels_from_cells(cells)
    shape = _shape(cells)
    frames, captions = [], []
    for j in range(1, count + 1):
        fraction = j / count
        pictures = [cell_at_fraction(r, fraction) for r in results]
        frames.append(draw_grid(pictures, labels, shape, options or LayoutOptions()))
        captions.append(f"{round(100 * fraction)}% of steps")
    if final:
        frames.append(draw_grid([_picture(r) for r in results], labels, shape, options or LayoutOptions()))
        captions.append("final images")
    return frames, captions
