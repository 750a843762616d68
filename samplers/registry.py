"""The sampler registry: names users type, what each sampler is, how to find it.

Sampler modules register their generator functions with `@register(...)` at
import time; after `samplers` is imported the registry is read-only. Names are
A1111's, exactly ("DPM++ 2M", "Euler a"); the old combined names
("DPM++ 2M Karras") resolve to a sampler plus a schedule type.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("deterministic", "ancestral", "sde")
# How a sampler runs on a flow model (samplers.parametrisation):
#   "unchanged"      - the VE algorithm as it is (it only integrates the ODE, which is the same);
#   "parametrised"   - the function takes the parametrisation (`param`) and uses it;
#   "ve-coordinates" - the VE algorithm run on x / alpha (parametrisation.in_ve_coordinates);
#   "refused"        - no sound flow form: SamplerFlowError on flow models;
#   "flow-only"      - runs only on flow models (diffusers' flow schedulers): SamplerFlowError on VE.
FLOW_FORMS = ("unchanged", "parametrised", "ve-coordinates", "refused", "flow-only")
# What a sampler function may take besides x and sigmas, passed by parameter name.
INPUTS = ("noise", "param")


class UnknownSamplerError(ValueError):
    """A sampler name that is not in the registry."""


class SamplerOptionError(TypeError):
    """An option the sampler does not take, or a bad option value."""


class SamplerFlowError(ValueError):
    """A sampler that has no form for the model's parametrisation (e.g. an SD-only diffusers
    scheduler on a flow model, or a flow-only one on an SD model)."""


@dataclass(frozen=True)
class SamplerInfo:
    """What a user (and the engine) needs to know about one sampler.

    kind: "deterministic", "ancestral" (fresh Gaussian noise per step) or "sde"
    (noise from the cell's Brownian path). calls_per_step: denoiser calls a
    step costs. default_schedule: the schedule type "Automatic" means for it,
    or None when the sampler picks its own sigmas (uses_schedule False).
    discard_penultimate: "Automatic" computes steps+1 sigmas and drops the
    next-to-last, as A1111 does for this sampler. options: keyword options and
    their defaults, read from the function's signature. inputs: which of "noise" (the
    cell's noise) and "param" (the parametrisation) the function takes, read from its
    signature, so a sampler that draws no noise is never handed any. flow_form: how it runs
    on a flow model (FLOW_FORMS). cfg_pp: a CFG++ sampler (Chung et al. 2024): every
    request is answered with the pair (guided D, unconditional D) instead of one tensor,
    so the engine runs the unconditional half even at cfg <= 1.
    """

    name: str
    fn: Callable[..., Any] = field(repr=False)
    kind: str
    calls_per_step: int
    default_schedule: str | None
    description: str
    uses_steps: bool = True
    uses_schedule: bool = True
    discard_penultimate: bool = False
    family: str = "native"
    options: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ("noise",)
    flow_form: str = "unchanged"
    cfg_pp: bool = False

    @property
    def supports_flow(self) -> bool:
        """Whether the sampler runs on flow (rectified-flow) models."""
        return self.flow_form != "refused"

    @property
    def supports_ve(self) -> bool:
        """Whether the sampler runs on the SD family's (variance-exploding) models."""
        return self.flow_form != "flow-only"

    def rows_per_call(self, cfg: float) -> int:
        """Model rows one denoiser call costs at guidance scale `cfg`: 2 when the unconditional
        half runs (cfg > 1, as diffusers does; a CFG++ sampler at any cfg), else 1."""
        return 2 if cfg > 1.0 or self.cfg_pp else 1


_REGISTRY: dict[str, SamplerInfo] = {}


def keyword_options(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters of a sampler function and their defaults."""
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def sampler_inputs(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The inputs (INPUTS) a sampler function takes after x and sigmas, by parameter name."""
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in params[2:]]
    unknown = sorted(set(names) - set(INPUTS))
    if unknown:
        raise ValueError(f"sampler function {fn.__name__} takes unknown input(s) {unknown}; "
                         f"after x and sigmas a sampler may take {INPUTS}")
    return tuple(names)


def register(
    name: str,
    *,
    kind: str,
    calls_per_step: int,
    default_schedule: str | None,
    description: str,
    uses_steps: bool = True,
    uses_schedule: bool = True,
    discard_penultimate: bool = False,
    flow: str = "unchanged",
    cfg_pp: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add a sampler generator function to the registry.

    `flow` says how it runs on flow models (FLOW_FORMS); a function that takes `param` is
    "parametrised" whatever is given.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if flow not in FLOW_FORMS:
        raise ValueError(f"flow must be one of {FLOW_FORMS}, got {flow!r}")

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"sampler {name!r} registered twice")
        inputs = sampler_inputs(fn)
        _REGISTRY[name] = SamplerInfo(
            name=name, fn=fn, kind=kind, calls_per_step=calls_per_step,
            default_schedule=default_schedule, description=description,
            uses_steps=uses_steps, uses_schedule=uses_schedule,
            discard_penultimate=discard_penultimate, options=keyword_options(fn),
            inputs=inputs, flow_form="parametrised" if "param" in inputs else flow, cfg_pp=cfg_pp,
        )
        return fn

    return add


def add_info(info: SamplerInfo) -> None:
    """Register a ready-made SamplerInfo (used by the diffusers adapter)."""
    if info.name in _REGISTRY:
        raise ValueError(f"sampler {info.name!r} registered twice")
    _REGISTRY[info.name] = info


def registered() -> dict[str, SamplerInfo]:
    """All registered samplers, in registration order (read-only view)."""
    return dict(_REGISTRY)


def suggest(name: str, choices: list[str], what: str, also: list[str] | None = None) -> str:
    """An error message for an unknown name, with the closest known names.

    `also` are further names worth suggesting (e.g. combined "DPM++ 2M Karras" names) that the
    message does not list when nothing is close.
    """
    lowered: dict[str, list[str]] = {}
    for c in [*choices, *(also or [])]:
        if c not in lowered.setdefault(c.lower(), []):
            lowered[c.lower()].append(c)  # "Beta" and "beta" are different names: offer both
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    if close:
        names = [n for c in close for n in lowered[c]]
        return f"unknown {what} {name!r} — did you mean {' or '.join(repr(n) for n in names)}?"
    return f"unknown {what} {name!r}; known: {', '.join(choices)}."
