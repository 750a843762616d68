"""Starting a registered sampler: the inputs it takes, and its form on the model's parametrisation.

A sampler function gets x and sigmas, plus by parameter name only what it uses: `noise` (the
cell's noise) and `param` (the parametrisation, `samplers.parametrisation`). On a flow model
a sampler runs in its registered flow form (`SamplerInfo.flow_form`): unchanged, with the
parametrisation, in VE-equivalent coordinates, or refused with SamplerFlowError.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from samplers.noise import CellNoise
from samplers.parametrisation import VE, Parametrisation, in_ve_coordinates
from samplers.protocol import SamplerGenerator
from samplers.registry import SamplerFlowError, SamplerInfo


def _call(info: SamplerInfo, x: Tensor, sigmas: Tensor, noise: Any, param: Parametrisation,
          options: dict[str, Any]) -> SamplerGenerator:
    given = {"noise": noise, "param": param}
    return info.fn(x, sigmas, **{name: given[name] for name in info.inputs}, **options)


def check_flow_sigmas(sigmas: Tensor) -> None:
    """Flow sigmas live in [0, 1] (sigma = 1 is pure noise)."""
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
    check_flow_sigmas(sigmas)
    if info.flow_form == "ve-coordinates":
        return in_ve_coordinates(lambda xv, sv, nv: _call(info, xv, sv, nv, VE, options),
                                 x, sigmas, noise, param)
    return _call(info, x, sigmas, noise, param, options)
