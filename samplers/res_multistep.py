"""res_multistep: the second-order multistep "Refined Exponential Solver" on the data prediction.

This module owns "res_multistep" (Zhang, Song & Chen 2023, "Improved Order
Analysis and Design of Exponential Integrator for Diffusion Models",
arXiv:2308.02157 — RES, the refined exponential solver; its multistep form is
the exponential Adams method of Hochbruck & Ostermann 2010, "Exponential
integrators", Acta Numerica, section 2.5 and the phi functions of section 2.1).

In lambda = -log(sigma) the probability-flow ODE for x in the variance-
exploding form, dx/dsigma = (x - D) / sigma, reads dx/dlambda = D - x: linear
in x, so the step from lambda to lambda + h can be written exactly as

    x_next = e^-h x + h * integral_0^1 e^(-h (1 - u)) D(lambda + u h) du.

RES replaces D by its linear interpolation through the current estimate D_i
and the previous one D_{i-1}, which sits at relative position c = -h_prev / h
(h_prev the previous step's length in lambda). With phi_1(-h) = (1 - e^-h) / h
and phi_2(-h) = (h - 1 + e^-h) / h^2 the step is

    x_next = (sigma_next / sigma) x + h (b_1 D_i + b_2 D_{i-1}),
    b_2 = phi_2(-h) / c,   b_1 = phi_1(-h) - b_2,

second order on any step sizes. The first step (no D_{i-1} yet) and the step
to sigma = 0 are the first-order exponential step, which in sigma form is
Euler's x + (sigma_next - sigma) (x - D) / sigma; ComfyUI's "res_multistep"
does the same, deterministic (no noise), one model call per step.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers.protocol import SamplerGenerator
from samplers.registry import register


def res_weights(h: float, h_prev: float) -> tuple[float, float]:
    """(b_1, b_2), the weights of D_i and D_{i-1} (times h) for steps h, h_prev in lambda."""
    phi1 = -math.expm1(-h) / h
    # h + expm1(-h) = h - 1 + e^-h without the cancellation of "- 1 + e^-h".
    phi2 = (h + math.expm1(-h)) / (h * h)
    c = -h_prev / h
    b2 = phi2 / c
    return phi1 - b2, b2


@register(
    "res_multistep", kind="deterministic", calls_per_step=1, default_schedule="Karras",
    description="Refined exponential solver, multistep form: a second-order step built from the "
                "current and previous model outputs, one call per step.",
)
def res_multistep(x: Tensor, sigmas: Tensor) -> SamplerGenerator:
    """RES second-order multistep (first step and the step to 0 first order); 1 call per step."""
    return _res_multistep(x, sigmas.tolist())


def _res_multistep(x: Tensor, sig: list[float]) -> SamplerGenerator:
    old_denoised: Tensor | None = None
    h_prev = 0.0
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        if s_next == 0 or old_denoised is None:
            x = x + (x - denoised) / s * (s_next - s)
        else:
            h = math.log(s / s_next)
            b1, b2 = res_weights(h, h_prev)
            x = x * (s_next / s) + (denoised * b1 + old_denoised * b2) * h
        if s_next > 0:
            h_prev = math.log(s / s_next)
        old_denoised = denoised
    return x
