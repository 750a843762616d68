"""The schedule types ComfyUI names differently from A1111, and those only ComfyUI has.

This module owns the definitions behind ComfyUI's lowercase scheduler names where the
same idea runs differently in A1111 ("beta" vs "Beta", "kl_optimal" vs "KL Optimal",
"ddim_uniform" vs "DDIM"), ComfyUI's "linear_quadratic", "Laplace", and the two tables
ComfyUI offers as scheduler nodes: "GITS" (GITSScheduler) and "Optimal Steps"
(OptimalStepsScheduler), read from `schedules_tables.py`. ComfyUI's other
scheduler names (simple, sgm_uniform, karras, exponential, normal) compute exactly what
A1111's Simple, SGM Uniform, Karras, Exponential and Normal compute, and resolve to them
(`samplers.schedules.canonical`). The semantics follow ComfyUI's `comfy/samplers.py`
scheduler handlers (learned from its source, written here from the definitions);
docs/SAMPLERS.md has the table of differences.

Each definition takes the step count n and a `_Range` (training sigmas, float64, and the
sigma range) and returns the descending sigmas *before* the final 0, which
`schedules.compute` appends. Two of ComfyUI's types do not return n of them: "beta" drops
repeated timesteps and "ddim_uniform" walks the training timesteps with a fixed stride,
so a run can have a step or two more or fewer than asked, as in ComfyUI.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from samplers import schedules_tables as tables
from samplers._math import loginterp


def _lin(a: float, b: float, n: int) -> Tensor:
    return torch.linspace(a, b, n, dtype=torch.float64)


def comfy_beta(n: int, r: Any) -> Tensor:
    """ComfyUI "beta": Lee et al. 2024 ("Beta Sampling is All You Need", arXiv:2407.12173) on
    training timesteps. The Beta(alpha, beta) quantiles of 1, 1 - 1/n, ..., 1/n (n values, 0
    excluded) are scaled to the last timestep, rounded to whole timesteps, repeats dropped, and
    the training sigmas there taken. A1111's "Beta" instead spreads the quantiles linearly in
    sigma between sigma_min and sigma_max, unrounded."""
    from scipy.special import betaincinv  # the Beta distribution's inverse CDF

    last = len(r.train) - 1
    q = 1 - torch.arange(n, dtype=torch.float64) / n
    ts = torch.from_numpy(betaincinv(r.alpha, r.beta, q.numpy())) * last
    # numpy.rint rounds halves to even, as ComfyUI's does; torch.round does the same
    idx = torch.round(ts).long().tolist()
    kept = [t for i, t in enumerate(idx) if i == 0 or t != idx[i - 1]]
    return r.train[kept]


def comfy_kl_optimal(n: int, r: Any) -> Tensor:
    """ComfyUI "kl_optimal": the KL-optimal schedule of Sabour, Fidler & Kreis 2024 ("Align Your
    Steps", arXiv:2404.14507): atan(sigma) linear from atan(sigma_max) to atan(sigma_min) over n
    values, then 0."""
    w = _lin(0, 1, n)
    return torch.tan(w * math.atan(r.smin) + (1 - w) * math.atan(r.smax))


def a1111_kl_optimal(n: int, r: Any) -> Tensor:
    """A1111 "KL Optimal": the same atan interpolation over n + 1 values i/n, i = 0..n, with no
    final 0: the last step stops at sigma_min and the image keeps that much noise."""
    w = _lin(0, 1, n + 1)
    return torch.tan(w * math.atan(r.smin) + (1 - w) * math.atan(r.smax))


def comfy_ddim_uniform(n: int, r: Any) -> Tensor:
    """ComfyUI "ddim_uniform": training timesteps 1, 1 + c, 1 + 2c, ... while below N, c = N // n
    (the loop of the original DDIM code), descending. When c does not divide N evenly this gives
    more than n steps (7 steps give 8 on a 1000-step model). Our "DDIM" takes exactly n."""
    size = len(r.train)
    if n > size - 1:
        raise ValueError(f"the ddim_uniform schedule takes at most {size - 1} steps, got {n}")
    c = max(size // n, 1)
    return r.train[list(range(1, size, c))].flip(0)


def linear_quadratic(n: int, r: Any, threshold_noise: float = 0.025) -> Tensor:
    """ComfyUI "linear_quadratic" (Genmo's Mochi schedule): in t = 1 - sigma/sigma_max, the first
    n // 2 steps go linearly from 0 to threshold_noise, the rest quadratically to 1, continuous
    in value and slope at the joint; sigma = sigma_max (1 - t). One step is [sigma_max, 0]."""
    if n == 1:
        return torch.tensor([r.smax], dtype=torch.float64)
    lin_steps = n // 2
    quad_steps = n - lin_steps
    diff = lin_steps - threshold_noise * n
    quad_coef = diff / (lin_steps * quad_steps**2)
    lin_coef = threshold_noise / lin_steps - 2 * diff / quad_steps**2
    const = quad_coef * lin_steps**2
    ts = [i * threshold_noise / lin_steps for i in range(lin_steps)]
    ts += [quad_coef * i * i + lin_coef * i + const for i in range(lin_steps, n)]
    return r.smax * (1 - torch.tensor(ts, dtype=torch.float64))


def laplace(n: int, r: Any, mu: float = 0.0, beta: float = 0.5) -> Tensor:
    """"Laplace": Hang et al. 2024 ("Improved Noise Schedule for Diffusion Training",
    arXiv:2407.03297): log sigma at the Laplace(mu, beta) quantiles of linspace(0, 1, n)
    (offset by 1e-5 against log 0, as ComfyUI and Forge do), clamped to [sigma_min, sigma_max]."""
    if getattr(r, "flow_shift", None) is not None:
        raise ValueError("the Laplace schedule spreads log sigma over the SD family's noise levels, not a "
                         "flow model's (SD3, Flux), where half its steps would sit at sigma 1; use Simple, "
                         "beta, Normal or Karras there")
    x = _lin(0, 1, n)
    lam = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.exp(lam).clamp(min=r.smin, max=r.smax)


def resample(levels: tuple[float, ...], count: int) -> Tensor:
    """`count` values spread over a descending table by ComfyUI's loglinear_interp: the table's
    values sit at positions linspace(0, 1, len), the new ones at linspace(0, 1, count), and log
    sigma is interpolated linearly between them. count == len gives the table itself."""
    table = torch.tensor(levels, dtype=torch.float64)
    if count == len(table):
        return table
    return loginterp(table, _lin(0, len(table) - 1, count))


def gits(n: int, r: Any) -> Tensor:
    """"GITS": Chen et al. 2024 ("On the Trajectory Regularity of ODE-based Diffusion Sampling",
    ICML 2024), as ComfyUI's GITSScheduler runs it: for 2 to 20 steps the published row for
    (coeff, n) (n + 1 levels from 14.61 to 0.029); for more steps the 20-step row resampled to
    n + 1 levels (`resample`); the last level (0.029) is replaced by 0 (`compute` appends it)."""
    if getattr(r, "flow_shift", None) is not None:
        raise ValueError("GITS has published noise levels for SD 1.5-like models only (sigma 14.6 down "
                         "to 0.029), not for flow models (SD3, Flux); use Optimal Steps (Flux), Simple or "
                         "Beta there")
    if n < 2:
        raise ValueError("GITS takes at least 2 steps: its tables start at 2, as ComfyUI's GITSScheduler")
    rows = tables.GITS_ROWS[r.coeff]
    if n <= tables.GITS_MAX_STEPS:
        return torch.tensor([tables.GITS_LEVELS[i] for i in rows[n - 2]][:-1], dtype=torch.float64)
    return resample(tuple(tables.GITS_LEVELS[i] for i in rows[-1]), n + 1)[:-1]


def optimal_steps(n: int, r: Any) -> Tensor:
    """"Optimal Steps": Pei et al. 2025 ("Optimal Stepsize for Diffusion Sampling"), as ComfyUI's
    OptimalStepsScheduler runs it: the family's table (FLUX 10, Wan 20, Chroma 40 steps)
    resampled to n + 1 levels (`resample`; the table itself at its own step count), the last
    (0.001) replaced by 0. The levels are flow sigmas, used as they are whatever the shift."""
    if r.family not in tables.OSS_SIGMAS:
        raise ValueError(f"Optimal Steps has noise-level tables for {', '.join(tables.OSS_SIGMAS)} "
                         f"models only (ComfyUI's OptimalStepsScheduler), none for {r.family}; use "
                         f"Align Your Steps or GITS on SD 1.5/SDXL, Simple or Beta on SD3")
    if getattr(r, "flow_shift", None) is None:
        raise ValueError(f"Optimal Steps' {r.family} table holds a flow model's noise levels (sigma "
                         f"<= 1); build the schedule on a flow table (samplers.flow_train_sigmas)")
    return resample(tables.OSS_SIGMAS[r.family], n + 1)[:-1]


# Schedule types whose run does not end in sigma 0 (the image keeps sigma_min of noise).
NO_FINAL_ZERO = frozenset({"KL Optimal"})
# Schedule types whose length is not steps + 1 in general (see the module docstring).
VARIABLE_LENGTH = frozenset({"beta", "ddim_uniform"})
