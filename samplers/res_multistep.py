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

ComfyUI's variants, in the same module because they are the same step:

- "res_multistep_ancestral": each step goes to sigma_down and adds fresh noise
  sigma_up (`samplers._math.ancestral_step`, eta 1), the ancestral split of Song et al.
  2021 ("Score-Based Generative Modeling through SDEs"). As in ComfyUI, the previous
  estimate's relative position is c = (lambda(sigma_down_{i-1}) - lambda(sigma_{i-1})) / h
  with h = lambda(sigma_down_i) - lambda(sigma_i), the previous step's deterministic
  length; at eta 0 this is exactly res_multistep.
- "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp": CFG++ (Chung et al. 2024,
  "CFG++", Algorithm 1; see samplers/cfg_pp.py): x is shifted by D_g - D_u and the step
  interpolates the unconditional estimates D_u,i and D_u,i-1; the first-order step is
  D_g + sigma_down (x - D_u) / sigma.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers._math import ancestral_step, real_option
from samplers.noise import CellNoise
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
    # the ancestral form at eta 0 is this sampler, so the two agree bit for bit
    return _res_ancestral(x, sigmas.tolist(), None, 0.0, 0.0, cfg_pp=False)


@register(
    "res_multistep_ancestral", kind="ancestral", calls_per_step=1, default_schedule="Karras",
    flow="ve-coordinates",
    description="res_multistep with fresh random noise after every step (ComfyUI's "
                "res_multistep_ancestral): never settles on one image; one call per step.",
)
def res_multistep_ancestral(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                            s_noise: float = 1.0) -> SamplerGenerator:
    """RES multistep to sigma_down, then s_noise * sigma_up * N(0, I); eta 0 is res_multistep."""
    return _res_ancestral(x, sigmas.tolist(), noise, real_option("eta", eta),
                          real_option("s_noise", s_noise), cfg_pp=False)


@register(
    "res_multistep_cfg_pp", kind="deterministic", calls_per_step=1, default_schedule="Karras",
    cfg_pp=True, flow="ve-coordinates",
    description="res_multistep with CFG++ guidance (ComfyUI's res_multistep_cfg_pp). Use cfg about "
                "1-2; 2 model rows per call even at cfg 1.",
)
def res_multistep_cfg_pp(x: Tensor, sigmas: Tensor) -> SamplerGenerator:
    """RES multistep with CFG++ (module docstring); receives (guided, uncond) pairs."""
    return _res_ancestral(x, sigmas.tolist(), None, 0.0, 0.0, cfg_pp=True)


@register(
    "res_multistep_ancestral_cfg_pp", kind="ancestral", calls_per_step=1, default_schedule="Karras",
    cfg_pp=True, flow="ve-coordinates",
    description="res_multistep_ancestral with CFG++ guidance. Use cfg about 1-2; 2 model rows per "
                "call even at cfg 1.",
)
def res_multistep_ancestral_cfg_pp(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                                   s_noise: float = 1.0) -> SamplerGenerator:
    """RES multistep ancestral with CFG++ (module docstring)."""
    return _res_ancestral(x, sigmas.tolist(), noise, real_option("eta", eta),
                          real_option("s_noise", s_noise), cfg_pp=True)


def _res_ancestral(x: Tensor, sig: list[float], noise: CellNoise | None, eta: float, s_noise: float,
                   cfg_pp: bool) -> SamplerGenerator:
    old: Tensor | None = None  # the previous D (D_u for CFG++)
    h_prev = 0.0  # the previous step's length to its sigma_down, in lambda
    for s, s_next in pairwise(sig):
        answer = yield x, s
        guided, uncond = answer if cfg_pp else (answer, answer)
        down, up = ancestral_step(s, s_next, eta)
        if down == 0 or old is None:
            x = guided + (x - uncond) * (down / s)  # Euler to sigma_down (CFG++: from D_g)
        else:
            h = math.log(s / down)
            b1, b2 = res_weights(h, h_prev)
            shifted = x + (guided - uncond) if cfg_pp else x
            x = shifted * (down / s) + (uncond * b1 + old * b2) * h
        if s_next > 0 and up > 0 and s_noise > 0 and noise is not None:
            x = x + noise.gaussian(x) * (s_noise * up)
        if down > 0:
            h_prev = math.log(s / down)
        old = uncond
    return x
