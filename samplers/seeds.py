"""SEEDS-2, SEEDS-3 and the exponential Heun samplers exp_heun_2_x0 (deterministic and SDE).

This module owns ComfyUI's "seeds_2", "seeds_3", "exp_heun_2_x0" and "exp_heun_2_x0_sde":
the stochastic explicit exponential derivative-free solvers of Gonzalez, Jain, Chen, Mairal,
Lee & Geiger 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling from
Diffusion Models" (NeurIPS 2023, arXiv:2305.14267), in data prediction and half-log-SNR time
lambda = -log(sigma) (the variance-exploding form x = data + sigma eps used here).

Over a step s -> t, h = lambda_t - lambda_s, the SDE with noise scale eta (eta 0 is the
probability-flow ODE, eta 1 the reverse SDE) has the exact linear part

    x_t = (sigma_t / sigma_s) e^(-eta h) x_s + (1 - e^(-(1 + eta) h)) D + sigma_t sqrt(1 - e^(-2 eta h)) z

for a constant D (SEEDS eq. 9 with alpha = 1). The solvers evaluate D at intermediate
points lambda_s + r h and combine the estimates with the phi functions
phi_1(-x) x = 1 - e^-x and phi_2 (SEEDS Algorithms 1-2, Hochbruck & Ostermann 2010 for the
exponential Runge-Kutta weights):

- SEEDS-2 (r = 1/2, 2 calls): a first-order step to the midpoint, then the full step with
  D_d = D + (D_2 - D) / (2 r) ("phi_1", the default) or the phi_2 weights ("phi_2").
- SEEDS-3 (r_1 = 1/3, r_2 = 2/3, 3 calls): three stages, the last with phi_2 weights.
- exp_heun_2_x0: SEEDS-2 with r = 1, phi_2 and eta 0: the exponential Heun method, a
  full first-order step to sigma_t, D there, then the phi_2 correction. exp_heun_2_x0_sde
  is the same with eta 1.

The noise of the stages is one Gaussian increment per segment, chained so that the total
over the step has the right variance (the SEEDS noise decomposition): each segment's noise
is read from the cell's Brownian path (`CellNoise.brownian`), so runs at different step
counts share one noise path. ComfyUI draws fresh Gaussian noise instead: same
distribution, different numbers. The step to sigma 0 returns D, as ComfyUI does.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers._math import real_option
from samplers.noise import CellNoise
from samplers.protocol import SamplerGenerator
from samplers.registry import SamplerOptionError, register

SOLVER_TYPES = ("phi_1", "phi_2")


def phi_1_h(x: float) -> float:
    """h phi_1(-x) with x = h: 1 - e^-x (exactly, for small x too)."""
    return -math.expm1(-x)


def phi_2_h(x: float) -> float:
    """h phi_2(-x) with x = h: (e^-x - 1 + x) / x."""
    return (math.expm1(-x) + x) / x


class _Noise:
    """One step's chained noise: sigma-scaled N(0, I) increments over consecutive segments."""

    def __init__(self, noise: CellNoise | None, eta: float, s_noise: float, h: float) -> None:
        self.noise, self.eta, self.s_noise, self.h = noise, eta, s_noise, h
        self.z: Tensor | None = None
        self.at = 0.0  # the position r in [0, 1] of the step reached so far

    def add(self, x: Tensor, sigma_from: float, sigma_to: float, r_to: float) -> Tensor:
        """x plus the noise accumulated from the step's start to position r_to (at sigma_to)."""
        if self.eta == 0 or self.s_noise == 0 or self.noise is None:
            return x
        if r_to == self.at and self.z is not None:  # an empty segment (r = 1) adds nothing new
            return x + self.z * (sigma_to * self.s_noise)
        seg = (self.at - r_to) * self.h * self.eta  # <= 0
        fresh = self.noise.brownian(sigma_from, sigma_to, x) * math.sqrt(-math.expm1(2 * seg))
        self.z = fresh if self.z is None else self.z * math.exp(seg) + fresh
        self.at = r_to
        return x + self.z * (sigma_to * self.s_noise)


def _check(eta: object, s_noise: object, solver_type: object) -> tuple[float, float]:
    if solver_type not in SOLVER_TYPES:
        raise SamplerOptionError(f"option solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
    return real_option("eta", eta), real_option("s_noise", s_noise)


def _stage(x: Tensor, s: float, h: float, eta: float, r: float, terms: list[tuple[float, Tensor]]) -> Tensor:
    """(sigma_r / sigma_s) e^(-eta r h) x + sum of weight * D (the weights already include phi)."""
    out = x * math.exp(-r * h * (1 + eta))  # sigma_r / sigma_s = e^(-r h)
    for w, d in terms:
        out = out + d * w
    return out


@register(
    "seeds_2", kind="sde", calls_per_step=2, default_schedule="Karras", flow="ve-coordinates",
    description="SEEDS-2: a second-order stochastic exponential solver (two calls per step) with "
                "noise on one fixed random path; eta 0 is DPM++ 2S without noise.",
)
def seeds_2(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0, s_noise: float = 1.0,
            r: float = 0.5, solver_type: str = "phi_1") -> SamplerGenerator:
    """SEEDS-2 (Gonzalez et al. 2023, Algorithm 1); 2 calls per step, 1 on the step to 0."""
    eta_v, s_noise_v = _check(eta, s_noise, solver_type)
    r_v = real_option("r", r)
    if not 0 < r_v <= 1:
        raise SamplerOptionError(f"option r must be in (0, 1], got {r!r}")
    return _seeds_2(x, sigmas.tolist(), noise, eta_v, s_noise_v, r_v, solver_type)


def _seeds_2(x: Tensor, sig: list[float], noise: CellNoise | None, eta: float, s_noise: float, r: float,
             solver_type: str) -> SamplerGenerator:
    for s, t in pairwise(sig):
        denoised = yield x, s
        if t == 0:
            x = denoised
            continue
        h = math.log(s / t)
        chain = _Noise(noise, eta, s_noise, h)
        s_1 = s * math.exp(-r * h)
        x_2 = chain.add(_stage(x, s, h, eta, r, [(phi_1_h(r * h * (1 + eta)), denoised)]), s, s_1, r)
        denoised_2 = yield x_2, s_1
        h_eta = h * (1 + eta)
        if solver_type == "phi_1":
            d = denoised + (denoised_2 - denoised) / (2 * r)
            terms = [(phi_1_h(h_eta), d)]
        else:
            b2 = phi_2_h(h_eta) / r
            terms = [(phi_1_h(h_eta) - b2, denoised), (b2, denoised_2)]
        x = chain.add(_stage(x, s, h, eta, 1.0, terms), s_1, t, 1.0)
    return x


@register(
    "seeds_3", kind="sde", calls_per_step=3, default_schedule="Karras", flow="ve-coordinates",
    description="SEEDS-3: a third-order stochastic exponential solver (three calls per step) with "
                "noise on one fixed random path.",
)
def seeds_3(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0, s_noise: float = 1.0,
            r_1: float = 1 / 3, r_2: float = 2 / 3) -> SamplerGenerator:
    """SEEDS-3 (Gonzalez et al. 2023, Algorithm 2); 3 calls per step, 1 on the step to 0."""
    eta_v, s_noise_v = _check(eta, s_noise, "phi_1")
    r1, r2 = real_option("r_1", r_1), real_option("r_2", r_2)
    if not 0 < r1 < r2 <= 1:
        raise SamplerOptionError(f"options need 0 < r_1 < r_2 <= 1, got r_1={r_1!r}, r_2={r_2!r}")
    return _seeds_3(x, sigmas.tolist(), noise, eta_v, s_noise_v, r1, r2)


def _seeds_3(x: Tensor, sig: list[float], noise: CellNoise, eta: float, s_noise: float, r1: float,
             r2: float) -> SamplerGenerator:
    for s, t in pairwise(sig):
        denoised = yield x, s
        if t == 0:
            x = denoised
            continue
        h = math.log(s / t)
        h_eta = h * (1 + eta)
        chain = _Noise(noise, eta, s_noise, h)
        s_1, s_2 = s * math.exp(-r1 * h), s * math.exp(-r2 * h)
        x_2 = chain.add(_stage(x, s, h, eta, r1, [(phi_1_h(r1 * h_eta), denoised)]), s, s_1, r1)
        denoised_2 = yield x_2, s_1
        a2 = r2 / r1 * phi_2_h(r2 * h_eta)
        x_3 = _stage(x, s, h, eta, r2, [(phi_1_h(r2 * h_eta) - a2, denoised), (a2, denoised_2)])
        denoised_3 = yield chain.add(x_3, s_1, s_2, r2), s_2
        b3 = phi_2_h(h_eta) / r2
        x = chain.add(_stage(x, s, h, eta, 1.0, [(phi_1_h(h_eta) - b3, denoised), (b3, denoised_3)]),
                      s_2, t, 1.0)
    return x


@register(
    "exp_heun_2_x0", kind="deterministic", calls_per_step=2, default_schedule="Karras",
    flow="ve-coordinates",
    description="Exponential Heun on the denoised estimate: a full exponential step, then a "
                "second-order correction from the model at its end; two calls per step.",
)
def exp_heun_2_x0(x: Tensor, sigmas: Tensor, *, solver_type: str = "phi_2") -> SamplerGenerator:
    """SEEDS-2 with r = 1 and eta 0 (exponential Heun in data prediction); 2 calls per step."""
    _check(0.0, 0.0, solver_type)
    return _seeds_2(x, sigmas.tolist(), None, 0.0, 0.0, 1.0, solver_type)


@register(
    "exp_heun_2_x0_sde", kind="sde", calls_per_step=2, default_schedule="Karras", flow="ve-coordinates",
    description="Exponential Heun with SDE noise on one fixed random path (eta 1); eta 0 is "
                "exp_heun_2_x0. Two calls per step.",
)
def exp_heun_2_x0_sde(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                      s_noise: float = 1.0, solver_type: str = "phi_2") -> SamplerGenerator:
    """SEEDS-2 with r = 1 (exponential Heun SDE); 2 calls per step."""
    eta_v, s_noise_v = _check(eta, s_noise, solver_type)
    return _seeds_2(x, sigmas.tolist(), noise, eta_v, s_noise_v, 1.0, solver_type)
