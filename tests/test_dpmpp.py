"""Tests for samplers/dpmpp.py: "DPM++ 2M" (deterministic) and "DPM++ 2S a" (ancestral).

Orders are measured against the Gaussian's exact probability-flow ODE solution
on Karras schedules ending at sigma_min = 0.05 (no final jump to 0, whose
fixed error does not shrink with steps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import samplers
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import drive
from samplers.registry import SamplerOptionError
from tests.analytic import Gaussian, Mixture, karras_sigmas, start

GAUSS = Gaussian()
SIGMA_MAX = 14.6
SIGMA_END = 0.05
STEPS = [8, 16, 32, 64]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: torch's intra-op threads only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def to_sigma_end(n: int) -> torch.Tensor:
    """n Karras steps from SIGMA_MAX down to SIGMA_END, no final 0."""
    return karras_sigmas(n + 1, sigma_min=SIGMA_END, sigma_max=SIGMA_MAX)[:-1]


def fitted_order(errors: list[float], steps: list[int]) -> float:
    """Slope of -log(error) against log(steps)."""
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def gaussian_errors(name: str, **options) -> list[float]:
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, SIGMA_END)
    return [
        float((samplers.sample(name, GAUSS.denoiser, x0, to_sigma_end(n), seed=3, **options)
               - exact).abs().max())
        for n in STEPS
    ]


def count_calls(name: str, sigmas: torch.Tensor, **options) -> int:
    x0 = start((8,), float(sigmas[0]), seed=0)
    noise = CellNoise(0, *sigma_range(sigmas))
    gen = samplers.start_generator(name, x0, sigmas, noise, **options)
    return drive(gen, GAUSS.denoiser, sigmas)[1]


def test_registry_entries():
    m2 = samplers.info("DPM++ 2M")
    assert (m2.kind, m2.calls_per_step, m2.default_schedule, m2.options) == (
        "deterministic", 1, "Karras", {})
    s2a = samplers.info("DPM++ 2S a")
    assert (s2a.kind, s2a.calls_per_step, s2a.default_schedule) == ("ancestral", 2, "Karras")
    assert s2a.options == {"eta": 1.0, "s_noise": 1.0}
    assert not m2.discard_penultimate and not s2a.discard_penultimate


def test_dpmpp_2m_is_second_order():
    errors = gaussian_errors("DPM++ 2M")
    # Measured: 1.54e-1, 4.73e-2, 1.15e-2, 2.79e-3 -> fitted order 1.94.
    assert 1.7 < fitted_order(errors, STEPS) < 2.6
    assert errors[-1] < 5e-3


def test_dpmpp_2s_a_eta0_is_second_order():
    errors = gaussian_errors("DPM++ 2S a", eta=0.0)
    # Measured: 8.90e-2, 2.42e-2, 6.27e-3, 1.59e-3 -> fitted order 1.94.
    assert 1.7 < fitted_order(errors, STEPS) < 2.6
    assert errors[-1] < 3e-3


def test_dpmpp_2m_converges_on_a_mixture():
    """Nonlinear denoiser: errors against a fine reference shrink at second order."""
    mix = Mixture()
    x0 = start((64, 2), SIGMA_MAX, seed=1)
    ref = samplers.sample("DPM++ 2M", mix.denoiser, x0, to_sigma_end(1024))
    steps = [32, 64, 128]
    errors = [float((samplers.sample("DPM++ 2M", mix.denoiser, x0, to_sigma_end(n)) - ref)
                    .abs().max()) for n in steps]
    # Measured: 9.0e-3, 2.6e-3, 6.9e-4 (local orders 1.77, 1.94 -> 2).
    assert 1.6 < math.log2(errors[1] / errors[2]) < 2.4
    assert errors[-1] < 1.5e-3


@pytest.mark.parametrize("name,options,tol", [
    ("DPM++ 2M", {}, 2e-3),            # measured 7.9e-4
    ("DPM++ 2S a", {"eta": 0.0}, 5e-3),  # measured 2.9e-3
])
def test_full_run_to_zero_lands_near_exact(name, options, tol):
    """100 steps on the Karras schedule ending in 0; the last step returns the denoised estimate,
    whose fixed error at sigma 0.03 is about sigma^2 / (2 s^2) |x - mu| (~1.7e-3 at most here)."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    out = samplers.sample(name, GAUSS.denoiser, x0, karras_sigmas(100), seed=3, **options)
    assert float((out - GAUSS.exact(x0, SIGMA_MAX, 0.0)).abs().max()) < tol


def test_2m_first_step_is_ddim_and_last_step_is_denoised():
    """One step from sigma to 0 returns D; one step sigma -> sigma' is DPM-Solver++(1) (DDIM)."""
    x0 = start((64,), 10.0, seed=2)
    out = samplers.sample("DPM++ 2M", GAUSS.denoiser, x0, torch.tensor([10.0, 0.0], dtype=torch.float64))
    assert torch.equal(out, GAUSS.denoiser(x0, torch.full((64,), 10.0, dtype=torch.float64)))
    one = samplers.sample("DPM++ 2M", GAUSS.denoiser, x0, torch.tensor([10.0, 2.0], dtype=torch.float64))
    d = GAUSS.denoiser(x0, torch.full((64,), 10.0, dtype=torch.float64))
    torch.testing.assert_close(one, 0.2 * x0 + 0.8 * d, rtol=0, atol=1e-12)


def test_call_counts():
    sig0 = karras_sigmas(10)   # 10 steps, the last to 0
    sig_end = to_sigma_end(10)  # 10 steps, no 0
    assert count_calls("DPM++ 2M", sig0) == 10
    # 2 calls per step; the last step to 0 (sigma_down = 0) is a 1-call Euler step.
    assert count_calls("DPM++ 2S a", sig0) == 19
    assert count_calls("DPM++ 2S a", sig_end) == 20
    assert count_calls("DPM++ 2S a", sig0, eta=0.0) == 19


def test_2s_a_does_not_converge_per_seed():
    """Fresh noise every step: n and 2n steps give different samples, however many steps."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)

    def run(n):
        return samplers.sample("DPM++ 2S a", GAUSS.denoiser, x0, karras_sigmas(n), seed=7)

    a, b, c = run(20), run(40), run(80)
    d1 = float((a - b).pow(2).mean().sqrt())
    d2 = float((b - c).pow(2).mean().sqrt())
    det = samplers.sample("DPM++ 2M", GAUSS.denoiser, x0, karras_sigmas(20))
    det2 = samplers.sample("DPM++ 2M", GAUSS.denoiser, x0, karras_sigmas(40))
    # Measured: 0.86 and 0.92 (vs 0.008 for DPM++ 2M at 20 vs 40 steps).
    assert d1 > 0.5 and d2 > 0.5
    assert d1 > 50 * float((det - det2).pow(2).mean().sqrt())


def test_2s_a_samples_the_data_distribution():
    """4000 independent chains (one seed, independent noise per element) at 50 steps."""
    n = 4000
    z = torch.randn((n,), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x0 = GAUSS.mu + math.sqrt(GAUSS.s**2 + SIGMA_MAX**2) * z
    out = samplers.sample("DPM++ 2S a", GAUSS.denoiser, x0, karras_sigmas(50), seed=11)
    se_mean, se_std = GAUSS.s / math.sqrt(n), GAUSS.s / math.sqrt(2 * n)
    assert abs(float(out.mean()) - GAUSS.mu) < 4 * se_mean
    assert abs(float(out.std()) - GAUSS.s) < 4 * se_std


class _GaussianOnly:
    """Noise source that refuses Brownian queries: ancestral noise must be fresh Gaussian."""

    def __init__(self, inner: CellNoise) -> None:
        self.inner = inner
        self.draws = 0

    def gaussian(self, like):
        self.draws += 1
        return self.inner.gaussian(like)

    def brownian(self, sigma, sigma_next, like):
        raise AssertionError("an ancestral sampler asked for Brownian noise")


def test_2s_a_noise_is_fresh_gaussian_per_step():
    sig = karras_sigmas(10)
    x0 = start((16,), SIGMA_MAX, seed=0)
    noise = _GaussianOnly(CellNoise(0, *sigma_range(sig)))
    drive(samplers.start_generator("DPM++ 2S a", x0, sig, noise), GAUSS.denoiser, sig)
    assert noise.draws == 9  # every step but the last one to sigma 0
    noise0 = _GaussianOnly(CellNoise(0, *sigma_range(sig)))
    drive(samplers.start_generator("DPM++ 2S a", x0, sig, noise0, eta=0.0), GAUSS.denoiser, sig)
    assert noise0.draws == 0


def test_s_noise_zero_equals_eta_zero_for_deterministic_part():
    """s_noise = 0 drops the added noise but keeps the ancestral sigma_down steps."""
    x0 = start((64,), SIGMA_MAX, seed=1)
    sig = karras_sigmas(10)
    out = samplers.sample("DPM++ 2S a", GAUSS.denoiser, x0, sig, seed=1, s_noise=0.0)
    other_seed = samplers.sample("DPM++ 2S a", GAUSS.denoiser, x0, sig, seed=2, s_noise=0.0)
    det = samplers.sample("DPM++ 2S a", GAUSS.denoiser, x0, sig, eta=0.0)
    assert torch.equal(out, other_seed)  # no noise reaches the sample
    assert not torch.allclose(out, det)  # sigma_down < sigma_next: a different path


@pytest.mark.parametrize("options,word", [
    ({"eta": -0.5}, "eta"),
    ({"s_noise": -1.0}, "s_noise"),
    ({"eta": float("nan")}, "eta"),
    ({"eta": "one"}, "eta"),
    ({"r": 0.5}, "r"),  # not an option of this sampler
])
def test_bad_options_are_refused(options, word):
    x0 = start((8,), SIGMA_MAX)
    with pytest.raises(SamplerOptionError, match=word):
        samplers.sample("DPM++ 2S a", GAUSS.denoiser, x0, karras_sigmas(5), **options)


def test_2m_takes_no_options():
    with pytest.raises(SamplerOptionError, match="eta"):
        samplers.sample("DPM++ 2M", GAUSS.denoiser, start((8,), SIGMA_MAX), karras_sigmas(5),
                        eta=1.0)
