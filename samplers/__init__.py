"""The sampler family: schedules, sampler algorithms, the diffusers adapter, the registry.

Public API:
    sigmas(schedule, steps, train_sigmas, ...)  -> descending sigma schedule
    schedule_names()                             -> schedule types users pick from
    names() / info(name) / resolve(name)         -> the registry
    sample(name, denoiser, x, sigmas, seed=...)  -> run one sampler with a plain function

Everything here is model-agnostic pure torch: a model enters only as a
denoiser function D(x; sigma) (see `samplers.protocol`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from samplers import (  # noqa: F401  (importing registers the samplers)
    cfg_pp,
    comfyui,
    ddim,
    deis,
    diffusers_adapter,
    dpm2,
    dpm_solver,
    dpmpp,
    dpmpp_sde,
    er_sde,
    euler,
    gradient_estimation,
    heunpp,
    ipndm,
    lcm,
    lms,
    plms,
    res_multistep,
    restart,
    sa_solver,
    schedules,
    seeds,
    unipc,
)
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import Denoiser, NonFiniteError, drive
from samplers.registry import (
    SamplerInfo,
    SamplerOptionError,
    UnknownSamplerError,
    registered,
    suggest,
)

__all__ = [
    "sigmas", "schedule_names", "names", "info", "resolve", "sample", "train_sigmas",
    "SamplerInfo", "UnknownSamplerError", "SamplerOptionError", "NonFiniteError",
    "CellNoise",
]

# A1111 v1.10.1's order, which users know from its dropdown; others follow.
_A1111_ORDER = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "PLMS", "UniPC", "LCM",
]

train_sigmas = schedules.train_sigmas
# Keyword options of a schedule type (schedules.compute), as samplers.sigmas takes them.
SCHEDULE_OPTIONS = ("sigma_min", "sigma_max", "rho", "alpha", "beta", "family")
diffusers_adapter.register_equivalents()
comfyui.register_variants()


def names() -> list[str]:
    """Every registered sampler name: A1111's in its order, then the rest."""
    known = registered()
    first = [n for n in _A1111_ORDER if n in known]
    return first + [n for n in known if n not in first]


def schedule_names() -> list[str]:
    """Schedule types, "Automatic" first, as A1111 lists them."""
    return list(schedules.SCHEDULES)


def resolve(name: str) -> tuple[SamplerInfo, str | None]:
    """Sampler info and the schedule a combined name implies.

    "DPM++ 2M Karras" -> (DPM++ 2M, "Karras"); "Euler" -> (Euler, None).
    "diffusers:<SchedulerClass>" names any diffusers scheduler.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownSamplerError(f"sampler name must be a non-empty string, got {name!r}")
    name = name.strip()
    known = registered()
    if name in known:
        return known[name], None
    if name.startswith(diffusers_adapter.PREFIX):
        return diffusers_adapter.info_for(name), None
    comfy = comfyui.runs_as(name)  # ComfyUI's lowercase names, matched exactly
    if comfy is not None and comfy in known:
        return known[comfy], None
    by_lower: dict[str, SamplerInfo] = {}
    for k, v in known.items():  # the first registered wins: "Lms" is A1111's LMS, not ComfyUI's lms
        by_lower.setdefault(k.lower(), v)
    if name.lower() in by_lower:
        return by_lower[name.lower()], None
    for schedule in schedules.SCHEDULES:
        suffix = " " + schedule.lower()
        if schedule != "Automatic" and name.lower().endswith(suffix):
            base = by_lower.get(name[: -len(suffix)].strip().lower())
            if base is not None:
                return base, schedule
    raise UnknownSamplerError(suggest(name, names(), "sampler",
                                      also=[*comfyui.COMFYUI_SAMPLERS, *_combined_names()])
                              + comfyui.hint(name))


def _combined_names() -> list[str]:
    """"<sampler> <schedule type>" for the native samplers: the combined names resolve() accepts."""
    return [f"{n} {s}" for n, i in registered().items() if i.family != "diffusers" and i.uses_schedule
            for s in schedules.SCHEDULES if s != "Automatic"]


def info(name: str) -> SamplerInfo:
    """What a sampler is: kind, calls per step, default schedule, description, options."""
    return resolve(name)[0]


def sigmas(
    schedule: str,
    steps: int,
    train_sigmas: Tensor,
    *,
    sampler: str | None = None,
    sampler_options: dict[str, Any] | None = None,
    discard_penultimate: bool | None = None,
    **opts: Any,
) -> Tensor:
    """The sigma schedule a run of `steps` steps uses, descending, usually ending in 0.

    "Automatic" means the sampler's default schedule; samplers that discard
    the penultimate sigma (DPM2, DPM2 a, DPM++ 3M SDE) do so on every schedule
    type, as in A1111, unless `discard_penultimate` says otherwise. A combined
    sampler name ("DPM++ 2M Karras") picks its schedule. diffusers samplers on "Automatic" use their
    scheduler's own sigmas. `opts` are schedule options: sigma_min,
    sigma_max, rho, alpha, beta, family ("SD1.5"/"SDXL" for Align Your Steps).
    """
    unknown = sorted(set(opts) - set(SCHEDULE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown schedule option(s) {', '.join(unknown)}; the options are: "
                         f"{', '.join(SCHEDULE_OPTIONS)}, discard_penultimate, sampler, sampler_options")
    schedule = schedules.canonical(schedule)
    sampler_info = None
    if sampler is not None:
        sampler_info, implied = resolve(sampler)
        if schedule == "Automatic" and implied is not None:
            schedule = implied
    if sampler_info is not None and sampler_info.family == "diffusers":
        if opts or discard_penultimate:
            given = ", ".join([*opts, *(["discard_penultimate"] if discard_penultimate else [])])
            raise ValueError(f"{sampler_info.name} runs its diffusers scheduler's own sigmas; the schedule "
                             f"option(s) {given} do not apply (use the scheduler's config options)")
        flags = {**diffusers_adapter.schedule_overrides(schedule, sampler_info.name),
                 **(sampler_options or {})}
        return diffusers_adapter.scheduler_sigmas(sampler_info.name, steps, train_sigmas, **flags)
    if schedule == "Automatic":
        if sampler_info is None:
            raise ValueError("schedule 'Automatic' needs the sampler it belongs to")
        schedule = sampler_info.default_schedule or "Karras"
    if discard_penultimate is None and sampler_info is not None:
        # A1111 drops the next-to-last sigma for these samplers whatever the
        # schedule type ("DPM2 Karras" included), not only on Automatic.
        discard_penultimate = sampler_info.discard_penultimate
    return schedules.compute(
        schedule, steps, train_sigmas, discard_penultimate=bool(discard_penultimate), **opts)


def _check_sigmas(sig: Tensor) -> Tensor:
    sig = torch.as_tensor(sig)
    if sig.ndim != 1 or len(sig) < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sig.shape)}")
    if not torch.isfinite(sig).all() or (sig < 0).any():
        raise ValueError("sigmas must be finite and non-negative")
    if not (sig[1:] < sig[:-1]).all():
        i = int((sig[1:] >= sig[:-1]).nonzero()[0])
        raise ValueError(
            f"sigmas must be strictly descending; sigmas[{i + 1}]={float(sig[i + 1]):.4g} "
            f">= sigmas[{i}]={float(sig[i]):.4g}")
    return sig


def check_options(sampler_info: SamplerInfo, options: dict[str, Any]) -> None:
    """Refuse options the sampler does not take, naming the ones it does."""
    unknown = sorted(set(options) - set(sampler_info.options))
    if unknown:
        takes = ", ".join(sampler_info.options) or "no options"
        raise SamplerOptionError(
            f"sampler {sampler_info.name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {takes}")


def start_generator(name: str, x: Tensor, sigmas: Tensor, noise: CellNoise, **options: Any):
    """The sampler's generator, ready to be driven (by `sample` or the grid engine)."""
    sampler_info = info(name)
    check_options(sampler_info, options)
    return sampler_info.fn(x, _check_sigmas(sigmas), noise, **options)


def sample(name: str, denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, seed: int = 0,
           **options: Any) -> Tensor:
    """Run sampler `name` from x (noise already scaled to sigmas[0]) along `sigmas`.

    `denoiser(x, sigma)` gets x of shape (B, ...) and sigma of shape (B,) and
    returns the denoised estimate; for a CFG++ sampler (`info(name).cfg_pp`) it
    returns the pair (guided_x0, unconditional_x0). `sigmas` is used exactly as
    given. Noise comes only from `seed`: the same seed gives the same result, bit for bit.
    """
    sig = _check_sigmas(sigmas)
    noise = CellNoise(seed, *sigma_range(sig))
    gen = start_generator(name, x, sig, noise, **options)
    result, _calls = drive(gen, denoiser, sig, pairs=info(name).cfg_pp)
    return result
