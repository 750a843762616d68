"""ER-SDE: the extended reverse-time SDE solver (ER-SDE-Solver-3), noise from the Brownian path.

This module owns "ER-SDE" (Cui, Zhang, Lu & Liao 2023, "Elucidating the
Solution Space of Extended Reverse-Time SDE for Diffusion Models",
arXiv:2309.06169), in its variance-exploding form with the noise-scale
function the authors' code (and ComfyUI's "er_sde") uses by default,

    phi(sigma) = sigma (exp(sigma^0.3) + 10).

The extended reverse-time SDE in sigma is dx = (phi'/phi)(x - D) dsigma plus
Brownian noise whose size makes every member of the family share the data's
noised marginals; phi(sigma) = sigma is the probability-flow ODE, larger
phi'/phi means more noise. Its solution from sigma to sigma_next < sigma is

    x_next = r x - phi(sigma_next) * integral_sigma^sigma_next (phi'/phi^2) D dsigma'
             + sqrt(sigma_next^2 - r^2 sigma^2) z,        r = phi(sigma_next) / phi(sigma).

ER-SDE-Solver-3 expands D(sigma') = D + (sigma' - sigma) D' + (sigma' - sigma)^2 / 2 D''
and integrates term by term (by parts), giving the three stages

    stage 1: r x + (1 - r) D
    stage 2: + (dt + phi(sigma_next) S_1) D',         S_1 = int_{sigma_next}^{sigma} dsigma' / phi
    stage 3: + (dt^2 / 2 + phi(sigma_next) S_2) D'',  S_2 = int_{sigma_next}^{sigma} (sigma' - sigma) / phi

(dt = sigma_next - sigma), with D' and D'' estimated by backward divided
differences of the previous model outputs, D' = (D_i - D_{i-1}) / (sigma_i -
sigma_{i-1}) and D'' = (D'_i - D'_{i-1}) / ((sigma_i - sigma_{i-2}) / 2), as
the paper and ComfyUI do. Stage k is used once k model outputs exist
(max_stage caps it); the step to sigma = 0 returns the denoised estimate.
ComfyUI integrates S_1, S_2 with a 200-point Riemann sum (0.1% to 1% off);
here a 16-point Gauss-Legendre rule in log sigma gives them to machine
precision. The results differ by about 3e-4 RMS on data of scale 1 at 20
Karras steps, a hundredth of what changing the step count does.

Noise: ComfyUI draws fresh Gaussian noise per step. Following this library's
rule for SDE samplers, z here is the normalised increment of the cell's
Brownian path (`CellNoise.brownian`), scaled by s_noise, so runs at different
step counts see one noise path. With s_noise = 0 no noise is drawn and the
sampler is deterministic, but note it then solves the drift of the SDE, not
the probability-flow ODE: its samples come out too smooth (under-dispersed);
eta = 0 (below) is the noise-free sampler that solves the ODE.
Measured against that drift's exact solution it is second order (the
backward differences for D', D'' are only first-order accurate), stage 1
alone first order.

eta: how far along the family of extended reverse-time SDEs to go. The paper
parametrises every member by its noise-scale function phi (the exact VE
solution above holds for any phi with phi(sigma)/sigma non-decreasing, which
keeps the noise variance sigma_next^2 - r^2 sigma^2 non-negative, and the
stage terms above follow from it for any phi by the same integration by
parts) and names the two ends: phi(sigma) = sigma is the probability-flow
ODE (r = sigma_next / sigma, no noise: stage 1 is DDIM's step) and
phi(sigma) = sigma^2 the reverse-time SDE (noise variance
sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2, the DDPM posterior's).
Here eta blends the default phi toward the ODE's geometrically,

    phi_eta(sigma) = sigma * (exp(sigma^0.3) + 10)^eta,

so eta = 1 is the default phi above (bit for bit the same run), eta = 0 is
the noise-free ER ODE (the probability-flow ODE, solved with the same three
stages; no noise is drawn); the same blend of sigma and the paper's
sigma^2 would be sigma^(1 + eta), from the ODE to the reverse-time SDE.
phi_eta(sigma) / sigma = g^eta with g increasing, so every
eta >= 0 is a valid member (eta > 1 adds more noise than the default). The
stage integrals S_1, S_2 use phi_eta, and phi_eta(sigma_next) multiplies them.

Flow models: the solver runs in VE-equivalent coordinates
(`samplers.parametrisation.in_ve_coordinates`), i.e. in sigma / alpha, ComfyUI's
"er_lambda", with x / alpha and the first sigma moved off 1, as ComfyUI's er_sde does.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers._math import gauss_legendre, int_option, real_option
from samplers.noise import CellNoise
from samplers.protocol import SamplerGenerator
from samplers.registry import register

MAX_STAGE = 3


def noise_scale(sigma: float, eta: float = 1.0) -> float:
    """The noise-scale function phi_eta(sigma) = sigma (exp(sigma^0.3) + 10)^eta (eta 1: the default)."""
    if eta == 1.0:
        return sigma * (math.exp(sigma**0.3) + 10.0)
    return sigma * (math.exp(sigma**0.3) + 10.0) ** eta


def stage_integrals(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(S_1, S_2): integrals over [sigma_next, sigma] of 1/phi_eta and (sigma' - sigma)/phi_eta.

    Taken in u = log sigma', where sigma'/phi_eta(sigma') = (exp(sigma'^0.3) + 10)^-eta
    is smooth and bounded, so a short Gauss-Legendre rule is exact to rounding.
    """
    s1 = s2 = 0.0
    for u, w in gauss_legendre(math.log(sigma_next), math.log(sigma)):
        s = math.exp(u)
        # = w * s / phi_eta(s), the Jacobian ds = s du included
        f = w / (math.exp(s**0.3) + 10.0) if eta == 1.0 else w * (math.exp(s**0.3) + 10.0) ** -eta
        s1 += f
        s2 += f * (s - sigma)
    return s1, s2


@register(
    "ER-SDE", kind="sde", calls_per_step=1, default_schedule="Karras", flow="ve-coordinates",
    description="Extended reverse-time SDE solver with a three-stage update, one call per step. Adds "
                "noise along one fixed random path, so images stay similar as steps change.",
)
def er_sde(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0, s_noise: float = 1.0,
           max_stage: int = 3) -> SamplerGenerator:
    """ER-SDE-Solver-3 (stages up to max_stage, 1..3) with Brownian noise times s_noise.

    eta picks the noise-scale function phi_eta (module docstring): 1 the default ER-SDE,
    0 the noise-free probability-flow ODE (Cui et al. 2023, arXiv:2309.06169).
    """
    eta_v = real_option("eta", eta)
    s_noise_v = real_option("s_noise", s_noise)
    stages = int_option("max_stage", max_stage, minimum=1, maximum=MAX_STAGE)
    return _er_sde(x, sigmas.tolist(), noise, s_noise_v, stages, eta_v)


def _er_sde(x: Tensor, sig: list[float], noise: CellNoise, s_noise: float,
            max_stage: int, eta: float) -> SamplerGenerator:
    old_denoised: Tensor | None = None
    old_slope: Tensor | None = None  # the previous step's D' estimate
    for i, (s, s_next) in enumerate(pairwise(sig)):
        denoised = yield x, s
        stage = min(max_stage, i + 1)
        if s_next == 0:
            x = denoised
        else:
            r = noise_scale(s_next, eta) / noise_scale(s, eta)
            x = x * r + denoised * (1 - r)
            if stage >= 2:
                x, old_slope = _higher_stages(x, denoised, old_denoised, old_slope, sig, i, stage, eta)
            if s_noise > 0 and eta > 0:
                std = math.sqrt(max(s_next**2 - (r * s) ** 2, 0.0))
                x = x + noise.brownian(s, s_next, x) * (s_noise * std)
        old_denoised = denoised
    return x


def _higher_stages(x: Tensor, denoised: Tensor, old_denoised: Tensor | None,
                   old_slope: Tensor | None, sig: list[float], i: int,
                   stage: int, eta: float) -> tuple[Tensor, Tensor]:
    """Stages 2 and 3 of step i; returns the new x and this step's D' estimate."""
    assert old_denoised is not None  # stage >= 2 means a previous model output exists
    s, s_next = sig[i], sig[i + 1]
    dt = s_next - s
    phi_next = noise_scale(s_next, eta)
    s1, s2 = stage_integrals(s, s_next, eta)
    slope = (denoised - old_denoised) / (s - sig[i - 1])
    x = x + slope * (dt + s1 * phi_next)
    if stage >= 3:
        assert old_slope is not None
        curvature = (slope - old_slope) / ((s - sig[i - 2]) / 2)
        x = x + curvature * (dt * dt / 2 + s2 * phi_next)
    return x, slope
