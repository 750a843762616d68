"""DPM-Solver samplers "DPM fast" and "DPM adaptive" (noise-prediction form).

Lu, Zhou, Bao, Chen, Li, Zhu 2022, "DPM-Solver: A Fast ODE Solver for Diffusion
Probabilistic Model Sampling in Around 10 Steps". In the variance-exploding
parametrisation used here (alpha = 1, x = data + sigma * eps) the half-log-SNR
is lambda = -log(sigma), the noise prediction is eps = (x - D(x; sigma)) / sigma,
and with h = lambda_t - lambda_s the paper's updates read:

- DPM-Solver-1 (eq. 3.7): x_t = x_s - sigma_t (e^h - 1) eps_s  (this is Euler);
- DPM-Solver-2 (Algorithm 1, intermediate point r1 h): one extra model call;
- DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3): two extra model calls.

"DPM fast" is the paper's fixed-order DPM-Solver (Section 3.4, "DPM-Solver-fast"):
a budget of N model calls becomes K = floor(N/3) + 1 steps uniform in lambda,
all of order 3 except the last: orders 3..3, 2, 1 when N mod 3 == 0, else
3..3, N mod 3. "DPM adaptive" is the paper's adaptive step size solver
(Algorithms 4/5, DPM-Solver-12 and -23): each step computes an order-3 (or 2) solution and
an embedded order-2 (or 1) one, whose difference against the tolerance
max(atol, rtol * |x|) accepts or rejects the step; the next step size comes
from a PID step-size controller (Soderlind 2003, "Digital filters in adaptive
time-stepping"; with the default icoeff = 1 it is the paper's h * E^(-1/k)).

Both follow k-diffusion's sample_dpm_fast / sample_dpm_adaptive as used by
AUTOMATIC1111: they read only the schedule's ends, sigma_max = sigmas[0] and
sigma_min = its smallest positive sigma, ignore the schedule's interior values,
and return the sample at sigma_min (no final denoise to 0, so a faint residual
noise of size sigma_min stays in the image, exactly as those tools give it).
With eta > 0 (A1111 passes eta = 1.0, our default) each step goes to the
ancestral "down" sigma and adds fresh noise (samplers._math.ancestral_step).

Flow models: the solver steps are unchanged (they integrate the same ODE in x, in lambda =
-log sigma, as ComfyUI runs them on flow models); the ancestral noise is the parametrisation's
(`Parametrisation.ancestral_step` for sigma_down, then `renoise` to sigma_t's signal and
noise levels), where ComfyUI adds the VE noise, which does not keep the flow marginals.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import torch
from torch import Tensor

from samplers._math import int_option, real_option
from samplers.noise import CellNoise
from samplers.parametrisation import AncestralStep, Parametrisation, apply_step
from samplers.protocol import NonFiniteError
from samplers.registry import SamplerOptionError, register

# A run of "DPM adaptive" that needs more model calls than this is stuck
# (tolerance far too tight, or a denoiser too rough for the error estimate).
MAX_ADAPTIVE_CALLS = 10_000


class StepBudgetError(RuntimeError):
    """DPM adaptive could not reach sigma_min within MAX_ADAPTIVE_CALLS model calls."""


def _sigma(lam: float) -> float:
    return math.exp(-lam)


def _lam(sigma: float) -> float:
    return -math.log(sigma)


def _ends(sigmas: Tensor) -> tuple[float, float]:
    """(sigma_min, sigma_max): the smallest positive sigma and sigmas[0]."""
    positive = sigmas[sigmas > 0]
    return float(positive.min()), float(sigmas[0])


def _eps_at(x: Tensor, lam: float) -> Generator[tuple[Tensor, float], Tensor, Tensor]:
    """One model call at lambda, returned as the noise prediction eps."""
    sigma = _sigma(lam)
    denoised = yield x, sigma
    return (x - denoised) / sigma


def solver_step(x: Tensor, eps_s: Tensor, lam_s: float, lam_t: float, order: int
                ) -> Generator[tuple[Tensor, float], Tensor, tuple[Tensor, Tensor | None]]:
    """One DPM-Solver step of `order` (1-3) from lambda_s to lambda_t.

    Returns (x_t, x_embedded): the order-`order` result and the embedded
    lower-order one that shares its model calls (order 2: DPM-Solver-1; order 3:
    DPM-Solver-2 with r1 = 1/3, as the paper's adaptive solver pairs them), or
    None for order 1. eps_s is the model's eps at (x, lambda_s), already paid for.
    """
    h = lam_t - lam_s
    sigma_t = _sigma(lam_t)
    first = x - sigma_t * math.expm1(h) * eps_s
    if order == 1:
        return first, None
    r1 = 0.5 if order == 2 else 1.0 / 3.0
    lam_1 = lam_s + r1 * h
    u1 = x - _sigma(lam_1) * math.expm1(r1 * h) * eps_s
    eps_1 = yield from _eps_at(u1, lam_1)
    d1 = eps_1 - eps_s
    # Algorithm 1, second line, for general r1.
    second = first - sigma_t / (2 * r1) * math.expm1(h) * d1
    if order == 2:
        return second, first
    r2 = 2.0 / 3.0
    lam_2 = lam_s + r2 * h
    e2 = math.expm1(r2 * h)
    u2 = x - _sigma(lam_2) * e2 * eps_s - _sigma(lam_2) * (r2 / r1) * (e2 / (r2 * h) - 1) * d1
    eps_2 = yield from _eps_at(u2, lam_2)
    third = first - sigma_t / r2 * (math.expm1(h) / h - 1) * (eps_2 - eps_s)
    return third, second


def fast_orders(calls: int) -> list[int]:
    """The orders of DPM-Solver-fast's steps for a budget of `calls` model calls."""
    steps = calls // 3 + 1
    if calls % 3 == 0:
        return [3] * (steps - 2) + [2, 1]
    return [3] * (steps - 1) + [calls % 3]


def _down(lam_s: float, lam_t: float, lam_end: float, eta: float,
          param: Parametrisation) -> tuple[float, AncestralStep]:
    """Ancestral split of the step lambda_s -> lambda_t, never stepping past lambda_end.

    Returns (lambda to solve to, the re-noising from there to sigma_t's levels).
    """
    sigma_t = _sigma(lam_t)
    if eta == 0:
        return lam_t, AncestralStep(sigma_t, 0.0)
    down = param.ancestral_step(_sigma(lam_s), sigma_t, eta).down
    lam_down = min(lam_end, _lam(down)) if down > 0 else lam_end
    # The noise tops the sample up to sigma_t exactly from where the solve ended.
    return lam_down, param.renoise(_sigma(lam_down), sigma_t)


def _check_noise_options(eta: Any, s_noise: Any) -> tuple[float, float]:
    return real_option("eta", eta), real_option("s_noise", s_noise)


def _denoise_only(x: Tensor, sigma: float) -> Generator[tuple[Tensor, float], Tensor, Tensor]:
    # A schedule with a single positive sigma leaves no interval to integrate;
    # spend one call on the denoised estimate rather than return pure noise.
    denoised = yield x, sigma
    return denoised


@register(
    "DPM fast", kind="ancestral", calls_per_step=1, default_schedule=None, uses_schedule=False,
    description="DPM-Solver with fixed 3rd-order steps evenly spaced in log-sigma between the "
                "schedule's largest and smallest sigma; the step count is its model-call budget. "
                "Adds fresh noise each step (eta) and stops at the smallest sigma.",
)
def dpm_fast(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
             eta: float = 1.0, s_noise: float = 1.0
             ) -> Generator[tuple[Tensor, float], Tensor, Tensor]:
    """DPM-Solver-fast with len(sigmas) - 1 model calls from sigmas[0] to sigma_min."""
    eta, s_noise = _check_noise_options(eta, s_noise)
    sigma_min, sigma_max = _ends(sigmas)
    if sigma_min >= sigma_max:
        return (yield from _denoise_only(x, sigma_max))
    orders = fast_orders(len(sigmas) - 1)
    lam_start, lam_end = _lam(sigma_max), _lam(sigma_min)
    width = (lam_end - lam_start) / len(orders)
    for i, order in enumerate(orders):
        lam_s = lam_start + i * width
        lam_t = lam_end if i == len(orders) - 1 else lam_start + (i + 1) * width
        lam_down, renoise = _down(lam_s, lam_t, lam_end, eta, param)
        eps_s = yield from _eps_at(x, lam_s)
        x, _ = yield from solver_step(x, eps_s, lam_s, lam_down, order)
        x = apply_step(x, renoise, noise.gaussian, s_noise)
    return x


class PIDController:
    """PID step-size control (Soderlind 2003) on the inverse error, as a filter.

    factor = (1/e_n)^b1 (1/e_{n-1})^b2 (1/e_{n-2})^b3, softened by the limiter
    1 + atan(factor - 1); the attempt is accepted when factor >= accept_safety,
    and h *= factor either way (a rejected attempt retries with the smaller h).
    With b1 = 1/k alone this is the paper's h <- h * E^(-1/k).
    """

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float,
                 accept_safety: float) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.inv_errors: list[float] = []

    def propose(self, error: float) -> bool:
        """Update h from this attempt's scaled error; True if the attempt is accepted."""
        inv = 1.0 / (error + 1e-8)
        if not self.inv_errors:
            self.inv_errors = [inv, inv, inv]
        self.inv_errors[0] = inv
        e0, e1, e2 = self.inv_errors
        factor = 1.0 + math.atan(e0**self.b1 * e1**self.b2 * e2**self.b3 - 1.0)
        accept = factor >= self.accept_safety
        if accept:
            self.inv_errors = [e0, e0, e1]
        self.h *= factor
        return accept


def _scaled_error(x_low: Tensor, x_high: Tensor, x_prev: Tensor, rtol: float, atol: float) -> float:
    """RMS of (x_high - x_low) / max(atol, rtol * max(|x_low|, |x_prev|)) over the whole batch."""
    tol = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
    return float(torch.linalg.vector_norm((x_low - x_high) / tol) / math.sqrt(x_low.numel()))


def _check_adaptive(order: Any, rtol: Any, atol: Any, h_init: Any,
                    accept_safety: Any) -> tuple[int, float, float, float, float]:
    checked = []
    for name, value in (("rtol", rtol), ("atol", atol), ("h_init", h_init),
                        ("accept_safety", accept_safety)):
        v = real_option(name, value)
        if v <= 0:
            raise SamplerOptionError(f"option {name} must be > 0, got {value!r}")
        checked.append(v)
    return (int_option("order", order, minimum=2, maximum=3), *checked)


@register(
    "DPM adaptive", kind="ancestral", calls_per_step=3, default_schedule=None, uses_steps=False,
    uses_schedule=False,
    description="DPM-Solver that chooses its own step sizes to meet an error tolerance between the "
                "schedule's largest and smallest sigma; it ignores the step count and schedule "
                "type, and usually costs the most model calls.",
)
def dpm_adaptive(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
                 order: int = 3,
                 rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                 pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                 accept_safety: float = 0.81, eta: float = 1.0, s_noise: float = 1.0,
                 ) -> Generator[tuple[Tensor, float], Tensor, Tensor]:
    """Adaptive DPM-Solver from sigmas[0] to sigma_min.

    calls_per_step 3 is nominal (one order-3 attempt); the real number of
    calls depends on the tolerance and the model, capped at MAX_ADAPTIVE_CALLS.
    """
    order, rtol, atol, h_init, accept_safety = _check_adaptive(order, rtol, atol, h_init,
                                                               accept_safety)
    coeffs = [real_option(n, v, minimum=-math.inf)
              for n, v in (("pcoeff", pcoeff), ("icoeff", icoeff), ("dcoeff", dcoeff))]
    eta, s_noise = _check_noise_options(eta, s_noise)
    sigma_min, sigma_max = _ends(sigmas)
    if sigma_min >= sigma_max:
        return (yield from _denoise_only(x, sigma_max))
    # With fresh noise the embedded estimate is only ~order 1.5 accurate (k-diffusion's choice).
    pid = PIDController(h_init, *coeffs, 1.5 if eta else order, accept_safety)
    return (yield from _adaptive_loop(x, _lam(sigma_max), _lam(sigma_min), pid, noise, param,
                                      order, rtol, atol, eta, s_noise))


def _adaptive_loop(x: Tensor, lam_s: float, lam_end: float, pid: PIDController,
                   noise: CellNoise, param: Parametrisation, order: int, rtol: float, atol: float,
                   eta: float, s_noise: float) -> Generator[tuple[Tensor, float], Tensor, Tensor]:
    """Attempt steps of size pid.h until lambda reaches lambda_end (within 1e-5)."""
    x_prev, eps_s, calls = x, None, 0
    while lam_s < lam_end - 1e-5:
        lam_t = min(lam_end, lam_s + pid.h)
        lam_down, renoise = _down(lam_s, lam_t, lam_end, eta, param)
        if eps_s is None:
            # A rejected attempt restarts from the same (x, lambda_s): reuse its eps.
            eps_s = yield from _eps_at(x, lam_s)
            calls += 1
        x_high, x_low = yield from solver_step(x, eps_s, lam_s, lam_down, order)
        calls += order - 1
        error = _scaled_error(x_low, x_high, x_prev, rtol, atol)
        if not math.isfinite(error):
            raise NonFiniteError(f"DPM adaptive: the step from sigma={_sigma(lam_s):.4g} "
                                 "produced NaN or inf")
        if pid.propose(error):
            x_prev, x, lam_s, eps_s = x_low, x_high, lam_t, None
            x = apply_step(x, renoise, noise.gaussian, s_noise)
        if calls >= MAX_ADAPTIVE_CALLS and lam_s < lam_end - 1e-5:
            raise StepBudgetError(
                f"DPM adaptive did not reach sigma={_sigma(lam_end):.4g} within "
                f"{MAX_ADAPTIVE_CALLS} model calls (stuck at sigma={_sigma(lam_s):.4g}); "
                f"loosen rtol/atol (now {rtol:g}/{atol:g}), or the model's estimates are "
                "too erratic for step-size control")
    return x
