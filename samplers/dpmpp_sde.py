"""DPM-Solver++ SDE samplers on the cell's Brownian path: "DPM++ SDE", "DPM++ 2M SDE",
"DPM++ 2M SDE Heun" and "DPM++ 3M SDE".

All of them work, as DPM-Solver++ does (Lu, Zhou, Bao, Chen, Li, Zhu 2022,
"DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", arXiv:2211.01095), in lambda = -log(sigma) with the data prediction
D(x; sigma), here in the variance-exploding parametrisation (alpha = 1). Their
noise is read from one seeded Brownian path (`CellNoise.brownian`), so runs at
different step counts see the same noise, sampled more or less finely.

- "DPM++ SDE": DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1) with both of its
  sub-steps made ancestral: each goes to the ancestral sigma_down of its
  target with the first-order data-prediction step, then adds Brownian noise of
  size sigma_up (the DDPM posterior split). The intermediate point sits at
  lambda_s + r h (r = 1/2 by default) and the final update uses
  (1 - 1/(2r)) D_s + 1/(2r) D_mid. The last step to sigma = 0 is an Euler step
  (one model call), which lands on the denoised estimate.
- "DPM++ 2M SDE" / "DPM++ 3M SDE": multistep data-prediction solvers of the
  reverse diffusion SDE: the SDE variant of DPM-Solver++ (Lu et al.'s
  SDE-DPM-Solver++(2M), the exponential integrator of the reverse SDE in data
  prediction; exponential SDE integrators of this kind are analysed by
  Gonzalez, Fernandez, Stange, Eiben 2023, "SEEDS: Exponential SDE Solvers for
  Fast High-Quality Sampling from Diffusion Models"), with k-diffusion's eta
  interpolating between the ODE (eta = 0) and the reverse SDE (eta = 1). With
  h = lambda_next - lambda and H = (1 + eta) h, the linear part of the
  dynamics is integrated exactly,

      x_next = (sigma_next / sigma) e^(-eta h) x + (1 - e^-H) D
               + sigma_next sqrt(1 - e^(-2 eta h)) z,

  and D's variation in lambda is corrected with backward differences of the
  previous model calls: one ("midpoint" 1/2 (1 - e^-H), or "heun"
  1 - (1 - e^-H)/H, as coefficient) for 2M, two for 3M (DPM-Solver++(3M)'s
  phi_2, phi_3 corrections). eta = 0 is the deterministic DPM-Solver++(2M)/(3M);
  eta = 1 is the DDPM-like reverse SDE. The last step to sigma = 0 returns the
  denoised estimate.

  Note on 3M: its second-difference term -phi_3(H) * D2 (D2 ~ h^2 D''/2,
  -phi_3 ~ H/6) is half of what integrating the quadratic interpolant of D
  exactly would give. We keep that coefficient, as DPM-Solver's reference
  code, k-diffusion and A1111 use it, so our numbers match theirs; it makes
  the method second order asymptotically, though much more accurate than 2M
  at practical step counts (tests/test_dpmpp_sde.py measures both).

Flow models: all four run in VE-equivalent coordinates
(`samplers.parametrisation.in_ve_coordinates`): x / alpha at noise level sigma / alpha =
exp(-lambda), with lambda = log((1 - sigma) / sigma), the first sigma moved off 1 as ComfyUI
does. Written out this is ComfyUI's form for its CONST models, e.g. for 2M SDE
x' = (sigma' / sigma) e^(-eta h) x + (1 - sigma') (1 - e^-H) D + ... + sigma' sqrt(1 - e^(-2 eta h)) z.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers._math import ancestral_step, real_option
from samplers.noise import CellNoise
from samplers.protocol import SamplerGenerator
from samplers.registry import SamplerOptionError, register

SOLVER_TYPES = ("midpoint", "heun")


def _ancestral_brownian_step(x: Tensor, denoised: Tensor, sigma: float, sigma_to: float,
                             eta: float, s_noise: float, noise: CellNoise) -> Tensor:
    """First-order data-prediction step to sigma_to's sigma_down, plus Brownian noise of sigma_up."""
    down, up = ancestral_step(sigma, sigma_to, eta)
    ratio = down / sigma
    x = ratio * x + (1 - ratio) * denoised
    if up > 0 and s_noise > 0:
        x = x + noise.brownian(sigma, sigma_to, x) * (s_noise * up)
    return x


@register(
    "DPM++ SDE", kind="sde", calls_per_step=2, default_schedule="Karras", flow="ve-coordinates",
    description="Second-order single-step stochastic solver (two model calls per step). Its noise "
                "follows one fixed random path, so images stay similar as the step count changes.",
)
def dpmpp_sde(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
              s_noise: float = 1.0, r: float = 0.5) -> SamplerGenerator:
    """DPM-Solver++(2S) with ancestral Brownian noise in both sub-steps (see module docstring).

    r is where the intermediate call sits, as a fraction of the step in lambda.
    Two model calls per step; the last step to sigma = 0 makes one.
    """
    eta_v = real_option("eta", eta)
    s_noise_v = real_option("s_noise", s_noise)
    r_v = real_option("r", r)
    if not 0 < r_v < 1:
        raise SamplerOptionError(f"option r must be strictly between 0 and 1, got {r!r}")
    return _dpmpp_sde(x, sigmas.tolist(), noise, eta_v, s_noise_v, r_v)


def _dpmpp_sde(x: Tensor, sig: list[float], noise: CellNoise, eta: float, s_noise: float,
               r: float) -> SamplerGenerator:
    fac = 1 / (2 * r)
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        if s_next == 0:
            # Euler step to sigma 0: x + (x - D) / s * (0 - s) is D exactly.
            x = denoised
            continue
        h = math.log(s / s_next)
        s_mid = s * math.exp(-r * h)
        x_mid = _ancestral_brownian_step(x, denoised, s, s_mid, eta, s_noise, noise)
        denoised_mid = yield x_mid, s_mid
        d = (1 - fac) * denoised + fac * denoised_mid
        x = _ancestral_brownian_step(x, d, s, s_next, eta, s_noise, noise)
    return x


def _check_sde_options(eta: float, s_noise: float, solver_type: str) -> tuple[float, float]:
    eta_v = real_option("eta", eta)
    s_noise_v = real_option("s_noise", s_noise)
    if solver_type not in SOLVER_TYPES:
        raise SamplerOptionError(
            f"option solver_type must be one of {', '.join(SOLVER_TYPES)}, got {solver_type!r}")
    return eta_v, s_noise_v


def _sde_linear_step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float,
                     eta: float) -> tuple[Tensor, float, float]:
    """The exact linear part of the step with D frozen; returns (x, h, H = (1 + eta) h)."""
    h = math.log(sigma / sigma_next)
    big_h = (1 + eta) * h
    x = (sigma_next / sigma * math.exp(-eta * h)) * x - math.expm1(-big_h) * denoised
    return x, h, big_h


def _sde_noise(x: Tensor, sigma: float, sigma_next: float, h: float, eta: float,
               s_noise: float, noise: CellNoise) -> Tensor:
    """Add sigma_next sqrt(1 - e^(-2 eta h)) s_noise times the Brownian increment's normal."""
    if eta == 0 or s_noise == 0:
        return x
    scale = sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise
    return x + noise.brownian(sigma, sigma_next, x) * scale


@register(
    "DPM++ 2M SDE", kind="sde", calls_per_step=1, default_schedule="Exponential",
    flow="ve-coordinates",
    description="Second-order multistep stochastic solver, one model call per step. Adds noise "
                "along one fixed random path, so images stay similar across step counts.",
)
def dpmpp_2m_sde(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                 s_noise: float = 1.0, solver_type: str = "midpoint") -> SamplerGenerator:
    """Multistep data-prediction SDE solver of order 2 (see module docstring).

    solver_type picks the coefficient of the first backward difference:
    "midpoint" or "heun". eta = 0 with "midpoint" is DPM++ 2M.
    """
    eta_v, s_noise_v = _check_sde_options(eta, s_noise, solver_type)
    return _dpmpp_2m_sde(x, sigmas.tolist(), noise, eta_v, s_noise_v, solver_type)


def _dpmpp_2m_sde(x: Tensor, sig: list[float], noise: CellNoise, eta: float, s_noise: float,
                  solver_type: str) -> SamplerGenerator:
    old_denoised: Tensor | None = None
    h_last = 0.0
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        if s_next == 0:
            x = denoised
            continue
        x, h, big_h = _sde_linear_step(x, denoised, s, s_next, eta)
        if old_denoised is not None:
            # (h / h_last)(D_i - D_{i-1}) estimates h dD/dlambda.
            slope = (denoised - old_denoised) * (h / h_last)
            phi_1 = -math.expm1(-big_h)
            coeff = 0.5 * phi_1 if solver_type == "midpoint" else 1 - phi_1 / big_h
            x = x + slope * coeff
        x = _sde_noise(x, s, s_next, h, eta, s_noise, noise)
        old_denoised, h_last = denoised, h
    return x


@register(
    "DPM++ 2M SDE Heun", kind="sde", calls_per_step=1, default_schedule="Exponential",
    flow="ve-coordinates",
    description="DPM++ 2M SDE with the Heun-style correction of the multistep term instead of "
                "the midpoint one; one model call per step, noise on one fixed random path.",
)
def dpmpp_2m_sde_heun(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                      s_noise: float = 1.0, solver_type: str = "heun") -> SamplerGenerator:
    """DPM++ 2M SDE with solver_type "heun" as its default."""
    return dpmpp_2m_sde(x, sigmas, noise, eta=eta, s_noise=s_noise, solver_type=solver_type)


@register(
    "DPM++ 3M SDE", kind="sde", calls_per_step=1, default_schedule="Exponential",
    flow="ve-coordinates",
    description="Third-order multistep stochastic solver, one model call per step, noise on one "
                "fixed random path. Works best with enough steps (about 30 or more).",
    discard_penultimate=True,
)
def dpmpp_3m_sde(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                 s_noise: float = 1.0) -> SamplerGenerator:
    """Multistep data-prediction SDE solver of order 3 (see module docstring); eta = 0 is
    DPM-Solver++(3M)."""
    eta_v, s_noise_v = _check_sde_options(eta, s_noise, "midpoint")
    return _dpmpp_3m_sde(x, sigmas.tolist(), noise, eta_v, s_noise_v)


def _third_order_correction(d0: Tensor, d1: Tensor, d2: Tensor | None, h: float, h1: float,
                            h2: float, big_h: float) -> Tensor:
    """phi_2 / phi_3 corrections from the backward differences of D_i, D_{i-1}, D_{i-2}."""
    phi_2 = math.expm1(-big_h) / big_h + 1
    diff_0 = (d0 - d1) * (h / h1)  # ~ h D' - h h1 / 2 D''
    if d2 is None:
        return diff_0 * phi_2
    diff_1 = (d1 - d2) * (h / h2)
    r0, r1 = h1 / h, h2 / h
    first = diff_0 + (diff_0 - diff_1) * (r0 / (r0 + r1))  # ~ h D'
    second = (diff_0 - diff_1) / (r0 + r1)  # ~ h^2 D'' / 2
    phi_3 = phi_2 / big_h - 0.5
    return first * phi_2 - second * phi_3


def _dpmpp_3m_sde(x: Tensor, sig: list[float], noise: CellNoise, eta: float,
                  s_noise: float) -> SamplerGenerator:
    d_1: Tensor | None = None  # D at the previous step
    d_2: Tensor | None = None  # D two steps back
    h_1 = h_2 = 0.0
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        if s_next == 0:
            x = denoised
            continue
        x, h, big_h = _sde_linear_step(x, denoised, s, s_next, eta)
        if d_1 is not None:
            x = x + _third_order_correction(denoised, d_1, d_2, h, h_1, h_2, big_h)
        x = _sde_noise(x, s, s_next, h, eta, s_noise, noise)
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
    return x
