"""Grids: what a grid is, before it renders (the spec side; what a run leaves is in report/).

This package owns grid specs (fixed settings + X, Y, optional Z axes in A1111's
X/Y/Z plot syntax), their JSON form, their expansion into cells, and the check of a
grid against its limits. The cell vocabulary itself (CellSpec, Cell, Limits, SpecError)
lives in the torch-free core/ and is re-exported here for convenience.

Public API:
    parse_values(axis, text_or_list) -> list     axis values from "5-20 [4]", '"a, b", c', [..]
    label(axis, value) -> str                     a cell label ("Steps: 20", "Euler a")
    format_values(axis, values) -> str            values back as A1111 text
    GridSpec / Axis                               a grid; GridSpec.from_json / .to_json
    expand(spec) -> list[Cell]                    cells z, y, x; Cell.spec is a CellSpec
    validate(cells, limits, model_default_size)   raises GridTooLargeError / SpecError
    AxisError, SpecError, GridTooLargeError       ValueErrors with messages users can act on

Names load on first use (PEP 562 module __getattr__), so that importing the package
from the app's page does not import torch (grids.axes and grids.spec import samplers).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "grids.axes": ("AXES", "AxisError", "AxisType", "SamplerValue", "Size", "axis_type", "canonical_axis",
                   "format_value", "format_values", "label", "parse_values", "value_to_json"),
    "core.cells": ("Cell", "CellSpec"),
    "core.limits": ("GridTooLargeError", "Limits", "SpecError"),
    "grids.spec": ("Axis", "GridSpec", "check_size", "expand", "grid_megapixels", "validate"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'grids' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
