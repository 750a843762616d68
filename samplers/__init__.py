"""The sampler family: schedules, sampler algorithms, the diffusers adapter, the registry.

Public API (this file only re-exports; each name's home is given):
    sigmas(schedule, steps, train_sigmas, ...)  -> descending sigma schedule      (samplers.plan)
    schedule_names()                             -> schedule types users pick from (samplers.names)
    names() / info(name) / resolve(name)         -> the registry                   (samplers.names)
    start_generator(name, x, sigmas, noise, param=VE) -> a sampler's generator  (samplers.run)
    sample(name, denoiser, x, sigmas, seed=..., flow=False) -> run one sampler with a plain function
                                                                                   (samplers.run)
    VE / FLOW, Parametrisation                   -> the model parametrisation      (samplers.parametrisation)
    flow_train_sigmas(shift, num_train_timesteps) -> a flow model's training sigmas (samplers.parametrisation)

Everything here is model-agnostic pure torch: a model enters only as a
denoiser function D(x; sigma) (see `samplers.protocol`).
"""

from __future__ import annotations

from samplers import (  # noqa: F401  (importing registers the samplers)
    cfg_pp,
    comfyui,
    ddim,
    deis,
    diffusers_adapter,
    dpm2,
    dpm_solver,
    dpmpp,
    dpmpp_sde,
    er_sde,
    euler,
    gradient_estimation,
    heunpp,
    ipndm,
    lcm,
    lms,
    plms,
    res_multistep,
    restart,
    sa_solver,
    schedules,
    seeds,
    unipc,
)
from samplers.names import info, names, resolve, schedule_names
from samplers.noise import CellNoise
from samplers.parametrisation import FLOW, VE, Parametrisation, flow_train_sigmas
from samplers.plan import SCHEDULE_OPTIONS, sigmas
from samplers.protocol import NonFiniteError
from samplers.registry import SamplerFlowError, SamplerInfo, SamplerOptionError, UnknownSamplerError
from samplers.run import check_options, sample, start_generator

__all__ = [
    "sigmas", "schedule_names", "names", "info", "resolve", "sample", "start_generator", "train_sigmas",
    "check_options", "SCHEDULE_OPTIONS", "flow_train_sigmas", "VE", "FLOW", "Parametrisation",
    "SamplerInfo", "UnknownSamplerError", "SamplerOptionError", "SamplerFlowError", "NonFiniteError",
    "CellNoise",
]

train_sigmas = schedules.train_sigmas
diffusers_adapter.register_equivalents()
comfyui.register_variants()
