"""The model parametrisation: how a noisy sample is made from data and noise, written once.

A model family's forward process is x = alpha(sigma) x0 + sigma eps with

- VE (variance exploding, the SD family in k-diffusion's form): alpha = 1, sigma in (0, ~15];
- FLOW (rectified flow, SD3 / Flux): alpha = 1 - sigma, sigma in (0, 1]
  (Lipman, Chen, Ben-Hamu, Nickel & Le 2023, "Flow Matching for Generative Modeling";
  Liu, Gong & Liu 2023, "Flow Straight and Fast"; Esser et al. 2024, "Scaling Rectified
  Flow Transformers for High-Resolution Image Synthesis", the SD3 paper, for the shift).

A flow model predicts the velocity v = eps - x0; D(x; sigma) = x - sigma v is the same
data estimate a VE model gives, and its probability-flow ODE is the VE one unchanged,
dx/dsigma = (x - D) / sigma (E[v | x] = (x - D) / sigma). So ODE samplers run on flow models
as they are; what differs is everything that puts noise back in. This module owns those
differences: alpha(sigma), the half-log-SNR lambda = log(alpha / sigma) and its inverse, the
ancestral step, the re-noising of a sample to a higher or lower noise level, the SNR-safe
first sigma, and `in_ve_coordinates`, which runs a VE sampler on a flow model in the
VE-equivalent coordinates x / alpha = x0 + (sigma / alpha) eps (how the SDE samplers get
their flow form). Every VE formula here is the one the samplers used before this module
existed, so VE images do not change by a bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from samplers._math import ancestral_step as ve_ancestral_step
from samplers.noise import CellNoise

# ComfyUI moves a first sigma of 1 (lambda = -inf) to the model's sigma at 1e-4 of the way
# from pure noise (model_sampling.percent_to_sigma(1e-4)) before a sampler works in lambda.
FIRST_SIGMA_PERCENT = 1e-4


@dataclass(frozen=True)
class AncestralStep:
    """One ancestral step: solve the ODE to `down`, multiply by `scale`, add `up` * N(0, I).

    The result sits exactly at the target sigma's signal level alpha and noise level sigma.
    VE steps have scale 1.
    """

    down: float
    up: float
    scale: float = 1.0


@dataclass(frozen=True)
class Parametrisation:
    """A forward process x = alpha(sigma) x0 + sigma eps; `VE` (alpha = 1) or `FLOW` (1 - sigma).

    shift (flow only) is the model's timestep shift s, sigma = s t / (1 + (s - 1) t); only
    the SNR-safe first sigma depends on it (`first_sigma`). Use `FLOW.with_shift(s)`.
    """

    name: str
    shift: float = 1.0

    @property
    def is_flow(self) -> bool:
        return self.name == "flow"

    def with_shift(self, shift: float) -> Parametrisation:
        """This parametrisation for a model trained with timestep shift `shift` (> 0)."""
        if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
            raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
        return replace(self, shift=float(shift))

    def alpha(self, sigma: float) -> float:
        """The signal scale at sigma: 1 (VE) or 1 - sigma (flow)."""
        return 1.0 - sigma if self.is_flow else 1.0

    def half_log_snr(self, sigma: float) -> float:
        """lambda = log(alpha / sigma): -log sigma (VE), log((1 - sigma) / sigma) (flow).

        +inf at sigma = 0; -inf at sigma = 1 on flow (pure noise).
        """
        if sigma <= 0:
            return math.inf
        if not self.is_flow:
            return -math.log(sigma)
        return -math.inf if sigma >= 1 else math.log((1.0 - sigma) / sigma)

    def sigma_at(self, lam: float) -> float:
        """The inverse of half_log_snr: exp(-lambda) (VE), 1 / (1 + exp(lambda)) (flow)."""
        if not self.is_flow:
            return math.exp(-lam)
        if lam >= 0:  # the logistic function, written so that neither branch overflows
            e = math.exp(-lam)
            return e / (1.0 + e)
        return 1.0 / (1.0 + math.exp(lam))

    def ve_sigma(self, sigma: float) -> float:
        """sigma / alpha = exp(-lambda): the noise level of x / alpha = x0 + (sigma / alpha) eps."""
        if not self.is_flow:
            return sigma
        return math.inf if sigma >= 1 else sigma / (1.0 - sigma)

    def from_ve_sigma(self, ve_sigma: float) -> float:
        """The inverse of ve_sigma."""
        if not self.is_flow:
            return ve_sigma
        return 1.0 if math.isinf(ve_sigma) else ve_sigma / (1.0 + ve_sigma)

    def first_sigma(self, sigma: float) -> float:
        """A first sigma with a finite lambda: flow's sigma >= 1 becomes the model's sigma at
        t = 1 - 1e-4, s t / (1 + (s - 1) t), as ComfyUI's offset_first_sigma_for_snr does."""
        if not self.is_flow or sigma < 1:
            return sigma
        t = 1.0 - FIRST_SIGMA_PERCENT
        return self.shift * t / (1 + (self.shift - 1) * t)

    def renoise(self, sigma_from: float, sigma_to: float) -> AncestralStep:
        """Move a sample at sigma_from to sigma_to's levels: x_to = scale x_from + up z.

        scale = alpha_to / alpha_from keeps the signal right; up tops the noise up to sigma_to:
        up^2 = sigma_to^2 - (scale sigma_from)^2, which needs ve_sigma(sigma_from) <=
        ve_sigma(sigma_to) (noise is only ever added). VE: scale 1, up^2 = sigma_to^2 - sigma_from^2.
        """
        scale = self.alpha(sigma_to) / self.alpha(sigma_from) if self.is_flow else 1.0
        up = math.sqrt(max(sigma_to**2 - (sigma_from * scale) ** 2, 0.0))
        return AncestralStep(sigma_from, up, scale)

    def ancestral_step(self, sigma: float, sigma_next: float, eta: float = 1.0) -> AncestralStep:
        """Split a step sigma -> sigma_next into an ODE step to `down` and fresh noise.

        VE: the DDPM posterior's split (`samplers._math.ancestral_step`): up^2 = eta^2
        sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2 (capped at sigma_next), down^2 =
        sigma_next^2 - up^2. Flow: ComfyUI's rectified-flow ("RF") step, down = sigma_next
        (1 + (sigma_next / sigma - 1) eta) (linear in eta; at eta = 1 it is sigma_next^2 /
        sigma, as on VE), then `renoise(down, sigma_next)`; down is kept >= 0 for eta > 1.
        eta = 0 or sigma_next = 0 is the plain ODE step (down = sigma_next, no noise).
        """
        if not self.is_flow:
            down, up = ve_ancestral_step(sigma, sigma_next, eta)
            return AncestralStep(down, up)
        if eta == 0 or sigma_next == 0:
            return AncestralStep(sigma_next, 0.0)
        down = max(sigma_next * (1 + (sigma_next / sigma - 1) * eta), 0.0)
        return self.renoise(down, sigma_next)

    def noised(self, x0: Tensor, eps: Tensor, sigma: float) -> Tensor:
        """alpha(sigma) x0 + sigma eps (VE: x0 + sigma eps, as the samplers always wrote it)."""
        if not self.is_flow:
            return x0 + eps * sigma
        return x0 * self.alpha(sigma) + eps * sigma


VE = Parametrisation("VE")
FLOW = Parametrisation("flow")


def apply_step(x: Tensor, step: AncestralStep, noise: Callable[[Tensor], Tensor],
               s_noise: float = 1.0) -> Tensor:
    """x (at step.down) moved to the step's target: scale it, add s_noise * up * noise(x)."""
    if step.scale != 1.0:
        x = x * step.scale
    if step.up > 0:
        x = x + noise(x) * (s_noise * step.up)
    return x


class _NoiseInVE:
    """A cell's noise as a VE sampler running in VE-equivalent coordinates sees it: the
    Brownian path is read at the model's own sigmas, so the noise path is the one the
    cell has, the same across step counts."""

    def __init__(self, noise: CellNoise, to_sigma: Callable[[float], float]) -> None:
        self._noise = noise
        self._to_sigma = to_sigma
        self.seed = noise.seed

    @property
    def generator(self) -> torch.Generator:
        return self._noise.generator

    def gaussian(self, like: Tensor) -> Tensor:
        return self._noise.gaussian(like)

    def brownian(self, ve_sigma: Any, ve_sigma_next: Any, like: Tensor) -> Tensor:
        return self._noise.brownian(self._to_sigma(float(ve_sigma)),
                                    self._to_sigma(float(ve_sigma_next)), like)


def in_ve_coordinates(start: Callable[[Tensor, Tensor, Any], Any], x: Tensor, sigmas: Tensor,
                      noise: CellNoise, param: Parametrisation):
    """Generator: a VE sampler run on a model of parametrisation `param`.

    x / alpha = x0 + (sigma / alpha) eps is a VE sample at noise level sigma / alpha with the
    same x0 and D, so a VE sampler started on (x / alpha, sigma / alpha) is that sampler for
    `param`: each request (x~, s~) goes to the model as (alpha x~, sigma), the estimate comes
    back unchanged, and the result is scaled back by alpha at the last sigma. Written out, a
    data-prediction SDE step becomes ComfyUI's form for flow models, e.g. DPM++ 2M SDE's
    x' = (sigma' / sigma) e^(-eta h) x + alpha' (1 - e^(-(1 + eta) h)) D + sigma' sqrt(1 -
    e^(-2 eta h)) z with h the step in lambda = log((1 - sigma) / sigma). The first sigma
    moves off 1 (`Parametrisation.first_sigma`), as ComfyUI does, since lambda(1) = -inf.
    `start(x, sigmas, noise)` starts the VE sampler.
    """
    sig = [float(s) for s in sigmas]
    sig[0] = param.first_sigma(sig[0])
    ve = [param.ve_sigma(s) for s in sig]
    back = dict(zip(ve, sig, strict=True))  # schedule points map back exactly

    def to_sigma(s: float) -> float:
        return back[s] if s in back else param.from_ve_sigma(s)

    gen = start(x / param.alpha(sig[0]), torch.tensor(ve, dtype=torch.float64),
                _NoiseInVE(noise, to_sigma))
    try:
        request = next(gen)
        while True:
            sigma = to_sigma(float(request[1]))
            denoised = yield request[0] * param.alpha(sigma), sigma
            request = gen.send(denoised)
    except StopIteration as stop:
        return stop.value * param.alpha(sig[-1])
    finally:
        gen.close()


def flow_train_sigmas(shift: float = 1.0, num_train_timesteps: int = 1000) -> Tensor:
    """A flow model's training sigmas, ascending, float32: sigma_i = s t_i / (1 + (s - 1) t_i),
    t_i = i / N, i = 1..N (the last is exactly 1).

    The shifted timestep table of SD3 (Esser et al. 2024, section 5.3.2, shift s = 3) and of
    ComfyUI's ModelSamplingDiscreteFlow; Flux's resolution-dependent shift is s = e^mu. With
    it every schedule type of `samplers.sigmas` works on flow models.
    """
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) \
            or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be a whole number >= 2, got {num_train_timesteps!r}")
    s = FLOW.with_shift(shift).shift
    t = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    return (s * t / (1 + (s - 1) * t)).float()
