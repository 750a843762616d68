"""Starting and running a sampler: its generator with checked sigmas and options, and `sample`,
which drives it with a plain denoiser function (samplers.protocol.drive).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch
from torch import Tensor

from samplers.names import info
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import Denoiser, drive
from samplers.registry import SamplerInfo, SamplerOptionError


def check_sigmas(sig: Tensor) -> Tensor:
    """`sig` as a tensor if it is a usable schedule (1-D, finite, >= 0, strictly descending)."""
    sig = torch.as_tensor(sig)
    if sig.ndim != 1 or len(sig) < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sig.shape)}")
    if not torch.isfinite(sig).all() or (sig < 0).any():
        raise ValueError("sigmas must be finite and non-negative")
    if not (sig[1:] < sig[:-1]).all():
        i = int((sig[1:] >= sig[:-1]).nonzero()[0])
        raise ValueError(
            f"sigmas must be strictly descending; sigmas[{i + 1}]={float(sig[i + 1]):.4g} "
            f">= sigmas[{i}]={float(sig[i]):.4g}")
    return sig


def check_options(sampler_info: SamplerInfo, options: dict[str, Any]) -> None:
    """Refuse options the sampler does not take, naming the ones it does."""
    unknown = sorted(set(options) - set(sampler_info.options))
    if unknown:
        takes = ", ".join(sampler_info.options) or "no options"
        raise SamplerOptionError(
            f"sampler {sampler_info.name!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {takes}")


def start_generator(name: str, x: Tensor, sigmas: Tensor, noise: CellNoise,
                    **options: Any) -> Generator[Any, Tensor, Tensor]:
    """The sampler's generator, ready to be driven (by `sample` or the grid engine)."""
    sampler_info = info(name)
    check_options(sampler_info, options)
    return sampler_info.fn(x, check_sigmas(sigmas), noise, **options)


def sample(name: str, denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, seed: int = 0,
           **options: Any) -> Tensor:
    """Run sampler `name` from x (noise already scaled to sigmas[0]) along `sigmas`.

    `denoiser(x, sigma)` gets x of shape (B, ...) and sigma of shape (B,) and
    returns the denoised estimate; for a CFG++ sampler (`info(name).cfg_pp`) it
    returns the pair (guided_x0, unconditional_x0). `sigmas` is used exactly as
    given. Noise comes only from `seed`: the same seed gives the same result, bit for bit.
    """
    sig = check_sigmas(sigmas)
    noise = CellNoise(seed, *sigma_range(sig))
    gen = start_generator(name, x, sig, noise, **options)
    result, _calls = drive(gen, denoiser, sig, pairs=info(name).cfg_pp)
    return result
