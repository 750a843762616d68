"""heunpp2 ("Heun++ 2"): Heun's method with a third slope and sigma-dependent weights.

This module owns ComfyUI's "heunpp2", which ComfyUI takes from Carzit's
sd-webui-samplers-scheduler (MIT; no paper). It integrates the probability-flow ODE
dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", eq. 3) with one step per schedule interval, like Heun
(Algorithm 2 there, churn included), but the step's slope averages up to three slopes:

    d_1 at (x_i, sigma_i),  d_2 at the Euler point x_2 = x_i + d_1 (sigma_{i+1} - sigma_i),
    d_3 at x_3 = x_2 + d_2 (sigma_{i+2} - sigma_{i+1}),

    x_{i+1} = x_i + (w_1 d_1 + w_2 d_2 + w_3 d_3)(sigma_{i+1} - sigma_i),
    w_2 = sigma_{i+1} / (3 sigma_0), w_3 = sigma_{i+2} / (3 sigma_0), w_1 = 1 - w_2 - w_3,

so the later slopes weigh less as sigma falls. The next-to-last step uses two slopes
(w_2 = sigma_{i+1} / (2 sigma_0)) and the last step is Euler. Because the weights are not
Heun's 1/2, the method is first order (measured on the analytic Gaussian; its extra calls
buy a smaller constant, not a higher order). Three calls per step, two on the next-to-last
step, one on the last. On flow models it integrates the same ODE unchanged (churn takes the
flow form of `samplers._math.Churn`), as ComfyUI runs it there.
"""

from __future__ import annotations

import math

from torch import Tensor

from samplers._math import Churn
from samplers.noise import CellNoise
from samplers.parametrisation import Parametrisation
from samplers.protocol import SamplerGenerator
from samplers.registry import register


@register(
    "heunpp2", kind="deterministic", calls_per_step=3, default_schedule="Karras",
    description="Heun++: Heun with a third slope one step further ahead, weighted by the noise "
                "level (ComfyUI's heunpp2); three model calls per step.",
)
def heunpp2(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
            s_churn: float = 0.0, s_tmin: float = 0.0,
            s_tmax: float = math.inf, s_noise: float = 1.0) -> SamplerGenerator:
    """Heun++ 2 (module docstring); churn as in Karras et al. 2022 Algorithm 2."""
    churn = Churn.checked(s_churn, s_tmin, s_tmax, s_noise, steps=len(sigmas) - 1)
    return _heunpp2(x, sigmas.tolist(), noise, param, churn)


def _heunpp2(x: Tensor, sig: list[float], noise: CellNoise, param: Parametrisation,
             churn: Churn) -> SamplerGenerator:
    end = sig[-1]
    for i in range(len(sig) - 1):
        x, s_hat = churn.apply(x, sig[i], noise, param)
        denoised = yield x, s_hat
        d = (x - denoised) / s_hat
        dt = sig[i + 1] - s_hat
        if sig[i + 1] == end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = (x_2 - (yield x_2, sig[i + 1])) / sig[i + 1]
        if sig[i + 2] == end:
            w_2 = sig[i + 1] / (2 * sig[0])
            x = x + (d * (1 - w_2) + d_2 * w_2) * dt
            continue
        x_3 = x_2 + d_2 * (sig[i + 2] - sig[i + 1])
        d_3 = (x_3 - (yield x_3, sig[i + 2])) / sig[i + 2]
        w_2, w_3 = sig[i + 1] / (3 * sig[0]), sig[i + 2] / (3 * sig[0])
        x = x + (d * (1 - w_2 - w_3) + d_2 * w_2 + d_3 * w_3) * dt
    return x
