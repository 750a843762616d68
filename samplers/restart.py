"""Restart sampling: Heun steps with noisy jumps back up, A1111's version.

This module owns "Restart" (Xu, Deng, Chen, Tian, Liu, Tegmark & Jaakkola 2023,
"Restart Sampling for Improving Generative Processes", Algorithm 1): integrate
the probability-flow ODE with Heun's method (Karras et al. 2022, "Elucidating
the Design Space of Diffusion-Based Generative Models", Algorithm 1), and inside
a restart interval [t_min, t_max] repeatedly add forward noise to jump from
t_min back to t_max (variance t_max^2 - t_min^2) and solve the ODE down again.
The added noise contracts accumulated errors; the ODE keeps the steps cheap.

A1111's rule when no restart_list is given (the "Restart" users know):
  - under 20 steps: no restarts, plain Heun on the given sigmas;
  - 20 to 35 steps: one restart of 9 steps from sigma ~ 2 down to sigma ~ 0.1;
  - 36 steps or more: two restarts of steps // 4 steps each;
  - with restarts, the main solve is replaced by its own Karras schedule (rho 7)
    of steps - (restart steps) steps from sigmas[0] to the last positive sigma,
    so the step count stays the one asked for; restart segments use Karras
    sigmas too. The interval ends are the main schedule's sigmas nearest 0.1
    and 2.

On flow models the Heun steps are unchanged (the same ODE); a jump up re-noises to the higher
level's signal and noise levels (`Parametrisation.renoise`: x_hi = (alpha_hi / alpha_lo) x +
sqrt(sigma_hi^2 - (sigma_lo alpha_hi / alpha_lo)^2) z), and A1111's automatic interval
[0.1, 2] is read as VE-equivalent noise levels sigma / alpha, i.e. flow sigmas [1/11, 2/3].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from samplers._math import real_option
from samplers.euler import heun_step
from samplers.noise import CellNoise
from samplers.parametrisation import Parametrisation, apply_step
from samplers.protocol import SamplerGenerator
from samplers.registry import SamplerOptionError, register
from samplers.schedules import karras

# {min_sigma: (points per restart segment, repetitions, max_sigma)}, A1111's format.
RestartPlan = dict[float, tuple[int, int, float]]


def _segment(n: int, sigma_min: float, sigma_max: float, like: Tensor) -> Tensor:
    """n Karras sigmas (rho 7) from sigma_max down to sigma_min in like's dtype, no final 0.

    The ends are pinned to the given values so a restart segment starts and ends
    exactly on the main schedule's sigmas (no spurious tiny noise from rounding).
    """
    out = karras(n, sigma_min, sigma_max, dtype=like.dtype)
    out[0], out[-1] = sigma_max, sigma_min
    return out.to(like.device)


def _number(key: Any) -> Any:
    try:
        return float(key) if isinstance(key, str) else key
    except ValueError:
        return key


def _check_plan(restart_list: Any) -> RestartPlan:
    """A user's restart_list as a plan, or SamplerOptionError saying what is wrong."""
    if not isinstance(restart_list, Mapping):
        raise SamplerOptionError(
            "option restart_list must be None or a mapping {min_sigma: [steps, times, max_sigma]}, "
            f"got {restart_list!r}")
    plan: RestartPlan = {}
    for key, value in restart_list.items():
        # JSON objects (the web app's options) only have string keys.
        lo = real_option("restart_list key (min_sigma)", _number(key))
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise SamplerOptionError(
                f"restart_list[{key!r}] must be [steps, times, max_sigma], got {value!r}")
        points, times, hi = value
        for name, v, least in (("steps", points, 2), ("times", times, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise SamplerOptionError(
                    f"restart_list[{key!r}] {name} must be an integer >= {least}, got {v!r}")
        hi = real_option("restart_list max_sigma", hi)
        if not hi > lo > 0:
            raise SamplerOptionError(
                f"restart_list[{key!r}] needs 0 < min_sigma < max_sigma, got {lo!r} and {hi!r}")
        plan[lo] = (points, times, hi)
    return plan


def default_plan(sigmas: Tensor, param: Parametrisation) -> tuple[Tensor, RestartPlan]:
    """A1111's automatic choice: (main sigmas, plan) for a run of len(sigmas) - 1 steps.

    The restart interval [0.1, 2] is in VE-equivalent sigma (sigma / alpha; on VE sigma itself).
    """
    steps = len(sigmas) - 1
    if steps < 20:
        return sigmas, {}
    seg_steps, times = (steps // 4, 2) if steps >= 36 else (9, 1)
    main = steps - seg_steps * times
    ends_in_zero = float(sigmas[-1]) == 0
    # A1111 reads sigma_min from sigmas[-2] (the schedule ends in 0 there); a
    # schedule that stops short of 0 keeps its own end instead.
    sigma_min = float(sigmas[-2] if ends_in_zero else sigmas[-1])
    n_positive = main if ends_in_zero else main + 1
    new = _segment(n_positive, sigma_min, float(sigmas[0]), sigmas)
    if ends_in_zero:
        new = torch.cat([new, new.new_zeros(1)])
    return new, {param.from_ve_sigma(0.1): (seg_steps + 1, times, param.from_ve_sigma(2.0))}


def step_list(sigmas: Tensor, plan: RestartPlan) -> list[tuple[float, float]]:
    """Every (sigma, sigma_next) Heun step in order, restart segments included.

    A restart key attaches to the main sigma nearest to it (index >= 1); the
    segment runs from the main sigma nearest max_sigma down to it, and only when
    that one is higher up the schedule.
    """
    values = [float(s) for s in sigmas]

    def nearest(target: float) -> int:
        return min(range(len(values)), key=lambda i: (abs(values[i] - target), i))

    at_index = {nearest(lo): spec for lo, spec in plan.items()}
    pairs: list[tuple[float, float]] = []
    for i in range(len(values) - 1):
        pairs.append((values[i], values[i + 1]))
        if i + 1 not in at_index:
            continue
        points, times, hi = at_index[i + 1]
        top = nearest(hi)
        if top < i + 1:
            seg = [float(s) for s in _segment(points, values[i + 1], values[top], sigmas)]
            pairs.extend(list(zip(seg[:-1], seg[1:], strict=True)) * times)
    return pairs


@register(
    "Restart",
    kind="ancestral",
    calls_per_step=2,
    default_schedule="Karras",
    description=(
        "Restart sampling: Heun steps, plus (at 20 steps or more) jumps back up to a higher "
        "noise level with fresh noise that are solved down again, which washes out "
        "accumulated error. Under 20 steps it is plain Heun."
    ),
)
def restart(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
            s_noise: float = 1.0, restart_list: Mapping[float, Any] | None = None) -> SamplerGenerator:
    """Restart sampling, Xu et al. 2023, Algorithm 1, with A1111's automatic plan.

    restart_list (A1111's format) maps min_sigma to [points, times, max_sigma]:
    a segment of `points` Karras sigmas (points - 1 Heun steps) from the main
    sigma nearest max_sigma down to the one nearest min_sigma, run `times` times.
    None picks A1111's rule (see the module docstring); {} means plain Heun; a
    given list is used on the given sigmas as they are. Each jump up adds
    s_noise * sqrt(sigma_hi^2 - sigma_lo^2) * N(0, I) (the restart forward process of
    Algorithm 1). Kind "ancestral": the jumps draw fresh noise from the
    cell's generator, which happens only when a restart runs (>= 20 steps by default).
    """
    s_noise_value = real_option("s_noise", s_noise)
    if restart_list is None:
        sigmas, plan = default_plan(sigmas, param)
    else:
        plan = _check_plan(restart_list)
    return _restart_steps(x, step_list(sigmas, plan), noise, param, s_noise_value)


def _restart_steps(x: Tensor, pairs: list[tuple[float, float]], noise: CellNoise,
                   param: Parametrisation, s_noise: float) -> SamplerGenerator:
    last = pairs[0][0]
    for sigma, sigma_next in pairs:
        if sigma > last:
            x = apply_step(x, param.renoise(last, sigma), noise.gaussian, s_noise)
        x = yield from heun_step(x, sigma, sigma_next)
        last = sigma_next
    return x
