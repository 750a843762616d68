"""SA-Solver and SA-Solver PECE: the stochastic Adams predictor-corrector of Xue et al. 2023.

This module owns "SA-Solver" (ComfyUI: sa_solver) and "SA-Solver PECE" (sa_solver_pece),
from Xue, Yi, Zhu, Sun, Zhou, Ma & Li 2023, "SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models" (NeurIPS 2023, arXiv:2309.05019), in data prediction and
half-log-SNR time lambda = -log(sigma) (the variance-exploding form used here).

With noise strength tau(sigma), the SDE's step from lambda_s to lambda_t, h = lambda_t - lambda_s,
is integrated exactly in its linear part and the data prediction D(lambda) is replaced by the
Lagrange polynomial through the last estimates (eqs. 15 and 18):

    x_t = (sigma_t / sigma_s) e^(-tau^2 h) x_s + sum_j b_j D_j + sigma_t sqrt(1 - e^(-2 tau^2 h)) s_noise z,
    b_j = (1 + tau^2) integral over [lambda_s, lambda_t] of e^((1 + tau^2)(lambda - lambda_t)) L_j(lambda).

The predictor (stochastic Adams-Bashforth) interpolates D at the last `predictor_order`
evaluated points; the corrector (stochastic Adams-Moulton) redoes the previous step with
`corrector_order` points, the newest at its end, and adds the same noise again. "PECE"
(predict, evaluate, correct, evaluate) calls the model again on the corrected sample, so it
costs two calls per step; plain SA-Solver reuses the prediction's evaluation (one call). As
in ComfyUI, the orders drop near the end of a schedule that ends in 0, the first step has
no corrector, and the step to 0 returns D.

The weights b_j are computed by a 16-point Gauss-Legendre rule (`samplers._math`), exact
to rounding for these smooth integrands, where ComfyUI integrates by parts.

The noise window is ComfyUI's default: tau = eta at a step whose target sigma lies between
the model's percent_to_sigma(sde_start_percent) and percent_to_sigma(sde_end_percent)
(`noise_window`; 20% and 80% by default), both ends included, 0 outside. On the SD family
that is the training sigma at timestep (1 - percent) * 999 (5.09 and 0.571; SD 1.x, 2.x and
XL share one training schedule); on a flow model of shift s, the shifted time
s t / (1 + (s - 1) t) at t = 1 - percent (ComfyUI's ModelSamplingDiscreteFlow; at s = 3,
0.923 and 0.429). The window is compared with the model's own sigmas, then the sampler runs in
VE-equivalent coordinates (`parametrisation.in_ve_coordinates`), ComfyUI's flow form.
eta = 0 is the deterministic (ODE) solver; s_noise = 0 keeps tau in the coefficients and only
drops the noise, which is not the ODE (ComfyUI's meaning of both). Noise is read from the
cell's Brownian path, where ComfyUI draws fresh Gaussian noise.
"""

from __future__ import annotations

import math
from functools import cache

from torch import Tensor

from samplers._math import gauss_legendre, int_option, real_option
from samplers.noise import CellNoise
from samplers.parametrisation import Parametrisation, in_ve_coordinates
from samplers.protocol import SamplerGenerator
from samplers.registry import SamplerOptionError, register


def percent_to_sigma(param: Parametrisation, percent: float) -> float:
    """ComfyUI's model_sampling.percent_to_sigma: the model's sigma `percent` of the way from pure
    noise (0) to clean (1). SD family: the training sigma at timestep (1 - percent) * 999, log
    sigma interpolated (ModelSamplingDiscrete; inf at 0). Flow: s t / (1 + (s - 1) t) at
    t = 1 - percent, s the model's shift (ModelSamplingDiscreteFlow; 1 at 0). 0 at 1."""
    if percent >= 1.0:
        return 0.0
    if param.is_flow:
        if percent <= 0.0:
            return 1.0
        t = 1.0 - percent
        return param.shift * t / (1 + (param.shift - 1) * t)
    return math.inf if percent <= 0.0 else _sd_sigma(1.0 - percent)


@cache
def _sd_sigma(fraction: float) -> float:
    from samplers.schedules import t_to_sigma, train_sigmas

    return float(t_to_sigma(fraction * 999.0, train_sigmas().double()))


def noise_window(param: Parametrisation, start_percent: float = 0.2,
                 end_percent: float = 0.8) -> tuple[float, float]:
    """(sigma_high, sigma_low) in the model's own sigmas: where SA-Solver adds noise."""
    return percent_to_sigma(param, start_percent), percent_to_sigma(param, end_percent)


def adams_weights(nodes: list[float], lam_s: float, lam_t: float, tau: float) -> list[float]:
    """b_j for D at lambda nodes (newest last), for the step lam_s -> lam_t with noise tau."""
    k = 1 + tau * tau
    weights = [0.0] * len(nodes)
    for lam, w in gauss_legendre(lam_s, lam_t, 16):
        kernel = k * w * math.exp(k * (lam - lam_t))
        for j, nj in enumerate(nodes):
            basis = 1.0
            for m, nm in enumerate(nodes):
                if m != j:
                    basis *= (lam - nm) / (nj - nm)
            weights[j] += kernel * basis
    return weights


def _combine(x: Tensor, ratio: float, weights: list[float], ds: list[Tensor]) -> Tensor:
    out = x * ratio
    for w, d in zip(weights, ds, strict=True):
        out = out + d * w
    return out


@register(
    "SA-Solver", kind="sde", calls_per_step=1, default_schedule="Karras",
    description="Stochastic Adams predictor-corrector (Xue et al. 2023): multistep, one call per "
                "step, noise only in the middle of the schedule (ComfyUI's 20%-80% window).",
)
def sa_solver(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *, eta: float = 1.0,
              s_noise: float = 1.0, predictor_order: int = 3, corrector_order: int = 4,
              sde_start_percent: float = 0.2, sde_end_percent: float = 0.8) -> SamplerGenerator:
    """SA-Solver (predictor order up to 3, corrector up to 4); 1 call per step."""
    return _start(x, sigmas, noise, param, eta, s_noise, predictor_order, corrector_order,
                  sde_start_percent, sde_end_percent, pece=False)


@register(
    "SA-Solver PECE", kind="sde", calls_per_step=2, default_schedule="Karras",
    description="SA-Solver that calls the model again on each corrected sample (predict, evaluate, "
                "correct, evaluate): more accurate per step, two calls per step.",
)
def sa_solver_pece(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
                   eta: float = 1.0, s_noise: float = 1.0, predictor_order: int = 3,
                   corrector_order: int = 4, sde_start_percent: float = 0.2,
                   sde_end_percent: float = 0.8) -> SamplerGenerator:
    """SA-Solver in PECE mode; 2 calls per step (1 on the first)."""
    return _start(x, sigmas, noise, param, eta, s_noise, predictor_order, corrector_order,
                  sde_start_percent, sde_end_percent, pece=True)


def _start(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, eta: object,
           s_noise: object, p: object, c: object, start: object, end: object,
           pece: bool) -> SamplerGenerator:
    eta_v, s_noise_v = real_option("eta", eta), real_option("s_noise", s_noise)
    p_v = int_option("predictor_order", p, minimum=1, maximum=6)
    c_v = int_option("corrector_order", c, minimum=1, maximum=6)
    lo_p, hi_p = real_option("sde_start_percent", start), real_option("sde_end_percent", end)
    if not lo_p <= hi_p <= 1:
        raise SamplerOptionError(f"options need 0 <= sde_start_percent <= sde_end_percent <= 1, "
                                 f"got {start!r}, {end!r}")
    hi, lo = noise_window(param, lo_p, hi_p)
    # tau at each schedule point, read on the model's own sigmas (as ComfyUI compares them)
    taus = [eta_v if eta_v > 0 and lo <= s <= hi else 0.0 for s in sigmas.tolist()]

    def run(xv: Tensor, sv: Tensor, nv: CellNoise) -> SamplerGenerator:
        return _sa_solver(xv, sv.tolist(), nv, taus, s_noise_v, p_v, c_v, pece)

    if param.is_flow:
        return in_ve_coordinates(run, x, sigmas, noise, param)
    return run(x, sigmas, noise)


def _sa_solver(x: Tensor, sig: list[float], noise: CellNoise, taus: list[float], s_noise: float,
               p_order: int, c_order: int, pece: bool) -> SamplerGenerator:
    n = len(sig) - 1
    lams = [-math.log(s) if s > 0 else math.inf for s in sig]
    to_end = sig[-1] == 0  # lower the orders near the end, as ComfyUI does
    x_pred, ds = x, []
    h = tau_t = 0.0
    step_noise: Tensor | float = 0.0
    for i in range(n):
        denoised = yield x_pred, sig[i]
        ds = (ds + [denoised])[-max(p_order, c_order):]
        p_used = min(p_order, len(ds))
        c_used = 0 if i == 0 or (sig[i + 1] == 0 and not pece) else min(c_order, len(ds))
        if to_end:
            p_used, c_used = min(p_used, n - 1 - i), min(c_used, n - i)
        if c_used == 0:
            x = x_pred
        else:
            b = adams_weights(lams[i - c_used + 1:i + 1], lams[i - 1], lams[i], tau_t)
            x = _combine(x, sig[i] / sig[i - 1] * math.exp(-tau_t * tau_t * h), b, ds[-c_used:])
            x = x + step_noise
            if pece:
                denoised = yield x, sig[i]
                ds[-1] = denoised
        if sig[i + 1] == 0:
            x_pred = denoised
            continue
        tau_t = taus[i + 1]
        h = lams[i + 1] - lams[i]
        b = adams_weights(lams[i - p_used + 1:i + 1], lams[i], lams[i + 1], tau_t)
        x_pred = _combine(x, sig[i + 1] / sig[i] * math.exp(-tau_t * tau_t * h), b, ds[-p_used:])
        step_noise = 0.0
        if tau_t > 0 and s_noise > 0:
            scale = sig[i + 1] * math.sqrt(-math.expm1(-2 * tau_t * tau_t * h)) * s_noise
            step_noise = noise.brownian(sig[i], sig[i + 1], x) * scale
            x_pred = x_pred + step_noise
    return x_pred

