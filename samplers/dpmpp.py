"""DPM-Solver++ deterministic and ancestral samplers: "DPM++ 2M" and "DPM++ 2S a".

Lu, Zhou, Bao, Chen, Li, Zhu 2022, "DPM-Solver++: Fast Solver for Guided
Sampling of Diffusion Probabilistic Models" (arXiv:2211.01095). In the
variance-exploding parametrisation used here (alpha_t = 1, sigma_t = sigma)
the solvers work in lambda = -log(sigma) with the data prediction D(x; sigma).
The exact solution of the probability-flow ODE from sigma_s to sigma_t is
(the paper's data-prediction variation-of-constants formula)

    x_t = (sigma_t / sigma_s) x_s + sigma_t * integral_{lambda_s}^{lambda_t} e^lambda D(lambda) dlambda,

and with h = lambda_t - lambda_s and D held constant over the step it becomes
the first-order step x_t = (sigma_t / sigma_s) x_s + (1 - e^-h) D
(DPM-Solver++(1), i.e. DDIM).

- "DPM++ 2M": DPM-Solver++(2M), the paper's Algorithm 2. The data prediction
  is extrapolated linearly in lambda from the current and the previous model
  call, D = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1} / h_i. The first
  step (no history) and the last step to sigma = 0 (where lambda is infinite)
  are first order; the step to 0 returns the denoised estimate.
- "DPM++ 2S a": DPM-Solver++(2S), the paper's Algorithm 1 with r = 1/2 (an
  intermediate model call at the lambda midpoint), taken from sigma to the
  ancestral sigma_down, then fresh Gaussian noise sigma_up * N(0, I) is added
  (the DDPM posterior's split, `samplers._math.ancestral_step`). A step to
  sigma_down = 0 is a plain Euler step, which lands on the denoised estimate.

On flow models (`samplers.parametrisation`) the first-order step above is the same update of
x (x_t = (sigma_t / sigma_s) x_s + (1 - sigma_t / sigma_s) D is the data-prediction step for
alpha = 1 - sigma too), so DPM++ 2M runs unchanged, as in ComfyUI. DPM++ 2S a follows
ComfyUI's dpmpp_2s_ancestral_RF: the midpoint sits halfway in the flow half-log-SNR
log((1 - sigma) / sigma) between sigma and sigma_down (at sigma = 1, where that is -inf,
ComfyUI's fixed 0.9999), and the noise is the rectified-flow ancestral step.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers._math import real_option
from samplers.noise import CellNoise
from samplers.parametrisation import Parametrisation, apply_step
from samplers.protocol import SamplerGenerator
from samplers.registry import register


def dpmpp_first_order(x: Tensor, denoised: Tensor, sigma: float, sigma_to: float) -> Tensor:
    """DPM-Solver++(1) from sigma to sigma_to (> 0): exact if D is constant over the step."""
    h = math.log(sigma / sigma_to)
    # -expm1(-h) = 1 - sigma_to / sigma, accurate for small steps.
    return (sigma_to / sigma) * x - math.expm1(-h) * denoised


@register(
    "DPM++ 2M", kind="deterministic", calls_per_step=1, default_schedule="Karras",
    description="Second-order multistep solver: it reuses the previous step's model output, so "
                "it gets second-order accuracy from one model call per step. A strong default.",
)
def dpmpp_2m(x: Tensor, sigmas: Tensor) -> SamplerGenerator:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), data prediction, in lambda = -log sigma."""
    return _dpmpp_2m(x, sigmas.tolist())


def _dpmpp_2m(x: Tensor, sig: list[float]) -> SamplerGenerator:
    old_denoised: Tensor | None = None
    h_last = 0.0
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        if s_next == 0:
            # lambda = inf: the step's limit is the denoised estimate itself.
            x = denoised
            continue
        h = math.log(s / s_next)
        if old_denoised is None:
            d = denoised
        else:
            # Linear extrapolation of D in lambda to the step's midpoint (Algorithm 2, line 6).
            half_inv_r = h / (2 * h_last)
            d = (1 + half_inv_r) * denoised - half_inv_r * old_denoised
        x = (s_next / s) * x - math.expm1(-h) * d
        old_denoised, h_last = denoised, h
    return x


@register(
    "DPM++ 2S a", kind="ancestral", calls_per_step=2, default_schedule="Karras",
    description="Single-step second-order solver (two model calls per step) that adds fresh "
                "random noise after every step, so the image keeps changing with the step count.",
)
def dpmpp_2s_ancestral(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
                       eta: float = 1.0, s_noise: float = 1.0) -> SamplerGenerator:
    """DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1, r = 1/2) to sigma_down, plus ancestral noise.

    eta scales the added noise (eta = 0: deterministic DPM-Solver++(2S));
    s_noise scales the noise drawn. Two model calls per step; a step whose
    sigma_down is 0 (the last step to sigma = 0) makes one.
    """
    eta_v = real_option("eta", eta)
    s_noise_v = real_option("s_noise", s_noise)
    return _dpmpp_2s_ancestral(x, sigmas.tolist(), noise, param, eta_v, s_noise_v)


def _lambda_midpoint(param: Parametrisation, sigma: float, sigma_to: float) -> float:
    """The sigma halfway in lambda: sqrt(sigma sigma_to) on VE; on flow ComfyUI's RF rule."""
    if not param.is_flow:
        return math.sqrt(sigma * sigma_to)
    if sigma >= 1:
        return 0.9999  # ComfyUI's fixed choice where lambda(sigma) = -inf
    lam = (param.half_log_snr(sigma) + param.half_log_snr(sigma_to)) / 2
    return param.sigma_at(lam)


def _dpmpp_2s_ancestral(x: Tensor, sig: list[float], noise: CellNoise, param: Parametrisation,
                        eta: float, s_noise: float) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        step = param.ancestral_step(s, s_next, eta)
        if step.down == 0:
            # Euler step to sigma 0: x + (x - D) / s * (0 - s) is D exactly.
            x = denoised
        else:
            s_mid = _lambda_midpoint(param, s, step.down)
            x_mid = dpmpp_first_order(x, denoised, s, s_mid)
            denoised_mid = yield x_mid, s_mid
            x = dpmpp_first_order(x, denoised_mid, s, step.down)
        x = apply_step(x, step, noise.gaussian, s_noise)
    return x
