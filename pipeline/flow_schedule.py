"""A flow model's own timestep shift and its diffusers pipeline's default sigmas.

Rectified-flow models are sampled on shifted times: sigma = s t / (1 + (s - 1) t) for
t in (0, 1] (Esser et al. 2024, "Scaling Rectified Flow Transformers", sec. 5.3.2, the
resolution-dependent shift; SD3 trains and samples with s = 3). Flux picks the shift
from the image size: mu grows linearly with the number of image tokens, from
base_shift at base_image_seq_len tokens to max_shift at max_image_seq_len, and the
times are shifted by exp(mu) / (exp(mu) + (1/t - 1)), which is the formula above with
s = exp(mu). We express every shift as that multiplier s (ComfyUI's ModelSamplingSD3
"shift"), so a cell's "shift" means the same thing on SD3 and on Flux.

This module owns `FlowShift` (the shift facts read from a scheduler config),
`model_shift` (the s a model's own pipeline uses at a size), `shifted` and
`pipeline_sigmas` (the sigmas StableDiffusion3Pipeline / FluxPipeline run by default
for N steps: what "Automatic" means on a flow model). The formulas match diffusers'
FlowMatchEulerDiscreteScheduler.set_timesteps and calculate_shift on purpose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class FlowShift:
    """A flow model's shift: fixed (`shift`) or resolution-dependent (`dynamic`, Flux-style).

    tokens_per_latent_pixel: 1 / patch area, how image tokens follow from the latent size.
    """

    shift: float = 1.0
    dynamic: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096
    patch: int = 2

    @classmethod
    def from_config(cls, config: dict[str, Any], *, patch: int = 2, max_shift_default: float = 1.15
                    ) -> FlowShift:
        """Read from a FlowMatchEulerDiscreteScheduler config (absent keys: diffusers' defaults;
        the pipelines differ only in max_shift's fallback, 1.15 for Flux and 1.16 for SD3)."""
        return cls(shift=float(config.get("shift", 1.0)), dynamic=bool(config.get("use_dynamic_shifting")),
                   base_shift=float(config.get("base_shift") or 0.5),
                   max_shift=float(config.get("max_shift") or max_shift_default),
                   base_seq_len=int(config.get("base_image_seq_len", 256)),
                   max_seq_len=int(config.get("max_image_seq_len", 4096)), patch=patch)

    def mu(self, latent_height: int, latent_width: int) -> float:
        """diffusers' calculate_shift for the image's token count (patch x patch latents a token)."""
        tokens = (latent_height // self.patch) * (latent_width // self.patch)
        slope = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return tokens * slope + self.base_shift - slope * self.base_seq_len


def model_shift(facts: FlowShift, latent_height: int, latent_width: int) -> float:
    """The shift multiplier s the model's own pipeline uses for latents of this size."""
    if facts.dynamic:
        return math.exp(facts.mu(latent_height, latent_width))
    return facts.shift


def check_shift(shift: float) -> float:
    """A user's shift, refused unless it is a positive finite number."""
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) \
            or shift <= 0:
        raise ValueError(f"shift must be a positive number (the model's own is used when it is "
                         f"not set; SD3 uses 3.0), got {shift!r}")
    return float(shift)


def shifted(t: Tensor, shift: float) -> Tensor:
    """sigma = s t / (1 + (s - 1) t): the time shift of Esser et al. 2024 (identity at s = 1)."""
    return shift * t / (1 + (shift - 1) * t)


def pipeline_sigmas(family: str, steps: int, shift: float, num_train_timesteps: int = 1000) -> Tensor:
    """The sigmas (descending, float64, ending in 0) the family's diffusers pipeline runs by default.

    SD3 (StableDiffusion3Pipeline): the scheduler spaces N times evenly between its shifted
    table's ends, sigma_max = 1 and sigma_min = shifted(1/T), and shifts them again, so the
    last sigma is shifted(shifted(1/T)) (a quirk of diffusers' scheduler; not ComfyUI's Simple).
    Flux (FluxPipeline): sigmas = linspace(1, 1/N, N), shifted (Simple on the shifted table).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if family == "sd3":
        low = float(shifted(torch.tensor(1.0 / num_train_timesteps, dtype=torch.float64), shift))
        t = torch.linspace(1.0, low, steps, dtype=torch.float64)
    elif family == "flux":
        t = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)
    else:
        raise ValueError(f"{family!r} has no flow pipeline schedule (sd3 or flux)")
    return torch.cat([shifted(t, shift), torch.zeros(1, dtype=torch.float64)])


def train_sigmas(shift: float, num_train_timesteps: int = 1000) -> Tensor:
    """The ascending shifted flow table sigma_i = shifted(i / T), i = 1..T (float32)."""
    t = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    return shifted(t, shift).float()
