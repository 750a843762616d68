"""Starting and running a sampler: its generator with checked sigmas and options, and `sample`,
which drives it with a plain denoiser function (samplers.protocol.drive).

A sampler function gets x and sigmas, plus by parameter name only what it uses: `noise` (the
cell's noise) and `param` (the parametrisation, `samplers.parametrisation`). On a flow model
a sampler runs in its registered flow form (`SamplerInfo.flow_form`): unchanged, with the
parametrisation, in VE-equivalent coordinates, or refused with SamplerFlowError.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch
from torch import Tensor

from samplers.names import info
from samplers.noise import CellNoise, sigma_range
from samplers.parametrisation import FLOW, VE, Parametrisation, in_ve_coordinates
from samplers.protocol import Denoiser, SamplerGenerator, drive
from samplers.registry import SamplerFlowError, SamplerInfo, SamplerOptionError


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


def _call(info: SamplerInfo, x: Tensor, sigmas: Tensor, noise: Any, param: Parametrisation,
          options: dict[str, Any]) -> SamplerGenerator:
    given = {"noise": noise, "param": param}
    return info.fn(x, sigmas, **{name: given[name] for name in info.inputs}, **options)


def _check_flow_sigmas(sigmas: Tensor) -> None:
    if float(sigmas.max()) > 1:
        raise ValueError(f"a flow model's sigmas lie in [0, 1]; got sigma {float(sigmas.max()):.4g} "
                         "(build the schedule from samplers.flow_train_sigmas)")


def start(info: SamplerInfo, x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation,
          options: dict[str, Any]) -> SamplerGenerator:
    """The sampler's generator for a model of parametrisation `param` (options already checked)."""
    if not param.is_flow:
        if not info.supports_ve:
            raise SamplerFlowError(f"sampler {info.name!r} runs only on flow models (SD3, Flux); "
                                   "pick a sampler without 'flow' in its name for this model")
        return _call(info, x, sigmas, noise, param, options)
    if not info.supports_flow:
        raise SamplerFlowError(f"sampler {info.name!r} has no form for flow models (SD3, Flux); "
                               "pick another sampler (see docs/SAMPLERS.md, 'Flow models')")
    _check_flow_sigmas(sigmas)
    if info.flow_form == "ve-coordinates":
        return in_ve_coordinates(lambda xv, sv, nv: _call(info, xv, sv, nv, VE, options),
                                 x, sigmas, noise, param)
    return _call(info, x, sigmas, noise, param, options)


def start_generator(name: str, x: Tensor, sigmas: Tensor, noise: CellNoise, *,
                    param: Parametrisation = VE, **options: Any) -> Generator[Any, Tensor, Tensor]:
    """The sampler's generator for a model of parametrisation `param`, ready to be driven
    (by `sample` or the grid engine). Raises SamplerFlowError for a sampler with no form there."""
    sampler_info = info(name)
    check_options(sampler_info, options)
    return start(sampler_info, x, check_sigmas(sigmas), noise, param, options)


def sample(name: str, denoiser: Denoiser, x: Tensor, sigmas: Tensor, *, seed: int = 0,
           flow: bool = False, shift: float | None = None, **options: Any) -> Tensor:
    """Run sampler `name` from x (noise already scaled to sigmas[0]) along `sigmas`.

    `denoiser(x, sigma)` gets x of shape (B, ...) and sigma of shape (B,) and
    returns the denoised estimate; for a CFG++ sampler (`info(name).cfg_pp`) it
    returns the pair (guided_x0, unconditional_x0). `sigmas` is used exactly as
    given. Noise comes only from `seed`: the same seed gives the same result, bit for bit.
    flow=True: the model is a rectified-flow one (x = (1 - sigma) x0 + sigma eps, sigmas
    in [0, 1]); the sampler runs in its flow form (`samplers.FLOW`). shift (flow only) is
    the model's timestep shift (`samplers.flow_train_sigmas`); it sets the SNR-safe first
    sigma and a diffusers flow scheduler's shift.
    """
    sig = check_sigmas(sigmas)
    if shift is not None and not flow:
        raise ValueError("shift applies to flow models only; pass flow=True with it")
    param = (FLOW if shift is None else FLOW.with_shift(shift)) if flow else VE
    noise = CellNoise(seed, *sigma_range(sig))
    gen = start_generator(name, x, sig, noise, param=param, **options)
    result, _calls = drive(gen, denoiser, sig, pairs=info(name).cfg_pp)
    return result
