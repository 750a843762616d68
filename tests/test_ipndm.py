"""iPNDM against the analytic Gaussian: orders on equal and Karras steps, end to end, options."""

from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.noise import sigma_range
from samplers.protocol import drive
from samplers.registry import SamplerOptionError
from tests.analytic import CountingNoise, Gaussian, karras_sigmas, karras_steps, rms, start

GAUSS = Gaussian()
SIGMA_MAX = 14.6
SIGMA_END = 0.05


def uniform_steps(n: int) -> torch.Tensor:
    """n equal steps in sigma from SIGMA_MAX to SIGMA_END."""
    return torch.linspace(SIGMA_MAX, SIGMA_END, n + 1, dtype=torch.float64)


def fitted_order(schedule, steps, **options) -> float:
    """Slope of -log(error) vs log(steps); error = RMS distance to the exact solution at SIGMA_END."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, SIGMA_END)
    log_n = [math.log(n) for n in steps]
    log_e = [math.log(rms(samplers.sample("iPNDM", GAUSS.denoiser, x0, schedule(n), **options), exact))
             for n in steps]
    mean_n, mean_e = sum(log_n) / len(log_n), sum(log_e) / len(log_e)
    cov = sum((a - mean_n) * (b - mean_e) for a, b in zip(log_n, log_e, strict=True))
    return -cov / sum((a - mean_n) ** 2 for a in log_n)


def recorded_run(sigmas: torch.Tensor, **options) -> tuple[torch.Tensor, list[float], int]:
    """(result, sigmas of the denoiser calls, noise draws) of one iPNDM run."""
    seen: list[float] = []

    def denoiser(x, sigma):
        seen.append(float(sigma[0]))
        return GAUSS.denoiser(x, sigma)

    noise = CountingNoise(0, *sigma_range(sigmas))
    x0 = start((64, 2), float(sigmas[0]), seed=2)
    result, calls = drive(samplers.start_generator("iPNDM", x0, sigmas, noise, **options),
                          denoiser, sigmas)
    assert calls == len(seen)
    return result, seen, noise.draws


def test_registered_as_comfyui_users_know_it():
    info = samplers.info("iPNDM")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("deterministic", 1, "Karras")
    assert info.options == {"max_order": 4}
    assert info.discard_penultimate is False
    assert 20 <= len(info.description) <= 300 and info.description.endswith(".")


def test_fourth_order_on_equal_steps():
    # measured 3.47, 3.85, 3.96 between 128/256/512/1024 steps (fit 3.9 on 256..1024). Below
    # ~128 steps the first-order start and the fourth-order error still cancel (non-monotone).
    assert 3.6 <= fitted_order(uniform_steps, (256, 512, 1024)) <= 4.3


def test_fixed_weights_lose_order_on_karras_steps():
    # measured 2.18, 2.13, 2.04 between 8/16/32/64 steps (fit 2.1): equal-step weights on
    # unequal steps leave an O(h^3) local error, so the method is second order there.
    assert 1.85 <= fitted_order(karras_steps, (8, 16, 32, 64)) <= 2.4
    # max_order 1 is Euler: measured 0.96
    assert 0.85 <= fitted_order(karras_steps, (8, 16, 32, 64), max_order=1) <= 1.15


def test_on_equal_steps_it_is_variable_step_adams_bashforth():
    # LMS's exact variable-step weights reduce to iPNDM's fixed ones when the steps are equal.
    x0 = start((64, 2), SIGMA_MAX, seed=3)
    sig = uniform_steps(12)
    a = samplers.sample("iPNDM", GAUSS.denoiser, x0, sig)
    b = samplers.sample("LMS", GAUSS.denoiser, x0, sig, order=4)
    assert rms(a, b) < 1e-12
    k = karras_steps(12)
    assert rms(samplers.sample("iPNDM", GAUSS.denoiser, x0, k),
               samplers.sample("LMS", GAUSS.denoiser, x0, k, order=4)) > 1e-4


def test_warm_up_uses_lower_orders():
    # Steps 1-3 are AB1, AB2, AB3 whatever max_order is: a 3-step run ignores max_order >= 3.
    sig = karras_steps(3)
    x0 = start((64, 2), SIGMA_MAX, seed=3)
    a = samplers.sample("iPNDM", GAUSS.denoiser, x0, sig, max_order=3)
    b = samplers.sample("iPNDM", GAUSS.denoiser, x0, sig, max_order=4)
    assert torch.equal(a, b)
    # ...and its first step is exactly Euler's.
    s0, s1 = float(sig[0]), float(sig[1])
    euler = x0 + (x0 - GAUSS.denoiser(x0, torch.full((64,), s0, dtype=torch.float64))) / s0 * (s1 - s0)
    assert rms(samplers.sample("iPNDM", GAUSS.denoiser, x0, sig[:2]), euler) < 1e-15


def final_jump_error(x0: torch.Tensor, sigma_min: float = 0.03) -> float:
    """The error of an exact solve to sigma_min followed by the one-step jump D(x; sigma_min)."""
    x1 = GAUSS.exact(x0, SIGMA_MAX, sigma_min)
    jump = GAUSS.denoiser(x1, torch.full((len(x1),), sigma_min, dtype=x1.dtype))
    return rms(jump, GAUSS.exact(x0, SIGMA_MAX, 0.0))


def test_full_run_to_zero_lands_on_the_exact_solution():
    # measured 2.7e-2 (8 steps), 6.7e-4 (32), 5.1e-4 (128): by 32 steps only the fixed error of the
    # final jump from sigma_min = 0.03 to 0 is left (5.8e-4 on its own).
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, 0.0)
    err = {n: rms(samplers.sample("iPNDM", GAUSS.denoiser, x0, karras_sigmas(n)), exact)
           for n in (8, 32, 128)}
    floor = final_jump_error(x0)
    assert err[128] < 1.3 * floor and err[32] < 1.3 * floor
    assert err[8] > 20 * err[128]


def test_one_call_per_step_at_the_schedule_sigmas_and_no_noise():
    sig = karras_sigmas(10)
    _, seen, draws = recorded_run(sig)
    assert seen == [float(s) for s in sig[:-1]]
    assert draws == 0


@pytest.mark.parametrize("bad", [0, 5, -1, 2.5, "4", True, None])
def test_rejects_bad_max_order(bad):
    with pytest.raises(SamplerOptionError, match="max_order"):
        samplers.sample("iPNDM", GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4),
                        max_order=bad)


def test_accepts_integral_float_order_and_rejects_unknown_options():
    x0 = start((4, 2), SIGMA_MAX)
    a = samplers.sample("iPNDM", GAUSS.denoiser, x0, karras_sigmas(6), max_order=3.0)
    b = samplers.sample("iPNDM", GAUSS.denoiser, x0, karras_sigmas(6), max_order=3)
    assert torch.equal(a, b)
    with pytest.raises(SamplerOptionError, match="max_order"):
        samplers.sample("iPNDM", GAUSS.denoiser, x0, karras_sigmas(6), order=3)
