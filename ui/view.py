"""How a run's results are shown on the page: grid display size and result component values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image

if TYPE_CHECKING:  # ui.runner imports torch; the page is built before torch loads
    from ui.runner import Snapshot

DISPLAY_MIN_WIDTH = 1200  # about the widest the page's grid panel gets (a 1920-px screen)
MAX_UPSCALE = 4


def display_grid(grid: Image.Image | None) -> Image.Image | None:
    """The grid as sent to the page: small grids (the built-in model's 64x64 cells) enlarged by the
    whole factor that makes them at least DISPLAY_MIN_WIDTH wide (at most MAX_UPSCALE), with
    nearest-neighbour, so that the page only ever scales them down to its panel's width: a 4- and
    a 6-column grid both fill the panel, labels at the same size relative to it. The downloaded
    grid is always the original size."""
    if grid is None:
        return None
    factor = min(MAX_UPSCALE, max(1, -(-DISPLAY_MIN_WIDTH // max(1, grid.width))))
    if factor == 1:
        return grid
    return grid.resize((grid.width * factor, grid.height * factor), Image.Resampling.NEAREST)


CELL_MIN_SIDE = 384


def display_cell(path: Any) -> Image.Image | None:
    """One cell as the Cells tab shows it: enlarged by a whole factor (nearest-neighbour) to at
    least CELL_MIN_SIDE pixels, so a 64x64 built-in cell is not a thumbnail."""
    if path is None:
        return None
    with Image.open(path) as image:
        image.load()
    factor = max(1, -(-CELL_MIN_SIDE // max(1, min(image.size))))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def result_updates(snap: Snapshot, run_id: str) -> list[Any]:
    """Values for grid, gallery, run id, chart, verdicts and files, in the page's order, from a
    run's last snapshot (its grid: the written one, or after a Stop the one with previews)."""
    outputs = snap.outputs
    gallery = gr.Gallery(value=outputs.gallery(), columns=outputs.shape[0])
    return [display_grid(snap.grid), gallery, run_id, outputs.chart("steps"),
            outputs.verdicts_markdown(), [str(p) for p in outputs.files]]
