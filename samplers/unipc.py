"""The "UniPC" sampler: unified predictor-corrector multistep solver, data prediction.

Zhao, Bai, Rao, Zhou, Lu 2023, "UniPC: A Unified Predictor-Corrector Framework for
Fast Sampling of Diffusion Models". In the variance-exploding parametrisation
(alpha = 1, x = data + sigma * eps) the half-log-SNR is lambda = -log(sigma) and
the data-prediction ("x0-pred") exponential integrator from s to t, h = lambda_t
- lambda_s, is

    x_t = (sigma_t / sigma_s) x_s - (e^{-h} - 1) m_s - B(h) sum_k rho_k D_k,

with m the denoised estimates, D_k = (m_k - m_s) / r_k the scaled differences
to earlier (or the new) points at lambda_s + r_k h. B(h) = -h for variant bh1
and e^{-h} - 1 for bh2 (the paper's two choices B(h) = h and B(h) = e^h - 1,
taken at the data-prediction step -h). The weights rho solve the order
conditions R rho = g with R_ik = r_k^(i-1) and g_i = i! (-h) phi_{i+1}(-h) / B(h),
phi being the exponential-integrator phi functions (paper Section 3).

- UniP-p (the unified predictor, Section 3.2): p - 1 earlier points, order p;
  in the 2-point case rho = 1/2, as the paper's reference code takes it.
- UniC-p (the unified corrector, Section 3.1): adds the model's estimate at the
  predicted x_t itself (r = 1). That estimate is the next step's model call
  anyway, so the correction is free and lifts the order by one (measured: 1 -> 2,
  2 -> 3, 3 -> 4). It is skipped after the final step, where no call follows.

Steps start at order 1 and rise as history accumulates; with lower_order_final
the last steps drop back (order min(order, steps left)), which steadies very
short runs; on a schedule that stops short of 0 that last, uncorrected order-1
step caps the asymptotic order at 2 (as in the paper's code). A final step to
sigma = 0 is always the data-prediction limit of the first-order step:
sigma_t / sigma_s -> 0 and e^{-h} - 1 -> -1 give x_0 = m_s, the last denoised
estimate (higher orders have no finite limit there: their differences in
lambda blow up at lambda = +inf).

Schedule: AUTOMATIC1111 runs UniPC on its own timesteps, uniform in the
training time from T to ~0, and diffusers' UniPCMultistepScheduler on
t = linspace(999, 0, n + 1)[:-1] then sigma 0. "Normal" (uniform in training
time between sigma_max and sigma_min, then 0) is the default type, and UniPC
discards the penultimate sigma on every type, as ComfyUI does: n + 1 sigmas
are computed and sigma_min dropped, which gives diffusers' spacing exactly.
Without the discard the last real step, from t ~ 1000/n down to sigma_min, is
longer in lambda than all the others together, and the multistep extrapolation
over it breaks down at few steps: on the analytic Gaussian at 5 steps the
error was 4.26 with it and is 0.45 without it (diffusers' UniPC: 0.50).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import torch
from torch import Tensor

from samplers._math import int_option
from samplers.registry import SamplerOptionError, register

VARIANTS = ("bh1", "bh2")


def _check(variant: Any, order: Any, lower_order_final: Any, use_corrector: Any) -> int:
    """Validate the options; returns the order as an int."""
    if variant not in VARIANTS:
        raise SamplerOptionError(f"option variant must be one of {', '.join(VARIANTS)}, "
                                 f"got {variant!r}")
    for name, value in (("lower_order_final", lower_order_final),
                        ("use_corrector", use_corrector)):
        if not isinstance(value, bool):
            raise SamplerOptionError(f"option {name} must be True or False, got {value!r}")
    return int_option("order", order, minimum=1, maximum=3)


def order_weights(h: float, p: int, variant: str) -> tuple[float, list[float]]:
    """(B(h), g_1..g_p): the right-hand side of UniPC's order conditions for a step h > 0."""
    hh = -h  # data prediction integrates in -lambda
    b_h = hh if variant == "bh1" else math.expm1(hh)
    # phi-recursion: h_phi = hh * phi_{i+1}(hh), starting from phi_1(hh) - 1.
    h_phi = math.expm1(hh) / hh - 1.0
    factorial = 1.0
    g = []
    for i in range(1, p + 1):
        g.append(h_phi * factorial / b_h)
        factorial *= i + 1
        h_phi = h_phi / hh - 1.0 / factorial
    return b_h, g


def _solve(rks: list[float], g: list[float]) -> list[float]:
    """rho with sum_k rho_k r_k^(i-1) = g_i, i = 1..len(rks)."""
    r = torch.tensor([[rk**i for rk in rks] for i in range(len(rks))], dtype=torch.float64)
    return torch.linalg.solve(r, torch.tensor(g, dtype=torch.float64)).tolist()


def _weighted(rhos: list[float], terms: list[Tensor]) -> Tensor | float:
    total: Tensor | float = 0.0
    for rho, term in zip(rhos, terms, strict=True):
        total = total + rho * term
    return total


def unipc_step(x: Tensor, lams: list[float], models: list[Tensor], lam_t: float, p: int,
               variant: str, correct: bool
               ) -> Generator[tuple[Tensor, float], Tensor, tuple[Tensor, Tensor | None]]:
    """One UniP-p step from (x, lams[-1]) to lam_t, then UniC-p if `correct`.

    lams/models hold the history (last = current point). Returns (x_t, m_t):
    m_t is the model's estimate at the predicted x_t when the corrector asked
    for it (the next step reuses it), else None.
    """
    lam_s, m_s = lams[-1], models[-1]
    h = lam_t - lam_s
    sigma_t = math.exp(-lam_t)
    rks = [(lams[-1 - k] - lam_s) / h for k in range(1, p)]
    diffs = [(models[-1 - k] - m_s) / rk for k, rk in enumerate(rks, start=1)]
    b_h, g = order_weights(h, p, variant)
    x_lin = math.exp(-h) * x - math.expm1(-h) * m_s  # e^{-h} = sigma_t / sigma_s
    rho_p = [] if p == 1 else [0.5] if p == 2 else _solve(rks, g[:-1])
    x_t = x_lin - b_h * _weighted(rho_p, diffs)
    if not correct:
        return x_t, None
    m_t = yield x_t, sigma_t
    rho_c = [0.5] if p == 1 else _solve(rks + [1.0], g)
    x_t = x_lin - b_h * (_weighted(rho_c[:-1], diffs) + rho_c[-1] * (m_t - m_s))
    return x_t, m_t


@register(
    "UniPC", kind="deterministic", calls_per_step=1, default_schedule="Normal", discard_penultimate=True,
    description="Unified predictor-corrector multistep solver (up to 3rd order): every model "
                "call also corrects the step before it at no extra cost. Strong at 10-20 steps.",
)
def unipc(x: Tensor, sigmas: Tensor, *, variant: str = "bh1", order: int = 3,
          lower_order_final: bool = True, use_corrector: bool = True,
          ) -> Generator[tuple[Tensor, float], Tensor, Tensor]:
    """UniPC multistep (data prediction) along `sigmas`, one model call per step."""
    order = _check(variant, order, lower_order_final, use_corrector)
    sig = [float(s) for s in sigmas]
    steps = len(sig) - 1
    lams, models = [-math.log(sig[0])], [(yield x, sig[0])]
    for i in range(1, steps + 1):
        if sig[i] == 0:
            return models[-1]  # data-prediction limit of the order-1 step (module docstring)
        p = min(order, i, steps + 1 - i) if lower_order_final else min(order, i)
        lam_t = -math.log(sig[i])
        x, m_t = yield from unipc_step(x, lams, models, lam_t, p, variant,
                                       use_corrector and i < steps)
        if i == steps:
            break
        if m_t is None:
            m_t = yield x, sig[i]
        # Only `order` points are ever used; keep the history short.
        lams, models = (lams + [lam_t])[-order:], (models + [m_t])[-order:]
    return x
