"""DEIS (tAB and rhoAB) against the analytic Gaussian: coefficients, orders 1-4, end to end, options."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import samplers
from samplers.deis import deis_coefficients, vp_time
from samplers.noise import sigma_range
from samplers.protocol import drive
from samplers.registry import SamplerOptionError
from tests.analytic import CountingNoise, Gaussian, karras_sigmas, karras_steps, rms, start

GAUSS = Gaussian()
SIGMA_MAX = 14.6
SIGMA_END = 0.05
ORDER_STEPS = (8, 16, 32, 64)


def fitted_order(steps=ORDER_STEPS, **options) -> float:
    """Slope of -log(error) vs log(steps) on Karras steps to SIGMA_END (error vs the exact solution)."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, SIGMA_END)
    log_n = [math.log(n) for n in steps]
    log_e = [math.log(rms(samplers.sample("DEIS", GAUSS.denoiser, x0, karras_steps(n), **options), exact))
             for n in steps]
    mean_n, mean_e = sum(log_n) / len(log_n), sum(log_e) / len(log_e)
    cov = sum((a - mean_n) * (b - mean_e) for a, b in zip(log_n, log_e, strict=True))
    return -cov / sum((a - mean_n) ** 2 for a in log_n)


def test_registered_as_comfyui_users_know_it():
    info = samplers.info("DEIS")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("deterministic", 1, "Karras")
    assert info.options == {"max_order": 3, "deis_mode": "tab"}
    assert 20 <= len(info.description) <= 300 and info.description.endswith(".")


# --- coefficients ----------------------------------------------------------------------------

def test_vp_time_is_edm_vp_fitted_to_its_range():
    # EDM's VP setting: sigma(1) = 80, sigma(1e-3) = 0.002
    assert vp_time(80.0) == pytest.approx(1.0, abs=1e-12)
    assert vp_time(0.002) == pytest.approx(1e-3, abs=1e-12)
    assert vp_time(1.0) < vp_time(14.6) < vp_time(80.0)


@pytest.mark.parametrize("nodes, sigma_next", [
    ([9.0, 14.6, 30.0], 5.0),
    ([0.05, 0.07, 0.1, 0.14], 0.03),
    ([2.0, 3.0], 1.2),
])
def test_tab_coefficients_integrate_the_lagrange_basis_in_vp_time(nodes, sigma_next):
    taus = [vp_time(s) for s in nodes]

    def basis(j: int, sigma: float) -> float:
        t = vp_time(sigma)
        return math.prod((t - taus[k]) / (taus[j] - taus[k]) for k in range(len(nodes)) if k != j)

    got = deis_coefficients(nodes, sigma_next)
    for j, c in enumerate(got):
        want = quad(lambda s, j=j: basis(j, s), nodes[0], sigma_next, epsabs=1e-15, epsrel=1e-12)[0]
        assert c == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert sum(got) == pytest.approx(sigma_next - nodes[0], rel=1e-12)


def test_rhoab_coefficients_are_the_closed_form_in_sigma():
    # two nodes a (current), b: integral over [a, c] of (s - b)/(a - b) and (s - a)/(b - a)
    a, b, c = 3.0, 4.5, 2.2
    want = [((c - b) ** 2 - (a - b) ** 2) / (2 * (a - b)), (c - a) ** 2 / (2 * (b - a))]
    assert deis_coefficients([a, b], c, lambda s: s) == pytest.approx(want, rel=1e-13)


# --- accuracy --------------------------------------------------------------------------------

@pytest.mark.parametrize("options, low, high", [
    ({}, 2.6, 3.2),                                   # measured 2.81 (slopes 2.64, 2.87, 2.92)
    ({"max_order": 2}, 1.7, 2.2),                     # measured 1.86
    ({"max_order": 1}, 0.85, 1.15),                   # measured 0.96
    ({"deis_mode": "rhoab"}, 2.4, 3.1),               # measured 2.58 (slopes 2.28, 2.63, 2.81)
])
def test_order_matches_max_order(options, low, high):
    assert low <= fitted_order(**options) <= high


def test_fourth_order_before_the_first_order_start_shows():
    # measured 4.36, 4.00 between 8/16/32 steps (fit 4.18); beyond ~64 steps the error of the Euler first
    # step (O(h^2), tiny at sigma_max) takes over and the slope falls to 2 (2.20, 1.89).
    assert 3.7 <= fitted_order((8, 16, 32), max_order=4) <= 4.6


def test_rhoab_is_lms_of_the_same_order():
    # rhoAB integrates the eps polynomial in sigma exactly: the variable-step Adams-Bashforth LMS.
    x0 = start((64, 2), SIGMA_MAX, seed=3)
    sig = karras_steps(15)
    a = samplers.sample("DEIS", GAUSS.denoiser, x0, sig, deis_mode="rhoab")
    b = samplers.sample("LMS", GAUSS.denoiser, x0, sig, order=3)
    assert rms(a, b) < 1e-12
    tab = samplers.sample("DEIS", GAUSS.denoiser, x0, sig)
    assert rms(a, tab) > 1e-4  # tAB is a different method on the same steps


@pytest.mark.parametrize("mode", ["tab", "rhoab"])
def test_full_run_to_zero_lands_on_the_exact_solution(mode):
    # measured at 8 / 32 / 128 steps: tab 3.2e-2, 1.2e-3, 5.9e-4; rhoab 8.4e-2, 3.0e-3, 6.2e-4.
    # At 128 only the fixed error of the final jump from sigma_min = 0.03 to 0 (5.8e-4 on its
    # own) is left.
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, 0.0)
    err = {n: rms(samplers.sample("DEIS", GAUSS.denoiser, x0, karras_sigmas(n), deis_mode=mode), exact)
           for n in (8, 32, 128)}
    x1 = GAUSS.exact(x0, SIGMA_MAX, 0.03)
    floor = rms(GAUSS.denoiser(x1, torch.full((256,), 0.03, dtype=torch.float64)), exact)
    assert err[128] < 1.3 * floor and err[32] < 6 * floor
    assert err[8] > 20 * err[128]


# --- protocol, determinism, options ----------------------------------------------------------


def test_one_call_per_step_no_noise_bit_identical():
    sig = karras_sigmas(12)
    seen: list[float] = []

    def denoiser(x, sigma):
        seen.append(float(sigma[0]))
        return GAUSS.denoiser(x, sigma)

    x0 = start((64, 2), SIGMA_MAX, seed=5)
    noise = CountingNoise(0, *sigma_range(sig))
    a, calls = drive(samplers.start_generator("DEIS", x0, sig, noise), denoiser, sig)
    assert calls == 12 and seen == [float(s) for s in sig[:-1]]
    assert noise.draws == 0
    assert torch.equal(a, samplers.sample("DEIS", GAUSS.denoiser, x0, sig, seed=9))


@pytest.mark.parametrize("options, what", [
    ({"max_order": 0}, "max_order"), ({"max_order": 5}, "max_order"),
    ({"max_order": 1.5}, "max_order"), ({"max_order": "3"}, "max_order"),
    ({"deis_mode": "bogus"}, "deis_mode"), ({"deis_mode": None}, "deis_mode"),
    ({"order": 3}, "order"),
])
def test_rejects_bad_options(options, what):
    with pytest.raises(SamplerOptionError, match=what):
        samplers.sample("DEIS", GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4), **options)
