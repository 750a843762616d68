"""Euler, Euler a and Heun against the analytic Gaussian and Mixture models.

Also home of the small helpers the other classic-sampler tests share
(`fitted_order`, `rms`, `run`, `Recorder`, `CountingNoise`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

import samplers
from samplers._math import ancestral_step
from samplers.noise import sigma_range
from samplers.protocol import drive
from samplers.registry import SamplerOptionError
from tests.analytic import CountingNoise, Gaussian, Mixture, karras_sigmas, rms, start

GAUSS = Gaussian()  # mu 0.5, s 0.8: the data scale below is GAUSS.s
SIGMA_MAX = 14.6
ORDER_STEPS = (8, 16, 32, 64)


def fitted_order(name: str, steps=ORDER_STEPS, sigma_end: float = 0.05, **options) -> float:
    """Slope of -log(error) against log(steps) on Karras schedules ending at sigma_end, not 0.

    The error is the RMS distance to the Gaussian's exact PF-ODE solution at sigma_end.
    """
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    logs_n, logs_e = [], []
    for n in steps:
        sig = karras_sigmas(n, sigma_min=sigma_end, sigma_max=SIGMA_MAX)[:-1]
        x = samplers.sample(name, GAUSS.denoiser, x0, sig, **options)
        logs_n.append(math.log(n))
        logs_e.append(math.log(rms(x, GAUSS.exact(x0, SIGMA_MAX, sigma_end))))
    a = torch.tensor([logs_n, [1.0] * len(steps)], dtype=torch.float64).T
    fit = torch.linalg.lstsq(a, torch.tensor(logs_e, dtype=torch.float64)[:, None]).solution
    return -float(fit[0])


def full_run_error(name: str, steps: int, **options) -> float:
    """RMS error of a run from SIGMA_MAX to 0 against the exact solution at 0."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    x = samplers.sample(name, GAUSS.denoiser, x0, karras_sigmas(steps), **options)
    return rms(x, GAUSS.exact(x0, SIGMA_MAX, 0.0))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread for a while.

    The Mixture denoiser's softmax is split over torch's threads; on a busy 2-core machine
    waking them costs ~10 ms a call, 30x the work itself.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def mixture_refinement(name: str) -> tuple[float, float]:
    """(distance between 8 and 16 steps, distance between 64 and 128 steps) on the Mixture."""
    mix = Mixture()
    x0 = start((256, 2), SIGMA_MAX, seed=4)
    with one_thread():
        out = {n: samplers.sample(name, mix.denoiser, x0, karras_sigmas(n))
               for n in (8, 16, 64, 128)}
    return rms(out[8], out[16]), rms(out[64], out[128])


class Recorder:
    """A Gaussian denoiser that records the sigma of every call."""

    def __init__(self) -> None:
        self.sigmas: list[float] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.sigmas.append(float(sigma[0]))
        return GAUSS.denoiser(x, sigma)


def run(name: str, sigmas: torch.Tensor, *, seed: int = 0, denoiser=GAUSS.denoiser,
        x: torch.Tensor | None = None, **options) -> tuple[torch.Tensor, int, int]:
    """Drive one sampler with a spying noise source: (result, denoiser calls, Gaussian draws)."""
    x = start((64, 2), float(sigmas[0]), seed=1) if x is None else x
    noise = CountingNoise(seed, *sigma_range(sigmas))
    gen = samplers.start_generator(name, x, sigmas, noise, **options)
    result, calls = drive(gen, denoiser, sigmas)
    return result, calls, noise.draws


# --- registry -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, calls, options", [
    ("Euler", "deterministic", 1,
     {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}),
    ("Euler a", "ancestral", 1, {"eta": 1.0, "s_noise": 1.0}),
    ("Heun", "deterministic", 2,
     {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}),
])
def test_registered_as_a1111_knows_them(name, kind, calls, options):
    info = samplers.info(name)
    assert (info.kind, info.calls_per_step, info.default_schedule) == (kind, calls, "Uniform")
    assert info.discard_penultimate is False
    assert info.options == options
    assert info.description


# --- accuracy --------------------------------------------------------------------------------

def test_euler_is_first_order():
    # measured 1.01 on 8..64 steps
    assert 0.85 <= fitted_order("Euler") <= 1.2


def test_heun_is_second_order():
    # measured 2.18 on 8..64 steps (2.07 between 32 and 64)
    assert 1.8 <= fitted_order("Heun") <= 2.4


@pytest.mark.parametrize("name, steps, tol", [
    ("Euler", 128, 0.015),   # measured 0.0106; error ~ 1.3 / steps
    ("Heun", 128, 1e-3),     # measured 3.6e-4; the last Euler jump from sigma_min dominates
])
def test_full_run_to_zero_lands_on_the_exact_solution(name, steps, tol):
    assert full_run_error(name, steps) < tol
    assert full_run_error(name, steps) < full_run_error(name, 16) / 4


@pytest.mark.parametrize("name, ratio", [("Euler", 0.2), ("Heun", 0.03)])
def test_converges_on_the_mixture(name, ratio):
    # 8->16 vs 64->128: first order shrinks the gap ~8x, second order ~64x
    coarse, fine = mixture_refinement(name)
    assert fine < ratio * coarse


# --- Heun's calls ----------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 5, 20])
def test_heun_calls_2n_minus_1_ending_at_zero(steps):
    sig = karras_sigmas(steps)
    rec = Recorder()
    _, calls, _ = run("Heun", sig, denoiser=rec)
    assert calls == len(rec.sigmas) == 2 * steps - 1
    # each step asks at sigma_i, then at sigma_{i+1} for the correction (none at 0)
    expected = [s for i in range(steps) for s in (sig[i], sig[i + 1]) if s > 0]
    assert rec.sigmas == pytest.approx([float(s) for s in expected], rel=1e-12)


def test_heun_calls_2n_when_not_ending_at_zero():
    _, calls, _ = run("Heun", karras_sigmas(6, sigma_min=0.05)[:-1])
    assert calls == 2 * 5


# --- churn -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Euler", "Heun"])
def test_churn_is_stochastic_and_uses_the_noise_source(name):
    steps, s_churn = 10, 2.0
    sig = karras_sigmas(steps)
    rec = Recorder()
    a, _, draws = run(name, sig, seed=1, denoiser=rec, s_churn=s_churn)
    b, _, _ = run(name, sig, seed=1, s_churn=s_churn)
    c, _, _ = run(name, sig, seed=2, s_churn=s_churn)
    assert draws == steps  # one draw per step, all sigmas in [s_tmin, s_tmax]
    assert torch.equal(a, b)
    assert rms(a, c) > 1e-3
    # Karras 2022 Alg. 2: the first call is at sigma_hat = sigma (1 + s_churn / steps)
    assert rec.sigmas[0] == pytest.approx(float(sig[0]) * (1 + s_churn / steps), rel=1e-12)


def test_churn_gamma_is_capped_at_sqrt2_minus_1():
    rec = Recorder()
    run("Euler", karras_sigmas(4), denoiser=rec, s_churn=100.0)
    assert rec.sigmas[0] == pytest.approx(SIGMA_MAX * math.sqrt(2), rel=1e-12)


def test_churn_only_inside_s_tmin_s_tmax():
    sig = karras_sigmas(10)
    plain, _, _ = run("Euler", sig)
    outside, _, draws = run("Euler", sig, s_churn=5.0, s_tmin=20.0, s_tmax=30.0)
    assert draws == 0 and torch.equal(plain, outside)
    _, _, draws = run("Euler", sig, s_churn=5.0, s_tmin=1.0, s_tmax=10.0)
    assert draws == sum(1.0 <= float(s) <= 10.0 for s in sig[:-1])


# --- Euler a ---------------------------------------------------------------------------------

def test_ancestral_step_split():
    down, up = ancestral_step(2.0, 1.0, 1.0)
    assert up == pytest.approx(math.sqrt(1.0 * (4.0 - 1.0) / 4.0))
    assert down**2 + up**2 == pytest.approx(1.0)
    assert ancestral_step(2.0, 1.0, 0.0) == (1.0, 0.0)
    assert ancestral_step(2.0, 0.0, 1.0) == (0.0, 0.0)
    assert ancestral_step(2.0, 1.0, 10.0) == (0.0, 1.0)  # sigma_up is capped at sigma_next


def test_euler_a_draws_once_per_step_but_not_on_the_last():
    _, calls, draws = run("Euler a", karras_sigmas(12))
    assert (calls, draws) == (12, 11)


def assert_gaussian_marginal(name: str, steps: int) -> None:
    """4000 x 2 samples of one run have the data's mean and std within 4 standard errors.

    The run starts from the exact marginal at SIGMA_MAX, N(mu, s^2 + SIGMA_MAX^2): pure noise
    around 0 would leave a bias of -mu * s / SIGMA_MAX ~ -0.027 in the mean.
    """
    x0 = GAUSS.mu + start((4000, 2), math.hypot(GAUSS.s, SIGMA_MAX), seed=6)
    y = samplers.sample(name, GAUSS.denoiser, x0, karras_sigmas(steps), seed=16)
    n = y.numel()
    assert abs(float(y.mean()) - GAUSS.mu) < 4 * GAUSS.s / math.sqrt(n)
    assert abs(float(y.std()) - GAUSS.s) < 4 * GAUSS.s / math.sqrt(2 * n)


def test_euler_a_samples_the_data_distribution():
    # Euler a's variance bias shrinks like 1/steps (std 0.772 at 100 steps): 1000 steps
    # puts it below the sampling error (measured: mean 0.477, std 0.7998; 4 SE = 0.036, 0.025)
    assert_gaussian_marginal("Euler a", 1000)


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", [
    ("Euler", {"s_churn": -1.0}),
    ("Euler", {"s_churn": math.nan}),
    ("Euler", {"s_churn": math.inf}),
    ("Euler", {"s_churn": "1"}),
    ("Euler", {"s_noise": -0.5}),
    ("Euler", {"s_tmin": -1.0}),
    ("Euler", {"s_tmin": 2.0, "s_tmax": 1.0}),
    ("Heun", {"s_churn": -0.1}),
    ("Heun", {"s_noise": None}),
    ("Euler a", {"eta": -0.1}),
    ("Euler a", {"eta": math.nan}),
    ("Euler a", {"eta": True}),
    ("Euler a", {"s_noise": -1.0}),
    ("Euler a", {"s_churn": 1.0}),  # not an option of Euler a
])
def test_bad_options_are_refused(name, options):
    with pytest.raises(SamplerOptionError, match=next(iter(options))):
        samplers.sample(name, GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4),
                        **options)
