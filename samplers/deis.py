"""DEIS: the diffusion exponential integrator sampler with polynomial extrapolation ("tAB").

This module owns "DEIS" (Zhang & Chen 2023, "Fast Sampling of Diffusion Models
with Exponential Integrator", ICLR 2023, arXiv:2204.13902). DEIS integrates the
linear part of the probability-flow ODE exactly (the exponential integrator)
and replaces the noise prediction eps over a step by the Lagrange polynomial
through the last few eps values — in the paper's time variable t ("tAB-DEIS")
or in rho, the noise-to-signal ratio ("rhoAB-DEIS"). Both are multistep
methods with one model call per step; with r values the step has order r.

In the variance-exploding coordinates used here (x = data + sigma eps, so
rho = sigma) the exponential integrator's linear part is the identity: the
ODE is dx/dsigma = eps(x, sigma) = (x - D(x; sigma)) / sigma, and a step is

    x_{i+1} = x_i + sum_j C_ij eps_{i-j},
    C_ij = integral from sigma_i to sigma_{i+1} of L_j(tau(sigma)) dsigma,

with L_j the Lagrange basis polynomial of node tau(sigma_{i-j}) among the
nodes tau(sigma_i), ..., tau(sigma_{i-r+1}). deis_mode picks tau:

- "tab" (the default, ComfyUI's "deis"): tau is the VP time t of Karras et al.
  2022 ("Elucidating the Design Space of Diffusion-Based Generative Models",
  Table 1, VP column: sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1))
  with beta_d, beta_min fitted to sigma(1) = 80, sigma(1e-3) = 0.002 as in
  EDM's VP settings, whatever the model's own sigma range is.
- "rhoab": tau = sigma itself; the polynomial in sigma is integrated exactly.
  This is the variable-step Adams-Bashforth method on sigma, i.e. "LMS" of
  the same order except for the last step.

The first steps use the eps values there are (order 1, 2, ...); the first
step is an Euler step. Its O(h^2) error is tiny at sigma_max, where the
trajectory is nearly straight, so the measured order over 8..64 Karras steps
is the method's own (2.8 for order 3) but falls towards 2 at many steps.
The step to sigma = 0 is first order and returns the denoised estimate.
ComfyUI computes the tAB integrals with a 10000-point
Riemann sum (relative error ~1e-5); here a 16-point Gauss-Legendre rule gives
them to about machine precision. The results differ by ~1e-6 RMS on data of
scale 1 at 20 Karras steps.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from itertools import pairwise

from torch import Tensor

from samplers._math import gauss_legendre, int_option
from samplers.protocol import SamplerGenerator
from samplers.registry import SamplerOptionError, register

MAX_ORDER = 4
DEIS_MODES = ("tab", "rhoab")

# EDM's VP schedule fitted to its default range (Karras et al. 2022, Table 1):
# sigma(1) = 80 and sigma(eps_s) = 0.002 with eps_s = 1e-3 fix beta_d, beta_min.
_EPS_S, _VP_SIGMA_MIN, _VP_SIGMA_MAX = 1e-3, 0.002, 80.0
_LOG_MAX = math.log1p(_VP_SIGMA_MAX**2)
_BETA_D = 2 * (math.log1p(_VP_SIGMA_MIN**2) / _EPS_S - _LOG_MAX) / (_EPS_S - 1)
_BETA_MIN = _LOG_MAX - 0.5 * _BETA_D


def vp_time(sigma: float) -> float:
    """EDM's VP time t(sigma): the root of beta_d t^2 / 2 + beta_min t = log(1 + sigma^2)."""
    root = math.sqrt(_BETA_MIN**2 + 2 * _BETA_D * math.log1p(sigma * sigma))
    return (root - _BETA_MIN) / _BETA_D


def _identity(sigma: float) -> float:
    return sigma


def deis_coefficients(nodes: Sequence[float], sigma_next: float,
                      tau: Callable[[float], float] = vp_time) -> list[float]:
    """C_j = integral from nodes[0] to sigma_next of L_j(tau(sigma)) dsigma.

    nodes are sigmas, newest (the current sigma) first; L_j is the Lagrange
    basis polynomial of tau(nodes[j]) among the tau(nodes). The coefficients
    sum to sigma_next - nodes[0] (a constant eps is integrated exactly).
    """
    taus = [tau(s) for s in nodes]
    coeffs = [0.0] * len(nodes)
    for sigma, weight in gauss_legendre(nodes[0], sigma_next):
        t = tau(sigma)
        for j, t_j in enumerate(taus):
            basis = weight
            for k, t_k in enumerate(taus):
                if k != j:
                    basis *= (t - t_k) / (t_j - t_k)
            coeffs[j] += basis
    return coeffs


def _checked_mode(deis_mode: object) -> Callable[[float], float]:
    if deis_mode == "tab":
        return vp_time
    if deis_mode == "rhoab":
        return _identity
    raise SamplerOptionError(f"option deis_mode must be one of {DEIS_MODES}, got {deis_mode!r}")


@register(
    "DEIS", kind="deterministic", calls_per_step=1, default_schedule="Karras",
    description="Exponential-integrator multistep solver: fits a curve through the last three "
                "noise predictions to take a third-order step for one model call.",
)
def deis(x: Tensor, sigmas: Tensor, *, max_order: int = 3,
         deis_mode: str = "tab") -> SamplerGenerator:
    """DEIS-AB of order up to max_order (1..4) in deis_mode "tab" or "rhoab"; 1 call per step."""
    order = int_option("max_order", max_order, minimum=1, maximum=MAX_ORDER)
    return _deis(x, sigmas.tolist(), order, _checked_mode(deis_mode))


def _deis(x: Tensor, sig: list[float], max_order: int,
          tau: Callable[[float], float]) -> SamplerGenerator:
    eps: deque[Tensor] = deque(maxlen=max_order)  # newest first
    for i, (s, s_next) in enumerate(pairwise(sig)):
        denoised = yield x, s
        eps.appendleft((x - denoised) / s)
        if s_next == 0:
            # First order into sigma = 0, where the slope is undefined: land on D.
            x = denoised
        elif len(eps) == 1:
            x = x + eps[0] * (s_next - s)
        else:
            nodes = sig[i + 1 - len(eps): i + 1][::-1]
            for c, e in zip(deis_coefficients(nodes, s_next, tau), eps, strict=True):
                x = x + e * c
    return x
