"""The CFG++ samplers: Euler CFG++, Euler a CFG++, DPM++ 2S a CFG++, DPM++ 2M CFG++.

CFG++ (Chung, Kim, Park, Nam & Ye 2024, "CFG++: Manifold-constrained Classifier Free
Guidance for Diffusion Models", arXiv:2406.08070, Algorithm 1) changes one thing in a
guided DDIM step: the sample is re-noised with the *unconditional* noise estimate
instead of the guided one. In the variance-exploding form x = data + sigma eps, with
D_g = D_u + w (D_c - D_u) the guided and D_u the unconditional estimate,

    x_next = D_g + sigma_next (x - D_u) / sigma.

Equivalently: shift x by D_g - D_u (then x - D_g = x - D_u) and take the ordinary
data-prediction step from there; the higher-order samplers below are that shift
followed by their usual update, as ComfyUI writes them. Guidance scales are ComfyUI's
cfg (the paper's lambda in [0, 1] is cfg - 1 on the unconditional-to-conditional line,
so useful values are about 1 to 2). Each sampler receives (D_g, D_u) for every request
(`SamplerInfo.cfg_pp`); the engine takes both from the batch it runs anyway and keeps
the unconditional half even at cfg 1, so every call costs 2 model rows.

- "Euler CFG++": the step above (DDIM with eta 0 in sigma form).
- "Euler a CFG++": the step to sigma_down, then fresh noise sigma_up
  (`samplers._math.ancestral_step`), s_noise scaling it.
- "DPM++ 2S a CFG++": DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", Algorithm 1,
  r = 1/2) from the shifted x to sigma_down, then ancestral noise; the midpoint call's
  guided estimate is used as DPM-Solver++ uses D there, as ComfyUI does.
- "DPM++ 2M CFG++": DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) with ComfyUI's
  correction term (D_g,i - D_u,i-1) / (2 r), r = h_{i-1} / h_i.

The step to sigma 0 returns D_g.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor

from samplers._math import ancestral_step, real_option
from samplers.noise import CellNoise
from samplers.protocol import SamplerGenerator
from samplers.registry import register

_COST = " Use cfg about 1-2; 2 model rows per call even at cfg 1."


@register(
    "Euler CFG++", kind="deterministic", calls_per_step=1, default_schedule="Karras", cfg_pp=True,
    flow="ve-coordinates",
    description="Euler with CFG++ guidance: each step starts from the guided estimate and re-noises "
                "with the unconditional noise, which keeps strong guidance on the data manifold." + _COST,
)
def euler_cfg_pp(x: Tensor, sigmas: Tensor) -> SamplerGenerator:
    """x_next = D_g + sigma_next (x - D_u) / sigma (Chung et al. 2024, Algorithm 1)."""
    return _euler_ancestral_cfg_pp(x, sigmas.tolist(), None, 0.0, 0.0)


@register(
    "Euler a CFG++", kind="ancestral", calls_per_step=1, default_schedule="Karras", cfg_pp=True,
    flow="ve-coordinates",
    description="Euler a with CFG++ guidance: the CFG++ step to a lower noise level, then fresh "
                "random noise; never settles on one image." + _COST,
)
def euler_ancestral_cfg_pp(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                           s_noise: float = 1.0) -> SamplerGenerator:
    """Euler CFG++ to sigma_down, then s_noise * sigma_up * N(0, I); eta 0 is Euler CFG++."""
    return _euler_ancestral_cfg_pp(x, sigmas.tolist(), noise, real_option("eta", eta),
                                   real_option("s_noise", s_noise))


def _euler_ancestral_cfg_pp(x: Tensor, sig: list[float], noise: CellNoise | None, eta: float,
                            s_noise: float) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        guided, uncond = yield x, s
        if s_next == 0:
            x = guided
            continue
        down, up = ancestral_step(s, s_next, eta)
        x = guided + (x - uncond) * (down / s)
        if up > 0 and s_noise > 0 and noise is not None:
            x = x + noise.gaussian(x) * (s_noise * up)
    return x


@register(
    "DPM++ 2S a CFG++", kind="ancestral", calls_per_step=2, default_schedule="Karras", cfg_pp=True,
    flow="ve-coordinates",
    description="DPM++ 2S a with CFG++ guidance: a second-order two-call step from the CFG++ "
                "shifted sample, then fresh random noise." + _COST,
)
def dpmpp_2s_ancestral_cfg_pp(x: Tensor, sigmas: Tensor, noise: CellNoise, *, eta: float = 1.0,
                              s_noise: float = 1.0) -> SamplerGenerator:
    """DPM-Solver++(2S), r = 1/2, from x + (D_g - D_u) to sigma_down, then ancestral noise."""
    return _dpmpp_2s_a_cfg_pp(x, sigmas.tolist(), noise, real_option("eta", eta),
                              real_option("s_noise", s_noise))


def _dpmpp_2s_a_cfg_pp(x: Tensor, sig: list[float], noise: CellNoise, eta: float,
                       s_noise: float) -> SamplerGenerator:
    for s, s_next in pairwise(sig):
        guided, uncond = yield x, s
        down, up = ancestral_step(s, s_next, eta)
        if down == 0:
            x = guided
        else:
            shifted = x + (guided - uncond)
            h = math.log(s / down)
            s_mid = math.sqrt(s * down)  # lambda halfway: r = 1/2
            x_2 = shifted * (s_mid / s) - guided * math.expm1(-h / 2)
            guided_2, _ = yield x_2, s_mid
            x = shifted * (down / s) - guided_2 * math.expm1(-h)
        if s_next > 0 and up > 0 and s_noise > 0:
            x = x + noise.gaussian(x) * (s_noise * up)
    return x


@register(
    "DPM++ 2M CFG++", kind="deterministic", calls_per_step=1, default_schedule="Karras", cfg_pp=True,
    flow="ve-coordinates",
    description="DPM++ 2M with CFG++ guidance: second-order multistep, one call per step, "
                "re-noising with the unconditional noise." + _COST,
)
def dpmpp_2m_cfg_pp(x: Tensor, sigmas: Tensor) -> SamplerGenerator:
    """DPM-Solver++(2M) with CFG++ as ComfyUI's dpmpp_2m_cfg_pp (module docstring)."""
    return _dpmpp_2m_cfg_pp(x, sigmas.tolist())


def _dpmpp_2m_cfg_pp(x: Tensor, sig: list[float]) -> SamplerGenerator:
    old_uncond: Tensor | None = None
    for i, (s, s_next) in enumerate(pairwise(sig)):
        guided, uncond = yield x, s
        if s_next == 0:
            x = guided
            continue
        h = math.log(s / s_next)
        x_new = guided + (x - uncond) * (s_next / s)
        if old_uncond is not None:
            r = math.log(sig[i - 1] / s) / h
            x_new = x_new - (guided - old_uncond) * (math.expm1(-h) / (2 * r))
        x, old_uncond = x_new, uncond
    return x
