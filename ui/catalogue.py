"""The sampler menu: samplers grouped the way users think of them, with presets.

Groups: Deterministic, Ancestral and SDE for the native samplers (by their
registry kind), and diffusers for the "(diffusers)" equivalents whatever their
kind. Presets are ready-made comparisons; each names samplers, step counts and
a schedule type, all checked against the registry by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import samplers

GROUPS = ("Deterministic", "Ancestral", "SDE", "diffusers")
_KIND_GROUP = {"deterministic": "Deterministic", "ancestral": "Ancestral", "sde": "SDE"}


def group_of(name: str) -> str:
    """The menu group a sampler is listed under."""
    info = samplers.info(name)
    return "diffusers" if info.family == "diffusers" else _KIND_GROUP[info.kind]


def grouped() -> dict[str, list[str]]:
    """Every registered sampler under its group, in registry order."""
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name in samplers.names():
        out[group_of(name)].append(name)
    return out


def descriptions() -> dict[str, str]:
    """Each sampler's one-line description plus its cost, for hover text."""
    out = {}
    for name in samplers.names():
        info = samplers.info(name)
        cost = "1 model call" if info.calls_per_step == 1 else f"{info.calls_per_step} model calls"
        out[name] = f"{info.description} ({info.kind}, {cost} per step)"
    return out


@dataclass(frozen=True)
class Preset:
    """A ready-made comparison: which samplers, step counts and schedule type."""

    name: str
    samplers: tuple[str, ...]
    steps: str
    schedule: str
    why: str


PRESETS = (
    Preset("Convergence vs ancestral",
           ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM2", "DPM2 a"), "5, 10, 20, 40, 80",
           "Automatic",
           "Deterministic rows settle on one image as steps grow; ancestral and SDE rows keep changing."),
    Preset("Fast at low steps",
           ("DPM++ 2M", "UniPC", "DEIS", "iPNDM", "res_multistep", "Euler"), "4, 6, 8, 12", "Karras",
           "Multistep solvers that reuse earlier model outputs look finished in a handful of steps."),
    Preset("The DPM++ family",
           ("DPM++ 2M", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"),
           "10, 20, 40", "Automatic",
           "2M reuses the last step, 2S takes two calls a step, SDE variants add Brownian noise."),
    Preset("A1111 vs diffusers",
           ("Euler", "Euler (diffusers)", "DPM++ 2M", "DPM++ 2M (diffusers)", "UniPC", "UniPC (diffusers)"),
           "10, 20, 40", "Automatic",
           "The same method from two implementations: near-identical rows mean both are right."),
)
PRESET_BY_NAME = {p.name: p for p in PRESETS}
