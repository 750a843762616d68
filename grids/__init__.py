"""Grids: what a grid is, before and after rendering.

This package owns grid specs (fixed settings + X, Y, optional Z axes in A1111's
X/Y/Z plot syntax), their JSON form, their expansion into cells, and the limits a
grid must stay within; later also layout, metadata, exports and convergence metrics.

Public API:
    parse_values(axis, text_or_list) -> list     axis values from "5-20 [4]", '"a, b", c', [..]
    label(axis, value) -> str                     a cell label ("Steps: 20", "Euler a")
    format_values(axis, values) -> str            values back as A1111 text
    GridSpec / Axis                               a grid; GridSpec.from_json / .to_json
    expand(spec) -> list[Cell]                    cells z, y, x; Cell.spec is a CellSpec
    validate(cells, limits, model_default_size)   raises GridTooLargeError / SpecError
    AxisError, SpecError, GridTooLargeError       ValueErrors with messages users can act on
    read_parameters(path | bytes | image)         A1111 `parameters` text from PNG / JPEG / WebP
    parse_parameters(text) / to_cell_settings(d)  that text's fields / the CellSpec fields it gives
    encode_image(image, fmt, text) / write_zip    PNG, JPEG, WebP with the text; atomic zip bundles
    animate(frames, captions) / axis_frames / trajectory_frames    animated GIF/WebP grids
    diffusers_snippet(cell, model_name, family)   a runnable diffusers script for a cell, or None
    GridFolder / FolderOptions                    a run's output folder (cells, grid, manifest, ...)
"""

from grids.animation import AnimationError, animate, axis_frames, trajectory_frames
from grids.axes import (
    AXES,
    AxisError,
    AxisType,
    SamplerValue,
    Size,
    axis_type,
    canonical_axis,
    format_value,
    format_values,
    label,
    parse_values,
    value_to_json,
)
from grids.cells import Cell, CellSpec
from grids.exports import ExportError, encode_image, write_zip
from grids.outputs import FolderOptions, GridFolder, OutputFolderError
from grids.reader import InfotextError, parse_parameters, read_parameters, to_cell_settings
from grids.snippet import NoDiffusersEquivalent, diffusers_snippet, snippet_unavailable_reason
from grids.spec import (
    Axis,
    GridSpec,
    GridTooLargeError,
    Limits,
    SpecError,
    check_size,
    expand,
    grid_megapixels,
    validate,
)

__all__ = [
    "AXES", "AxisError", "AxisType", "SamplerValue", "Size", "axis_type", "canonical_axis",
    "format_value", "format_values", "label", "parse_values", "value_to_json",
    "Cell", "CellSpec",
    "Axis", "GridSpec", "GridTooLargeError", "Limits", "SpecError", "check_size", "expand",
    "grid_megapixels", "validate",
    "read_parameters", "parse_parameters", "to_cell_settings", "InfotextError",
    "encode_image", "write_zip", "ExportError",
    "animate", "axis_frames", "trajectory_frames", "AnimationError",
    "diffusers_snippet", "snippet_unavailable_reason", "NoDiffusersEquivalent",
    "GridFolder", "FolderOptions", "OutputFolderError",
]
