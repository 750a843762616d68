"""Restart: plain Heun under 20 steps; at 20+ A1111's restart plan, stochastic yet on the data."""

from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers import VE
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import drive, sigma_batch
from samplers.registry import SamplerOptionError
from samplers.restart import default_plan, step_list
from tests.analytic import Gaussian, Mixture, karras_sigmas, start

MODEL = Gaussian()
N_SAMPLES = 4000


def heun(x: torch.Tensor, sig: torch.Tensor, denoiser=MODEL.denoiser) -> torch.Tensor:
    """Heun (Karras et al. 2022, Algorithm 1), Euler on a last step to 0, written out here."""
    for s, t in zip(sig[:-1].tolist(), sig[1:].tolist(), strict=True):
        d = (x - denoiser(x, sigma_batch(s, x))) / s
        x_euler = x + d * (t - s)
        if t == 0:
            x = x_euler
        else:
            d2 = (x_euler - denoiser(x_euler, sigma_batch(t, x))) / t
            x = x + (d + d2) / 2 * (t - s)
    return x


def run(x, sig, seed=0, denoiser=MODEL.denoiser, **options):
    gen = samplers.start_generator("Restart", x, sig, CellNoise(seed, *sigma_range(sig)), **options)
    return drive(gen, denoiser, sig)


def data_start(n: int, sigma_max: float, seed: int) -> torch.Tensor:
    """Samples of the exact noisy marginal N(mu, s^2 + sigma_max^2)."""
    z = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return MODEL.mu + math.sqrt(MODEL.s**2 + sigma_max**2) * z


def test_registered_as_users_know_it():
    info = samplers.info("Restart")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("ancestral", 2, "Karras")
    assert info.options == {"s_noise": 1.0, "restart_list": None}


@pytest.mark.parametrize("steps", [5, 19])
def test_under_20_steps_it_is_heun_on_the_given_sigmas(steps):
    model = Mixture()
    sig = karras_sigmas(steps)
    x = start((128, 2), float(sig[0]), seed=1)
    y, calls = run(x, sig, seed=1, denoiser=model.denoiser)
    assert calls == 2 * steps - 1
    torch.testing.assert_close(y, heun(x, sig, model.denoiser), rtol=1e-12, atol=1e-12)
    if "Heun" in samplers.names():
        torch.testing.assert_close(y, samplers.sample("Heun", model.denoiser, x, sig), rtol=1e-12, atol=1e-12)
    assert torch.equal(y, run(x, sig, seed=2, denoiser=model.denoiser)[0])  # no noise drawn


def test_an_empty_restart_list_is_heun_at_any_step_count():
    sig = karras_sigmas(25)
    x = start((64,), float(sig[0]), seed=2)
    y, calls = run(x, sig, restart_list={})
    assert calls == 2 * 25 - 1
    torch.testing.assert_close(y, heun(x, sig), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("steps", "seg_steps", "times"), [(20, 9, 1), (35, 9, 1), (36, 9, 2), (50, 12, 2)])
def test_a1111_plan_keeps_the_step_count(steps, seg_steps, times):
    sig = karras_sigmas(steps, sigma_min=0.0292, sigma_max=14.6)
    main, plan = default_plan(sig, VE)
    assert plan == {0.1: (seg_steps + 1, times, 2.0)}
    # Its own Karras schedule from the given ends, shortened by the restart steps.
    own = karras_sigmas(steps - seg_steps * times, 0.0292, 14.6)
    torch.testing.assert_close(main, own, rtol=1e-12, atol=0)
    pairs = step_list(main, plan)
    assert len(pairs) == steps
    ups = [(a, b) for (_, b), (a, _) in zip(pairs[:-1], pairs[1:], strict=True) if a > b]
    values = main.tolist()
    lo = min(values, key=lambda v: abs(v - 0.1))
    hi = min(values, key=lambda v: abs(v - 2.0))
    assert ups == [(hi, lo)] * times  # each restart jumps from the sigma nearest 0.1 to the one nearest 2
    x = start((64,), 14.6, seed=3)
    assert run(x, sig)[1] == 2 * steps - 1


def test_at_20_steps_it_is_stochastic_and_bit_identical_per_seed():
    sig = karras_sigmas(20)
    x = start((512,), float(sig[0]), seed=4)
    a, _ = run(x, sig, seed=1)
    b, _ = run(x, sig, seed=1)
    c, _ = run(x, sig, seed=2)
    assert torch.equal(a, b)
    # The jump from sigma ~0.1 up to ~2 re-noises a lot for data this narrow (s = 0.8).
    assert float((a - c).std()) > 0.5 * MODEL.s
    assert not torch.equal(run(x, sig, seed=1, s_noise=0.5)[0], a)


@pytest.mark.parametrize("steps", [20, 40])
def test_at_20_steps_or_more_it_lands_on_the_data_distribution(steps):
    sig = karras_sigmas(steps)
    x = data_start(N_SAMPLES, float(sig[0]), seed=5)
    y, _ = run(x, sig, seed=steps)
    assert abs(float(y.mean()) - MODEL.mu) < 4 * MODEL.s / math.sqrt(N_SAMPLES)
    assert abs(float(y.std()) - MODEL.s) < 4 * MODEL.s / math.sqrt(2 * N_SAMPLES)


def test_a_given_restart_list_applies_on_the_given_sigmas():
    sig = karras_sigmas(10)
    x = start((256,), float(sig[0]), seed=6)
    plan = {0.5: [4, 2, 3.0]}
    y, calls = run(x, sig, seed=3, restart_list=plan)
    assert calls == 2 * (10 + 3 * 2) - 1
    assert not torch.equal(y, run(x, sig, seed=4, restart_list=plan)[0])
    assert float((y - heun(x, sig)).std()) > 0.1 * MODEL.s


@pytest.mark.parametrize("options", [
    {"s_noise": -1.0}, {"s_noise": float("inf")}, {"restart_list": "0.1: 10"},
    {"restart_list": {0.1: [1, 1, 2.0]}}, {"restart_list": {0.1: [10, -1, 2.0]}},
    {"restart_list": {0.1: [10.5, 1, 2.0]}}, {"restart_list": {0.1: [10, 1, 0.05]}},
    {"restart_list": {-0.1: [10, 1, 2.0]}}, {"restart_list": {0.1: [10, 1]}},
    {"eta": 1.0},
])
def test_bad_options_are_refused(options):
    sig = karras_sigmas(4)
    with pytest.raises(SamplerOptionError):
        samplers.sample("Restart", MODEL.denoiser, start((4,), float(sig[0])), sig, **options)


def test_a_schedule_stopping_above_zero_keeps_its_end_and_step_count():
    sig = karras_sigmas(21, sigma_min=0.05)[:-1]  # 20 steps ending at 0.05
    main, plan = default_plan(sig, VE)
    assert float(main[0]) == float(sig[0]) and float(main[-1]) == float(sig[-1])
    assert len(step_list(main, plan)) == 20


def test_float32_schedules_give_float32_results():
    sig = karras_sigmas(24, dtype=torch.float32)
    x = start((16, 4), float(sig[0]), dtype=torch.float32)
    y = samplers.sample("Restart", MODEL.denoiser, x, sig, seed=1)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_a_restart_list_from_json_with_string_keys_works():
    sig = karras_sigmas(10)
    x = start((64,), float(sig[0]), seed=7)
    a, _ = run(x, sig, seed=1, restart_list={"0.5": [4, 1, 3.0]})
    b, _ = run(x, sig, seed=1, restart_list={0.5: [4, 1, 3.0]})
    assert torch.equal(a, b)
    with pytest.raises(SamplerOptionError):
        run(x, sig, restart_list={"low": [4, 1, 3.0]})


def _wide_start() -> torch.Tensor:
    return start((256, 2), 14.6, seed=1)


@pytest.mark.parametrize("steps", [20, 40, 80])
def test_per_seed_it_stays_away_from_the_ode_solution(steps):
    # The restart jumps re-noise the sample, so per seed it does not solve the probability-flow
    # ODE: measured RMS distance to the exact solution 0.91, 1.10, 1.11 at 20, 40, 80 steps (data
    # std 0.8), while Heun on the same sigmas is within 0.011 of it.
    x0, sig = _wide_start(), karras_sigmas(steps)
    exact = MODEL.exact(x0, 14.6, 0.0)
    assert float((run(x0, sig, seed=7)[0] - exact).pow(2).mean().sqrt()) > 0.5
    assert float((heun(x0, sig) - exact).pow(2).mean().sqrt()) < 0.02


def _n_vs_2n(steps: int, fn) -> float:
    x0 = _wide_start()
    return float((fn(x0, karras_sigmas(steps)) - fn(x0, karras_sigmas(2 * steps))).pow(2).mean().sqrt())


@pytest.mark.parametrize("steps", [20, 25, 30])
def test_n_and_2n_steps_do_not_converge_per_seed(steps):
    # From 20 to 35 steps A1111's plan restarts once, at 2n >= 36 twice: the 2n-step run's extra
    # restart draws fresh noise, so n and 2n steps stay far apart (measured 0.89, 0.86, 0.89),
    # where an ODE solver (Heun) closes in (0.008 at 20 vs 40).
    assert _n_vs_2n(steps, lambda x, s: run(x, s, seed=7)[0]) > 0.5
    assert _n_vs_2n(steps, heun) < 0.01


@pytest.mark.parametrize("steps", [36, 50])
def test_with_the_same_restart_count_it_follows_its_own_noise(steps):
    # From 36 steps on both runs restart twice and draw the same two noises from the cell's
    # generator, so n vs 2n steps approach each other along that noise (measured 0.026, 0.021),
    # like an SDE sampler on one Brownian path — but not the ODE's answer (test above), and
    # still an order of magnitude further apart than Heun's n vs 2n.
    restart = _n_vs_2n(steps, lambda x, s: run(x, s, seed=7)[0])
    assert 0.01 < restart < 0.1
    assert restart > 5 * _n_vs_2n(steps, heun)
