"""DDIM and DDPM: DDIM (eta 0) is Euler, first order; DDPM is DDIM eta 1 and samples the data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import samplers
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import sigma_batch
from samplers.registry import SamplerOptionError
from tests.analytic import Gaussian, karras_sigmas, start

MODEL = Gaussian()
N_SAMPLES = 4000


def sd_train_sigmas() -> torch.Tensor:
    """SD 1.x training sigmas (scaled-linear betas), built here so the test stands alone."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    return ((1 - abar) / abar).sqrt()


def trajectory(name: str, x: torch.Tensor, sigmas: torch.Tensor, seed: int = 0, **options):
    """Every (x, sigma) a sampler asks to denoise, and its result."""
    gen = samplers.start_generator(name, x, sigmas, CellNoise(seed, *sigma_range(sigmas)), **options)
    requests = []
    try:
        xr, s = next(gen)
        while True:
            requests.append((xr.clone(), float(s)))
            xr, s = gen.send(MODEL.denoiser(xr, sigma_batch(s, xr)))
    except StopIteration as stop:
        return requests, stop.value


def data_start(n: int, sigma_max: float, seed: int) -> torch.Tensor:
    """Samples of the exact noisy marginal N(mu, s^2 + sigma_max^2)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g, dtype=torch.float64)
    return MODEL.mu + math.sqrt(MODEL.s**2 + sigma_max**2) * z


def order(name: str, steps=(8, 16, 32, 64), **options) -> float:
    """Slope of log(error) vs log(steps) on Karras schedules ending at sigma 0.05 (not 0)."""
    errors = []
    for n in steps:
        sig = karras_sigmas(n + 1, sigma_min=0.05)[:-1]
        x = start((64,), float(sig[0]), seed=1)
        y = samplers.sample(name, MODEL.denoiser, x, sig, **options)
        exact = MODEL.exact(x, float(sig[0]), float(sig[-1]))
        errors.append(float((y - exact).abs().max()))
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def test_registered_as_users_know_them():
    ddim, ddpm = samplers.info("DDIM"), samplers.info("DDPM")
    assert (ddim.kind, ddim.calls_per_step, ddim.default_schedule) == ("deterministic", 1, "DDIM")
    assert (ddpm.kind, ddpm.calls_per_step, ddpm.default_schedule) == ("ancestral", 1, "DDIM")
    assert ddim.options == {"eta": 0.0} and ddpm.options == {"s_noise": 1.0}


def test_ddim_eta0_is_first_order():
    assert order("DDIM") == pytest.approx(1.0, abs=0.12)


def test_ddim_eta0_equals_euler_step_for_step():
    sig = karras_sigmas(12)
    x = start((256, 2), float(sig[0]), seed=3)
    requests, result = trajectory("DDIM", x, sig)
    # Euler written out (Karras et al. 2022, Alg. 1 without the Heun correction).
    xe = x.clone()
    assert [s for _, s in requests] == sig[:-1].tolist()
    for (xr, s), s_next in zip(requests, sig[1:].tolist(), strict=True):
        torch.testing.assert_close(xr, xe, rtol=1e-13, atol=1e-13)
        xe = xe + (xe - MODEL.denoiser(xe, sigma_batch(s, xe))) / s * (s_next - s)
    torch.testing.assert_close(result, xe, rtol=1e-13, atol=1e-13)
    if "Euler" in samplers.names():
        euler_requests, euler_result = trajectory("Euler", x, sig)
        assert [s for _, s in euler_requests] == [s for _, s in requests]
        for (a, _), (b, _) in zip(euler_requests, requests, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(euler_result, result, rtol=1e-12, atol=1e-12)


def test_ddim_full_run_lands_on_the_exact_solution():
    sig = karras_sigmas(100)
    x = start((64,), float(sig[0]), seed=2)
    y = samplers.sample("DDIM", MODEL.denoiser, x, sig)
    exact = MODEL.exact(x, float(sig[0]), 0.0)
    assert float((y - exact).abs().max()) < 0.02 * float(exact.abs().max())


def test_ddim_eta0_ignores_the_seed_and_eta_draws_noise():
    sig = karras_sigmas(10)
    x = start((256, 2), float(sig[0]))
    a = samplers.sample("DDIM", MODEL.denoiser, x, sig, seed=1)
    b = samplers.sample("DDIM", MODEL.denoiser, x, sig, seed=2)
    assert torch.equal(a, b)
    c = samplers.sample("DDIM", MODEL.denoiser, x, sig, seed=1, eta=0.5)
    d = samplers.sample("DDIM", MODEL.denoiser, x, sig, seed=1, eta=0.5)
    e = samplers.sample("DDIM", MODEL.denoiser, x, sig, seed=2, eta=0.5)
    assert torch.equal(c, d)
    assert float((c - e).abs().mean()) > 0.05


def test_ddpm_equals_ddim_eta1_with_the_same_seed():
    sig = karras_sigmas(15)
    x = start((256, 2), float(sig[0]), seed=4)
    ddpm = samplers.sample("DDPM", MODEL.denoiser, x, sig, seed=9)
    ddim = samplers.sample("DDIM", MODEL.denoiser, x, sig, seed=9, eta=1.0)
    torch.testing.assert_close(ddpm, ddim, rtol=1e-10, atol=1e-10)
    assert float((ddpm - samplers.sample("DDIM", MODEL.denoiser, x, sig)).abs().mean()) > 0.05


def test_ddpm_same_seed_is_bit_identical_and_does_not_converge_per_seed():
    x = start((512,), 14.6, seed=5)
    runs = {n: samplers.sample("DDPM", MODEL.denoiser, x, karras_sigmas(n), seed=3)
            for n in (20, 40, 80)}
    assert torch.equal(runs[20], samplers.sample("DDPM", MODEL.denoiser, x, karras_sigmas(20), seed=3))
    # Fresh noise each step: doubling the steps moves a sample by about the data's own spread.
    for n in (20, 40):
        assert float((runs[n] - runs[2 * n]).std()) > 0.5 * MODEL.s


def _ddpm_variance(sig: list[float]) -> float:
    """Variance of DDPM's final sample for the Gaussian, by propagating it step by step."""
    var = MODEL.s**2 + sig[0] ** 2
    for s, t in zip(sig[:-1], sig[1:], strict=True):
        keep = MODEL.s**2 / (MODEL.s**2 + s**2)  # D = mu + keep (x - mu)
        gain = keep + t**2 / s**2 * (1 - keep)
        var = gain**2 * var + t**2 * (s**2 - t**2) / s**2
    return var


def test_ddpm_samples_the_data_distribution_on_the_1000_step_chain():
    # Ho et al.'s setting: every training noise level, then 0.
    sig = torch.cat([sd_train_sigmas().flip(0), torch.zeros(1, dtype=torch.float64)])
    x = data_start(N_SAMPLES, float(sig[0]), seed=6)
    y = samplers.sample("DDPM", MODEL.denoiser, x, sig, seed=11)
    se_mean, se_std = MODEL.s / math.sqrt(N_SAMPLES), MODEL.s / math.sqrt(2 * N_SAMPLES)
    assert abs(float(y.mean()) - MODEL.mu) < 4 * se_mean
    assert abs(float(y.std()) - MODEL.s) < 4 * se_std


def test_ddpm_at_50_steps_has_the_posterior_chains_predicted_spread():
    # Few steps shrink the spread (DDPM needs many steps); the amount is exactly
    # what the posterior variance beta_tilde predicts.
    ts = sd_train_sigmas()
    sig = torch.cat([ts[torch.arange(1, 1000, 20)].flip(0), torch.zeros(1, dtype=torch.float64)])
    x = data_start(N_SAMPLES, float(sig[0]), seed=7)
    y = samplers.sample("DDPM", MODEL.denoiser, x, sig, seed=12)
    predicted = math.sqrt(_ddpm_variance(sig.tolist()))
    assert predicted < MODEL.s - 0.04
    assert abs(float(y.std()) - predicted) < 4 * predicted / math.sqrt(2 * N_SAMPLES)
    assert abs(float(y.mean()) - MODEL.mu) < 4 * predicted / math.sqrt(N_SAMPLES)


def test_ddpm_s_noise_scales_the_added_noise():
    sig = karras_sigmas(10)
    x = start((256,), float(sig[0]))
    quiet = samplers.sample("DDPM", MODEL.denoiser, x, sig, seed=1, s_noise=0.0)
    # Without noise the posterior mean chain is DDIM with sigma_down = sigma_next^2 / sigma.
    xm = x.clone()
    for s, t in zip(sig[:-1].tolist(), sig[1:].tolist(), strict=True):
        d = MODEL.denoiser(xm, sigma_batch(s, xm))
        xm = d + t**2 / s**2 * (xm - d)
    torch.testing.assert_close(quiet, xm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "options"), [
    ("DDIM", {"eta": -0.1}), ("DDIM", {"eta": float("nan")}), ("DDIM", {"eta": "1"}),
    ("DDPM", {"s_noise": -1.0}), ("DDPM", {"eta": 1.0}),
])
def test_bad_options_are_refused(name, options):
    sig = karras_sigmas(4)
    with pytest.raises(SamplerOptionError):
        samplers.sample(name, MODEL.denoiser, start((4,), float(sig[0])), sig, **options)
