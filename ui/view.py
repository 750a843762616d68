"""How a run's results are shown on the page: grid display size and result component values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:  # ui.results imports torch; the page is built before torch loads
    from ui.results import RunOutputs

DISPLAY_MIN_WIDTH = 900
MAX_UPSCALE = 4


def display_grid(grid: Image.Image | None) -> Image.Image | None:
    """The grid as shown on the page: small grids (the built-in model's 64x64 cells) enlarged by
    a whole factor with nearest-neighbour, so pixels stay sharp instead of being smeared by the
    browser. The downloaded grid is always the original size."""
    if grid is None:
        return None
    factor = min(MAX_UPSCALE, max(1, DISPLAY_MIN_WIDTH // max(1, grid.width)))
    if factor == 1:
        return grid
    return grid.resize((grid.width * factor, grid.height * factor), Image.Resampling.NEAREST)


def result_updates(outputs: RunOutputs, run_id: str) -> list[Any]:
    """Values for grid, gallery, run id, chart, verdicts and files, in the page's order."""
    return [display_grid(outputs.grid), outputs.gallery(), run_id, outputs.chart("steps"),
            outputs.verdicts_markdown(), [str(p) for p in outputs.files]]
