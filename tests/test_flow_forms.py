"""The flow forms against ComfyUI's formulas for its CONST (rectified-flow) models, written out
independently here from the equations in docs/SAMPLERS.md ("Flow models"), step by step."""

from __future__ import annotations

import math

import torch

import samplers
from samplers.noise import CellNoise, sigma_range
from tests.analytic import FlowMixture, flow_sigmas, rms

MODEL = FlowMixture()
SIG = flow_sigmas(12, shift=3.0)


def start(seed: int = 0) -> torch.Tensor:
    return torch.randn(64, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return MODEL.denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype))


def test_euler_a_is_comfyuis_rf_step():
    """sample_euler_ancestral_RF: x <- (d/s) x + (1 - d/s) D with d = s' (1 + (s'/s - 1) eta),
    then x <- (a'/a_d) x + sqrt(s'^2 - d^2 a'^2 / a_d^2) z."""
    eta, seed = 0.8, 3
    noise = CellNoise(seed, *sigma_range(SIG))
    x = start()
    for s, s_next in zip(SIG[:-1].tolist(), SIG[1:].tolist(), strict=True):
        d = denoise(x, s)
        if s_next == 0:
            x = d
            continue
        down = s_next * (1 + (s_next / s - 1) * eta)
        x = (down / s) * x + (1 - down / s) * d
        renoise = math.sqrt(s_next**2 - down**2 * (1 - s_next) ** 2 / (1 - down) ** 2)
        x = (1 - s_next) / (1 - down) * x + noise.gaussian(x) * renoise
    ours = samplers.sample("Euler a", MODEL.denoiser, start(), SIG, seed=seed, flow=True, eta=eta)
    assert rms(ours, x) < 1e-12


def test_dpmpp_2s_a_is_comfyuis_rf_step():
    """sample_dpmpp_2s_ancestral_RF: the midpoint halfway in log((1 - s)/s) between s and the
    RF sigma_down (0.9999 at s = 1), DDIM steps to it and to sigma_down, then the RF noise."""
    noise = CellNoise(4, *sigma_range(SIG))
    x = start()

    def lam(v):
        return math.log((1 - v) / v)

    for s, s_next in zip(SIG[:-1].tolist(), SIG[1:].tolist(), strict=True):
        d = denoise(x, s)
        if s_next == 0:
            x = d
            continue
        down = s_next * s_next / s
        mid = 0.9999 if s == 1 else 1 / (1 + math.exp((lam(s) + lam(down)) / 2))
        u = (mid / s) * x + (1 - mid / s) * d
        d_mid = denoise(u, mid)
        x = (down / s) * x + (1 - down / s) * d_mid
        renoise = math.sqrt(s_next**2 - down**2 * (1 - s_next) ** 2 / (1 - down) ** 2)
        x = (1 - s_next) / (1 - down) * x + noise.gaussian(x) * renoise
    ours = samplers.sample("DPM++ 2S a", MODEL.denoiser, start(), SIG, seed=4, flow=True)
    assert rms(ours, x) < 1e-12


def test_dpmpp_2m_sde_is_comfyuis_const_form():
    """sample_dpmpp_2m_sde on a CONST model: lambda = log((1 - s)/s), the first sigma moved to
    the model's sigma at t = 1 - 1e-4, x' = (s'/s) e^(-eta h) x + a' (1 - e^-H) D
    + 1/2 a' (1 - e^-H) (h / h_last) (D - D_old) + s' sqrt(1 - e^(-2 eta h)) z."""
    eta, shift = 1.0, 3.0
    sig = SIG.tolist()
    t = 1 - 1e-4
    sig[0] = shift * t / (1 + (shift - 1) * t)
    noise = CellNoise(5, *sigma_range(SIG))
    x, old, h_last = start(), None, None
    for s, s_next in zip(sig[:-1], sig[1:], strict=True):
        d = denoise(x, s)
        if s_next == 0:
            x = d
            continue
        h = math.log((1 - s_next) / s_next) - math.log((1 - s) / s)
        big_h = (1 + eta) * h
        a_next = 1 - s_next
        x = s_next / s * math.exp(-eta * h) * x - a_next * math.expm1(-big_h) * d
        if old is not None:
            x = x - 0.5 * a_next * math.expm1(-big_h) * (h / h_last) * (d - old)
        x = x + noise.brownian(s, s_next, x) * s_next * math.sqrt(-math.expm1(-2 * eta * h))
        old, h_last = d, h
    ours = samplers.sample("DPM++ 2M SDE", MODEL.denoiser, start(), SIG, seed=5, flow=True,
                           shift=shift)
    assert rms(ours, x) < 1e-10


def test_lcm_renoises_with_the_flow_forward_process():
    noise = CellNoise(6, *sigma_range(SIG))
    x = start()
    for s, s_next in zip(SIG[:-1].tolist(), SIG[1:].tolist(), strict=True):
        d = denoise(x, s)
        x = d if s_next == 0 else (1 - s_next) * d + s_next * noise.gaussian(d)
    ours = samplers.sample("LCM", MODEL.denoiser, start(), SIG, seed=6, flow=True)
    assert torch.equal(ours, x)


def test_ode_samplers_run_unchanged_on_flow_models():
    """The flow ODE in x is the VE one: Euler on a flow model is the VE Euler loop as written."""
    x = start()
    for s, s_next in zip(SIG[:-1].tolist(), SIG[1:].tolist(), strict=True):
        x = x + (x - denoise(x, s)) / s * (s_next - s)
    assert torch.equal(samplers.sample("Euler", MODEL.denoiser, start(), SIG, flow=True), x)
