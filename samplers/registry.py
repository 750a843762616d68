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


class UnknownSamplerError(ValueError):
    """A sampler name that is not in the registry."""


class SamplerOptionError(TypeError):
    """An option the sampler does not take, or a bad option value."""


@dataclass(frozen=True)
class SamplerInfo:
    """What a user (and the engine) needs to know about one sampler.

    kind: "deterministic", "ancestral" (fresh Gaussian noise per step) or "sde"
    (noise from the cell's Brownian path). calls_per_step: denoiser calls a
    step costs. default_schedule: the schedule type "Automatic" means for it,
    or None when the sampler picks its own sigmas (uses_schedule False).
    discard_penultimate: "Automatic" computes steps+1 sigmas and drops the
    next-to-last, as A1111 does for this sampler. options: keyword options and
    their defaults, read from the function's signature. cfg_pp: a CFG++ sampler
    (Chung et al. 2024): every request is answered with the pair (guided D,
    unconditional D) instead of one tensor, so the engine runs the unconditional
    half even at cfg <= 1.
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
    cfg_pp: bool = False


_REGISTRY: dict[str, SamplerInfo] = {}


def keyword_options(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters of a sampler function and their defaults."""
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


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
    cfg_pp: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add a sampler generator function to the registry."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"sampler {name!r} registered twice")
        _REGISTRY[name] = SamplerInfo(
            name=name, fn=fn, kind=kind, calls_per_step=calls_per_step,
            default_schedule=default_schedule, description=description,
            uses_steps=uses_steps, uses_schedule=uses_schedule,
            discard_penultimate=discard_penultimate, options=keyword_options(fn), cfg_pp=cfg_pp,
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
