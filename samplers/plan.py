"""What a sampler runs: the sigma schedule for a sampler, a schedule type and a step count.

    sigmas(schedule, steps, train_sigmas, sampler=..., ...) -> descending sigmas

The rule for "Automatic" (the sampler's default schedule type, or the one a combined name such
as "DPM++ 2M Karras" implies) is written here once.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from samplers import diffusers_adapter, schedules
from samplers.names import resolve

# Keyword options of a schedule type (schedules.compute), as samplers.sigmas takes them.
SCHEDULE_OPTIONS = ("sigma_min", "sigma_max", "rho", "alpha", "beta", "family")


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
