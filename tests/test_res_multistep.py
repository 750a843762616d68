"""res_multistep against the analytic Gaussian: its weights, second order, end to end, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import samplers
from samplers.noise import sigma_range
from samplers.protocol import drive
from samplers.registry import SamplerOptionError
from samplers.res_multistep import res_weights
from tests.analytic import CountingNoise, Gaussian, karras_sigmas, karras_steps, rms, start

GAUSS = Gaussian()
SIGMA_MAX = 14.6
SIGMA_END = 0.05


def fitted_order(schedule, steps) -> float:
    """Slope of -log(error) vs log(steps); error = RMS distance to the exact solution at SIGMA_END."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, SIGMA_END)
    log_n = [math.log(n) for n in steps]
    log_e = [math.log(rms(samplers.sample("res_multistep", GAUSS.denoiser, x0, schedule(n)), exact))
             for n in steps]
    mean_n, mean_e = sum(log_n) / len(log_n), sum(log_e) / len(log_e)
    cov = sum((a - mean_n) * (b - mean_e) for a, b in zip(log_n, log_e, strict=True))
    return -cov / sum((a - mean_n) ** 2 for a in log_n)


def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return GAUSS.denoiser(x, torch.full((len(x),), sigma, dtype=x.dtype))


def test_registered_as_comfyui_users_know_it():
    info = samplers.info("res_multistep")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("deterministic", 1, "Karras")
    assert info.options == {}
    assert 20 <= len(info.description) <= 300 and info.description.endswith(".")


@pytest.mark.parametrize("h, h_prev", [(0.3, 0.3), (0.05, 0.08), (1.2, 0.4), (2.5, 3.0)])
def test_weights_integrate_the_linear_interpolant_exactly(h, h_prev):
    # h * integral_0^1 e^(-h (1-u)) [D_i (1 - u/c) + D_{i-1} u/c] du with c = -h_prev / h
    c = -h_prev / h
    w1 = h * quad(lambda u: math.exp(-h * (1 - u)) * (1 - u / c), 0, 1, epsrel=1e-13)[0]
    w2 = h * quad(lambda u: math.exp(-h * (1 - u)) * (u / c), 0, 1, epsrel=1e-13)[0]
    b1, b2 = res_weights(h, h_prev)
    assert (h * b1, h * b2) == pytest.approx((w1, w2), rel=1e-10)
    # a constant D is integrated exactly: the weights add up to 1 - e^-h
    assert h * (b1 + b2) == pytest.approx(-math.expm1(-h), rel=1e-12)


def test_first_step_is_euler_second_is_the_res_formula():
    sig = karras_steps(2)
    s0, s1, s2 = (float(s) for s in sig)
    x0 = start((64, 2), SIGMA_MAX, seed=3)
    d0 = denoise(x0, s0)
    x1 = x0 + (x0 - d0) / s0 * (s1 - s0)
    d1 = denoise(x1, s1)
    h, h_prev = math.log(s1 / s2), math.log(s0 / s1)
    b1, b2 = res_weights(h, h_prev)
    x2 = x1 * (s2 / s1) + h * (b1 * d1 + b2 * d0)
    assert rms(samplers.sample("res_multistep", GAUSS.denoiser, x0, sig[:2]), x1) < 1e-14  # rounding
    assert rms(samplers.sample("res_multistep", GAUSS.denoiser, x0, sig), x2) < 1e-14


def test_second_order_on_karras_steps():
    # measured 2.04 (slopes 1.94, 2.12, 2.07 between 8/16/32/64 steps)
    assert 1.85 <= fitted_order(karras_steps, (8, 16, 32, 64)) <= 2.3


def test_second_order_on_unequal_steps_in_lambda():
    # the weights use the actual step ratio, so order 2 holds on any smooth schedule; here equal
    # steps in sigma (very unequal in lambda): measured 2.08 between 32 and 128 steps
    def uniform(n: int) -> torch.Tensor:
        return torch.linspace(1.0, SIGMA_END, n + 1, dtype=torch.float64)

    x0 = start((256, 2), 1.0, seed=1)
    exact = GAUSS.exact(x0, 1.0, SIGMA_END)
    errs = [rms(samplers.sample("res_multistep", GAUSS.denoiser, x0, uniform(n)), exact) for n in (32, 128)]
    assert 1.85 <= math.log(errs[0] / errs[1]) / math.log(4) <= 2.3


def test_full_run_to_zero_lands_on_the_exact_solution():
    # measured 1.2e-1 (8 steps), 5.0e-3 (32), 2.7e-4 (128); the fixed error of the final jump
    # from sigma_min = 0.03 to 0 is 5.8e-4 on its own (at 128 the two partly cancel).
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, 0.0)
    err = {n: rms(samplers.sample("res_multistep", GAUSS.denoiser, x0, karras_sigmas(n)), exact)
           for n in (8, 32, 128)}
    floor = rms(denoise(GAUSS.exact(x0, SIGMA_MAX, 0.03), 0.03), exact)
    assert err[128] < 1.3 * floor
    assert err[8] > 10 * err[32] > 10 * err[128]


def test_one_call_per_step_no_noise_bit_identical():
    sig = karras_sigmas(12)
    seen: list[float] = []

    def denoiser(x, sigma):
        seen.append(float(sigma[0]))
        return GAUSS.denoiser(x, sigma)

    x0 = start((64, 2), SIGMA_MAX, seed=5)
    noise = CountingNoise(0, *sigma_range(sig))
    a, calls = drive(samplers.start_generator("res_multistep", x0, sig, noise), denoiser, sig)
    assert calls == 12 and seen == [float(s) for s in sig[:-1]]
    assert noise.draws == 0
    assert torch.equal(a, samplers.sample("res_multistep", GAUSS.denoiser, x0, sig, seed=9))


@pytest.mark.parametrize("option", ["eta", "s_noise", "order"])
def test_takes_no_options(option):
    with pytest.raises(SamplerOptionError, match="no options"):
        samplers.sample("res_multistep", GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4),
                        **{option: 1.0})
