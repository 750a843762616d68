"""DPM2 and DPM2 a: second-order midpoint samplers with the midpoint in log-sigma.

Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithm 2 with the Heun correction
replaced by a midpoint rule placed as DPM-Solver-2 places it (Lu, Zhou, Bao,
Chen, Li, Zhu 2022, "DPM-Solver: A Fast Dedicated ODE Solver for Diffusion
Probabilistic Model Sampling", Algorithm 1 with r1 = 1/2, halfway in
log-sigma; here with a plain, not exponential, update): evaluate the PF-ODE slope
(x - D(x; sigma)) / sigma at the geometric-mean sigma
    sigma_mid = exp((log sigma + log sigma_next) / 2)
after an Euler half step, and take the full step with that slope. A last step
to sigma = 0 is a plain Euler step (log 0 has no midpoint).

"DPM2 a" is its ancestral form: split each step into sigma_down and sigma_up
(`samplers._math.ancestral_step`), take the DPM2 step to sigma_down, then add
s_noise * sigma_up * N(0, I).

Both discard the penultimate sigma under "Automatic", as A1111 does: the last
midpoint step from the smallest sigma is the noisy one.

On flow models DPM2 is unchanged (it integrates the same ODE, with the midpoint still in
log-sigma, as ComfyUI's) and DPM2 a takes the rectified-flow ancestral step
(`Parametrisation.ancestral_step`), as ComfyUI's dpm_2_ancestral_RF does.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers._math import Churn, real_option
from samplers.noise import CellNoise
from samplers.parametrisation import Parametrisation, apply_step
from samplers.protocol import SamplerGenerator
from samplers.registry import register


def log_midpoint(sigma: float, sigma_to: float) -> float:
    """The midpoint of [sigma_to, sigma] in log-sigma: their geometric mean."""
    return math.exp((math.log(sigma) + math.log(sigma_to)) / 2)


def _dpm2_step(x: Tensor, d: Tensor, sigma: float, sigma_to: float) -> SamplerGenerator:
    """From x at sigma with slope d, step to sigma_to (1 more call; Euler when sigma_to is 0)."""
    if sigma_to == 0:
        return x + d * (sigma_to - sigma)
    sigma_mid = log_midpoint(sigma, sigma_to)
    x_mid = x + d * (sigma_mid - sigma)
    denoised_mid = yield x_mid, sigma_mid
    d_mid = (x_mid - denoised_mid) / sigma_mid
    return x + d_mid * (sigma_to - sigma)


@register(
    "DPM2", kind="deterministic", calls_per_step=2, default_schedule="Karras",
    discard_penultimate=True,
    description="Second-order solver that re-measures the denoising direction halfway (in log "
                "noise level) through each step; two model calls per step.",
)
def dpm2(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
         s_noise: float = 1.0) -> SamplerGenerator:
    """DPM2: Karras 2022 Algorithm 2 (with churn) using a log-sigma midpoint step."""
    churn = Churn.checked(s_churn, s_tmin, s_tmax, s_noise, steps=len(sigmas) - 1)
    return _dpm2(x, sigmas.tolist(), noise, param, churn)


def _dpm2(x: Tensor, sig: list[float], noise: CellNoise, param: Parametrisation,
          churn: Churn) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        x, s_hat = churn.apply(x, s, noise, param)
        denoised = yield x, s_hat
        x = yield from _dpm2_step(x, (x - denoised) / s_hat, s_hat, s_next)
    return x


@register(
    "DPM2 a", kind="ancestral", calls_per_step=2, default_schedule="Karras",
    discard_penultimate=True,
    description="DPM2 with fresh random noise added after every step: varied, 'creative' images "
                "that change with the step count; two model calls per step.",
)
def dpm2_ancestral(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
                   eta: float = 1.0, s_noise: float = 1.0) -> SamplerGenerator:
    """DPM2 ancestral: DPM2 step to sigma_down, then add s_noise * sigma_up * N(0, I)."""
    eta_v = real_option("eta", eta)
    s_noise_v = real_option("s_noise", s_noise)
    return _dpm2_ancestral(x, sigmas.tolist(), noise, param, eta_v, s_noise_v)


def _dpm2_ancestral(x: Tensor, sig: list[float], noise: CellNoise, param: Parametrisation,
                    eta: float, s_noise: float) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        step = param.ancestral_step(s, s_next, eta)
        x = yield from _dpm2_step(x, (x - denoised) / s, s, step.down)
        x = apply_step(x, step, noise.gaussian, s_noise)
    return x
