"""Building and running a diffusers scheduler under the sampler protocol.

This module owns turning a scheduler class name, a preset and overrides into a configured
scheduler (`build`), and the generators that run it against a denoiser: `run_scheduler` for
the SD family's epsilon schedulers (x is variance-exploding here, the scheduler's latent is
converted at each call) and `run_flow_scheduler` for rectified-flow ones (the scheduler's
latent is the flow sample itself and it takes the velocity v = (x - D) / sigma). The names
users pick and the schedule flags live in `samplers.diffusers_adapter`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import Tensor

from samplers.noise import CellNoise, ClampedQueries
from samplers.parametrisation import Parametrisation
from samplers.registry import SamplerOptionError, UnknownSamplerError, suggest

# SD 1.x's scheduler config: what a diffusers SD pipeline's scheduler starts from.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "steps_offset": 1, "clip_sample": False,
    "set_alpha_to_one": False, "skip_prk_steps": True,
}
# A flow model's scheduler config when the model gives none (SD3 / Flux train on 1000 steps).
FLOW_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000}

# Schedulers of discrete epsilon/v models (the classes SD pipelines accept).
SUPPORTED = (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
    "EulerDiscreteScheduler", "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
    "DPMSolverSDEScheduler", "LCMScheduler", "TCDScheduler", "SASolverScheduler",
)
# Schedulers of rectified-flow models only (SD3 / Flux pipelines' own).
FLOW_ONLY = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
# Set by the adapter itself: the prediction type it hands the scheduler, and the betas.
_FIXED = {"prediction_type", "trained_betas"}

def scheduler_class(class_name: str) -> type:
    """The diffusers scheduler class of a supported name (UnknownSamplerError otherwise)."""
    if class_name not in SUPPORTED + FLOW_ONLY:
        raise UnknownSamplerError(suggest(class_name, [*SUPPORTED, *FLOW_ONLY], "diffusers scheduler"))
    return getattr(importlib.import_module("diffusers.schedulers"), class_name)


def config_keys(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params
            if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in _FIXED}


def is_flow(class_name: str, preset: dict[str, Any]) -> bool:
    """Whether this class and preset is a rectified-flow scheduler (flow models only)."""
    return class_name in FLOW_ONLY or bool(preset.get("use_flow_sigmas"))


def build(class_name: str, preset: dict[str, Any], overrides: dict[str, Any],
          scheduler_config: dict[str, Any] | None, seed: int | None = None,
          shift: float | None = None):
    """A configured scheduler: the model's config (or SD 1.x's / a flow default), then the
    preset, the overrides, the prediction type the adapter hands it (epsilon; the velocity,
    "flow_prediction", for flow ones) and, for flow schedulers, the model's `shift`."""
    cls = scheduler_class(class_name)
    keys = config_keys(cls)
    flow = is_flow(class_name, preset)
    source = scheduler_config or (FLOW_SCHEDULER_CONFIG if flow else SD_SCHEDULER_CONFIG)
    # Keys the model's scheduler only took as its own defaults (absent from its config file, e.g.
    # SD 1.5's timestep_spacing) are dropped, as diffusers' from_config drops them: the new class
    # then uses its own defaults, which is what a diffusers pipeline user gets. Keys the new class
    # has no setting for (a flow model's shift for UniPC) are dropped here too, as from_config
    # would, but without its console warning for each cell.
    defaulted = set(source.get("_use_default_values", ()))
    config = {k: v for k, v in source.items() if k in keys and k not in defaulted}
    if flow and shift is not None:
        # one fixed shift: a Flux model's dynamic one is exp(mu) for the cell's size already
        config.update({"shift": shift} if class_name in FLOW_ONLY else {"flow_shift": shift})
        if "use_dynamic_shifting" in keys:
            config["use_dynamic_shifting"] = False
    config.update(preset)
    config.update(overrides)
    if not flow:
        config["prediction_type"] = "epsilon"
    elif "prediction_type" in inspect.signature(cls.__init__).parameters:
        config["prediction_type"] = "flow_prediction"
    if seed is not None and "noise_sampler_seed" in keys:
        config["noise_sampler_seed"] = seed
    try:
        return cls.from_config(config)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise SamplerOptionError(f"{class_name} refused its config: {err}") from err


def _model_sigma(scheduler, t: Tensor, i: int) -> tuple[float, bool]:
    """The sigma the model is called at, and whether the latent is variance-exploding.

    Sigma-type schedulers (Euler, Heun, ...) keep x = data + sigma*eps and
    scale the model input by 1/sqrt(sigma^2 + 1); probing that scale gives
    their sigma, whatever interpolation they used. Alpha-type schedulers keep
    the variance-preserving latent and pass it unscaled: their sigma is their
    own per-step sigma, or the training sigma at the timestep.
    """
    c = float(scheduler.scale_model_input(torch.ones(1, dtype=torch.float64), t))
    if abs(c - 1.0) > 1e-9:
        return (1.0 / c**2 - 1.0) ** 0.5, True
    own = getattr(scheduler, "sigmas", None)
    if own is not None and len(own) == len(scheduler.timesteps) + 1:
        idx = scheduler.step_index if getattr(scheduler, "step_index", None) is not None else i
        return float(own[idx]), False
    abar = float(scheduler.alphas_cumprod[int(round(float(t)))])
    return ((1 - abar) / abar) ** 0.5, False


def _step_kwargs(scheduler, generator: torch.Generator) -> dict[str, Any]:
    params = inspect.signature(scheduler.step).parameters
    return {"generator": generator} if "generator" in params else {}


def _brownian_noise_inside_its_tree(scheduler, sample: Tensor) -> None:
    """A scheduler with a Brownian-tree noise sampler (DPMSolverSDEScheduler): build it as its
    first step() would (same sample, interval and seed, so the same noise) with its queries
    clamped into the tree's rounded interval (samplers.noise.ClampedQueries says why)."""
    if getattr(scheduler, "noise_sampler", False) is not None:
        return  # none, or already built
    module = importlib.import_module(type(scheduler).__module__)
    make = getattr(module, "BrownianTreeNoiseSampler", None)
    if make is None:
        return
    sigmas = scheduler.sigmas
    lo, hi = sigmas[sigmas > 0].min().item(), sigmas.max().item()
    sampler = make(sample, lo, hi, scheduler.noise_sampler_seed)
    sampler.tree = ClampedQueries(sampler.tree, lo, hi)
    scheduler.noise_sampler = sampler


def run_scheduler(x: Tensor, sigmas: Tensor, noise: CellNoise, *, _class_name: str,
                  _preset: dict[str, Any], scheduler_config: dict[str, Any] | None = None,
                  **overrides: Any):
    """Generator: one diffusers scheduler run, as a sampler.

    `x` is taken as noise scaled to sigmas[0]; the scheduler starts from
    x / sigmas[0] * init_noise_sigma, exactly what a diffusers pipeline does
    with the same noise. Returns the scheduler's final latent (what a diffusers
    pipeline decodes).
    """
    scheduler = build(_class_name, _preset, overrides, scheduler_config, seed=noise.seed)
    scheduler.set_timesteps(len(sigmas) - 1, device=x.device)
    if _final_step_is_noop(scheduler):
        # n steps whose last is a skipped no-op give n sigmas, not n + 1 (own_sigmas)
        scheduler.set_timesteps(len(sigmas), device=x.device)
        if not _final_step_is_noop(scheduler):
            scheduler.set_timesteps(len(sigmas) - 1, device=x.device)  # _check_matches says why
    _check_matches(_class_name, scheduler, sigmas)
    sample = x / sigmas[0].to(x.dtype) * scheduler.init_noise_sigma
    _brownian_noise_inside_its_tree(scheduler, sample)
    kwargs = _step_kwargs(scheduler, noise.generator)
    timesteps = scheduler.timesteps
    if _final_step_is_noop(scheduler):
        timesteps = timesteps[:-1]  # diffusers would call the model there and keep the latent as it is
    for i, t in enumerate(timesteps):
        sigma, exploding = _model_sigma(scheduler, t, i)
        x_ve = sample if exploding else sample * (1 + sigma**2) ** 0.5
        denoised = yield x_ve, sigma, t
        eps = (x_ve - denoised) / sigma
        sample = scheduler.step(eps, t, sample, **kwargs).prev_sample
    return sample


def _final_step_is_noop(scheduler) -> bool:
    """Whether the scheduler's last step leaves the latent where it is.

    DDIM and PNDM (PLMS) step from timestep t to alphas_cumprod at t - N // n, or to
    final_alpha_cumprod below 0, which is alphas_cumprod[0] when set_alpha_to_one is False
    (SD's config). A spacing whose last timestep is 0 ("linspace", i.e. Uniform) so ends with
    a step from alpha_bar_0 to alpha_bar_0: diffusers calls the model there, and the update,
    x_prev = sqrt(a') x0 + sqrt(1 - a') eps with a' = a, gives back the latent it was given
    (DDIM with any eta: its variance (1 - a')/(1 - a) (1 - a/a') is 0 too; PLMS's
    (a' - a) coefficient is 0). The adapter skips that call: the same result, one model call
    fewer, and a strictly descending sigma list. With clip_sample or thresholding the step
    would move x0, so it is not skipped (own_sigmas refuses such a run).
    """
    if getattr(scheduler, "sigmas", None) is not None or not hasattr(scheduler, "final_alpha_cumprod"):
        return False
    t_last = int(scheduler.timesteps[-1])
    return float(scheduler.alphas_cumprod[t_last]) == float(scheduler.final_alpha_cumprod)


def _final_step_moves_x0(scheduler) -> bool:
    config = scheduler.config
    return bool(config.get("clip_sample", False) or config.get("thresholding", False))


def own_sigmas(scheduler) -> Tensor:
    """A set-up scheduler's per-step sigmas (descending, ending in its last).

    n + 1 values for n steps, except for DDIM and PLMS on a spacing that ends at timestep 0:
    their last step is a no-op the adapter skips (`_final_step_is_noop`), so n values.
    """
    own = getattr(scheduler, "sigmas", None)
    if own is not None:
        return torch.unique_consecutive(own.double().cpu())
    abar = scheduler.alphas_cumprod.double()
    ts = torch.unique_consecutive(scheduler.timesteps.long().cpu())
    # DDIM and PLMS end at final_alpha_cumprod (alphas_cumprod[0] unless
    # set_alpha_to_one), not at sigma 0; DDPM-like ones end at the data.
    final = float(getattr(scheduler, "final_alpha_cumprod", 1.0))
    last = torch.tensor([((1 - final) / final) ** 0.5], dtype=torch.float64)
    if _final_step_is_noop(scheduler):
        if _final_step_moves_x0(scheduler):
            raise ValueError(
                f"{type(scheduler).__name__} ends this spacing with a step at timestep 0 that stays at "
                "its final noise level, which clip_sample/thresholding turn into an extra projection "
                "the sigma schedule cannot show; use the SGM Uniform or DDIM schedule type, or "
                "clip_sample=False and thresholding=False")
        return torch.cat([((1 - abar[ts[:-1]]) / abar[ts[:-1]]).sqrt(), last])
    return torch.cat([((1 - abar[ts]) / abar[ts]).sqrt(), last])


def _check_matches(class_name: str, scheduler, sigmas: Tensor) -> None:
    own = own_sigmas(scheduler)
    if len(own) != len(sigmas) or not torch.allclose(own, sigmas.double().cpu(), rtol=1e-3, atol=1e-4):
        raise ValueError(
            f"{class_name} runs its own sigma schedule; pass the sigmas that "
            "samplers.sigmas('Automatic', steps, train_sigmas, sampler=...) returns, and pick a "
            "schedule type with the scheduler's flags (use_karras_sigmas=True, ...)")



def run_flow_scheduler(x: Tensor, sigmas: Tensor, noise: CellNoise, param: Parametrisation, *,
                       _class_name: str, _preset: dict[str, Any],
                       scheduler_config: dict[str, Any] | None = None, **overrides: Any):
    """Generator: one diffusers rectified-flow scheduler run, as a sampler (flow models only).

    The scheduler's latent is the flow sample itself; it starts from x / sigmas[0], the pure
    noise a flow pipeline starts from, and is configured with the model's shift (param.shift).
    The model is called at the scheduler's own sigma with its timestep (sigma * N, which
    the multistep schedulers round), and the scheduler gets the velocity v = (x - D) / sigma.
    Returns the final latent, what a diffusers pipeline decodes.

    FlowMatchEulerDiscreteScheduler given other sigmas than its own spacing follows them (built
    with shift 1 so it does not shift them again), as the SD3 and Flux pipelines hand it theirs:
    FluxPipeline's default, linspace(1, 1/N, N) shifted by exp(mu), is not its own spacing.
    """
    scheduler = build(_class_name, _preset, overrides, scheduler_config, seed=noise.seed,
                      shift=param.shift)
    scheduler.set_timesteps(len(sigmas) - 1, device=x.device)
    own = own_sigmas(scheduler)
    if _class_name == "FlowMatchEulerDiscreteScheduler" and float(sigmas[-1]) == 0 and (
            len(own) != len(sigmas) or not torch.allclose(own, sigmas.double().cpu(), rtol=1e-3, atol=1e-4)):
        scheduler = build(_class_name, _preset, overrides, scheduler_config, seed=noise.seed, shift=1.0)
        scheduler.set_timesteps(sigmas=sigmas[:-1].double().cpu().numpy(), device=x.device)
    if len(own_sigmas(scheduler)) != len(sigmas):
        # DEIS and SA-Solver on flow sigmas end with a step of length 0 at their last sigma:
        # n sigmas for n steps, and that last step leaves the sample where it is (skipped).
        scheduler.set_timesteps(len(sigmas), device=x.device)
    _check_matches(_class_name, scheduler, sigmas)
    sample = x / sigmas[0].to(x.dtype)
    kwargs = _step_kwargs(scheduler, noise.generator)
    own = scheduler.sigmas.tolist()
    for i, t in enumerate(scheduler.timesteps):
        if own[i + 1] == own[i] and i + 1 == len(scheduler.timesteps):
            break
        denoised = yield sample, own[i], t
        sample = scheduler.step((sample - denoised) / own[i], t, sample, **kwargs).prev_sample
    return sample
