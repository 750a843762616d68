"""LCM: multistep consistency sampling, for latent consistency models.

This module owns "LCM" (Luo, Tan, Huang, Li & Zhao 2023, "Latent Consistency
Models: Synthesizing High-Resolution Images with Few-Step Inference",
Algorithm 1 "Multistep Latent Consistency Sampling", after Song, Dhariwal, Chen
& Sutskever 2023, "Consistency Models", Algorithm 1).

A consistency model maps a noisy x straight to its clean endpoint, so each step
takes the model's prediction as the answer and, unless it is the last step,
noises it again to the next level: in the paper's variance-preserving form
x_next = sqrt(abar') x0 + sqrt(1 - abar') z, which in the variance-exploding
form used here (x = x_VP / sqrt(abar), sigma'^2 = (1 - abar') / abar') is
x_next = x0 + sigma' z.

The consistency function's boundary-condition scalings (c_skip, c_out in the
papers) are part of the model (its denoiser wrapper), not of this sampler: the
denoised estimate the sampler receives is already f(x, sigma).

On flow models the re-noising is the flow forward process, x_next = (1 - sigma') x0 + sigma' z
(`Parametrisation.noised`; ComfyUI's noise_scaling for its CONST models).
"""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor

from samplers.noise import CellNoise
from samplers.parametrisation import Parametrisation
from samplers.protocol import SamplerGenerator
from samplers.registry import register


@register(
    "LCM",
    kind="ancestral",
    calls_per_step=1,
    default_schedule="Uniform",
    description=(
        "Latent consistency sampling: each step takes the model's clean-image prediction and "
        "re-noises it to the next noise level with fresh noise. Made for LCM-distilled "
        "models at 2-8 steps; ordinary models give blurry results."
    ),
)
def lcm(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation) -> SamplerGenerator:
    """Multistep consistency sampling, Luo et al. 2023, Algorithm 1, in sigma form.

    Each step: D = f(x, sigma); x' = D + sigma' z with fresh z ~ N(0, I) from the
    cell's generator; a step to sigma' = 0 returns D and draws nothing.

    Default schedule "Uniform": A1111's LCM spaces its steps linearly in training
    timestep from t = 999 down (over the 50 timesteps an LCM is distilled on) with
    log-sigma interpolation, which is Uniform's rule; the "DDIM" schedule would
    start at t = 751 for 4 steps, not from pure noise.
    """
    return _lcm_steps(x, sigmas.tolist(), noise, param)


def _lcm_steps(x: Tensor, sig: list[float], noise: CellNoise,
               param: Parametrisation) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        denoised = yield x, s
        x = denoised
        if s_next > 0:
            x = param.noised(denoised, noise.gaussian(denoised), s_next)
    return x
