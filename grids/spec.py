"""Grid specs: fixed settings plus X, Y and optional Z axes, their JSON form, their
expansion into cells (one CellSpec per image) and the limits a grid must stay within.

Rules (A1111's X/Y/Z plot where it has one):
- Cells run z, then y, then x (row-major in each sub-grid); axes apply to a cell
  in the order X, Y, Z, so a later axis overrides what an earlier one set.
- A missing axis is one value: the fixed setting.
- Seed -1 is random: `GridSpec.resolved()` fixes it (and every -1 on a seed axis)
  once per grid with A1111's range; `expand` does this and records the seed in
  every cell. Vary seeds: seed + ix + iy*len(xs) + iz*len(xs)*len(ys), mod 2**64.
- A sampler name that implies a schedule ("DPM++ 2M Karras") sets the schedule,
  over the fixed one, unless the schedule is itself an axis.
- Eta and sigma noise reach only samplers that take them (their `options`); a
  sampler that does not take eta ignores the eta setting or axis value, as in A1111.
  As in A1111 there are two fixed eta settings: `eta` for the ancestral and SDE
  samplers (their default 1) and `eta_ddim` for DDIM (default 0, deterministic);
  an Eta axis sets every sampler's eta, DDIM's too (A1111's X/Y/Z "Eta").
- A cell records an option only where it differs from the sampler's default
  (A1111 writes "Eta"/"Sigma noise" only then), so a cell is one CellSpec, one
  cache key and one infotext whether its defaults were given or left out.
- Prompt S/R: the first value is searched for and each value replaces it in the
  prompt and the negative prompt (the first cell keeps them as they are); the
  search text must occur in the fixed prompt or negative prompt.
- Width/height None means the model's default; the engine fills it in
  (`CellSpec.sized`) before rendering or caching.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields, replace
from typing import Any

import samplers
from core.axes import AxisError, SamplerValue
from core.cells import Cell, CellSpec
from core.limits import MAX_SEED, MAX_SIDE, GridTooLargeError, Limits, SpecError  # noqa: F401  (re-exported)
from grids import axes
from samplers.plan import model_rows

_RANDOM_SEEDS = 4294967294  # A1111's get_fixed_seed: random.randrange(4294967294)
_POSITIONS = ("x", "y", "z")
# Samplers whose eta is A1111's separate "Eta DDIM" setting (default 0), not the ancestral one.
ETA_DDIM_SAMPLERS = frozenset({"DDIM"})


@dataclass(frozen=True)
class Axis:
    """One grid axis: which setting it varies and its parsed values.

    `values` may be given as A1111 text or a list; it is stored parsed, as a tuple
    (see `grids.axes.parse_values`). `axis` is stored canonical ("Steps" -> "steps").
    """

    axis: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        name = axes.canonical_axis(self.axis)
        object.__setattr__(self, "axis", name)
        object.__setattr__(self, "values", tuple(axes.parse_values(name, self.values)))

    @property
    def label(self) -> str:
        """A1111's name for the axis ("Steps", "CFG Scale")."""
        return axes.axis_type(self.axis).label

    def labels(self) -> list[str]:
        """Each value's cell label ("Steps: 20"; the bare name for samplers)."""
        return [axes.label(self.axis, v) for v in self.values]

    def to_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "values": [axes.value_to_json(self.axis, v) for v in self.values]}


# ---------------------------------------------------------------- field checks


def _whole(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _number(name: str, value: Any, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        raise SpecError(f"{name} must be a finite number, got one too large to use") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SpecError(f"{name} must be a finite number, got {value}")
    if value < lo or (hi is not None and value > hi):
        raise SpecError(f"{name} must be {f'between {lo:g} and {hi:g}' if hi else f'>= {lo:g}'}, "
                        f"got {value:g}")
    return value


def _text(name: str, value: Any, *, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{name} must be text, got {value!r}")
    if not empty_ok and not value.strip():
        raise SpecError(f"{name} cannot be empty")
    return value


def _seed(value: Any) -> int:
    try:
        return _whole("seed", value, -1, MAX_SEED)
    except SpecError as err:
        if "between" not in str(err):
            raise
        raise SpecError(f"seed must be -1 (random) or from 0 to {MAX_SEED}, got {value}") from None


def _sampler(value: Any) -> SamplerValue:
    try:
        return axes.parse_sampler(_text("sampler", value, empty_ok=False))
    except AxisError as err:
        raise SpecError(str(err)) from err


def _schedule(value: Any) -> str:
    try:
        return axes.parse_schedule(_text("schedule", value, empty_ok=False))
    except AxisError as err:
        raise SpecError(str(err)) from err


def _size_side(name: str, value: Any) -> int | None:
    return None if value is None else _whole(name, value, 1, MAX_SIDE)


def _optional(name: str, value: Any) -> float | None:
    return None if value is None else _number(name, value, 0.0)


def _shift(value: Any) -> float | None:
    if value is None:
        return None
    shift = _number("shift", value, 0.0, 100.0)
    if shift <= 0:
        raise SpecError(f"shift must be > 0 (a flow model's timestep shift; null uses the model's own, "
                        f"SD3's is 3), got {shift:g}")
    return shift


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name} must be true or false, got {value!r}")
    return value


# ---------------------------------------------------------------- the grid spec


@dataclass(frozen=True)
class GridSpec:
    """A grid: fixed settings and X, Y, optional Z axes (None: one value, the fixed setting).

    Construction checks and normalises every field (cfg to float, schedule to its
    canonical name) and raises SpecError. `from_json`/`to_json` are its JSON form.
    """

    model: str = "builtin"
    prompt: str = ""
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    seed: int = -1
    cfg: float = 7.0
    sampler: str = "DPM++ 2M"
    schedule: str = "Automatic"
    steps: int = 20
    eta: float | None = None
    eta_ddim: float | None = None
    s_noise: float | None = None
    shift: float | None = None
    guidance: float | None = None
    vary_seeds: bool = False
    x: Axis | None = None
    y: Axis | None = None
    z: Axis | None = None

    def __post_init__(self) -> None:
        checked = {
            "model": _text("model", self.model, empty_ok=False),
            "prompt": _text("prompt", self.prompt),
            "negative_prompt": _text("negative_prompt", self.negative_prompt),
            "width": _size_side("width", self.width), "height": _size_side("height", self.height),
            "seed": _seed(self.seed), "cfg": _number("cfg", self.cfg, 0.0, 100.0),
            "sampler": _sampler(self.sampler).label, "schedule": _schedule(self.schedule),
            "steps": _whole("steps", self.steps, 1, samplers.schedules.MAX_STEPS),
            "eta": _optional("eta", self.eta), "eta_ddim": _optional("eta_ddim", self.eta_ddim),
            "s_noise": _optional("s_noise", self.s_noise),
            "shift": _shift(self.shift), "guidance": None if self.guidance is None
            else _number("guidance", self.guidance, 0.0, 100.0),
            "vary_seeds": _flag("vary_seeds", self.vary_seeds),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        self._check_axes()

    def _check_axes(self) -> None:
        seen: dict[str, str] = {}
        for pos, axis in self.axes():
            if not isinstance(axis, Axis):
                raise SpecError(f"{pos.upper()} axis must be an Axis or None, got {axis!r}")
            if axis.axis in seen:
                raise SpecError(f"the {axis.axis} axis is on both {seen[axis.axis]} and {pos.upper()} — "
                                f"an axis can vary a setting only once; pick another axis for {pos.upper()}")
            seen[axis.axis] = pos.upper()
        sr = self.axis("prompt_sr")
        if sr is not None and sr.values[0] not in self.prompt and sr.values[0] not in self.negative_prompt:
            raise SpecError(f"Prompt S/R did not find {sr.values[0]!r} in the prompt or negative prompt — "
                            f"its first value is the text each value replaces")

    def axes(self) -> list[tuple[str, Axis]]:
        """The axes the grid has, as ("x"|"y"|"z", Axis) pairs."""
        return [(pos, a) for pos, a in zip(_POSITIONS, (self.x, self.y, self.z), strict=True)
                if a is not None]

    def axis(self, name: str) -> Axis | None:
        """The axis varying setting `name` ("steps", "CFG Scale"), or None."""
        name = axes.canonical_axis(name)
        return next((a for _, a in self.axes() if a.axis == name), None)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(columns, rows, sub-grids)."""
        return tuple(len(a.values) if a else 1 for a in (self.x, self.y, self.z))  # type: ignore[return-value]

    def resolved(self, rng: random.Random | None = None) -> GridSpec:
        """This spec with seed -1 (fixed or on a seed axis) replaced by random seeds."""
        rng = rng or random.Random()

        def fix(seed: int) -> int:
            return rng.randrange(_RANDOM_SEEDS) if seed == -1 else seed

        changes: dict[str, Any] = {"seed": fix(self.seed)}
        for pos, axis in self.axes():
            if axis.axis == "seed":
                changes[pos] = Axis("seed", tuple(fix(v) for v in axis.values))
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict; `GridSpec.from_json` takes it back unchanged."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _POSITIONS}
        out.update({pos: a.to_json() if a else None for pos, a in zip(_POSITIONS, (self.x, self.y, self.z),
                                                                      strict=True)})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | str | bytes) -> GridSpec:
        """A spec from its JSON form (a dict or JSON text); raises SpecError naming what is wrong."""
        if isinstance(data, (str, bytes)):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as err:
                raise SpecError(f"the grid spec is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise SpecError(f"a grid spec must be a JSON object, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise SpecError(f"unknown setting(s) {', '.join(map(repr, unknown))} in the grid spec; "
                            f"known: {', '.join(known)}")
        kwargs = {k: v for k, v in data.items() if k not in _POSITIONS}
        for pos in _POSITIONS:
            kwargs[pos] = _axis_from_json(pos, data.get(pos))
        return cls(**kwargs)


def _axis_from_json(pos: str, data: Any) -> Axis | None:
    if data is None:
        return None
    where = f"{pos.upper()} axis"
    if not isinstance(data, dict) or set(data) != {"axis", "values"}:
        raise SpecError(f"{where} must be null or an object with \"axis\" and \"values\", got {data!r}")
    try:
        return Axis(data["axis"], data["values"])
    except AxisError as err:
        raise SpecError(f"{where}: {err}") from err


# ---------------------------------------------------------------- expansion


def expand(spec: GridSpec, rng: random.Random | None = None) -> list[Cell]:
    """Every cell of the grid, z then y then x; seed -1 resolved once (see GridSpec.resolved)."""
    spec = spec.resolved(rng)
    fixed: dict[str, Any] = {f.name: getattr(spec, f.name) for f in fields(spec)}
    fixed["sampler"] = axes.parse_sampler(spec.sampler)
    xs, ys, zs = ([*a.values] if a else [None] for a in (spec.x, spec.y, spec.z))
    return [_cell(spec, fixed, (ix, iy, iz), (x, y, z), (len(xs), len(ys)))
            for iz, z in enumerate(zs) for iy, y in enumerate(ys) for ix, x in enumerate(xs)]


def _apply(settings: dict[str, Any], axis: Axis, value: Any) -> None:
    if axis.axis == "prompt_sr":
        search = axis.values[0]
        settings["prompt"] = settings["prompt"].replace(search, value)
        settings["negative_prompt"] = settings["negative_prompt"].replace(search, value)
    elif axis.axis == "size":
        settings["width"], settings["height"] = value.width, value.height
    else:
        settings[axis.axis] = value


def _cell(spec: GridSpec, fixed: dict[str, Any], index: tuple[int, int, int], values: tuple[Any, ...],
          counts: tuple[int, int]) -> Cell:
    settings = dict(fixed)
    labels: list[str | None] = []
    for axis, value in zip((spec.x, spec.y, spec.z), values, strict=True):
        if axis is not None:
            _apply(settings, axis, value)
        labels.append(axes.label(axis.axis, value) if axis is not None else None)
    ix, iy, iz = index
    seed = settings["seed"]
    if spec.vary_seeds:
        seed = (seed + ix + iy * counts[0] + iz * counts[0] * counts[1]) % (MAX_SEED + 1)
    sampler: SamplerValue = settings["sampler"]
    schedule = settings["schedule"]
    if sampler.schedule is not None and spec.axis("schedule") is None:
        schedule = sampler.schedule
    info = samplers.info(sampler.sampler)
    if info.cfg_pp and float(settings["cfg"]) <= 0:
        raise SpecError(f"{info.name} is a CFG++ sampler: at cfg {float(settings['cfg']):g} its guided "
                        "estimate is the unconditional one and the prompt is ignored — use cfg about 1 to 2")
    options = _options(sampler.sampler, settings, eta_on_axis=spec.axis("eta") is not None)
    cell_spec = CellSpec(
        model=settings["model"], prompt=settings["prompt"], negative_prompt=settings["negative_prompt"],
        width=settings["width"], height=settings["height"], seed=seed, sampler=sampler.sampler,
        sampler_options=options, schedule=schedule, steps=settings["steps"], cfg=float(settings["cfg"]),
        shift=settings["shift"], guidance=settings["guidance"])
    return Cell(ix, iy, iz, cell_spec, (labels[0], labels[1], labels[2]))


def _options(sampler: str, settings: dict[str, Any], eta_on_axis: bool) -> tuple[tuple[str, Any], ...]:
    """The cell's sampler options: eta (DDIM's own unless an axis sets it) and s_noise, for a
    sampler that takes them, where they differ from its defaults."""
    defaults = samplers.info(sampler).options
    values = {"eta": settings["eta"], "s_noise": settings["s_noise"]}
    if sampler in ETA_DDIM_SAMPLERS and not eta_on_axis:
        values["eta"] = settings["eta_ddim"]
    return tuple(sorted((k, v) for k, v in values.items()
                        if v is not None and k in defaults and v != defaults[k]))


# ---------------------------------------------------------------- limits


def check_size(width: int, height: int, multiple: int = 8) -> None:
    """Refuse a side that is not a multiple of the model's factor, suggesting the nearest ones."""
    for name, value in (("width", width), ("height", height)):
        if value % multiple:
            lower = value // multiple * multiple
            tries = f"{lower} or {lower + multiple}" if lower > 0 else f"{multiple}"
            raise SpecError(f"{name} {value} is not a multiple of {multiple} — try {tries}")


def grid_megapixels(cells: list[Cell], default_size: tuple[int, int]) -> float:
    """Approximate size of the grid image: sub-grids side by side, each cols x rows of the
    largest cell plus A1111-like margins (a label column 3/4 of a cell wide, a label
    row 1/4 of a cell high)."""
    if not cells:
        return 0.0
    sizes = [c.spec.sized(default_size) for c in cells]
    w = max(s.width or 0 for s in sizes)
    h = max(s.height or 0 for s in sizes)
    nx, ny, nz = (max(getattr(c, i) for c in cells) + 1 for i in ("ix", "iy", "iz"))
    return nz * (nx * w + 0.75 * w) * (ny * h + 0.25 * h) / 1e6


def validate(cells: list[Cell], limits: Limits = Limits(), model_default_size: tuple[int, int] = (512, 512),
             multiple: int = 8) -> None:
    """Raise GridTooLargeError if the grid is over a limit, SpecError for a bad size."""
    if len(cells) > limits.max_cells:
        raise GridTooLargeError(f"this grid has {len(cells)} cells; the limit is {limits.max_cells} — "
                                f"remove values from the X, Y or Z axis")
    calls = sum(model_rows(c.spec) for c in cells)
    if calls > limits.max_model_calls:
        raise GridTooLargeError(
            f"this grid needs about {calls:,} model calls; the limit is {limits.max_model_calls:,} — "
            f"use fewer steps, fewer cells, or fewer samplers that cost 2 calls a step")
    mp = grid_megapixels(cells, model_default_size)
    if mp > limits.max_megapixels:
        raise GridTooLargeError(f"this grid would be about {mp:.1f} megapixels; the limit is "
                                f"{limits.max_megapixels:g} — use a smaller size or fewer cells")
    for size in sorted({(c.spec.sized(model_default_size).width, c.spec.sized(model_default_size).height)
                        for c in cells}):
        check_size(size[0], size[1], multiple)
