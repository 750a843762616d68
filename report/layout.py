"""Grid images: cells drawn as a labelled X/Y/Z grid with the bundled DejaVu Sans font.

This module owns the grid picture: X labels across the top, Y labels down the left, Z as
sub-grids side by side each under its title (A1111's X/Y/Z plot layout); labels that wrap and
shrink to fit their box; failed cells as grey placeholders that say why; a coloured tag
("ancestral", "SDE") under the label of every sampler that adds fresh noise, since those never
converge as steps grow; cells of different sizes centred in a box of the largest size; and the
megapixel limit, checked on the planned size before any pixel is allocated.

    plan_layout(images, labels, shape, options) -> Layout      geometry only, no pixels
    draw_grid(images, labels, shape, options) -> PIL.Image
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFont

import samplers
from grids.spec import GridSpec, GridTooLargeError
from report.textfit import MIN_FONT, TextBlock, fit_text, font, text_width

DEFAULT_MAX_MEGAPIXELS = 200.0
FALLBACK_CELL = (128, 128)

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
PLACEHOLDER = (205, 205, 205)
PLACEHOLDER_EDGE = (150, 150, 150)
PLACEHOLDER_TEXT = (70, 70, 70)
TAG_COLOURS = {"ancestral": (214, 108, 20), "SDE": (128, 60, 170)}
TAG_SHORT = {"ancestral": "anc."}

# A cell's picture: the image, the reason it failed (str), or None (not rendered).
CellImage = Image.Image | str | None


def allow_pixels(megapixels: float) -> None:
    """Let Pillow open images up to `megapixels` without its decompression-bomb error.

    Why: Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that (~179 MP by
    default), so a grid we wrote under our own limit could not be opened again. We only raise
    the threshold, never lower one a user set, and leave None (no limit) alone.
    """
    wanted = int(megapixels * 1e6) + 1
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < wanted:
        Image.MAX_IMAGE_PIXELS = wanted


allow_pixels(DEFAULT_MAX_MEGAPIXELS)


@dataclass(frozen=True)
class LayoutOptions:
    """How to draw a grid: pixels between cells and sub-grids, labels on or off, the size
    limit, and the cell box to use when no cell has an image (all failed)."""

    margin: int = 0
    legend: bool = True
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    cell_size: tuple[int, int] | None = None
    overlay: bool = False  # draw each cell's caption (e.g. seconds and model calls) over its foot


def kind_tag(sampler: str) -> str | None:
    """"ancestral" or "SDE" for samplers that add fresh noise each step, else None."""
    try:
        kind = samplers.resolve(sampler)[0].kind
    except ValueError:
        return None
    return {"ancestral": "ancestral", "sde": "SDE"}.get(kind)


@dataclass(frozen=True)
class GridLabels:
    """The labels along each axis (empty where the grid has no such axis) and an optional
    tag under each label ("ancestral", "SDE" or None)."""

    x: tuple[str, ...] = ()
    y: tuple[str, ...] = ()
    z: tuple[str, ...] = ()
    x_tags: tuple[str | None, ...] = ()
    y_tags: tuple[str | None, ...] = ()
    z_tags: tuple[str | None, ...] = ()

    @classmethod
    def from_spec(cls, spec: GridSpec) -> GridLabels:
        """Labels from a spec's axes; sampler axes get kind tags."""
        parts: dict[str, tuple] = {}
        for pos, axis in spec.axes():
            parts[pos] = tuple(axis.labels())
            if axis.axis == "sampler":
                parts[f"{pos}_tags"] = tuple(kind_tag(v.sampler) for v in axis.values)
        return cls(**parts)

    def tags(self, pos: str) -> tuple[str | None, ...]:
        """The tags along axis `pos`, padded with None to the number of labels."""
        tags = getattr(self, f"{pos}_tags")
        return tuple(tags) + (None,) * (len(getattr(self, pos)) - len(tags))


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Layout:
    """Where everything goes: the cell box, label areas and the whole canvas, in pixels."""

    shape: tuple[int, int, int]
    cell: tuple[int, int]
    margin: int
    font_size: int
    left: int = 0  # row-label column, per sub-grid
    top: int = 0  # column-label row
    title: int = 0  # Z title row
    z_gap: int = 0
    label_sizes: tuple[int, int, int] = (0, 0, 0)  # X, Y, Z label font sizes

    @property
    def cells_width(self) -> int:
        nx = self.shape[0]
        return nx * self.cell[0] + (nx - 1) * self.margin

    @property
    def sub_width(self) -> int:
        return self.left + self.cells_width

    @property
    def width(self) -> int:
        nz = self.shape[2]
        return nz * self.sub_width + (nz - 1) * self.z_gap

    @property
    def height(self) -> int:
        ny = self.shape[1]
        return self.title + self.top + ny * self.cell[1] + (ny - 1) * self.margin

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def sub_x(self, iz: int) -> int:
        return iz * (self.sub_width + self.z_gap)

    def cell_origin(self, ix: int, iy: int, iz: int) -> tuple[int, int]:
        """Top-left corner of a cell's box."""
        return (self.sub_x(iz) + self.left + ix * (self.cell[0] + self.margin),
                self.title + self.top + iy * (self.cell[1] + self.margin))

    @property
    def pad(self) -> int:
        return max(2, self.font_size // 4)


def _cell_box(images: Sequence[CellImage], options: LayoutOptions) -> tuple[int, int]:
    sizes = [im.size for im in images if isinstance(im, Image.Image)]
    if options.cell_size is not None:
        sizes.append(tuple(options.cell_size))
    if not sizes:
        return FALLBACK_CELL
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def _tag_font(font_size: int) -> tuple[ImageFont.FreeTypeFont, int]:
    """The tag's font (0.6 of the label's) and the tag's height."""
    f = font(max(MIN_FONT, int(font_size * 0.6)))
    return f, sum(f.getmetrics()) + 4


def _axis_size(texts: Sequence[str], width: int, size: int, *, bold: bool = False,
               max_height: int | None = None) -> int:
    """One font size for all labels along an axis: the smallest any of them needs to fit."""
    return min((fit_text(t, width, size, bold=bold, max_height=max_height).font.size for t in texts),
               default=size)


def _label_area(texts: Sequence[str], tags: Sequence[str | None], width: int, size: int,
                pad: int, tag_h: int, bold: bool = False) -> int:
    """Height of a row of labels: the tallest wrapped label, plus a tag line if any has a tag."""
    if not texts:
        return 0
    tallest = max(fit_text(t, width - 2 * pad, size, bold=bold).height for t in texts)
    return tallest + (tag_h + pad if any(tags) else 0) + 2 * pad


def _check_shape(images: Sequence[CellImage], labels: GridLabels, shape: tuple[int, int, int],
                 legend: bool) -> None:
    nx, ny, nz = shape
    if min(shape) < 1 or len(images) != nx * ny * nz:
        raise ValueError(f"a {nx}x{ny}x{nz} grid needs {nx * ny * nz} cells, got {len(images)}")
    for pos, n in zip("xyz", shape, strict=True):
        got = len(getattr(labels, pos))
        if legend and got not in (0, n):
            raise ValueError(f"{pos.upper()} has {n} values but {got} labels")


def plan_layout(images: Sequence[CellImage], labels: GridLabels, shape: tuple[int, int, int],
                options: LayoutOptions = LayoutOptions()) -> Layout:
    """The grid's geometry; raises GridTooLargeError past options.max_megapixels."""
    _check_shape(images, labels, shape, options.legend)
    w, h = _cell_box(images, options)
    # A1111 sizes label text from the cell size; a floor keeps labels on small cells readable.
    size = max(12, (w + h) // 25)
    margin = max(0, options.margin)
    layout = Layout(shape=shape, cell=(w, h), margin=margin, font_size=size, z_gap=margin)
    if options.legend:
        pad, tag_h = layout.pad, _tag_font(size)[1]
        left = max(round(0.75 * w), 7 * size) if labels.y else 0
        y_tag = tag_h + pad if any(labels.tags("y")) else 0
        sizes = (_axis_size(labels.x, w - 2 * pad, size),
                 _axis_size(labels.y, left - 2 * pad, size, max_height=h - 2 * pad - y_tag),
                 _axis_size(labels.z, layout.cells_width - 2 * pad, size, bold=True))
        layout = replace(
            layout, left=left, label_sizes=sizes,
            top=_label_area(labels.x, labels.tags("x"), w, sizes[0], pad, tag_h),
            title=_label_area(labels.z, labels.tags("z"), layout.cells_width, sizes[2], pad, tag_h,
                              bold=True),
            # Sub-grids need a visible gap when labels are on, even without a margin.
            z_gap=max(margin, size) if shape[2] > 1 else 0)
    if layout.megapixels > options.max_megapixels:
        raise GridTooLargeError(
            f"the grid image would be {layout.width}x{layout.height} pixels "
            f"({layout.megapixels:.1f} megapixels); the limit is {options.max_megapixels:g} — "
            f"use a smaller size or fewer cells")
    return layout


# ---------------------------------------------------------------- drawing


def draw_grid(images: Sequence[CellImage], labels: GridLabels, shape: tuple[int, int, int],
              options: LayoutOptions = LayoutOptions(),
              captions: Sequence[str | None] | None = None) -> Image.Image:
    """The grid as one RGB image. `images` run z, then y, then x (grids.expand's order);
    a str is a failed cell's reason, None a cell with no image. shape: (columns, rows, sub-grids).
    With options.overlay, each cell's caption (same order) is drawn on a dark band at its foot."""
    layout = plan_layout(images, labels, shape, options)  # refuses before allocating
    allow_pixels(max(options.max_megapixels, layout.megapixels))
    canvas = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    nx, ny, _ = shape
    for i, image in enumerate(images):
        iz, rest = divmod(i, nx * ny)
        iy, ix = divmod(rest, nx)
        origin = layout.cell_origin(ix, iy, iz)
        if isinstance(image, Image.Image):
            box_w, box_h = layout.cell
            offset = ((box_w - image.width) // 2, (box_h - image.height) // 2)
            canvas.paste(image.convert("RGB"), (origin[0] + offset[0], origin[1] + offset[1]))
        else:
            _placeholder(draw, origin, layout, image or "no image")
        if options.overlay and captions is not None and captions[i]:
            _caption(canvas, origin, layout, captions[i])
    if options.legend:
        _draw_labels(draw, labels, layout)
    return canvas


def _caption(canvas: Image.Image, origin: tuple[int, int], layout: Layout, text: str) -> None:
    """`text` in white on a translucent dark band across the bottom of the cell box."""
    w, h = layout.cell
    size = max(MIN_FONT, min(h // 6, layout.font_size * 2 // 3))
    block = fit_text(text, w - 4, size, max_height=h // 3, max_lines=2)
    band_h = min(h, block.height + 4)
    x0, y0 = origin[0], origin[1] + h - band_h
    band = canvas.crop((x0, y0, x0 + w, y0 + band_h))
    band = Image.blend(band, Image.new("RGB", band.size, (0, 0, 0)), 0.6)
    canvas.paste(band, (x0, y0))
    _text(ImageDraw.Draw(canvas), block, (x0, y0, x0 + w, y0 + band_h), (255, 255, 255))


def _placeholder(draw: ImageDraw.ImageDraw, origin: tuple[int, int], layout: Layout, reason: str) -> None:
    x0, y0 = origin
    w, h = layout.cell
    draw.rectangle((x0, y0, x0 + w - 1, y0 + h - 1), fill=PLACEHOLDER, outline=PLACEHOLDER_EDGE)
    pad = max(2, layout.pad)
    block = fit_text(f"failed: {reason}", w - 2 * pad, max(MIN_FONT, layout.font_size * 2 // 3),
                     max_height=h - 2 * pad, max_lines=None)
    _text(draw, block, (x0 + pad, y0 + pad, x0 + w - pad, y0 + h - pad), PLACEHOLDER_TEXT)


def _text(draw: ImageDraw.ImageDraw, block: TextBlock, box: tuple[int, int, int, int],
          colour: tuple[int, int, int]) -> None:
    """Draw a text block centred in `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    y = top + max(0, (bottom - top - block.height) // 2)
    for line in block.lines:
        x = left + max(0, (right - left - text_width(block.font, line)) // 2)
        # Anchor "la" puts the ascender line at y, so lines stack at line_height.
        draw.text((x, y), line, font=block.font, fill=colour, anchor="la")
        y += block.line_height


def _label(draw: ImageDraw.ImageDraw, text: str, tag: str | None, box: tuple[int, int, int, int],
           layout: Layout, size: int, *, bold: bool = False, tag_slot: bool = False) -> None:
    """A label (and its tag below it) in box, wrapped to the box width. With `tag_slot` the
    tag line is kept free even without a tag, so labels along one axis line up."""
    pad = layout.pad
    left, top, right, bottom = box[0] + pad, box[1] + pad, box[2] - pad, box[3] - pad
    tag_h = _tag_font(layout.font_size)[1] + pad if tag or tag_slot else 0
    block = fit_text(text, right - left, size, bold=bold, max_height=bottom - top - tag_h)
    if tag_slot:
        y = top + max(0, (bottom - top - tag_h - block.height) // 2)
        tag_y = bottom - tag_h + pad
    else:
        y = top + max(0, (bottom - top - block.height - tag_h) // 2)
        tag_y = y + block.height + pad
    _text(draw, block, (left, y, right, y + block.height), TEXT)
    if tag:
        _tag(draw, tag, (left, right), tag_y, layout.font_size)


def _tag(draw: ImageDraw.ImageDraw, tag: str, span: tuple[int, int], y: int, font_size: int) -> None:
    """A coloured tag centred in the horizontal span (left, right); shortened, and at last a
    plain coloured bar, where the full word would spill into the next label."""
    f, h = _tag_font(font_size)
    colour = TAG_COLOURS.get(tag, TEXT)
    left, right = span
    text = next((t for t in (tag, TAG_SHORT.get(tag, tag)) if text_width(f, t) + 8 <= right - left), None)
    if text is None:
        draw.rectangle((left, y + h // 3, right - 1, y + h - h // 3), fill=colour)
        return
    w = text_width(f, text) + 8
    x0 = (left + right - w) // 2
    draw.rounded_rectangle((x0, y, x0 + w - 1, y + h - 1), radius=h // 3, fill=colour)
    draw.text((x0 + 4, y + 2), text, font=f, fill=(255, 255, 255), anchor="la")


def _draw_labels(draw: ImageDraw.ImageDraw, labels: GridLabels, layout: Layout) -> None:
    nx, ny, nz = layout.shape
    w, h = layout.cell
    x_slot, z_slot = any(labels.tags("x")), any(labels.tags("z"))
    xs, ys, zs = layout.label_sizes
    for iz in range(nz):
        sx = layout.sub_x(iz) + layout.left
        if labels.z:
            _label(draw, labels.z[iz], labels.tags("z")[iz], (sx, 0, sx + layout.cells_width, layout.title),
                   layout, zs, bold=True, tag_slot=z_slot)
        for ix in range(nx if labels.x else 0):
            x0, _ = layout.cell_origin(ix, 0, iz)
            _label(draw, labels.x[ix], labels.tags("x")[ix],
                   (x0, layout.title, x0 + w, layout.title + layout.top), layout, xs, tag_slot=x_slot)
        for iy in range(ny if labels.y else 0):
            _, y0 = layout.cell_origin(0, iy, iz)
            _label(draw, labels.y[iy], labels.tags("y")[iy],
                   (layout.sub_x(iz), y0, layout.sub_x(iz) + layout.left, y0 + h), layout, ys)
