"""A finished run's outputs: the files on disk and what the page shows from them.

`RunOutputs` (made by ui.runner.GridJob when a run ends, once it has written the run folder
through report.run_folder.GridFolder: the same files the CLI writes) answers the page's
questions about the run: the gallery, one cell's full view, the convergence chart, the
verdicts and the denoising trajectory at a given fraction.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from core.cells import Cell, CellOutcome
from pipeline.cell_state import STOPPED
from report.animation import cell_at_fraction
from report.layout import GridLabels, LayoutOptions, draw_grid
from report.metrics import Convergence, chart_frame
from report.run_folder import cost_caption

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

    def gallery(self) -> list[str]:
        """Every cell that has an image, in the grid's order (the gallery has as many columns as
        the grid; no captions over the thumbnails: a clicked cell shows its labels)."""
        return [str(self.folder / self._record(i)["file"]) for i in range(len(self.cells))
                if self._record(i).get("file")]

    def cell_view(self, gallery_index: int) -> tuple[str | None, str, str, str, str, str | None]:
        """(image path, its axis labels, A1111 parameters, diffusers snippet, ComfyUI workflow JSON,
        that workflow as a file to download or None) of the gallery's n-th cell."""
        with_files = [i for i in range(len(self.cells)) if self._record(i).get("file")]
        if not 0 <= gallery_index < len(with_files):
            return None, "", "", "", "", None
        index = with_files[gallery_index]
        record = self._record(index)
        x, y, z = self.cells[index].labels  # read as the grid is: row, then column, then page
        caption = " · ".join(label for label in (y, x, z) if label)
        snippet = record.get("diffusers_snippet") or "# diffusers has no equivalent of this sampler"
        text, path = self._workflow(record)
        return str(self.folder / record["file"]), caption, record["parameters"], snippet, text, path

    def _workflow(self, record: dict[str, Any]) -> tuple[str, str | None]:
        """The cell's ComfyUI workflow as JSON text and as a file (outside the run folder, whose
        files the manifest lists; Gradio serves the temp dir), or a note and None."""
        workflow = record.get("comfyui_workflow")
        if workflow is None:
            return "// ComfyUI has no equivalent of this cell (see docs/SAMPLERS.md, ComfyUI names)", None
        text = json.dumps(workflow, indent=2, ensure_ascii=False)
        where = Path(tempfile.gettempdir()) / "sampler-grid-comfyui" / self.folder.name
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{Path(record['file']).stem}.comfyui.json"
        path.write_text(text, encoding="utf-8")
        return text, str(path)

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

    @property
    def unfinished(self) -> int:
        """Cells a Stop cut short (they have no image; the page shows their last preview)."""
        return sum(1 for r in self.results if _stopped(r))

    def shown_grid(self) -> Image.Image:
        """The grid for the page: the written grid, or after a Stop the same grid with each
        unfinished cell's last denoised estimate (its preview, enlarged) marked "unfinished",
        so a stopped run still shows how far every cell got. The file on disk keeps placeholders."""
        if not any(_stopped(r) and r.previews for r in self.results):
            return self.grid
        images, captions = [], []
        for r in self.results:
            if _stopped(r) and r.previews:
                images.append(_enlarged(r.previews[max(r.previews)], self.layout.cell_size))
                captions.append("unfinished: " + r.error.removeprefix(STOPPED).strip().removeprefix("at "))
            else:
                images.append(r.image if r.ok else r.error)
                captions.append(cost_caption(r) if self.layout.overlay else None)
        return draw_grid(images, self.labels, self.shape, replace(self.layout, overlay=True), captions)

    def trajectory(self, fraction: float) -> Image.Image:
        """Every cell's denoised estimate at the same fraction of its own steps (1.0: final images)."""
        images = [cell_at_fraction(r, fraction) if fraction < 1.0 else (r.image if r.ok else r.error)
                  for r in self.results]
        return draw_grid(images, self.labels, self.shape, self.layout)



def _stopped(result: CellOutcome) -> bool:
    return not result.ok and (result.error or "").startswith(STOPPED)


def _enlarged(preview: Tensor, size: tuple[int, int] | None) -> Image.Image:
    image = Image.fromarray(preview.numpy(), "RGB")
    return image.resize(size, Image.Resampling.NEAREST) if size else image
