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
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from samplers.noise import CellNoise
from samplers.registry import SamplerInfo, SamplerOptionError, UnknownSamplerError, add_info, suggest
from samplers.schedules import canonical

PREFIX = "diffusers:"

# SD 1.x's scheduler config: what a diffusers SD pipeline's scheduler starts from.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "steps_offset": 1, "clip_sample": False,
    "set_alpha_to_one": False, "skip_prk_steps": True,
}

# Schedulers of discrete epsilon/v models (the classes SD pipelines accept).
SUPPORTED = (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
    "EulerDiscreteScheduler", "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
    "DPMSolverSDEScheduler", "LCMScheduler", "TCDScheduler", "SASolverScheduler",
)
_ANCESTRAL = {"EulerAncestralDiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
              "DDPMScheduler", "LCMScheduler", "TCDScheduler"}
_SDE = {"DPMSolverSDEScheduler", "SASolverScheduler"}
_TWO_CALLS = {"HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
              "KDPM2AncestralDiscreteScheduler", "DPMSolverSDEScheduler"}
# Set by the adapter itself: we always hand the scheduler epsilon.
_FIXED = {"prediction_type", "trained_betas"}

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


def _scheduler_class(class_name: str) -> type:
    if class_name not in SUPPORTED:
        raise UnknownSamplerError(suggest(class_name, list(SUPPORTED), "diffusers scheduler"))
    return getattr(importlib.import_module("diffusers.schedulers"), class_name)


def _config_keys(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params
            if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in _FIXED}


def _build(class_name: str, preset: dict[str, Any], overrides: dict[str, Any],
           scheduler_config: dict[str, Any] | None, seed: int | None = None):
    cls = _scheduler_class(class_name)
    keys = _config_keys(cls)
    source = scheduler_config or SD_SCHEDULER_CONFIG
    # Keys the model's scheduler only took as its own defaults (absent from its config file, e.g.
    # SD 1.5's timestep_spacing) are dropped, as diffusers' from_config drops them: the new class
    # then uses its own defaults, which is what a diffusers pipeline user gets.
    defaulted = set(source.get("_use_default_values", ()))
    config = {k: v for k, v in source.items()
              if not k.startswith("_") and k not in _FIXED and k not in defaulted}
    config.update(preset)
    config.update(overrides)
    config["prediction_type"] = "epsilon"
    if seed is not None and "noise_sampler_seed" in keys:
        config["noise_sampler_seed"] = seed
    try:
        return cls.from_config(config)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise SamplerOptionError(f"{class_name} refused its config: {err}") from err


def _model_sigma(scheduler, t: Tensor, i: int) -> tuple[float, bool]:
    """The sigma the model is called at, and whether the latent is variance-exploding.

    Sigma-type schedulers (Euler, Heun, ...) keep x = data + sigma*eps and
    scale the model input by 1/sqrt(sigma^2 + 1); probing that scale gives
    their sigma, whatever interpolation they used. Alpha-type schedulers keep
    the variance-preserving latent and pass it unscaled: their sigma is their
    own per-step sigma, or the training sigma at the timestep.
    """
    c = float(scheduler.scale_model_input(torch.ones(1, dtype=torch.float64), t))
    if abs(c - 1.0) > 1e-9:
        return (1.0 / c**2 - 1.0) ** 0.5, True
    own = getattr(scheduler, "sigmas", None)
    if own is not None and len(own) == len(scheduler.timesteps) + 1:
        idx = scheduler.step_index if getattr(scheduler, "step_index", None) is not None else i
        return float(own[idx]), False
    abar = float(scheduler.alphas_cumprod[int(round(float(t)))])
    return ((1 - abar) / abar) ** 0.5, False


def _step_kwargs(scheduler, generator: torch.Generator) -> dict[str, Any]:
    params = inspect.signature(scheduler.step).parameters
    return {"generator": generator} if "generator" in params else {}


def run_scheduler(x: Tensor, sigmas: Tensor, noise: CellNoise, *, _class_name: str,
                  _preset: dict[str, Any], scheduler_config: dict[str, Any] | None = None,
                  **overrides: Any):
    """Generator: one diffusers scheduler run, as a sampler.

    `x` is taken as noise scaled to sigmas[0]; the scheduler starts from
    x / sigmas[0] * init_noise_sigma, exactly what a diffusers pipeline does
    with the same noise. Returns the scheduler's final latent (what a diffusers
    pipeline decodes).
    """
    scheduler = _build(_class_name, _preset, overrides, scheduler_config, seed=noise.seed)
    scheduler.set_timesteps(len(sigmas) - 1, device=x.device)
    if _final_step_is_noop(scheduler):
        # n steps whose last is a skipped no-op give n sigmas, not n + 1 (own_sigmas)
        scheduler.set_timesteps(len(sigmas), device=x.device)
        if not _final_step_is_noop(scheduler):
            scheduler.set_timesteps(len(sigmas) - 1, device=x.device)  # _check_matches says why
    _check_matches(_class_name, scheduler, sigmas)
    sample = x / sigmas[0].to(x.dtype) * scheduler.init_noise_sigma
    kwargs = _step_kwargs(scheduler, noise.generator)
    timesteps = scheduler.timesteps
    if _final_step_is_noop(scheduler):
        timesteps = timesteps[:-1]  # diffusers would call the model there and keep the latent as it is
    for i, t in enumerate(timesteps):
        sigma, exploding = _model_sigma(scheduler, t, i)
        x_ve = sample if exploding else sample * (1 + sigma**2) ** 0.5
        denoised = yield x_ve, sigma, t
        eps = (x_ve - denoised) / sigma
        sample = scheduler.step(eps, t, sample, **kwargs).prev_sample
    return sample


def _final_step_is_noop(scheduler) -> bool:
    """Whether the scheduler's last step leaves the latent where it is.

    DDIM and PNDM (PLMS) step from timestep t to alphas_cumprod at t - N // n, or to
    final_alpha_cumprod below 0, which is alphas_cumprod[0] when set_alpha_to_one is False
    (SD's config). A spacing whose last timestep is 0 ("linspace", i.e. Uniform) so ends with
    a step from alpha_bar_0 to alpha_bar_0: diffusers calls the model there, and the update,
    x_prev = sqrt(a') x0 + sqrt(1 - a') eps with a' = a, gives back the latent it was given
    (DDIM with any eta: its variance (1 - a')/(1 - a) (1 - a/a') is 0 too; PLMS's
    (a' - a) coefficient is 0). The adapter skips that call: the same result, one model call
    fewer, and a strictly descending sigma list. With clip_sample or thresholding the step
    would move x0, so it is not skipped (own_sigmas refuses such a run).
    """
    if getattr(scheduler, "sigmas", None) is not None or not hasattr(scheduler, "final_alpha_cumprod"):
        return False
    t_last = int(scheduler.timesteps[-1])
    return float(scheduler.alphas_cumprod[t_last]) == float(scheduler.final_alpha_cumprod)


def _final_step_moves_x0(scheduler) -> bool:
    config = scheduler.config
    return bool(config.get("clip_sample", False) or config.get("thresholding", False))


def own_sigmas(scheduler) -> Tensor:
    """A set-up scheduler's per-step sigmas (descending, ending in its last).

    n + 1 values for n steps, except for DDIM and PLMS on a spacing that ends at timestep 0:
    their last step is a no-op the adapter skips (`_final_step_is_noop`), so n values.
    """
    own = getattr(scheduler, "sigmas", None)
    if own is not None:
        return torch.unique_consecutive(own.double().cpu())
    abar = scheduler.alphas_cumprod.double()
    ts = torch.unique_consecutive(scheduler.timesteps.long().cpu())
    # DDIM and PLMS end at final_alpha_cumprod (alphas_cumprod[0] unless
    # set_alpha_to_one), not at sigma 0; DDPM-like ones end at the data.
    final = float(getattr(scheduler, "final_alpha_cumprod", 1.0))
    last = torch.tensor([((1 - final) / final) ** 0.5], dtype=torch.float64)
    if _final_step_is_noop(scheduler):
        if _final_step_moves_x0(scheduler):
            raise ValueError(
                f"{type(scheduler).__name__} ends this spacing with a step at timestep 0 that stays at "
                "its final noise level, which clip_sample/thresholding turn into an extra projection "
                "the sigma schedule cannot show; use the SGM Uniform or DDIM schedule type, or "
                "clip_sample=False and thresholding=False")
        return torch.cat([((1 - abar[ts[:-1]]) / abar[ts[:-1]]).sqrt(), last])
    return torch.cat([((1 - abar[ts]) / abar[ts]).sqrt(), last])


def _check_matches(class_name: str, scheduler, sigmas: Tensor) -> None:
    own = own_sigmas(scheduler)
    if len(own) != len(sigmas) or not torch.allclose(own, sigmas.double().cpu(), rtol=1e-3, atol=1e-4):
        raise ValueError(
            f"{class_name} runs its own sigma schedule; pass the sigmas that "
            "samplers.sigmas('Automatic', steps, train_sigmas, sampler=...) returns, and pick a "
            "schedule type with the scheduler's flags (use_karras_sigmas=True, ...)")


def scheduler_sigmas(name: str, steps: int, train_sigmas: Tensor | None = None,
                     scheduler_config: dict[str, Any] | None = None, **overrides: Any) -> Tensor:
    """The sigmas diffusers sampler `name` runs at `steps` steps (for display and the engine)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    sampler = info_for(name)
    fn = sampler.fn
    scheduler = _build(fn.keywords["_class_name"], fn.keywords["_preset"], overrides,
                       scheduler_config)
    scheduler.set_timesteps(steps)
    return own_sigmas(scheduler)


def _followable(class_name: str, keys: Mapping[str, Any]) -> list[str]:
    """The schedule types (besides Automatic) a scheduler class has a working setting for."""
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
    class_name = info_for(sampler).fn.keywords["_class_name"]
    keys = _config_keys(_scheduler_class(class_name))
    followable = _followable(class_name, keys)
    if schedule not in followable:
        if schedule in SCHEDULE_FLAGS:
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
        if class_name not in SUPPORTED:
            raise UnknownSamplerError(suggest(class_name, list(SUPPORTED), "diffusers scheduler"))
        self._class_name = class_name
        self._keys: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._keys is None:
            self._keys = {**_config_keys(_scheduler_class(self._class_name)), "scheduler_config": None}
        return self._keys

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _info(name: str, class_name: str, preset: dict[str, Any], description: str) -> SamplerInfo:
    fn = functools.partial(run_scheduler, _class_name=class_name, _preset=preset)
    options = _SchedulerOptions(class_name)
    kind = "ancestral" if class_name in _ANCESTRAL else "sde" if class_name in _SDE else (
        "sde" if str(preset.get("algorithm_type", "")).startswith("sde") else "deterministic")
    return SamplerInfo(
        name=name, fn=fn, kind=kind, calls_per_step=2 if class_name in _TWO_CALLS else 1,
        default_schedule=None, description=description, family="diffusers", options=options,
        flow_form="refused")


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
    raise UnknownSamplerError(f"unknown diffusers sampler {name!r}")


def register_equivalents() -> None:
    """Add the "<A1111 name> (diffusers)" entries to the registry."""
    for a1111, *_ in EQUIVALENTS:
        add_info(info_for(f"{a1111} (diffusers)"))
