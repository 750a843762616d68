"""What the page's controls hold, as one value: `Settings`, its grid spec, and its link form.

The page has one control per setting. Samplers and step counts have their own
controls (a sampler checklist, a step-count text) whichever axis shows them; any
other setting put on an axis takes its values from that axis' value text, in
A1111's X/Y/Z syntax. `Settings.to_spec` turns the controls into a `GridSpec`
(raising `SpecError` with a message a user can act on); `to_query`/`from_query`
are the page URL's query parameters, so a link restores every control.

Decisions:
- Default grid: Steps on X, Sampler on Y (one row per sampler, so a row reads as
  that sampler converging, or not, left to right), no Z.
- A setting that is not on an axis uses its control's value; a sampler or steps
  not on an axis uses the first one chosen.
- Width/height 0 means "the model's default size"; so does 0 for Shift and Distilled CFG Scale
  (flow models: the model's own shift, Flux's 3.5), which a grid sends only when set.
- Links carry a fixed seed: pressing Generate with seed -1 first draws one, so a
  shared link renders the same grid.
- `from_query` never fails: a bad or unknown parameter keeps the default and adds
  a line to the returned warnings, which the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from core.axes import AXIS_LABELS
from core.limits import MAX_SEED, MAX_SIDE, SpecError
from grids import defaults

if TYPE_CHECKING:
    from grids.spec import Axis, GridSpec

NO_AXIS = "Nothing"
# The axes a user can pick, by A1111's labels, in the order the menus list them.
AXIS_CHOICES = AXIS_LABELS
DEFAULT_SAMPLERS = defaults.SAMPLERS


@dataclass(frozen=True)
class Settings:
    """Every control's value. Axis fields hold A1111 labels ("Steps"); values are text."""

    prompt: str = defaults.PROMPT
    negative_prompt: str = defaults.NEGATIVE_PROMPT
    model: str = "builtin"
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    steps: str = defaults.STEPS
    schedule: str = "Automatic"
    cfg: float = defaults.CFG
    eta: float = 1.0
    eta_ddim: float = 0.0
    s_noise: float = 1.0
    shift: float = 0.0
    guidance: float = 0.0
    width: int = 0
    height: int = 0
    seed: int = defaults.SEED
    x_axis: str = "Steps"
    x_values: str = ""
    y_axis: str = "Sampler"
    y_values: str = ""
    z_axis: str = NO_AXIS
    z_values: str = ""
    vary_seeds: bool = False
    accurate_reference: bool = False
    overlay: bool = False

    # ------------------------------------------------------------------ spec

    def to_spec(self) -> GridSpec:
        """The grid these controls describe; raises SpecError naming the control to fix."""
        from grids import axes  # imports torch (through samplers): not needed to build the page
        from grids.spec import GridSpec

        positions = self._axes()
        on_axis = {axes.canonical_axis(label) for label, _ in positions.values() if label}
        chosen = self._samplers()
        fixed_sampler = chosen[0] if chosen else "DPM++ 2M"
        if "sampler" in on_axis and not chosen:
            raise SpecError("pick at least one sampler to compare")
        step_values = self._steps() if "steps" in on_axis or self.steps.strip() else [20]
        return GridSpec(
            model=self.model.strip() or "builtin", prompt=self.prompt,
            negative_prompt=self.negative_prompt, width=self.width or None, height=self.height or None,
            seed=int(self.seed), cfg=float(self.cfg), sampler=fixed_sampler, schedule=self.schedule,
            steps=step_values[0], eta=float(self.eta), eta_ddim=float(self.eta_ddim),
            s_noise=float(self.s_noise), shift=float(self.shift) or None,
            guidance=float(self.guidance) or None,
            vary_seeds=bool(self.vary_seeds),
            **{pos: self._axis(pos, label, text) for pos, (label, text) in positions.items()})

    def _axes(self) -> dict[str, tuple[str | None, str]]:
        out = {}
        for pos in ("x", "y", "z"):
            label = getattr(self, f"{pos}_axis")
            out[pos] = (None if label in (NO_AXIS, "", None) else label, getattr(self, f"{pos}_values"))
        return out

    def _samplers(self) -> list[str]:
        return [s for s in self.samplers if s]

    def _steps(self) -> list[int]:
        if not self.steps.strip():
            raise SpecError("type at least one step count, e.g. 5, 10, 20, 40")
        from grids import axes

        try:
            return axes.parse_values("steps", self.steps)
        except axes.AxisError as err:
            raise SpecError(f"Step counts: {_reason(err, 'steps')}") from err

    def _axis(self, pos: str, label: str | None, text: str) -> Axis | None:
        if label is None:
            return None
        from grids import axes
        from grids.spec import Axis

        try:
            name = axes.canonical_axis(label)
        except axes.AxisError as err:
            raise SpecError(f"{pos.upper()} axis: {err}") from err
        if name == "sampler":
            values: Any = self._samplers()
        elif name == "steps":
            values = self._steps()
        else:
            values = text
            if not str(text).strip():
                raise SpecError(f"{pos.upper()} axis is {label}: type its values in the "
                                f"{pos.upper()} values box (e.g. {_example(name)})")
        try:
            return Axis(name, values)
        except axes.AxisError as err:
            raise SpecError(f"{pos.upper()} axis ({label}): {_reason(err, name)}") from err

    # ------------------------------------------------------------------ link

    def to_query(self) -> str:
        """The settings as URL query text: the seed, and the others that differ from the defaults."""
        pairs: list[tuple[str, str]] = []
        default = Settings()
        for f in fields(self):
            value = getattr(self, f.name)
            if value == getattr(default, f.name) and f.name != "seed":
                continue  # the seed always travels: a link with it re-renders the same grid
            key = _KEYS[f.name]
            if f.name == "samplers":
                pairs.extend((key, s) for s in value) if value else pairs.append((key, ""))
            else:
                pairs.append((key, _text(value)))
        return urlencode(pairs)

    @classmethod
    def from_query(cls, params: dict[str, Any]) -> tuple[Settings, list[str]]:
        """Settings from query parameters (values may be lists, as parse_qs gives);
        returns the settings and a warning per parameter it could not use."""
        warnings: list[str] = []
        changes: dict[str, Any] = {}
        by_key = {v: k for k, v in _KEYS.items()}
        for key, raw in params.items():
            name = by_key.get(key)
            if name is None:
                continue
            try:
                changes[name] = _convert(name, raw)
            except (TypeError, ValueError) as err:
                warnings.append(f"link parameter {key}={_first(raw)!r} ignored: {err}")
        return replace(cls(), **changes), warnings


_KEYS = {"prompt": "prompt", "negative_prompt": "neg", "model": "model", "samplers": "sampler",
         "steps": "steps", "schedule": "schedule", "cfg": "cfg", "eta": "eta", "eta_ddim": "eta_ddim",
         "s_noise": "s_noise", "shift": "shift", "guidance": "guidance",
         "width": "w", "height": "h", "seed": "seed", "x_axis": "x", "x_values": "xv", "y_axis": "y",
         "y_values": "yv", "z_axis": "z", "z_values": "zv", "vary_seeds": "vary_seeds",
         "accurate_reference": "ref", "overlay": "overlay"}
_NUMBERS = {"cfg": (0.0, 100.0), "eta": (0.0, 10.0), "eta_ddim": (0.0, 10.0), "s_noise": (0.0, 10.0),
            "shift": (0.0, 100.0), "guidance": (0.0, 100.0)}
_SIDES = {"width", "height"}
_MAX_TEXT = 4000


def _reason(err: Exception, axis: str) -> str:
    """An axis error's text without its own "<axis>: " prefix (the message names the control)."""
    return str(err).removeprefix(f"{axis}: ")


def _first(raw: Any) -> Any:
    return raw[0] if isinstance(raw, (list, tuple)) and raw else raw


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _convert(name: str, raw: Any) -> Any:
    """One query value as the setting's type; ValueError says why it is unusable."""
    if name == "samplers":
        items = raw if isinstance(raw, (list, tuple)) else [raw]
        return tuple(s for s in (str(i).strip() for i in items) if s)
    value = str(_first(raw))
    if len(value) > _MAX_TEXT:
        raise ValueError(f"longer than {_MAX_TEXT} characters")
    if name in _NUMBERS:
        lo, hi = _NUMBERS[name]
        number = _number(value, float)
        if not lo <= number <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return number
    if name in _SIDES:
        side = _number(value, int)
        if not 0 <= side <= MAX_SIDE or side % 8:
            raise ValueError(f"must be 0 (model default) or a multiple of 8 up to {MAX_SIDE}")
        return side
    if name == "seed":
        seed = _number(value, int)
        if not -1 <= seed <= MAX_SEED:
            raise ValueError(f"must be -1 or from 0 to {MAX_SEED}")
        return seed
    if name in ("vary_seeds", "accurate_reference", "overlay"):
        return value.lower() in ("1", "true", "yes", "on")
    if name in ("x_axis", "y_axis", "z_axis"):
        if value not in AXIS_CHOICES and value != NO_AXIS:
            raise ValueError(f"unknown axis; pick one of {', '.join(AXIS_CHOICES)}")
    return value


def _number(value: str, kind: type) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise ValueError("must be a whole number" if kind is int else "must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("must be a finite number")
    return number


def _example(axis: str) -> str:
    return {"cfg": "3, 5, 7.5", "seed": "1, 2, 3", "eta": "0, 0.5, 1", "s_noise": "0.9, 1, 1.1",
            "schedule": "Karras, Exponential", "prompt_sr": "face, cat, dog",
            "negative_prompt": '"", blurry', "size": "512x512, 768x512",
            "model": "builtin, builtin-flow", "shift": "1, 3, 6",
            "guidance": "2, 3.5, 5"}.get(axis, "1, 2, 3")

