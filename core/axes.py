"""The settings a grid axis can vary: names, A1111's labels, value types and bounds.

Torch-free (the app's page lists the axes before the model loads); the parsing of values
users type is in grids.axes. The table's order is the order menus list the axes in.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.limits import MAX_SEED, MAX_STEPS


class AxisError(ValueError):
    """A bad axis name or value; the message names the axis and the item."""

    def __init__(self, message: str, axis: str | None = None) -> None:
        super().__init__(message)
        self.axis = axis


@dataclass(frozen=True)
class AxisType:
    """One setting an axis can vary: its name, A1111's label, and how values parse.

    kind: "int", "float", "sampler", "schedule", "text" or "size". bare_label:
    cells show the value alone (Sampler, Checkpoint name) instead of "Label: value".
    """

    name: str
    label: str
    kind: str
    bare_label: bool = False
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class SamplerValue:
    """A sampler axis value: the user's text (the label), the canonical sampler name
    and the schedule type the text implies ("DPM++ 2M Karras" -> "Karras") or None."""

    label: str
    sampler: str
    schedule: str | None = None

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class Size:
    """An image size in pixels, written "WIDTHxHEIGHT"."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


AXES: dict[str, AxisType] = {t.name: t for t in (
    AxisType("sampler", "Sampler", "sampler", bare_label=True),
    AxisType("steps", "Steps", "int", minimum=1, maximum=MAX_STEPS),
    AxisType("schedule", "Schedule type", "schedule"),
    AxisType("cfg", "CFG Scale", "float", minimum=0.0, maximum=100.0),
    AxisType("seed", "Seed", "int", minimum=-1, maximum=MAX_SEED),
    AxisType("eta", "Eta", "float", minimum=0.0),
    AxisType("s_noise", "Sigma noise", "float", minimum=0.0),
    AxisType("prompt_sr", "Prompt S/R", "text"),
    AxisType("negative_prompt", "Negative prompt", "text"),
    AxisType("size", "Size", "size"),
    AxisType("model", "Checkpoint name", "text", bare_label=True),
    AxisType("shift", "Shift", "float", maximum=100.0),
    AxisType("guidance", "Distilled CFG Scale", "float", minimum=0.0, maximum=100.0),
)}

# A1111's labels of the axes, in the menus' order ("Sampler", "Steps", ...).
AXIS_LABELS: tuple[str, ...] = tuple(t.label for t in AXES.values())
