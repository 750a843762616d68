"""PLMS: Heun warm-up then Adams-Bashforth on eps; order 3-4 on sigma-uniform steps, 2 on a timestep grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import samplers
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import drive, sigma_batch
from tests.analytic import Gaussian, Mixture, karras_sigmas, start

MODEL = Gaussian()


def sd_train_sigmas() -> torch.Tensor:
    """SD 1.x training sigmas (scaled-linear betas), built here so the test stands alone."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    return ((1 - abar) / abar).sqrt()


def timestep_grid(n: int) -> torch.Tensor:
    """n steps equally spaced in training timestep, t = 999 down to 39 (960 / n must be whole)."""
    assert 960 % n == 0
    return sd_train_sigmas()[torch.arange(999, 38, -960 // n)]


def sigma_grid(n: int) -> torch.Tensor:
    """n steps equally spaced in sigma, 14.6 down to 0.05."""
    return torch.linspace(14.6, 0.05, n + 1, dtype=torch.float64)


def errors(grid, steps, name: str = "PLMS") -> list[float]:
    out = []
    for n in steps:
        sig = grid(n)
        x = start((64,), float(sig[0]), seed=1)
        y = samplers.sample(name, MODEL.denoiser, x, sig)
        out.append(float((y - MODEL.exact(x, float(sig[0]), float(sig[-1]))).abs().max()))
    return out


def slope(steps, errs) -> float:
    return -float(np.polyfit(np.log(steps), np.log(errs), 1)[0])


def run_with_calls(x, sig, denoiser=MODEL.denoiser):
    gen = samplers.start_generator("PLMS", x, sig, CellNoise(0, *sigma_range(sig)))
    return drive(gen, denoiser, sig)


def test_registered_as_users_know_it():
    info = samplers.info("PLMS")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("deterministic", 1, "DDIM")
    assert info.options == {}


def test_order_on_steps_uniform_in_sigma_is_between_three_and_four():
    # AB4 is 4th order. The warm-up steps (Heun, AB2) have O(h^3) local errors,
    # which bound the global order at 3 in the limit, but they sit at the top of
    # the schedule where the ODE is nearly linear, so at these step counts the
    # measured order is ~3.8. (Below ~64 steps the error changes sign.)
    steps = (128, 256, 512, 1024)
    assert 3.0 <= slope(steps, errors(sigma_grid, steps)) <= 4.3


def test_order_on_the_ddim_timestep_grid_is_two():
    # Constant AB weights on steps unequal in sigma leave an O(h^3) local error.
    steps = (120, 240, 480)
    errs = errors(timestep_grid, steps)
    assert slope(steps, errs) == pytest.approx(2.0, abs=0.25)
    # ... with a small constant: far more accurate than DDIM on the same grid.
    ddim = errors(timestep_grid, steps, name="DDIM")
    assert all(p < d / 100 for p, d in zip(errs, ddim, strict=True))


def test_full_run_to_zero_on_the_ddim_schedule_lands_on_the_exact_solution():
    ts = sd_train_sigmas()
    sig = torch.cat([ts[torch.arange(1, 1000, 1000 // 50)].flip(0), torch.zeros(1, dtype=torch.float64)])
    x = start((256, 2), float(sig[0]), seed=2)
    y = samplers.sample("PLMS", MODEL.denoiser, x, sig)
    exact = MODEL.exact(x, float(sig[0]), 0.0)
    # The AB weights assume equal steps; near t = 0 sigma(t) bends sharply, which
    # (with the final step to 0) leaves an error of a few 1e-3 here, 20x below DDIM's.
    assert float((y - exact).abs().max()) < 0.01
    ddim = samplers.sample("DDIM", MODEL.denoiser, x, sig)
    assert float((y - exact).abs().max()) < float((ddim - exact).abs().max()) / 10


def test_converges_on_a_mixture():
    model = Mixture()
    results = []
    for n in (25, 50, 100):
        sig = karras_sigmas(n)
        results.append(samplers.sample("PLMS", model.denoiser, start((128, 2), float(sig[0]), seed=3), sig))
    d1 = float((results[0] - results[2]).abs().max())
    d2 = float((results[1] - results[2]).abs().max())
    assert d2 < d1 / 2.5 and d2 < 0.05


def test_first_step_is_a_heun_step_then_one_call_per_step():
    sig = karras_sigmas(8)
    x = start((64,), float(sig[0]), seed=4)
    requests = []

    def recording(xr, s):
        requests.append((xr.clone(), float(s[0])))
        return MODEL.denoiser(xr, s)

    _, calls = run_with_calls(x, sig, recording)
    assert calls == len(sig) - 1 + 1  # the warm-up step's extra call
    s0, s1 = float(sig[0]), float(sig[1])
    assert [s for _, s in requests[:3]] == [s0, s1, s1]
    d0 = (x - MODEL.denoiser(x, sigma_batch(s0, x))) / s0
    x_euler = x + d0 * (s1 - s0)
    d1 = (x_euler - MODEL.denoiser(x_euler, sigma_batch(s1, x))) / s1
    torch.testing.assert_close(requests[1][0], x_euler, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(requests[2][0], x + (d0 + d1) / 2 * (s1 - s0), rtol=1e-13, atol=1e-13)


def test_one_step_to_zero_returns_the_denoised_estimate_with_one_call():
    sig = torch.tensor([3.0, 0.0], dtype=torch.float64)
    x = start((64,), 3.0, seed=5)
    y, calls = run_with_calls(x, sig)
    assert calls == 1
    torch.testing.assert_close(y, MODEL.denoiser(x, sigma_batch(3.0, x)), rtol=1e-13, atol=1e-13)


