"""Grid layout: dimensions for 1D/2D/3D grids, labels kept inside their boxes, placeholders,
sampler-kind tags, centring of smaller cells, the megapixel limit, the bundled font."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from grids import GridSpec, GridTooLargeError
from report.layout import (
    BACKGROUND,
    PLACEHOLDER,
    TAG_COLOURS,
    GridLabels,
    LayoutOptions,
    draw_grid,
    kind_tag,
    plan_layout,
)
from report.textfit import FONT_PATH, MIN_FONT, fit_text, font, text_width

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200),
           (120, 60, 0), (0, 60, 120), (60, 0, 120), (90, 90, 10), (10, 90, 90), (90, 10, 90)]


def solids(n: int, size=(40, 30)) -> list[Image.Image]:
    return [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(n)]


@pytest.mark.parametrize("shape,margin,expected", [
    ((3, 1, 1), 0, (120, 30)),                    # 1D
    ((3, 2, 1), 5, (3 * 40 + 2 * 5, 2 * 30 + 5)),  # 2D
    ((2, 2, 3), 4, (3 * (2 * 40 + 4) + 2 * 4, 2 * 30 + 4)),  # 3D: sub-grids side by side
])
def test_dimensions_without_legend(shape, margin, expected):
    n = shape[0] * shape[1] * shape[2]
    grid = draw_grid(solids(n), GridLabels(), shape, LayoutOptions(margin=margin, legend=False))
    assert grid.size == expected


def test_3d_grid_with_legend_places_every_cell_and_label_area():
    spec = GridSpec.from_json({"x": {"axis": "steps", "values": "10, 20"},
                               "y": {"axis": "cfg", "values": "5, 7"},
                               "z": {"axis": "sampler", "values": "Euler, Euler a, DPM++ SDE"}})
    labels = GridLabels.from_spec(spec)
    images = solids(12)
    grid = draw_grid(images, labels, (2, 2, 3), LayoutOptions(margin=3))
    lay = plan_layout(images, labels, (2, 2, 3), LayoutOptions(margin=3))
    assert grid.size == (lay.width, lay.height)
    assert lay.left >= 0.75 * 40 and lay.top > 0 and lay.title > 0 and lay.z_gap >= 3
    assert lay.width == 3 * (lay.left + 2 * 40 + 3) + 2 * lay.z_gap
    assert lay.height == lay.title + lay.top + 2 * 30 + 3
    for i, colour in enumerate(COLOURS[:12]):
        iz, rest = divmod(i, 4)
        iy, ix = divmod(rest, 2)
        x0, y0 = lay.cell_origin(ix, iy, iz)
        box = grid.crop((x0, y0, x0 + 40, y0 + 30))
        assert box.getcolors() == [(40 * 30, colour)]
    # Text was drawn in the Y label column and the Z title of every sub-grid.
    for iz in range(3):
        sx = lay.sub_x(iz)
        assert _ink(grid.crop((sx, lay.title + lay.top, sx + lay.left, lay.height))) > 0
        assert _ink(grid.crop((sx + lay.left, 0, sx + lay.sub_width, lay.title))) > 0


def _ink(region: Image.Image) -> int:
    return sum(n for n, c in region.getcolors(1 << 20) if c != BACKGROUND)


def test_long_labels_wrap_and_stay_inside_their_column():
    labels = GridLabels(x=("DPM++ 2M SDE Heun Karras with a very long label text",
                           "Supercalifragilisticexpialidocious", "short"))
    margin = 20
    grid = draw_grid(solids(3, (64, 64)), labels, (3, 1, 1), LayoutOptions(margin=margin))
    lay = plan_layout(solids(3, (64, 64)), labels, (3, 1, 1), LayoutOptions(margin=margin))
    assert lay.top > 2 * font(lay.font_size).getmetrics()[0]  # the long label wrapped onto lines
    for ix in range(2):  # the gaps between columns, in the label row, stay blank
        gap_x = lay.cell_origin(ix, 0, 0)[0] + 64
        assert _ink(grid.crop((gap_x, 0, gap_x + margin, lay.top))) == 0
    for ix in range(3):
        x0 = lay.cell_origin(ix, 0, 0)[0]
        assert _ink(grid.crop((x0, 0, x0 + 64, lay.top))) > 0


@pytest.mark.parametrize("text,width", [("Supercalifragilisticexpialidocious", 30),
                                        ("Steps: 20 and more words here", 40), ("a\nb c", 200)])
def test_fit_text_lines_never_exceed_the_width(text, width):
    block = fit_text(text, width, 24)
    assert all(text_width(block.font, line) <= width for line in block.lines)
    assert "".join(block.lines).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    assert block.font.size >= MIN_FONT


def test_fit_text_cuts_what_does_not_fit_the_height():
    block = fit_text("word " * 200, 40, 12, max_height=30, max_lines=None)
    assert block.height <= 30 and block.lines[-1].endswith("…")


def test_failed_cell_is_a_grey_placeholder_with_its_reason():
    images: list = solids(4, (96, 96))
    images[1] = "the sampler failed: NaN at step 3"
    images[2] = None
    lay = plan_layout(images, GridLabels(), (2, 2, 1), LayoutOptions(legend=False))
    grid = draw_grid(images, GridLabels(), (2, 2, 1), LayoutOptions(legend=False))
    for ix, iy in ((1, 0), (0, 1)):
        x0, y0 = lay.cell_origin(ix, iy, 0)
        colours = dict((c, n) for n, c in grid.crop((x0, y0, x0 + 96, y0 + 96)).getcolors(1 << 16))
        assert colours[PLACEHOLDER] > 0.6 * 96 * 96  # mostly grey
        dark = sum(n for c, n in colours.items() if sum(c) < 3 * 120)
        assert dark > 30  # with text on it
    assert grid.getpixel(lay.cell_origin(0, 0, 0)) == COLOURS[0]


def test_smaller_cells_are_centred_in_the_largest_box():
    images = [Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (20, 10), (0, 0, 255))]
    grid = draw_grid(images, GridLabels(), (2, 1, 1), LayoutOptions(legend=False))
    assert grid.size == (80, 40)
    assert grid.getpixel((40 + 10, 15)) == (0, 0, 255)  # top-left of the centred 20x10
    assert grid.getpixel((40 + 29, 24)) == (0, 0, 255)  # bottom-right
    assert grid.getpixel((40 + 9, 15)) == BACKGROUND and grid.getpixel((40 + 10, 14)) == BACKGROUND


def test_sampler_tags_mark_ancestral_and_sde_columns():
    spec = GridSpec.from_json({"x": {"axis": "sampler", "values": "Euler, Euler a, DPM++ 2M SDE Karras"}})
    labels = GridLabels.from_spec(spec)
    assert labels.x_tags == (None, "ancestral", "SDE")
    assert [kind_tag(s) for s in ("DPM++ 2M", "DPM2 a", "DPM++ SDE", "nonsense")] == \
        [None, "ancestral", "SDE", None]
    images = solids(3, (128, 128))
    grid = draw_grid(images, labels, (3, 1, 1))
    lay = plan_layout(images, labels, (3, 1, 1))

    def count(ix: int, colour) -> int:
        x0 = lay.cell_origin(ix, 0, 0)[0]
        label_box = grid.crop((x0, 0, x0 + 128, lay.top))
        return dict((c, n) for n, c in label_box.getcolors(1 << 16)).get(colour, 0)

    assert count(0, TAG_COLOURS["ancestral"]) == 0 and count(0, TAG_COLOURS["SDE"]) == 0
    assert count(1, TAG_COLOURS["ancestral"]) > 20 and count(2, TAG_COLOURS["SDE"]) > 20


def test_megapixel_limit_refused_before_allocating(monkeypatch):
    small = solids(4)

    def no_allocation(*args, **kwargs):
        raise AssertionError("Image.new called for a grid over the limit")

    monkeypatch.setattr("report.layout.Image.new", no_allocation)
    opts = LayoutOptions(cell_size=(8192, 8192), legend=False)
    with pytest.raises(GridTooLargeError) as err:
        draw_grid([None] * 4, GridLabels(), (2, 2, 1), opts)
    assert str(err.value) == ("the grid image would be 16384x16384 pixels (268.4 megapixels); "
                              "the limit is 200 — use a smaller size or fewer cells")
    with pytest.raises(GridTooLargeError, match="limit is 0.001"):
        draw_grid(small, GridLabels(), (2, 2, 1), LayoutOptions(max_megapixels=0.001))


def test_pillow_opens_grids_up_to_the_limit_without_bomb_errors():
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > 200e6


def test_font_is_the_bundled_dejavu():
    assets = Path(__file__).resolve().parent.parent / "assets" / "fonts"
    assert FONT_PATH == assets / "DejaVuSans.ttf" and FONT_PATH.is_file()
    licence = assets / "LICENSE-DejaVu.txt"
    assert licence.is_file() and "Bitstream Vera" in licence.read_text()
    f = font(20)
    assert Path(f.path) == FONT_PATH and f.getname() == ("DejaVu Sans", "Book")
    assert font(20, bold=True).getname() == ("DejaVu Sans", "Bold")


def test_shape_and_label_mismatches_are_refused():
    with pytest.raises(ValueError, match="needs 6 cells, got 5"):
        draw_grid(solids(5), GridLabels(), (3, 2, 1))
    with pytest.raises(ValueError, match="X has 3 values but 2 labels"):
        draw_grid(solids(3), GridLabels(x=("a", "b")), (3, 1, 1))


def test_overlay_darkens_only_the_foot_of_captioned_cells() -> None:
    cells = [Image.new("RGB", (96, 96), (250, 250, 250)) for _ in range(2)]
    options = LayoutOptions(legend=False, overlay=True)
    grid = draw_grid(cells, GridLabels(), (2, 1, 1), options, captions=["1.2 s · 40 calls", None])
    plain = draw_grid(cells, GridLabels(), (2, 1, 1), LayoutOptions(legend=False), captions=["x", None])
    assert plain.getpixel((48, 90)) == (250, 250, 250)  # captions are drawn only with overlay on
    assert grid.getpixel((2, 2)) == (250, 250, 250)  # the top of the cell is untouched
    foot = [grid.getpixel((x, 94)) for x in range(96)]
    assert all(max(p) < 120 for p in foot[:3])  # the band is dark at its edge, past the text
    band = [grid.getpixel((x, y)) for x in range(96) for y in range(80, 96)]
    assert (255, 255, 255) in band  # white text on the band
    assert grid.getpixel((96 + 48, 94)) == (250, 250, 250)  # the uncaptioned cell keeps its foot
