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

Submodules load on first use (PEP 562 module __getattr__), so that importing a
torch-free part from the app's page does not import torch through the rest (the
torch-free vocabulary itself, CellSpec and Limits, lives in core/).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "animation": ("AnimationError", "animate", "axis_frames", "trajectory_frames"),
    "axes": ("AXES", "AxisError", "AxisType", "SamplerValue", "Size", "axis_type", "canonical_axis",
             "format_value", "format_values", "label", "parse_values", "value_to_json"),
    "core.cells": ("Cell", "CellSpec"),
    "exports": ("ExportError", "encode_image", "write_zip"),
    "core.limits": ("GridTooLargeError", "Limits", "SpecError"),
    "outputs": ("FolderOptions", "GridFolder", "OutputFolderError"),
    "reader": ("InfotextError", "parse_parameters", "read_parameters", "to_cell_settings"),
    "snippet": ("NoDiffusersEquivalent", "diffusers_snippet", "snippet_unavailable_reason"),
    "spec": ("Axis", "GridSpec", "check_size", "expand", "grid_megapixels", "validate"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'grids' has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"grids.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
