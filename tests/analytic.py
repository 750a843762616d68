"""Analytic diffusion models whose denoiser and probability-flow ODE are exact.

Data ~ N(mu, s^2 I) noised as x = data + sigma * eps has the exact denoiser
    D(x; sigma) = mu + s^2 / (s^2 + sigma^2) * (x - mu),
and the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
(Karras et al. 2022, eq. 3 with sigma(t) = t) has the closed-form solution
    x(sigma) = mu + (x(sigma0) - mu) * sqrt((s^2 + sigma^2) / (s^2 + sigma0^2)).

A mixture of isotropic Gaussians has a closed-form denoiser too (a
posterior-weighted average of the components' denoisers); its ODE has no closed
form, so tests use a very fine high-order reference solve.

Under the rectified-flow parametrisation x = (1 - sigma) data + sigma * eps (sigma in
[0, 1]; `samplers.FLOW`) both have closed-form denoisers too (`FlowGaussian`,
`FlowMixture`): x given a component is N((1 - sigma) c, ((1 - sigma)^2 s^2 + sigma^2) I).
The flow ODE is the VE ODE of x / (1 - sigma) in sigma / (1 - sigma), which gives the flow
Gaussian's exact solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from samplers.noise import CellNoise


def _bcast(sigma: Tensor, x: Tensor) -> Tensor:
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


@dataclass(frozen=True)
class Gaussian:
    """Data ~ N(mu, s^2 I) in every coordinate."""

    mu: float = 0.5
    s: float = 0.8

    def denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        sg = _bcast(sigma, x)
        return self.mu + self.s**2 / (self.s**2 + sg**2) * (x - self.mu)

    def exact(self, x0: Tensor, sigma0: float, sigma1: float) -> Tensor:
        """Exact probability-flow ODE solution from sigma0 to sigma1."""
        ratio = ((self.s**2 + sigma1**2) / (self.s**2 + sigma0**2)) ** 0.5
        return self.mu + (x0 - self.mu) * ratio


@dataclass(frozen=True)
class Mixture:
    """Equal-weight mixture of N(c_k, s^2 I) over the last dimension's centres."""

    centres: tuple[tuple[float, ...], ...] = ((-1.0, 0.5), (1.0, -0.5), (0.3, 1.2))
    s: float = 0.3

    def denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        c = torch.tensor(self.centres, dtype=x.dtype, device=x.device)  # (K, D)
        sg = _bcast(sigma, x)
        var = self.s**2 + sg**2  # (B, 1, ...) variance of x given component
        d2 = ((x.unsqueeze(-2) - c) ** 2).sum(-1)  # (..., K)
        logits = -d2 / (2 * var)
        w = torch.softmax(logits, dim=-1).unsqueeze(-1)  # (..., K, 1)
        comp = c + (self.s**2 / var).unsqueeze(-1) * (x.unsqueeze(-2) - c)
        return (w * comp).sum(-2)


@dataclass(frozen=True)
class FlowGaussian:
    """Data ~ N(mu, s^2 I) under x = (1 - sigma) data + sigma eps."""

    mu: float = 0.5
    s: float = 0.8

    def denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        sg = _bcast(sigma, x)
        a = 1 - sg
        var = a**2 * self.s**2 + sg**2
        return self.mu + a * self.s**2 / var * (x - a * self.mu)

    def exact(self, x0: Tensor, sigma0: float, sigma1: float) -> Tensor:
        """Exact flow ODE solution from sigma0 (<= 1) to sigma1.

        In x / alpha, sigma / alpha it is the VE Gaussian's; at sigma0 = 1 (alpha = 0) the
        limit is x(sigma1) = alpha1 mu + x0 sqrt(alpha1^2 s^2 + sigma1^2).
        """
        a0, a1 = 1 - sigma0, 1 - sigma1
        sd1 = (a1**2 * self.s**2 + sigma1**2) ** 0.5
        if a0 == 0:
            return a1 * self.mu + x0 * sd1
        sd0 = (a0**2 * self.s**2 + sigma0**2) ** 0.5
        return a1 * self.mu + (x0 - a0 * self.mu) * (sd1 / sd0)


@dataclass(frozen=True)
class FlowMixture:
    """Mixture's data under x = (1 - sigma) data + sigma eps."""

    centres: tuple[tuple[float, ...], ...] = Mixture.centres
    s: float = Mixture.s

    def denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        c = torch.tensor(self.centres, dtype=x.dtype, device=x.device)  # (K, D)
        sg = _bcast(sigma, x)
        a = (1 - sg).unsqueeze(-1)  # (B, 1, ..., 1)
        var = (1 - sg) ** 2 * self.s**2 + sg**2
        diff = x.unsqueeze(-2) - a * c  # (..., K, D)
        w = torch.softmax(-(diff**2).sum(-1) / (2 * var), dim=-1).unsqueeze(-1)
        comp = c + (a * self.s**2 / var.unsqueeze(-1)) * diff
        return (w * comp).sum(-2)


def flow_sigmas(n: int, end: float = 0.0, shift: float = 1.0,
                dtype: torch.dtype = torch.float64) -> Tensor:
    """n steps of the shifted linear flow schedule from sigma 1: t = linspace(1, end, n + 1)
    shifted (s t / (1 + (s - 1) t)); end 0 gives a final 0, end > 0 stops there."""
    t = torch.linspace(1, end, n + 1, dtype=dtype)
    return shift * t / (1 + (shift - 1) * t)


def karras_sigmas(n: int, sigma_min: float = 0.03, sigma_max: float = 14.6, rho: float = 7.0,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """Karras et al. 2022 eq. 5 schedule with a final 0 (test-local copy)."""
    r = torch.linspace(0, 1, n, dtype=dtype)
    inv = sigma_max ** (1 / rho) + r * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=dtype)])


def start(shape: tuple[int, ...], sigma_max: float, seed: int = 0,
          dtype: torch.dtype = torch.float64) -> Tensor:
    """Pure noise scaled to sigma_max: the starting sample of a run."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype) * sigma_max


def rms(a: Tensor, b: Tensor) -> float:
    """Root-mean-square difference of two samples."""
    return float((a - b).pow(2).mean().sqrt())


def karras_steps(n: int, end: float = 0.05, sigma_max: float = 14.6) -> Tensor:
    """n Karras steps from sigma_max down to `end` (> 0), no final 0: for order fits,
    where the final jump to sigma 0 would add an error that does not shrink with steps."""
    return karras_sigmas(n + 1, sigma_min=end, sigma_max=sigma_max)[:-1]


class CountingNoise(CellNoise):
    """A CellNoise that counts its Gaussian and Brownian draws (`draws`: both together)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gaussians = 0
        self.brownians = 0

    @property
    def draws(self) -> int:
        return self.gaussians + self.brownians

    def gaussian(self, like: Tensor) -> Tensor:
        self.gaussians += 1
        return super().gaussian(like)

    def brownian(self, sigma, sigma_next, like: Tensor) -> Tensor:
        self.brownians += 1
        return super().brownian(sigma, sigma_next, like)


class FreshNoise(CellNoise):
    """The fresh-noise variant of an SDE sampler (as ComfyUI draws it): an independent
    N(0, I) for every Brownian increment, so runs at different step counts share no path."""

    def brownian(self, sigma, sigma_next, like: Tensor) -> Tensor:
        return self.gaussian(like)
