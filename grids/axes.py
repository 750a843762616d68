"""Grid axes: which settings an X/Y/Z axis can vary, and their values in A1111's syntax.

This module owns the axis names (and A1111's display labels as aliases), parsing
of the value text users type ("5,10,20", "1-5", "1-10 (+3)", "10-40 [4]",
'"a, b", c', "512x512"), validation of every value with messages a user can act
on, the cell labels ("Steps: 20"; bare values for Sampler and Checkpoint), and
writing values back as JSON or as text that parses to the same values.

Decisions (where A1111 differs, ours is the one documented here):
- "a-b [n]" on whole-number axes truncates toward zero, as A1111 does with int()
  ("1-10 [5]" is 1, 3, 5, 7, 10, the A1111 wiki's example), but on the exact
  value, not on numpy's float, so 7 never comes out as 6.
- "a-b (+s)" includes b when the steps land on it, either way ("10-1 (-3)": 10, 7,
  4, 1; A1111 drops the 1); a step away from b is refused, as are ranges making
  more than MAX_AXIS_VALUES values. Range floats are rounded to 10 decimals.
- Text items are CSV (quotes allowed), stripped; empty items are dropped. A JSON
  list keeps Prompt S/R and negative-prompt items verbatim (empty allowed after
  the first Prompt S/R item), which text cannot express.
- Seed -1 means "random"; it stays -1 here and is fixed once per grid by the spec.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import samplers
from grids.limits import MAX_SEED, MAX_SIDE
from samplers import schedules
from samplers.registry import suggest

MAX_AXIS_VALUES = 1000


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
    AxisType("schedule", "Schedule type", "schedule"),
    AxisType("steps", "Steps", "int", minimum=1, maximum=schedules.MAX_STEPS),
    AxisType("cfg", "CFG Scale", "float", minimum=0.0, maximum=100.0),
    AxisType("seed", "Seed", "int", minimum=-1, maximum=MAX_SEED),
    AxisType("eta", "Eta", "float", minimum=0.0),
    AxisType("s_noise", "Sigma noise", "float", minimum=0.0),
    AxisType("shift", "Shift", "float", maximum=100.0),
    AxisType("guidance", "Distilled CFG Scale", "float", minimum=0.0, maximum=100.0),
    AxisType("prompt_sr", "Prompt S/R", "text"),
    AxisType("negative_prompt", "Negative prompt", "text"),
    AxisType("size", "Size", "size"),
    AxisType("model", "Checkpoint name", "text", bare_label=True),
)}


def _key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


_ALIASES: dict[str, str] = {
    **{_key(t.name): t.name for t in AXES.values()},
    **{_key(t.label): t.name for t in AXES.values()},
    "checkpoint": "model", "scheduler": "schedule", "flux guidance": "guidance",
    "distilled guidance": "guidance",
}


def axis_type(axis: str) -> AxisType:
    """The axis for a name or A1111 label in any case ("CFG Scale" -> cfg)."""
    if not isinstance(axis, str):
        raise AxisError(f"axis name must be text, got {axis!r}")
    name = _ALIASES.get(_key(axis))
    if name is None:
        raise AxisError(suggest(axis.strip(), list(AXES), "axis"))
    return AXES[name]


def canonical_axis(axis: str) -> str:
    """The canonical axis name ("Steps" -> "steps", "Checkpoint name" -> "model")."""
    return axis_type(axis).name


def split_items(axis: str, text: str) -> list[str]:
    """CSV items of `text`, stripped, empties dropped ('"a, b", c' -> ["a, b", "c"])."""
    try:
        rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    except csv.Error as err:
        raise AxisError(f"{axis}: cannot read the values as a comma-separated list ({err})", axis) from err
    return [item.strip() for row in rows for item in row if item.strip()]


# ---------------------------------------------------------------- numbers


_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_RANGE = re.compile(
    rf"\s*({_NUM})\s*-\s*({_NUM})\s*(?:\(\s*({_NUM})\s*\)|\[\s*([+-]?[0-9]+)\s*\])?\s*")


def _to_int(t: AxisType, item: Any) -> int:
    if isinstance(item, bool):
        raise AxisError(f"{t.name}: {item!r} is not a whole number", t.name)
    if isinstance(item, int):
        return item
    try:
        if isinstance(item, str):
            try:
                return int(item.strip())
            except ValueError:
                number = float(item)
        else:
            number = item
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            return int(number)
    except (ValueError, OverflowError):
        pass
    raise AxisError(f"{t.name}: {item!r} is not a whole number", t.name)


def _to_float(t: AxisType, item: Any) -> float:
    try:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise ValueError
        value = float(item)
    except (ValueError, OverflowError):
        raise AxisError(f"{t.name}: {item!r} is not a number", t.name) from None
    if not math.isfinite(value):
        raise AxisError(f"{t.name}: {item!r} is not a finite number", t.name)
    return value


def _check_bounds(t: AxisType, value: float) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise AxisError(f"{t.name}: a range made a value too large to use ({value})", t.name)
    if t.name == "seed" and value < 0 and value != -1:
        raise AxisError(f"seed must be -1 (random) or >= 0, got {value}", t.name)
    if t.name == "shift" and value <= 0:
        raise AxisError(f"shift must be > 0 (a flow model's timestep shift; SD3 uses 3), got {value}", t.name)
    if t.minimum is not None and value < t.minimum:
        raise AxisError(f"{t.name} must be >= {t.minimum}, got {value}", t.name)
    if t.maximum is not None and value > t.maximum:
        raise AxisError(f"{t.name} must be <= {t.maximum}, got {value}", t.name)


def _count(t: AxisType, item: str, n: int) -> None:
    if n > MAX_AXIS_VALUES:
        raise AxisError(f"{t.name}: {item!r} would make more than {MAX_AXIS_VALUES} values, "
                        f"the most an axis takes — use a bigger step or a shorter range", t.name)


def _int_range(t: AxisType, item: str, a: int, b: int, step: int | None, count: int | None) -> list[int]:
    if count is not None:
        d = max(count - 1, 1)
        # Exact integer arithmetic (20-digit seeds lose nothing), truncated toward zero.
        nums = (a * d + (b - a) * i for i in range(count))
        return [n // d if n >= 0 else -(-n // d) for n in nums]
    step = step if step is not None else (1 if b >= a else -1)
    _check_step(t, item, a, b, step)
    _count(t, item, (b - a) // step + 1)
    return list(range(a, b + (1 if step > 0 else -1), step))


def _check_step(t: AxisType, item: str, a: float, b: float, step: float) -> None:
    if step == 0:
        raise AxisError(f"{t.name}: {item!r} has a step of 0; use a step like (+1)", t.name)
    if (b - a) * step < 0:
        sign = "-" if step > 0 else "+"
        raise AxisError(f"{t.name}: {item!r} steps away from {_fmt_number(b)}; use "
                        f"({sign}{_fmt_number(abs(step))})", t.name)


def _float_range(t: AxisType, item: str, a: float, b: float, step: float | None,
                 count: int | None) -> list[float]:
    lo, hi = min(a, b), max(a, b)
    if count is not None:
        d = max(count - 1, 1)
        raw = [(a * (d - i) + b * i) / d for i in range(count)]
    else:
        step = step if step is not None else (1.0 if b >= a else -1.0)
        _check_step(t, item, a, b, step)
        n_float = (b - a) / step + 1e-9
        _count(t, item, math.floor(n_float) + 1 if math.isfinite(n_float) else MAX_AXIS_VALUES + 1)
        n = math.floor(n_float) + 1
        raw = [a + i * step for i in range(n)]
    return [min(max(round(v, 10), lo), hi) for v in raw]


def _parse_range(t: AxisType, item: str, m: re.Match[str]) -> list[int] | list[float]:
    a_text, b_text, step_text, count_text = m.groups()
    count = None
    if count_text is not None:
        count = int(count_text) if len(count_text) < 20 else MAX_AXIS_VALUES + 1
        if count < 1:
            raise AxisError(f"{t.name}: {item!r} asks for {count} values; use [1] or more", t.name)
        _count(t, item, count)
    if t.kind == "int":
        parts = [_to_int(t, x) if x is not None else None for x in (a_text, b_text, step_text)]
        return _int_range(t, item, parts[0], parts[1], parts[2], count)
    parts_f = [_to_float(t, x) if x is not None else None for x in (a_text, b_text, step_text)]
    return _float_range(t, item, parts_f[0], parts_f[1], parts_f[2], count)


def _parse_numbers(t: AxisType, items: list[Any], from_text: bool) -> list[Any]:
    values: list[Any] = []
    for item in items:
        m = _RANGE.fullmatch(item) if from_text and isinstance(item, str) else None
        if m is not None:
            values.extend(_parse_range(t, item, m))
        elif t.kind == "int":
            values.append(_to_int(t, item))
        else:
            values.append(_to_float(t, item))
        _count(t, str(item), len(values))
    for v in values:
        _check_bounds(t, v)
    return values


# ---------------------------------------------------------------- text, samplers, sizes


def parse_sampler(text: Any) -> SamplerValue:
    """A sampler name as typed, validated: "DPM++ 2M Karras" -> DPM++ 2M + Karras."""
    if not isinstance(text, str):
        raise AxisError(f"sampler: {text!r} is not a sampler name", "sampler")
    try:
        info, implied = samplers.resolve(text)
    except ValueError as err:
        raise AxisError(str(err), "sampler") from err
    return SamplerValue(label=text.strip(), sampler=info.name, schedule=implied)


def parse_schedule(text: Any) -> str:
    """The canonical schedule type for a name in any case ("karras" -> "Karras")."""
    try:
        return schedules.canonical(text)
    except ValueError as err:
        raise AxisError(str(err), "schedule") from err


_SIZE = re.compile(r"\s*([0-9]{1,9})\s*[xX×*]\s*([0-9]{1,9})\s*")


def parse_size(item: Any) -> Size:
    """A size from "512x768", [512, 768] or a Size; each side 1..MAX_SIDE."""
    if isinstance(item, Size):
        width, height = item.width, item.height
    elif isinstance(item, str) and (m := _SIZE.fullmatch(item)):
        width, height = int(m.group(1)), int(m.group(2))
    elif (isinstance(item, (list, tuple)) and len(item) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
        width, height = item
    else:
        raise AxisError(f"size: {item!r} is not a size like 512x768", "size")
    for side, value in (("width", width), ("height", height)):
        if not 1 <= value <= MAX_SIDE:
            raise AxisError(f"size: {side} must be between 1 and {MAX_SIDE}, got {value} in {item!r}",
                            "size")
    return Size(width, height)


def _parse_text(t: AxisType, items: list[Any], from_text: bool) -> list[str]:
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise AxisError(f"{t.name}: item {i + 1} must be text, got {item!r}", t.name)
    values = [item.strip() for item in items] if from_text or t.name == "model" else list(items)
    if t.name == "model" and not all(values):
        raise AxisError("model: a checkpoint name cannot be empty", t.name)
    if t.name == "prompt_sr" and not values[0]:
        raise AxisError("prompt_sr: the first value is the text to search for and cannot be empty",
                        t.name)
    return values


def _parse_items(t: AxisType, items: list[Any], from_text: bool) -> list[Any]:
    if t.kind in ("int", "float"):
        return _parse_numbers(t, items, from_text)
    if t.kind == "sampler":
        return [item if isinstance(item, SamplerValue) and parse_sampler(item.label) == item
                else parse_sampler(item) for item in items]
    if t.kind == "schedule":
        return [parse_schedule(item) for item in items]
    if t.kind == "size":
        return [parse_size(item) for item in items]
    return _parse_text(t, items, from_text)


def parse_values(axis: str, text_or_list: str | Sequence[Any]) -> list[Any]:
    """The values of an axis from A1111 syntax text or a JSON list (items taken one by one).

    Returns ints (steps, seed), floats (cfg, eta, s_noise), SamplerValue (sampler),
    canonical schedule names, Size (size) or strings (prompt_sr, negative_prompt,
    model). Raises AxisError naming the axis and the bad item.
    """
    t = axis_type(axis)
    if isinstance(text_or_list, str):
        items: list[Any] = split_items(t.name, text_or_list)
        from_text = True
    elif isinstance(text_or_list, (list, tuple)):
        items, from_text = list(text_or_list), False
    else:
        raise AxisError(f"{t.name}: values must be text or a list, got {text_or_list!r}", t.name)
    if not items:
        raise AxisError(f"{t.name}: no values given", t.name)
    if len(items) > MAX_AXIS_VALUES:
        raise AxisError(f"{t.name}: {len(items)} values; an axis takes at most {MAX_AXIS_VALUES}",
                        t.name)
    return _parse_items(t, items, from_text)


# ---------------------------------------------------------------- writing values back


def _fmt_number(value: float) -> str:
    # A1111 shows floats rounded to 8 decimals ("CFG Scale: 7.5", "CFG Scale: 7.0").
    return str(round(value, 8)) if isinstance(value, float) else str(value)


def format_value(axis: str, value: Any) -> str:
    """One value as text: "7.5", "DPM++ 2M Karras", "512x768"."""
    return _fmt_number(value) if isinstance(value, float) else str(value)


def label(axis: str, value: Any) -> str:
    """A cell's label for one axis value: "Steps: 20"; the bare value for Sampler/Checkpoint."""
    t = axis_type(axis)
    text = format_value(t.name, value)
    return text if t.bare_label else f"{t.label}: {text}"


def value_to_json(axis: str, value: Any) -> Any:
    """One value as JSON that parse_values takes back unchanged (in a list)."""
    if isinstance(value, (SamplerValue, Size)):
        return str(value)
    return value


def _quote(text: str) -> str:
    if text and not any(c in text for c in ',"\r\n') and text == text.strip():
        return text
    return '"' + text.replace('"', '""') + '"'


def format_values(axis: str, values: Sequence[Any]) -> str:
    """Values as A1111 text ("5, 10, 20"; text quoted where needed), e.g. for metadata.

    Parses back to the same values, except text items with outer spaces or empty
    ones, which only a JSON list keeps.
    """
    t = axis_type(axis)
    if t.kind == "float":
        return ", ".join(repr(float(v)) for v in values)
    return ", ".join(_quote(format_value(t.name, v)) for v in values)
