"""Euler, Euler a and Heun: the first- and second-order samplers of Karras et al. 2022.

All three integrate the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
(Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", eq. 3 with sigma(t) = t, s(t) = 1).

- "Euler": the explicit Euler step of that ODE, with the optional "churn" of
  Algorithm 2 (lines 4-6; see `samplers._math.Churn`).
- "Heun": Algorithm 2 in full, the trapezoidal (Heun) correction of lines 9-11;
  the last step to sigma = 0 is a plain Euler step (line 8's condition), since
  the derivative at sigma = 0 is undefined.
- "Euler a": Euler ancestral. Each step goes down to sigma_down by an Euler
  step, then fresh Gaussian noise of size sigma_up is added
  (`samplers._math.ancestral_step`), the sigma form of ancestral sampling in
  Song et al. 2021, "Score-Based Generative Modeling through Stochastic
  Differential Equations", and the DDPM posterior of Ho et al. 2020 eq. 7.

On flow models (`samplers.parametrisation`) Euler and Heun integrate the same ODE unchanged;
Euler a takes ComfyUI's rectified-flow ancestral step (`Parametrisation.ancestral_step`), and
churn raises the noise level in VE-equivalent sigma (`samplers._math.Churn`).
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


def euler_step(x: Tensor, denoised: Tensor, sigma: float, sigma_to: float) -> Tensor:
    """One explicit Euler step of the PF-ODE from sigma to sigma_to (Karras 2022 Alg. 2 lines 7-8)."""
    d = (x - denoised) / sigma
    return x + d * (sigma_to - sigma)


@register(
    "Euler", kind="deterministic", calls_per_step=1, default_schedule="Uniform",
    description="The simplest solver: one straight step along the denoising direction per model "
                "call. First order, so it needs many steps; s_churn > 0 adds fresh noise.",
)
def euler(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
          s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
          s_noise: float = 1.0) -> SamplerGenerator:
    """Euler (Karras et al. 2022, Algorithm 2 without the Heun correction)."""
    churn = Churn.checked(s_churn, s_tmin, s_tmax, s_noise, steps=len(sigmas) - 1)
    return _euler(x, sigmas.tolist(), noise, param, churn)


def _euler(x: Tensor, sig: list[float], noise: CellNoise, param: Parametrisation,
           churn: Churn) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        x, s_hat = churn.apply(x, s, noise, param)
        denoised = yield x, s_hat
        x = euler_step(x, denoised, s_hat, s_next)
    return x


@register(
    "Euler a", kind="ancestral", calls_per_step=1, default_schedule="Uniform",
    description="Euler with fresh random noise added after every step. It never settles on one "
                "image: more steps give a different picture, not a sharper one.",
)
def euler_ancestral(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
                    eta: float = 1.0, s_noise: float = 1.0) -> SamplerGenerator:
    """Euler ancestral: Euler step to sigma_down, then add s_noise * sigma_up * N(0, I)
    (on flow models scaled to sigma_next's signal level first: the RF step)."""
    eta_v = real_option("eta", eta)
    s_noise_v = real_option("s_noise", s_noise)
    return euler_ancestral_steps(x, sigmas.tolist(), noise, param, eta_v, s_noise_v)


def euler_ancestral_steps(x: Tensor, sig: list[float], noise: CellNoise, param: Parametrisation,
                          eta: float, s_noise: float) -> SamplerGenerator:
    """The Euler ancestral loop (also DDIM's: with eta 0 it is Euler exactly)."""
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        step = param.ancestral_step(s, s_next, eta)
        x = euler_step(x, denoised, s, step.down)
        x = apply_step(x, step, noise.gaussian, s_noise)
    return x


@register(
    "Heun", kind="deterministic", calls_per_step=2, default_schedule="Uniform",
    description="Second-order solver: an Euler step, then a correction using the slope at its end "
                "(two model calls per step). Much more accurate per step than Euler.",
)
def heun(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
         s_noise: float = 1.0) -> SamplerGenerator:
    """Heun (Karras et al. 2022, Algorithm 2); 2 calls per step, 1 on a last step to sigma 0."""
    churn = Churn.checked(s_churn, s_tmin, s_tmax, s_noise, steps=len(sigmas) - 1)
    return _heun(x, sigmas.tolist(), noise, param, churn)


def _heun(x: Tensor, sig: list[float], noise: CellNoise, param: Parametrisation,
          churn: Churn) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        x, s_hat = churn.apply(x, s, noise, param)
        x = yield from heun_step(x, s_hat, s_next)
    return x


def heun_step(x: Tensor, sigma: float, sigma_next: float) -> SamplerGenerator:
    """One Heun step (Karras et al. 2022, Algorithm 2 lines 7-11) from sigma to sigma_next;
    a step to sigma 0 stops at the Euler step (line 8), the slope there being undefined."""
    denoised = yield x, sigma
    d = (x - denoised) / sigma
    x_euler = x + d * (sigma_next - sigma)
    if sigma_next == 0:
        return x_euler
    denoised_next = yield x_euler, sigma_next
    d_next = (x_euler - denoised_next) / sigma_next
    return x + (d + d_next) * (0.5 * (sigma_next - sigma))
