"""Sigma schedules: the schedule types users pick, the training sigmas they are built from,
and the exact sigma <-> timestep mapping the grid engine reuses.

A schedule is a strictly descending 1-D tensor of steps+1 noise levels ending in 0,
computed over a model's discrete training sigmas (ascending; index = training
timestep; ~0.0292 .. 14.61 for SD 1.x). Definitions follow A1111 v1.10.1
(`modules/sd_schedulers.py`), which in turn uses k-diffusion (Crowson) and ComfyUI;
where they differ, or where A1111 does not return steps+1 values ending in 0,
`compute` documents the choice made here.

On a flow model's table (`samplers.flow_train_sigmas`: sigma_i = s t_i / (1 + (s - 1) t_i),
ending at 1) every type follows ComfyUI's scheduler of the same name on its flow models
(Forge runs ComfyUI's code there): Simple, Karras, Exponential, Polyexponential, KL Optimal and
DDIM read the table as on SD; Normal (= Uniform) and SGM Uniform space sigma evenly between
the range's ends and shift the result; Beta reads table entries at its quantiles; Align Your
Steps and GITS (published for SD 1.5-like models only) are refused. Optimal Steps is the
other way round: its tables are flow models' (FLUX, Wan, Chroma), refused on SD tables.

Names and their lookup live in `schedule_types.py`, the published tables in
`schedules_tables.py`, ComfyUI's own types in `schedules_comfyui.py`; this module re-exports
the names (SCHEDULES, COMFYUI_SCHEDULERS, canonical, UnknownScheduleError) and AYS_SIGMAS.

All arithmetic is float64; results come back in the training sigmas' dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor

from core.limits import MAX_STEPS  # a longer schedule only re-visits the same noise levels
from samplers import schedules_comfyui as comfy
from samplers import schedules_tables as tables
from samplers._math import loginterp as _loginterp
from samplers.schedule_types import (  # noqa: F401  (re-exported: the names belong with the types)
    COMFYUI_SCHEDULERS,
    SCHEDULES,
    UnknownScheduleError,
    canonical,
)
from samplers.schedules_tables import AYS_SIGMAS  # noqa: F401  (re-exported)

# family= as typed (case, spaces, ".", "_" and "-" ignored) -> tables.FAMILIES; the model
# families of samplers.plan ("sd1", "sd2", "sdxl", "sd3", "flux") are names of them too.
_FAMILY_KEYS = {_k.lower().replace(".", ""): _k for _k in tables.FAMILIES} | {
    "sd1": "SD1.5", "sd2": "SD1.5", "sd35": "SD3"}


# ---------------------------------------------------------------- training sigmas


def _betas(beta_start: float, beta_end: float, n: int, beta_schedule: str) -> Tensor:
    """DDPM betas (Ho et al. 2020, sec. 4) computed in float32 the way diffusers does."""
    if beta_schedule == "scaled_linear":  # Stable Diffusion (LDM): linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    if beta_schedule == "squaredcos_cap_v2":
        # Nichol & Dhariwal 2021, "Improved DDPM", eq. 17: alpha_bar(t) = cos^2((t/T + s)/(1 + s) pi/2),
        # s = 0.008, beta_t = 1 - alpha_bar(t+1)/alpha_bar(t) capped at 0.999.
        t = torch.arange(n + 1, dtype=torch.float64) / n
        alpha_bar = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999).float()
    raise ValueError(
        f"unknown beta_schedule {beta_schedule!r}; use 'scaled_linear', 'linear' or 'squaredcos_cap_v2'")


def train_sigmas(beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000,
                 beta_schedule: str = "scaled_linear") -> Tensor:
    """A model's training sigmas, ascending (index = timestep), float32.

    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) with alpha_bar_t = prod_{s<=t} (1 - beta_s):
    the variance-exploding noise level equivalent to DDPM timestep t (Karras et al. 2022,
    "Elucidating the Design Space...", Table 1, VP column). The defaults are Stable
    Diffusion 1.x/2.x/XL's: ~0.0292 .. 14.6146.
    """
    if not isinstance(num_train_timesteps, Integral) or isinstance(num_train_timesteps, bool) \
            or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be a whole number >= 2, got {num_train_timesteps!r}")
    if beta_schedule != "squaredcos_cap_v2" and not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start!r}, {beta_end!r}")
    betas = _betas(beta_start, beta_end, int(num_train_timesteps), beta_schedule)
    return train_sigmas_from_alphas_cumprod(torch.cumprod(1 - betas, dim=0))


def train_sigmas_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    """Training sigmas sqrt((1 - alpha_bar) / alpha_bar) from a model's alphas_cumprod, same dtype."""
    ac = torch.as_tensor(alphas_cumprod)
    if not ac.is_floating_point():
        ac = ac.double()
    if ac.ndim != 1 or len(ac) < 2 or not ((ac > 0) & (ac < 1)).all():
        raise ValueError("alphas_cumprod must be a 1-D tensor of at least 2 values in (0, 1)")
    return ((1 - ac) / ac) ** 0.5


def _checked_train(train: Tensor) -> Tensor:
    """Training sigmas as a float64 CPU tensor, after checking they are usable."""
    t = torch.as_tensor(train).detach()
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(
            f"train_sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(t.shape)}")
    t = t.to("cpu", torch.float64)
    if not (torch.isfinite(t).all() and (t > 0).all() and (t[1:] > t[:-1]).all()):
        raise ValueError("train_sigmas must be finite, positive and strictly ascending (index = timestep)")
    return t


# ---------------------------------------------------------------- sigma <-> timestep


def _float_dtype(*values: Any) -> torch.dtype:
    # float64 if anything involved is float64, else float32 (the app's dtype).
    dtypes = [v.dtype for v in values if isinstance(v, Tensor)]
    return torch.float64 if torch.float64 in dtypes else torch.float32


def sigma_to_t(sigma: Tensor | float, train_sigmas: Tensor) -> Tensor:
    """Fractional training timestep of each sigma, elementwise.

    Linear interpolation in log sigma between the two neighbouring training sigmas
    (k-diffusion's DiscreteSchedule.sigma_to_t), clamped to [0, N-1]. A training sigma
    maps to its integer index exactly.
    """
    train = _checked_train(train_sigmas)
    s = torch.as_tensor(sigma, dtype=None if isinstance(sigma, Tensor) else torch.float64)
    log_train, log_s = train.log(), s.detach().to("cpu", torch.float64).log()
    low = (torch.searchsorted(log_train, log_s.contiguous(), right=True) - 1).clamp(0, len(train) - 2)
    lo, hi = log_train[low], log_train[low + 1]
    w = ((log_s - lo) / (hi - lo)).clamp(0, 1)
    return (low + w).to(s.device if isinstance(sigma, Tensor) else "cpu", _float_dtype(sigma, train_sigmas))


def t_to_sigma(t: Tensor | float, train_sigmas: Tensor) -> Tensor:
    """Sigma at each fractional training timestep (clamped to [0, N-1]), elementwise.

    The inverse of sigma_to_t: log sigma interpolated linearly between the neighbouring
    integer timesteps; an integer t gives that training sigma exactly.
    """
    train = _checked_train(train_sigmas)
    tt = torch.as_tensor(t, dtype=None if isinstance(t, Tensor) else torch.float64)
    out = _loginterp(train, tt.detach().to("cpu", torch.float64))
    return out.to(tt.device if isinstance(t, Tensor) else "cpu", _float_dtype(t, train_sigmas))


# ---------------------------------------------------------------- the schedule types


@dataclass(frozen=True)
class _Range:
    """What a schedule definition may read: training sigmas (float64), range and options."""

    train: Tensor
    smin: float
    smax: float
    rho: float | None
    alpha: float
    beta: float
    family: str
    flow_shift: float | None = None  # the shift of a flow model's table (None: not a flow table)
    coeff: float = tables.GITS_DEFAULT_COEFF


def _lin(a: float, b: float, n: int) -> Tensor:
    return torch.linspace(a, b, n, dtype=torch.float64)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
           dtype: torch.dtype = torch.float64) -> Tensor:
    """n sigmas from sigma_max down to sigma_min, linear in sigma^(1/rho) (Karras et al. 2022,
    eq. 5), no final 0, computed in `dtype` on the CPU."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + torch.linspace(0, 1, n, dtype=dtype) * (lo - hi)) ** rho


def _karras(n: int, r: _Range) -> Tensor:
    return karras(n, r.smin, r.smax, 7.0 if r.rho is None else r.rho)


def _exponential(n: int, r: _Range) -> Tensor:
    # equally spaced in log sigma
    return torch.exp(_lin(math.log(r.smax), math.log(r.smin), n))


def _polyexponential(n: int, r: _Range) -> Tensor:
    # k-diffusion: log sigma = ramp^rho (ln smax - ln smin) + ln smin, ramp 1 -> 0; rho = 1 is Exponential
    rho = 1.0 if r.rho is None else r.rho
    ramp = _lin(1, 0, n) ** rho
    return torch.exp(ramp * (math.log(r.smax) - math.log(r.smin)) + math.log(r.smin))


def _timesteps(r: _Range) -> tuple[float, float]:
    ends = sigma_to_t(torch.tensor([r.smax, r.smin], dtype=torch.float64), r.train)
    return float(ends[0]), float(ends[1])


def _normal(n: int, r: _Range) -> Tensor:
    # evenly spaced training timesteps from t(smax) down to t(smin), both included
    if r.flow_shift is not None:
        return _flow_timesteps(_lin(r.smax, r.smin, n), r.flow_shift)
    hi, lo = _timesteps(r)
    return _loginterp(r.train, _lin(hi, lo, n))


def _sgm_uniform(n: int, r: _Range) -> Tensor:
    # SGM / "trailing" spacing: n+1 evenly spaced timesteps, the last (t(smin)) dropped
    if r.flow_shift is not None:
        return _flow_timesteps(_lin(r.smax, r.smin, n + 1)[:-1], r.flow_shift)
    hi, lo = _timesteps(r)
    return _loginterp(r.train, _lin(hi, lo, n + 1)[:-1])


def _flow_timesteps(t: Tensor, shift: float) -> Tensor:
    # ComfyUI's flow models: timestep(sigma) = 1000 sigma and sigma(timestep) = shift(timestep /
    # 1000), so its Normal / SGM Uniform space sigma itself evenly and shift the result (which
    # shifts sigma_min twice; diffusers' SD3 scheduler does the same, see samplers.flow_schedule).
    return shift * t / (1 + (shift - 1) * t)


def flow_table_shift(train: Tensor) -> float | None:
    """The shift s of a flow model's table sigma_i = s t_i / (1 + (s - 1) t_i), t_i = i / N
    (`samplers.flow_train_sigmas`), or None for any other table (one that does not end at 1)."""
    t = torch.as_tensor(train).to("cpu", torch.float64)
    if float(t[-1]) != 1.0:
        return None
    n = len(t)
    mid = n // 2  # t = (mid + 1) / n: s = sigma (1 - t) / (t (1 - sigma)), well conditioned there
    tm, sm = (mid + 1) / n, float(t[mid])
    shift = sm * (1 - tm) / (tm * (1 - sm))
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    if not torch.allclose(t, _flow_timesteps(grid, shift), rtol=1e-5, atol=0):
        raise ValueError("train_sigmas end at 1 like a flow model's but are not a shifted flow table "
                         "s t / (1 + (s - 1) t), t = i / N; build them with samplers.flow_train_sigmas")
    return shift


def _align_your_steps(n: int, r: _Range) -> Tensor:
    if r.flow_shift is not None or r.family not in AYS_SIGMAS:
        raise ValueError(f"Align Your Steps has published noise levels for SD 1.5 and SDXL only, not for "
                         f"{'flow models (SD3, Flux)' if r.flow_shift else r.family + ' models'}; use "
                         f"Simple, Beta, Normal or Karras there")
    # the 11 published levels sit at positions linspace(0, 1, 11); resample log sigma at linspace(0, 1, n)
    return comfy.resample(AYS_SIGMAS[r.family], n)


def _simple(n: int, r: _Range) -> Tensor:
    # every N/n-th training sigma counting down from the top (ComfyUI "simple")
    size = len(r.train)
    if n > size:
        raise ValueError(
            f"the Simple schedule takes at most {size} steps (one per training timestep), got {n}")
    stride = size / n
    return r.train[[size - 1 - int(i * stride) for i in range(n)]]


def _ddim(n: int, r: _Range) -> Tensor:
    # training timesteps 1, 1+c, 1+2c, ... with c = N // n (DDIM "leading" spacing, steps_offset 1)
    size = len(r.train)
    if n > size - 1:
        raise ValueError(f"the DDIM schedule takes at most {size - 1} steps, got {n}")
    c = size // n
    return r.train[[1 + k * c for k in range(n)]].flip(0)


def _beta(n: int, r: _Range) -> Tensor:
    # Lee et al. 2024, "Beta Sampling is All You Need", as A1111 applies it: the Beta(alpha, beta)
    # quantile of 1 - linspace(0, 1, n) placed linearly in [smin, smax].
    from scipy.special import betaincinv  # the Beta distribution's inverse CDF; imported only when used

    if r.flow_shift is not None:
        # ComfyUI's beta_scheduler, which Forge runs on flow models: the quantiles of
        # 1 - i/n (i < n) as table indices, rint(ppf * (N - 1)), read from the table.
        q = 1 - torch.arange(n, dtype=torch.float64) / n
        ppf = torch.from_numpy(betaincinv(r.alpha, r.beta, q.numpy()))
        return r.train[torch.round(ppf * (len(r.train) - 1)).long()]
    q = 1 - _lin(0, 1, n)
    ppf = torch.from_numpy(betaincinv(r.alpha, r.beta, q.numpy()))
    return r.smin + ppf * (r.smax - r.smin)


_DEFINITIONS: dict[str, Callable[[int, _Range], Tensor]] = {
    "Uniform": _normal, "Karras": _karras, "Exponential": _exponential,
    "Polyexponential": _polyexponential, "SGM Uniform": _sgm_uniform,
    "KL Optimal": comfy.a1111_kl_optimal, "Align Your Steps": _align_your_steps, "Simple": _simple,
    "Normal": _normal, "DDIM": _ddim, "Beta": _beta, "Laplace": comfy.laplace, "beta": comfy.comfy_beta,
    "kl_optimal": comfy.comfy_kl_optimal, "ddim_uniform": comfy.comfy_ddim_uniform,
    "linear_quadratic": comfy.linear_quadratic, "GITS": comfy.gits, "Optimal Steps": comfy.optimal_steps,
}


# ---------------------------------------------------------------- compute


def _positive(name: str, value: Any) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, Integral):
        raise ValueError(f"steps must be a whole number, got {steps!r}")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    return int(steps)


def _family(family: Any) -> str:
    key = str(family).lower()
    for c in " ._-":
        key = key.replace(c, "")
    found = _FAMILY_KEYS.get(key)
    if found is None:
        raise ValueError(f"unknown model family {family!r} for the published tables (Align Your Steps, "
                         f"Optimal Steps); use one of {', '.join(tables.FAMILIES)}")
    return found


def _coeff(coeff: Any) -> float:
    # ComfyUI's GITSScheduler looks its table up at round(coeff, 2)
    value = round(_positive("coeff", coeff), 2)
    if value not in tables.GITS_COEFFS:
        raise ValueError(f"coeff (GITS) must be one of the published tables' {tables.GITS_COEFFS[0]:.2f}, "
                         f"{tables.GITS_COEFFS[1]:.2f}, ..., {tables.GITS_COEFFS[-1]:.2f} "
                         f"(steps of 0.05), got {coeff!r}")
    return value


def _make_range(train: Tensor, sigma_min: Any, sigma_max: Any, rho: Any, alpha: Any, beta: Any,
                family: Any, coeff: Any) -> _Range:
    smin = float(train[0]) if sigma_min is None else _positive("sigma_min", sigma_min)
    smax = float(train[-1]) if sigma_max is None else _positive("sigma_max", sigma_max)
    if smin >= smax:
        raise ValueError(f"sigma_min ({smin:g}) must be below sigma_max ({smax:g})")
    shift = flow_table_shift(train)
    if shift is not None and smax > 1:
        raise ValueError(f"sigma_max ({smax:g}) must be at most 1 on a flow model (sigma 1 is pure noise)")
    return _Range(train, smin, smax, None if rho is None else _positive("rho", rho),
                  _positive("alpha", alpha), _positive("beta", beta), _family(family), shift,
                  _coeff(coeff))


def compute(schedule: str, steps: int, train_sigmas: Tensor, *, discard_penultimate: bool = False,
            sigma_min: float | None = None, sigma_max: float | None = None, rho: float | None = None,
            alpha: float = 0.6, beta: float = 0.6, family: str = "SD1.5",
            coeff: float = tables.GITS_DEFAULT_COEFF) -> Tensor:
    """The `schedule` type's sigmas for `steps` steps: steps+1 strictly descending values ending in 0
    (A1111's KL Optimal ends at sigma_min instead; ComfyUI's beta and ddim_uniform can give a
    step more or fewer, as ComfyUI does: see samplers/schedules_comfyui.py).

    Returned in train_sigmas' dtype (float64 if it is float64, else float32) on its device.
    "Automatic" must be resolved by the caller (samplers.sigmas does). discard_penultimate
    computes steps+1 steps and drops the next-to-last sigma (still steps+1 values).

    sigma_min/sigma_max (default: the training range) are honoured by Karras, Exponential,
    Polyexponential, KL Optimal, kl_optimal, Beta, Laplace and linear_quadratic (sigma_max)
    directly, and by Uniform, Normal and SGM Uniform through their training timesteps (clamped
    to the training range). Simple, DDIM, ddim_uniform, beta, Align Your Steps, GITS and
    Optimal Steps pick fixed noise levels and ignore them, as A1111 and ComfyUI do. rho
    defaults to 7 (Karras) or 1 (Polyexponential); alpha/beta shape Beta; family picks a
    published table (schedules_tables.FAMILIES: "SD1.5"/"SDXL" for Align Your Steps, "FLUX",
    "Wan", "Chroma" for Optimal Steps); coeff (0.80 .. 1.50 in steps of 0.05, default 1.20 as
    ComfyUI's) picks the GITS table.

    Where this differs from A1111 v1.10.1, on purpose:
    - DDIM: A1111 walks 1, 1+c, ... while below N and can return more than n values (7 steps
      give 8); we take exactly n (diffusers' "leading" spacing), the same whenever A1111 gives n.
    - Align Your Steps at 1 step: A1111's reversed interpolation gives 0.029; we start at the
      list's top value (14.615) like every other schedule.
    - Uniform honours sigma_min/sigma_max (through timesteps, like Normal); A1111's ignores
      them. With the default range Uniform and Normal are the same schedule, as in A1111.
    """
    name = canonical(schedule)
    if name == "Automatic":
        raise ValueError("schedule 'Automatic' means the sampler's default; resolve it first "
                         "(samplers.sigmas(..., sampler=...) does)")
    n = _check_steps(steps) + (1 if discard_penultimate else 0)
    raw = torch.as_tensor(train_sigmas)
    r = _make_range(_checked_train(raw), sigma_min, sigma_max, rho, alpha, beta, family, coeff)
    sig = _DEFINITIONS[name](n, r)
    if name not in comfy.NO_FINAL_ZERO:
        sig = torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
    if discard_penultimate:
        sig = torch.cat([sig[:-2], sig[-1:]])
    out = sig.to(raw.device, _float_dtype(raw))
    if not (out[1:] < out[:-1]).all():
        raise ValueError(
            f"the {name} schedule repeats noise levels at {steps} steps for sigma range "
            f"[{r.smin:g}, {r.smax:g}] in {out.dtype}; use fewer steps or a wider range")
    return out
