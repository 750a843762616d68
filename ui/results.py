"""A finished run's outputs: the files on disk and what the page shows from them.

`RunOutputs` (made by ui.runner.GridJob when a run ends, once it has written the run folder
through report.run_folder.GridFolder: the same files the CLI writes) answers the page's
questions about the run: the gallery, one cell's full view, the convergence chart, the
verdicts and the denoising trajectory at a given fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.cells import Cell, CellOutcome
from report.animation import cell_at_fraction
from report.layout import GridLabels, LayoutOptions, draw_grid
from report.metrics import Convergence, chart_frame

DOWNLOADS = ("grid.png", "bundle.zip", "animation.gif", "metrics.csv", "manifest.json", "spec.json")


@dataclass
class RunOutputs:
    """One finished (or stopped) run, kept server-side while the page refers to it."""

    run_id: str
    folder: Path
    grid: Image.Image
    manifest: dict[str, Any]
    cells: list[Cell]
    results: list[CellOutcome]
    labels: GridLabels
    shape: tuple[int, int, int]
    layout: LayoutOptions
    convergence: Convergence

    @property
    def grid_path(self) -> Path:
        return self.folder / "grid.png"

    @property
    def files(self) -> list[Path]:
        return [self.folder / name for name in DOWNLOADS if (self.folder / name).exists()]

    def _record(self, index: int) -> dict[str, Any]:
        return self.manifest["cells"][index]

    def gallery(self) -> list[tuple[str, str]]:
        """Every cell that has an image, with its axis labels as caption."""
        items = []
        for i, cell in enumerate(self.cells):
            record = self._record(i)
            if record.get("file"):
                caption = ", ".join(label for label in cell.labels if label)
                items.append((str(self.folder / record["file"]), caption))
        return items

    def cell_view(self, gallery_index: int) -> tuple[str | None, str, str]:
        """(image path, A1111 parameters, diffusers snippet) of the gallery's n-th cell."""
        with_files = [self._record(i) for i in range(len(self.cells)) if self._record(i).get("file")]
        if not 0 <= gallery_index < len(with_files):
            return None, "", ""
        record = with_files[gallery_index]
        snippet = record.get("diffusers_snippet") or "# diffusers has no equivalent of this sampler"
        return str(self.folder / record["file"]), record["parameters"], snippet

    def chart(self, by: str = "steps") -> Any:
        """Tidy rows for the convergence chart (a DataFrame): series, x (steps or model calls),
        distance, metric."""
        return chart_frame(self.convergence, by=by)

    def verdicts_markdown(self) -> str:
        verdicts = self.convergence.verdicts
        if not verdicts:
            return ""
        lines = [f"- **{name}**: {text}" for name, text in verdicts.items()]
        against = ("a high-accuracy reference (DPM++ 2M Karras, 200 steps)"
                   if self.convergence.reference_mode == "accurate" else "its row's last cell")
        return f"**Convergence** (distance of each cell to {against}):\n" + "\n".join(lines)

    def trajectory(self, fraction: float) -> Image.Image:
        """Every cell's denoised estimate at the same fraction of its own steps (1.0: final images)."""
        images = [cell_at_fraction(r, fraction) if fraction < 1.0 else (r.image if r.ok else r.error)
                  for r in self.results]
        return draw_grid(images, self.labels, self.shape, self.layout)
