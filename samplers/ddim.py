"""DDIM and DDPM: the two samplers of the discrete-time diffusion papers, in sigma form.

This module owns "DDIM" (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit
Models") and "DDPM" (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic
Models"), rewritten for the variance-exploding parametrisation x = data + sigma * eps
that every sampler here uses.

The papers work in the variance-preserving parametrisation
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
Dividing by sqrt(abar_t) gives x = x_t / sqrt(abar_t) = x0 + sigma eps with
sigma^2 = (1 - abar_t) / abar_t, i.e. abar = 1 / (1 + sigma^2). Both samplers are
then written with sigma (this step's noise level), sigma' (the next one),
D = D(x; sigma) (the denoised estimate, the papers' predicted x0) and
eps = (x - D) / sigma (the papers' predicted noise).

Flow models: DDIM is Euler ancestral with DDIM's eta (`samplers.euler`), on VE as on flow, so
there it takes the rectified-flow ancestral step and eta = 0 is flow Euler exactly (ComfyUI's
"ddim" is Euler). DDPM's posterior is derived for flow in VE-equivalent coordinates:
x / alpha = x0 + (sigma / alpha) eps is a VE process with the same x0, so the exact posterior
of the flow process is the VE posterior of x / alpha, scaled by alpha at the next sigma
(`samplers.parametrisation.in_ve_coordinates`; ComfyUI applies the VP alpha_cumprod step to
flow latents unchanged, which does not keep their marginals).
"""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor

from samplers._math import real_option
from samplers.euler import euler_ancestral_steps
from samplers.noise import CellNoise
from samplers.parametrisation import Parametrisation
from samplers.protocol import SamplerGenerator
from samplers.registry import register


@register(
    "DDIM",
    kind="deterministic",
    calls_per_step=1,
    default_schedule="DDIM",
    description=(
        "Denoising Diffusion Implicit Models: a first-order step that moves along the "
        "predicted noise direction. With eta 0 (the default) it is deterministic and equals "
        "Euler; eta > 0 mixes in fresh noise, eta 1 is DDPM."
    ),
)
def ddim(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
         eta: float = 0.0) -> SamplerGenerator:
    """DDIM, Song et al. 2021, eq. 12 with sigma_t(eta) from eq. 16, in sigma form.

    Eq. 12 divided by sqrt(abar_{t-1}) reads
        x' = D + sqrt(sigma'^2 - up^2) eps + up z,
        up^2 = sigma_t(eta)^2 / abar_{t-1} = eta^2 sigma'^2 (sigma^2 - sigma'^2) / sigma^2,
    which is the ancestral split (sigma_down, sigma_up) of `samplers._math`. For
    eta > 1 eq. 12 has no real solution; `up` is capped at sigma' (as A1111's
    ancestral samplers do), which leaves eta <= 1 unchanged.

    With eta = 0: x' = x + eps (sigma' - sigma), exactly an Euler step of the
    probability-flow ODE dx/dsigma = eps (Karras et al. 2022, eq. 3). Eta > 0
    draws one fresh Gaussian per step (none on a final step to sigma' = 0). The update
    x + eps (down - sigma) is Euler ancestral's, and is run by its loop, so eta = 0 is the
    Euler step bit for bit (down is then exactly sigma').
    """
    eta_value = real_option("eta", eta)
    return euler_ancestral_steps(x, sigmas.tolist(), noise, param, eta_value, 1.0)


@register(
    "DDPM",
    kind="ancestral",
    calls_per_step=1,
    default_schedule="DDIM",
    flow="ve-coordinates",
    description=(
        "Denoising Diffusion Probabilistic Models: each step draws the next sample from the "
        "exact Gaussian posterior given the denoised estimate. Adds fresh noise every step, "
        "so it needs many steps and never settles on one image."
    ),
)
def ddpm(x: Tensor, sigmas: Tensor, noise: CellNoise, *, s_noise: float = 1.0) -> SamplerGenerator:
    """DDPM ancestral sampling, Ho et al. 2020, Algorithm 2 with the posterior of eqs. 6-7.

    The posterior q(x_{t-1} | x_t, x0) of eqs. 6-7, taken between any two noise
    levels sigma > sigma' and written for x = x0 + sigma eps: x at sigma' is
    x0 + sigma' e1 and x at sigma adds independent noise of variance
    sigma^2 - sigma'^2, so by Gaussian conditioning
        mean = x0 + (sigma'^2 / sigma^2) (x - x0),
        var  = sigma'^2 (sigma^2 - sigma'^2) / sigma^2   (beta_tilde, in sigma form),
    with x0 replaced by the denoised estimate D. This equals DDIM with eta = 1.
    s_noise scales the drawn noise (1 = the posterior's own variance).
    """
    s_noise_value = real_option("s_noise", s_noise)
    return _ddpm_steps(x, sigmas.tolist(), noise, s_noise_value)


def _ddpm_steps(x: Tensor, sig: list[float], noise: CellNoise, s_noise: float) -> SamplerGenerator:
    for sigma, sigma_next in pairwise(sig):
        denoised = yield x, sigma
        ratio = sigma_next**2 / sigma**2
        x = denoised + (x - denoised) * ratio
        if sigma_next > 0:
            std = (sigma_next**2 * (sigma**2 - sigma_next**2)) ** 0.5 / sigma
            x = x + noise.gaussian(x) * (s_noise * std)
    return x
