"""DPM fast and DPM adaptive (Lu et al. 2022): orders, the schedule they ignore, noise, tolerances.

Both solve from sigmas[0] to the smallest positive sigma and return the sample
there. Measured when written (seed 0, (256, 2), Gaussian, eta = 0):
DPM fast at 8/14/26/50 calls (N mod 3 == 2) fits order 3.58; DPM adaptive at
rtol 0.05/0.005/0.0005 (atol scaled alike) uses 27/31/49 calls with max errors
0.10/0.068/0.015 at sigma_min.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import samplers
from samplers import dpm_solver
from samplers.dpm_solver import StepBudgetError, fast_orders
from samplers.registry import SamplerOptionError
from tests.analytic import Gaussian, Mixture, karras_sigmas, rms, start

SMAX, SMIN = 14.6, 0.05
GAUSS = Gaussian()
MIX = Mixture()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: torch's thread pool only adds overhead (10x on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def counted(denoiser):
    calls: list[float] = []

    def wrapped(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(float(sigma[0]))
        return denoiser(x, sigma)

    return wrapped, calls


def same_ends(n: int) -> torch.Tensor:
    """n steps uniform in log-sigma with exactly karras_sigmas' ends (SMAX, SMIN), then 0."""
    ends = karras_sigmas(2, SMIN, SMAX)
    s = torch.exp(torch.linspace(math.log(SMAX), math.log(SMIN), n, dtype=torch.float64))
    s[0], s[-1] = ends[0], ends[1]
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


# ---- DPM fast ---------------------------------------------------------------------------

@pytest.mark.parametrize("calls, orders", [
    (1, [1]), (2, [2]), (3, [2, 1]), (4, [3, 1]), (5, [3, 2]), (6, [3, 2, 1]),
    (7, [3, 3, 1]), (8, [3, 3, 2]), (9, [3, 3, 2, 1]),
])
def test_fast_splits_calls_into_orders_as_the_paper(calls: int, orders: list[int]) -> None:
    assert fast_orders(calls) == orders


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 10, 20])
def test_fast_makes_one_call_per_step_and_stays_in_range(steps: int) -> None:
    denoiser, calls = counted(GAUSS.denoiser)
    sig = karras_sigmas(steps, SMIN, SMAX)
    out = samplers.sample("DPM fast", denoiser, start((16,), SMAX), sig, eta=0.0)
    assert len(calls) == steps and torch.isfinite(out).all()
    if steps > 1:
        assert calls[0] == pytest.approx(SMAX) and min(calls) >= SMIN * (1 - 1e-12)


def test_fast_with_eta_0_converges_at_third_order_to_sigma_min() -> None:
    # N mod 3 == 2 ends on an order-2 step; with N mod 3 in {0, 1} the paper's
    # final order-1 step caps the asymptotic order at 2.
    ns = [8, 14, 26, 50]
    x = start((256, 2), SMAX)
    exact = GAUSS.exact(x, SMAX, SMIN)
    errors = [float((samplers.sample("DPM fast", GAUSS.denoiser, x, karras_sigmas(n, SMIN, SMAX),
                                     eta=0.0) - exact).abs().max()) for n in ns]
    assert -np.polyfit(np.log(ns), np.log(errors), 1)[0] >= 3.0
    assert errors[-1] < 5e-4
    # It stops at sigma_min, not at the schedule's final 0.
    last = samplers.sample("DPM fast", GAUSS.denoiser, x, karras_sigmas(50, SMIN, SMAX), eta=0.0)
    assert float((last - GAUSS.exact(x, SMAX, 0.0)).abs().max()) > 5 * errors[-1]


def test_fast_reads_only_the_ends_of_the_schedule() -> None:
    x = start((64, 2), SMAX)
    for eta in (0.0, 1.0):
        a = samplers.sample("DPM fast", MIX.denoiser, x, karras_sigmas(12, SMIN, SMAX), eta=eta)
        b = samplers.sample("DPM fast", MIX.denoiser, x, same_ends(12), eta=eta)
        assert torch.equal(a, b)


def test_fast_with_eta_1_does_not_converge_per_seed() -> None:
    x = start((256, 2), SMAX)
    run = lambda n, **o: samplers.sample(  # noqa: E731
        "DPM fast", MIX.denoiser, x, karras_sigmas(n, SMIN, SMAX), seed=7, **o)
    assert rms(run(24), run(48)) > 0.3
    assert rms(run(24, eta=0.0), run(48, eta=0.0)) < 0.01


def test_fast_with_eta_1_has_the_data_distribution_over_a_batch() -> None:
    x = start((4000,), SMAX, seed=3)
    out = samplers.sample("DPM fast", GAUSS.denoiser, x, karras_sigmas(30, SMIN, SMAX), seed=11)
    std = math.sqrt(GAUSS.s**2 + SMIN**2)  # the marginal at sigma_min
    assert abs(float(out.mean()) - GAUSS.mu) < 4 * std / math.sqrt(4000)
    assert abs(float(out.std()) - std) < 4 * std / math.sqrt(2 * 4000)


def test_single_positive_sigma_spends_one_call_on_the_denoised_estimate() -> None:
    x = start((16,), SMAX)
    sig = torch.tensor([SMAX, 0.0], dtype=torch.float64)
    for name in ("DPM fast", "DPM adaptive"):
        denoiser, calls = counted(GAUSS.denoiser)
        out = samplers.sample(name, denoiser, x, sig)
        assert len(calls) == 1
        assert torch.equal(out, GAUSS.denoiser(x, torch.full((16,), SMAX, dtype=torch.float64)))


# ---- DPM adaptive -----------------------------------------------------------------------

def adaptive(denoiser, x, sig=None, **options):
    counting, calls = counted(denoiser)
    sig = karras_sigmas(10, SMIN, SMAX) if sig is None else sig
    return samplers.sample("DPM adaptive", counting, x, sig, **options), len(calls)


def test_adaptive_error_and_cost_follow_the_tolerance() -> None:
    x = start((256, 2), SMAX)
    exact = GAUSS.exact(x, SMAX, SMIN)
    runs = [adaptive(GAUSS.denoiser, x, eta=0.0, rtol=rtol, atol=atol)
            for rtol, atol in ((0.05, 0.0078), (0.005, 0.00078), (0.0005, 0.000078))]
    errors = [float((out - exact).abs().max()) for out, _ in runs]
    calls = [n for _, n in runs]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.03
    assert calls[0] < calls[1] < calls[2]
    # The loose default needs only a few dozen calls on this smooth problem.
    assert calls[0] <= 40


def test_adaptive_spends_more_calls_on_a_harder_problem() -> None:
    x = start((256, 2), SMAX)
    assert adaptive(GAUSS.denoiser, x, eta=0.0)[1] < adaptive(MIX.denoiser, x, eta=0.0)[1]


@pytest.mark.parametrize("order", [2, 3])
def test_adaptive_orders_reach_sigma_min_accurately(order: int) -> None:
    x = start((256, 2), SMAX)
    out, calls = adaptive(GAUSS.denoiser, x, eta=0.0, order=order, rtol=1e-4, atol=1e-5)
    assert float((out - GAUSS.exact(x, SMAX, SMIN)).abs().max()) < 5e-3
    assert calls < 400


def test_adaptive_ignores_step_count_and_schedule_interior() -> None:
    x = start((64, 2), SMAX)
    for eta in (0.0, 1.0):
        a, _ = adaptive(MIX.denoiser, x, karras_sigmas(10, SMIN, SMAX), eta=eta, seed=5)
        b, _ = adaptive(MIX.denoiser, x, karras_sigmas(50, SMIN, SMAX), eta=eta, seed=5)
        c, _ = adaptive(MIX.denoiser, x, same_ends(30), eta=eta, seed=5)
        assert torch.equal(a, b) and torch.equal(a, c)


def test_adaptive_with_eta_1_has_the_data_distribution_over_a_batch() -> None:
    out, _ = adaptive(GAUSS.denoiser, start((4000,), SMAX, seed=3), seed=11)
    std = math.sqrt(GAUSS.s**2 + SMIN**2)
    assert abs(float(out.mean()) - GAUSS.mu) < 4 * std / math.sqrt(4000)
    assert abs(float(out.std()) - std) < 4 * std / math.sqrt(2 * 4000)


def test_adaptive_gives_up_with_a_clear_error(monkeypatch) -> None:
    assert dpm_solver.MAX_ADAPTIVE_CALLS == 10_000
    monkeypatch.setattr(dpm_solver, "MAX_ADAPTIVE_CALLS", 300)
    with pytest.raises(StepBudgetError, match="within 300 model calls"):
        adaptive(MIX.denoiser, start((64, 2), SMAX), eta=0.0, rtol=1e-12, atol=1e-12)


# ---- both -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", [
    ("DPM fast", {"eta": -0.5}), ("DPM fast", {"s_noise": -1.0}), ("DPM fast", {"eta": "1"}),
    ("DPM adaptive", {"eta": -1.0}), ("DPM adaptive", {"rtol": 0.0}),
    ("DPM adaptive", {"atol": -0.1}), ("DPM adaptive", {"order": 1}),
    ("DPM adaptive", {"order": 4}), ("DPM adaptive", {"h_init": 0.0}),
    ("DPM adaptive", {"accept_safety": 0.0}), ("DPM adaptive", {"icoeff": float("nan")}),
    ("DPM adaptive", {"steps": 10}),
])
def test_bad_options_are_refused(name: str, options: dict) -> None:
    with pytest.raises(SamplerOptionError):
        samplers.sample(name, GAUSS.denoiser, start((4,), SMAX), karras_sigmas(5), **options)


def test_registry_entries() -> None:
    fast, adapt = samplers.info("DPM fast"), samplers.info("DPM adaptive")
    assert (fast.kind, fast.calls_per_step, fast.default_schedule) == ("ancestral", 1, None)
    assert (fast.uses_steps, fast.uses_schedule) == (True, False)
    assert fast.options == {"eta": 1.0, "s_noise": 1.0}
    assert (adapt.kind, adapt.calls_per_step, adapt.default_schedule) == ("ancestral", 3, None)
    assert (adapt.uses_steps, adapt.uses_schedule) == (False, False)
    assert adapt.options == {
        "order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0,
        "dcoeff": 0.0, "accept_safety": 0.81, "eta": 1.0, "s_noise": 1.0}
