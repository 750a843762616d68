"""Small math shared by several sampler modules: ancestral step splits, Karras churn, option checks,
Gauss-Legendre quadrature, log-linear interpolation of a noise-level table.

Only add to this module; other sampler files may rely on what is here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from numpy.polynomial.legendre import leggauss
from torch import Tensor

from samplers.noise import CellNoise
from samplers.registry import SamplerOptionError

if TYPE_CHECKING:
    from samplers.parametrisation import Parametrisation


def real_option(name: str, value: Any, *, minimum: float = 0.0, allow_inf: bool = False) -> float:
    """A numeric sampler option as a float, refusing NaN, non-numbers and values below `minimum`.

    Raises SamplerOptionError with a message naming the option and the value.
    """
    if isinstance(value, (bool, str, bytes)):
        raise SamplerOptionError(f"option {name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SamplerOptionError(f"option {name} must be a number, got {value!r}") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise SamplerOptionError(f"option {name} must be a finite number, got {value!r}")
    if v < minimum:
        raise SamplerOptionError(f"option {name} must be >= {minimum:g}, got {value!r}")
    return v


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step sigma -> sigma_next into a deterministic part and fresh noise.

    Returns (sigma_down, sigma_up): step the ODE to sigma_down, then add
    sigma_up * N(0, I), so that sigma_down^2 + sigma_up^2 = sigma_next^2.
    eta = 1 gives the DDPM posterior's noise level (Ho et al. 2020, eq. 7, in
    sigma form); eta = 0 is the plain ODE step. Values are exact for eta = 0
    (sigma_down is sigma_next itself) so ancestral samplers reduce bit for bit
    to their deterministic counterparts.
    """
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    down = math.sqrt(max(sigma_next**2 - up**2, 0.0))
    return down, up


@dataclass(frozen=True)
class Churn:
    """Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based
    Generative Models"), Algorithm 2 lines 4-6: before a step at sigma in
    [s_tmin, s_tmax], raise the noise level to sigma_hat = sigma (1 + gamma),
    gamma = min(s_churn / steps, sqrt(2) - 1), by adding fresh noise of
    variance sigma_hat^2 - sigma^2 scaled by s_noise.

    On a flow model the churn raises the VE-equivalent noise level sigma / alpha by
    (1 + gamma) and re-noises to the sigma that has it (`Parametrisation.renoise`), so the
    sample keeps the flow marginals and sigma_hat stays below 1 (ComfyUI applies the VE
    formula unchanged there, which can step past sigma = 1).
    """

    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    steps: int = 1

    @classmethod
    def checked(cls, s_churn: Any, s_tmin: Any, s_tmax: Any, s_noise: Any, steps: int) -> Churn:
        """A Churn from user options, raising SamplerOptionError on values that make no sense."""
        churn = real_option("s_churn", s_churn)
        tmin = real_option("s_tmin", s_tmin)
        tmax = real_option("s_tmax", s_tmax, allow_inf=True)
        if tmax < tmin:
            raise SamplerOptionError(f"option s_tmax ({s_tmax!r}) must be >= s_tmin ({s_tmin!r})")
        return cls(churn, tmin, tmax, real_option("s_noise", s_noise), max(int(steps), 1))

    def gamma(self, sigma: float) -> float:
        """How much this step raises sigma (0 outside [s_tmin, s_tmax] or without churn)."""
        if self.s_churn == 0 or not self.s_tmin <= sigma <= self.s_tmax:
            return 0.0
        return min(self.s_churn / self.steps, math.sqrt(2) - 1)

    def apply(self, x: Tensor, sigma: float, noise: CellNoise,
              param: Parametrisation | None = None) -> tuple[Tensor, float]:
        """(x_hat, sigma_hat); draws noise only when gamma > 0, so churn 0 is deterministic."""
        gamma = self.gamma(sigma)
        if gamma == 0:
            return x, sigma
        if param is not None and param.is_flow:
            return self._apply_flow(x, sigma, gamma, noise, param)
        sigma_hat = sigma * (1 + gamma)
        eps = noise.gaussian(x)
        return x + eps * (self.s_noise * math.sqrt(sigma_hat**2 - sigma**2)), sigma_hat

    def _apply_flow(self, x: Tensor, sigma: float, gamma: float, noise: CellNoise,
                    param: Parametrisation) -> tuple[Tensor, float]:
        ve_sigma = param.ve_sigma(sigma)
        if math.isinf(ve_sigma):  # pure noise already: nothing to raise
            return x, sigma
        sigma_hat = param.from_ve_sigma(ve_sigma * (1 + gamma))
        step = param.renoise(sigma, sigma_hat)
        x = x * step.scale + noise.gaussian(x) * (self.s_noise * step.up)
        return x, sigma_hat


def int_option(name: str, value: Any, *, minimum: int, maximum: int) -> int:
    """A whole-number sampler option in [minimum, maximum] as an int.

    Accepts ints and integral floats (3.0), refuses bools, strings, fractions
    and values out of range with a SamplerOptionError naming the option.
    """
    valid = not isinstance(value, (bool, str, bytes))
    as_int = 0
    try:
        as_int = int(value)
        valid = valid and as_int == value
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid or not minimum <= as_int <= maximum:
        raise SamplerOptionError(
            f"option {name} must be a whole number from {minimum} to {maximum}, got {value!r}")
    return as_int


@functools.lru_cache(maxsize=8)
def _legendre_rule(points: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    nodes, weights = leggauss(points)
    return tuple(float(v) for v in nodes), tuple(float(w) for w in weights)


def gauss_legendre(a: float, b: float, points: int = 16) -> list[tuple[float, float]]:
    """(node, weight) pairs of the Gauss-Legendre rule on [a, b] (signed: b < a flips the weights).

    The rule integrates polynomials of degree < 2 * points exactly and smooth
    functions to near machine precision, for a handful of float operations;
    samplers use it for step coefficients that have no closed form.
    """
    nodes, weights = _legendre_rule(points)
    half, mid = (b - a) / 2, (a + b) / 2
    return [(mid + half * u, half * w) for u, w in zip(nodes, weights, strict=True)]


def loginterp(values: Tensor, pos: Tensor) -> Tensor:
    """values at fractional index pos, interpolating log(values) linearly (float64 in and out).

    pos is clamped to [0, len(values) - 1]; an integer pos returns that value exactly.
    """
    pos = pos.clamp(0, len(values) - 1)
    low = pos.floor().long()
    high = (low + 1).clamp(max=len(values) - 1)
    w = pos - low
    # values[low] * (values[high]/values[low])**w, written so that w = 0 returns values[low] exactly
    return values[low] * torch.exp(w * (values[high].log() - values[low].log()))
