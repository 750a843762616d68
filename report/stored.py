"""Cells read back from a run folder: results that live on disk, not in memory.

A big sweep cannot keep every cell's image in memory, so the grid, the animation and the
convergence metrics read the cells back from the folder instead. `StoredResults(out, cells,
records)` is a sequence with one `StoredCell` per grid cell, made afresh on every access;
a StoredCell is a core.cells.CellOutcome, as the engine's CellResult is (spec, image, latents,
denoiser_calls, seconds, error, cached, ok, previews) and reads its PNG (and latents file, when the run
saved one) the first time `.image` (`.latents`) is used. Whoever holds a StoredCell holds its
pixels; the sequence holds none, so memory stays that of the cells in use. `CellImages(results)`
hands draw_grid one picture at a time in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from core.cells import Cell, CellOutcome, CellSpec
from report.layout import CellImage

NOT_RENDERED = "stopped before this cell rendered"


def cell_spec(settings: Mapping[str, Any]) -> CellSpec:
    """The CellSpec a manifest record's "settings" describe (sampler options back as sorted pairs)."""
    options = settings.get("sampler_options") or {}
    return CellSpec(**{**settings, "sampler_options": tuple(sorted(dict(options).items()))})


class StoredCell:
    """One cell as its record and files in the folder say; `.image` and `.latents` load on first use."""

    def __init__(self, out: Path, cell: Cell, record: Mapping[str, Any] | None) -> None:
        self.out = Path(out)
        self.record = record
        self.spec = cell_spec(record["settings"]) if record else cell.spec
        self.denoiser_calls = int(record["model_calls"]) if record else 0
        self.seconds = float(record["seconds"]) if record else 0.0
        self.cached = bool(record.get("cached", False)) if record else False
        self.error = record["error"] if record else NOT_RENDERED
        self.previews: dict[int, Tensor] = {}

    @property
    def ok(self) -> bool:
        return self.record is not None and self.error is None and bool(self.record.get("file"))

    @cached_property
    def image(self) -> Image.Image | None:
        if not self.ok:
            return None
        with Image.open(self.out / self.record["file"]) as image:
            return image.convert("RGB")

    @cached_property
    def latents(self) -> Tensor | None:
        entry = self.record.get("latents") if self.ok else None
        if not entry:
            return None
        from safetensors.torch import load_file

        return load_file(str(self.out / entry["file"]))["latents"]


class StoredResults(Sequence):
    """One StoredCell per grid cell, in grid order, each read from disk when used."""

    def __init__(self, out: Path, cells: Sequence[Cell], records: Sequence[Mapping[str, Any] | None]) -> None:
        if len(cells) != len(records):
            raise ValueError(f"got {len(records)} records for {len(cells)} cells")
        self.out, self.cells, self.records = Path(out), cells, records

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index: int | slice) -> StoredCell | list[StoredCell]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return StoredCell(self.out, self.cells[index], self.records[index])


class CellImages(Sequence):
    """A grid's pictures from its results, fetched one at a time (report.layout.draw_grid takes
    any sequence): a cell's image, or the reason it has none."""

    def __init__(self, results: Sequence[CellOutcome]) -> None:
        self.results = results

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int | slice) -> CellImage | list[CellImage]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        result = self.results[index]
        return result.image if result.ok else (result.error or "no image")
