"""What a grid run leaves: the run folder, the labelled grid picture, A1111's text (written
and read back), image exports, animations, diffusers scripts and convergence metrics.

The output side of the engine: it takes cells (core.cells.CellSpec / Cell) and their results
(core.cells.CellOutcome: in memory, or read back from a run folder) and never imports the
engine; the model a folder is named after is passed in by the caller.

Public API:
    GridFolder / FolderOptions                    a run's output folder (cells, grid, manifest, ...)
    draw_grid / GridLabels / LayoutOptions        the labelled grid picture
    parameters(cell, model_name, model_hash)      a cell's A1111 `parameters` text
    read_parameters(path | bytes | image)         that text back from PNG / JPEG / WebP
    parse_parameters(text) / to_cell_settings(d)  its fields / the CellSpec fields it gives
    encode_image(image, fmt, text) / write_zip    PNG, JPEG, WebP with the text; atomic zip bundles
    animate(frames, captions) / axis_frames / trajectory_frames    animated GIF/WebP grids
    diffusers_snippet(cell, model_name, family)   a runnable diffusers script for a cell, or None
    measure(cells, results, references=None)      convergence: distances, verdicts, chart rows

Names load on first use (PEP 562), as in grids/.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "animation": ("AnimationError", "animate", "axis_frames", "trajectory_frames"),
    "exports": ("ExportError", "encode_image", "write_zip"),
    "infotext": ("grid_parameters", "parameters", "save_png"),
    "infotext_reader": ("InfotextError", "parse_parameters", "read_parameters", "to_cell_settings"),
    "layout": ("GridLabels", "LayoutOptions", "draw_grid", "plan_layout"),
    "metrics": ("Convergence", "MetricsError", "measure"),
    "run_folder": ("FolderOptions", "GridFolder", "OutputFolderError"),
    "snippet": ("NoDiffusersEquivalent", "diffusers_snippet", "snippet_unavailable_reason"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'report' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"report.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
