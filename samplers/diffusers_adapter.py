"""Run any diffusers scheduler under the sampler protocol.

A diffusers scheduler steps a latent with a model's raw output at a discrete
timestep. The adapter stays model-agnostic: at each model call it reads the
sigma the scheduler is at, converts the scheduler's latent to the
variance-exploding x = data + sigma * eps, yields ``(x, sigma, timestep)``,
turns the denoised estimate it gets back into the epsilon the scheduler
expects (eps = (x - denoised) / sigma), and lets the scheduler step. So a
diffusers sampler runs against an analytic denoiser in tests exactly as
against a UNet in the engine, and the engine can call the model at the very
timestep the scheduler chose (diffusers rounds some timesteps).

Names: ``diffusers:<SchedulerClassName>`` with config overrides as options
(``diffusers:DPMSolverMultistepScheduler`` + ``use_karras_sigmas=True``), and
"<A1111 name> (diffusers)" entries for the diffusers equivalents of A1111's
samplers, configured the way the diffusers docs map them.

Flow models (SD3, Flux) have their own: "<name> (diffusers, flow)" entries for
FlowMatchEulerDiscreteScheduler and FlowMatchHeunDiscreteScheduler (the flow pipelines' own)
and for DPMSolverMultistep / UniPC / DEIS / SASolver with use_flow_sigmas and
prediction_type "flow_prediction" (FLOW_EQUIVALENTS), and "diffusers:FlowMatch..." names.
They run only on flow models, the SD schedulers only on SD-family models; each refuses the
other family with SamplerFlowError. Building and running a scheduler is
`samplers.diffusers_run`'s job.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from torch import Tensor

from samplers.diffusers_run import (  # noqa: F401  (SD_SCHEDULER_CONFIG, own_sigmas: re-exported)
    FLOW_ONLY,
    SD_SCHEDULER_CONFIG,
    SUPPORTED,
    build,
    config_keys,
    is_flow,
    own_sigmas,
    run_flow_scheduler,
    run_scheduler,
    scheduler_class,
)
from samplers.registry import SamplerFlowError, SamplerInfo, UnknownSamplerError, add_info, suggest
from samplers.schedules import canonical, flow_table_shift

PREFIX = "diffusers:"
FLOW_SUFFIX = " (diffusers, flow)"

_ANCESTRAL = {"EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
              "DDPMScheduler", "LCMScheduler", "TCDScheduler"}
_SDE = {"DPMSolverSDEScheduler", "SASolverScheduler"}
_TWO_CALLS = {"HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
              "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler",
              "FlowMatchHeunDiscreteScheduler"}


# Schedule types a diffusers scheduler can follow, as config flags: the flag that defines each.
# A scheduler is configured with `schedule_overrides(schedule, sampler)`, which also sets the
# other sigma flags the class knows explicitly (so a preset's use_karras_sigmas=True cannot
# leak into another type) and refuses a type the class has no setting for.
SCHEDULE_FLAGS: dict[str, dict[str, Any]] = {
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    "Uniform": {"timestep_spacing": "linspace"},
    "DDIM": {"timestep_spacing": "leading"},
}
# The config flags that pick a scheduler's sigmas; diffusers refuses more than one set to True.
SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas")
# Config keys a class takes but never reads (LCM and TCD lay out their own timesteps).
_INERT_KEYS = {"LCMScheduler": {"timestep_spacing"}, "TCDScheduler": {"timestep_spacing"}}

# (A1111 name, class, preset overrides, description)
EQUIVALENTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("DPM++ 2M", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True},
     "diffusers' DPMSolverMultistepScheduler with Karras sigmas: its take on DPM++ 2M Karras."),
    ("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
     "diffusers' multistep SDE solver; its noise is fresh each step, not a Brownian path, "
     "so it cannot match A1111's DPM++ 2M SDE image for image."),
    ("DPM++ 3M SDE", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, "use_karras_sigmas": True},
     "diffusers' third-order multistep SDE solver (fresh noise each step)."),
    ("DPM++ SDE", "DPMSolverSDEScheduler", {"use_karras_sigmas": True},
     "diffusers' port of the DPM++ SDE sampler, on a Brownian tree seeded by the cell seed."),
    ("DPM2", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True},
     "diffusers' KDPM2DiscreteScheduler (DPM2, Karras sigmas), two model calls a step."),
    ("DPM2 a", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True},
     "diffusers' KDPM2AncestralDiscreteScheduler (DPM2 a, Karras sigmas)."),
    ("Euler", "EulerDiscreteScheduler", {},
     "diffusers' EulerDiscreteScheduler: plain Euler steps on the probability-flow ODE."),
    ("Euler a", "EulerAncestralDiscreteScheduler", {},
     "diffusers' EulerAncestralDiscreteScheduler: Euler with fresh noise each step."),
    ("Heun", "HeunDiscreteScheduler", {},
     "diffusers' HeunDiscreteScheduler: second order, two model calls a step."),
    ("LMS", "LMSDiscreteScheduler", {},
     "diffusers' LMSDiscreteScheduler: linear multistep of order 4."),
    ("UniPC", "UniPCMultistepScheduler", {},
     "diffusers' UniPCMultistepScheduler (bh2, order 2 by default): fast at few steps."),
    ("DDIM", "DDIMScheduler", {},
     "diffusers' DDIMScheduler (eta 0): deterministic, needs many steps."),
    ("PLMS", "PNDMScheduler", {},
     "diffusers' PNDMScheduler with PRK steps skipped: pseudo linear multistep."),
    ("DDPM", "DDPMScheduler", {},
     "diffusers' DDPMScheduler: ancestral sampling from the posterior, fresh noise every step."),
]
_FLOW = {"use_flow_sigmas": True}
# (name, class, preset overrides, description): diffusers' schedulers for rectified-flow models
FLOW_EQUIVALENTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("Euler", "FlowMatchEulerDiscreteScheduler", {},
     "diffusers' FlowMatchEulerDiscreteScheduler, the SD3 / Flux pipelines' own: Euler steps."),
    ("Heun", "FlowMatchHeunDiscreteScheduler", {},
     "diffusers' FlowMatchHeunDiscreteScheduler: Heun steps, two model calls a step."),
    ("DPM++ 2M", "DPMSolverMultistepScheduler", _FLOW,
     "diffusers' DPMSolverMultistepScheduler on flow sigmas with flow prediction (DPM-Solver++ 2M)."),
    ("UniPC", "UniPCMultistepScheduler", _FLOW,
     "diffusers' UniPCMultistepScheduler on flow sigmas with flow prediction."),
    ("DEIS", "DEISMultistepScheduler", _FLOW,
     "diffusers' DEISMultistepScheduler on flow sigmas with flow prediction."),
    ("SA-Solver", "SASolverScheduler", _FLOW,
     "diffusers' SASolverScheduler (stochastic Adams) on flow sigmas with flow prediction."),
]



def scheduler_sigmas(name: str, steps: int, train_sigmas: Tensor | None = None,
                     scheduler_config: dict[str, Any] | None = None, **overrides: Any) -> Tensor:
    """The sigmas diffusers sampler `name` runs at `steps` steps (for display and the engine).

    A flow scheduler takes its shift from the flow model's train_sigmas
    (`samplers.flow_train_sigmas`); a flow scheduler on an SD table, or an SD one on a flow
    table, raises SamplerFlowError.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    sampler = info_for(name)
    class_name, preset = sampler.fn.keywords["_class_name"], sampler.fn.keywords["_preset"]
    shift = None if train_sigmas is None else flow_table_shift(train_sigmas)
    if is_flow(class_name, preset) and shift is None and train_sigmas is not None:
        raise SamplerFlowError(f"{name} runs only on flow models (SD3, Flux); for this model pick "
                               f"{_sd_counterpart(name)}")
    if not is_flow(class_name, preset) and shift is not None:
        raise SamplerFlowError(f"{name} runs only on SD-family models; for a flow model pick "
                               f"{_flow_counterpart(name)}")
    scheduler = build(class_name, preset, overrides, scheduler_config, shift=shift)
    scheduler.set_timesteps(steps)
    return own_sigmas(scheduler)


def _flow_counterpart(name: str) -> str:
    base = name[:-len(" (diffusers)")] if name.endswith(" (diffusers)") else None
    flow = [f"{n}{FLOW_SUFFIX}" for n, *_ in FLOW_EQUIVALENTS]
    same = f"{base}{FLOW_SUFFIX}"
    return repr(same) if same in flow else "one of " + ", ".join(map(repr, flow))


def _sd_counterpart(name: str) -> str:
    base = name[:-len(FLOW_SUFFIX)] if name.endswith(FLOW_SUFFIX) else None
    same = f"{base} (diffusers)"
    known = [f"{n} (diffusers)" for n, *_ in EQUIVALENTS]
    return repr(same) if same in known else "a native sampler or an '(diffusers)' one"


def _followable(class_name: str, keys: Mapping[str, Any], preset: Mapping[str, Any]) -> list[str]:
    """The schedule types (besides Automatic) a scheduler class has a working setting for."""
    if preset.get("use_flow_sigmas"):
        return []  # diffusers takes one sigma flag at a time: flow sigmas exclude the others
    inert = _INERT_KEYS.get(class_name, set())
    return [schedule for schedule, flags in SCHEDULE_FLAGS.items()
            if all(key in keys and key not in inert for key in flags)]


def schedule_overrides(schedule: str, sampler: str | None = None) -> dict[str, Any]:
    """Config flags that make a diffusers scheduler follow an A1111 schedule type.

    Without `sampler`: the one flag that defines the type (SCHEDULE_FLAGS). With a
    diffusers sampler name ("DPM++ 2M (diffusers)", "diffusers:<Class>"): every sigma flag
    its class knows, set explicitly (use_karras_sigmas / use_exponential_sigmas /
    use_beta_sigmas / use_flow_sigmas True or False) plus timestep_spacing for the types that
    are a spacing, so a preset's flags are only the "Automatic" default and never leak into
    another type. A type the class has no setting for (diffusers' from_config would drop
    the flag silently and run its own sigmas) raises ValueError naming the sampler, the type
    and what works instead.
    """
    schedule = canonical(schedule)
    if schedule == "Automatic":
        return {}
    if sampler is None:
        if schedule not in SCHEDULE_FLAGS:
            raise ValueError(
                f"diffusers schedulers cannot follow the {schedule!r} schedule; they can follow: "
                f"Automatic, {', '.join(SCHEDULE_FLAGS)}")
        return dict(SCHEDULE_FLAGS[schedule])
    keywords = info_for(sampler).fn.keywords
    class_name = keywords["_class_name"]
    keys = config_keys(scheduler_class(class_name))
    followable = _followable(class_name, keys, keywords["_preset"])
    if schedule not in followable:
        if keywords["_preset"].get("use_flow_sigmas"):
            why = "on flow sigmas diffusers takes no second sigma setting"
        elif schedule in SCHEDULE_FLAGS:
            flags = ", ".join(f"{k}={v!r}" for k, v in SCHEDULE_FLAGS[schedule].items())
            why = f"diffusers' {class_name} has no working {flags} setting"
        else:
            why = "no diffusers scheduler has a setting for it"
        native = next((a for a, c, *_ in EQUIVALENTS if sampler == f"{a} (diffusers)"), None)
        instead = f"; or run the native {native!r} on {schedule}" if native else ""
        raise ValueError(
            f"{sampler} cannot follow the {schedule!r} schedule: {why}. It can follow: "
            f"{', '.join(['Automatic', *followable])}{instead}.")
    out: dict[str, Any] = {flag: False for flag in SIGMA_FLAGS if flag in keys}
    out.update(SCHEDULE_FLAGS[schedule])
    return out


class _SchedulerOptions(Mapping):
    """A diffusers scheduler's config keys as sampler options, read on first use: importing
    diffusers costs seconds, which listing the samplers (e.g. to build the app's page) need not pay."""

    def __init__(self, class_name: str) -> None:
        if class_name not in SUPPORTED + FLOW_ONLY:
            raise UnknownSamplerError(suggest(class_name, [*SUPPORTED, *FLOW_ONLY], "diffusers scheduler"))
        self._class_name = class_name
        self._keys: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._keys is None:
            self._keys = {**config_keys(scheduler_class(self._class_name)), "scheduler_config": None}
        return self._keys

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _info(name: str, class_name: str, preset: dict[str, Any], description: str) -> SamplerInfo:
    flow = is_flow(class_name, preset)
    fn = functools.partial(run_flow_scheduler if flow else run_scheduler, _class_name=class_name,
                           _preset=preset)
    options = _SchedulerOptions(class_name)
    kind = "ancestral" if class_name in _ANCESTRAL else "sde" if class_name in _SDE else (
        "sde" if str(preset.get("algorithm_type", "")).startswith("sde") else "deterministic")
    return SamplerInfo(
        name=name, fn=fn, kind=kind, calls_per_step=2 if class_name in _TWO_CALLS else 1,
        default_schedule=None, description=description, family="diffusers", options=options,
        inputs=("noise", "param") if flow else ("noise",),
        flow_form="flow-only" if flow else "refused")


@functools.cache
def info_for(name: str) -> SamplerInfo:
    """SamplerInfo for "diffusers:<Class>" or a registered "<name> (diffusers)" entry."""
    if name.startswith(PREFIX):
        class_name = name[len(PREFIX):].strip()
        return replace(_info(name, class_name, {}, f"diffusers' {class_name}, run as configured."),
                       name=f"{PREFIX}{class_name}")
    for a1111, class_name, preset, description in EQUIVALENTS:
        if name == f"{a1111} (diffusers)":
            return _info(name, class_name, preset, description)
    for base, class_name, preset, description in FLOW_EQUIVALENTS:
        if name == f"{base}{FLOW_SUFFIX}":
            return _info(name, class_name, preset, description)
    raise UnknownSamplerError(f"unknown diffusers sampler {name!r}")


def register_equivalents() -> None:
    """Add the "<A1111 name> (diffusers)" and "<name> (diffusers, flow)" entries to the registry."""
    for a1111, *_ in EQUIVALENTS:
        add_info(info_for(f"{a1111} (diffusers)"))
    for base, *_ in FLOW_EQUIVALENTS:
        add_info(info_for(f"{base}{FLOW_SUFFIX}"))
