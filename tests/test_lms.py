"""LMS: exact Adams-Bashforth coefficients, order of accuracy, convergence, options."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import samplers
from samplers.lms import lms_coefficients
from samplers.registry import SamplerOptionError
from tests.analytic import karras_sigmas, start
from tests.test_euler import (
    GAUSS,
    SIGMA_MAX,
    fitted_order,
    full_run_error,
    mixture_refinement,
    run,
)


def test_registered_as_a1111_knows_it():
    info = samplers.info("LMS")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("deterministic", 1, "Uniform")
    assert info.discard_penultimate is False
    assert info.options == {"order": 4}


def lagrange_by_quadrature(nodes: list[float], sigma_to: float) -> list[float]:
    """The coefficients as k-diffusion computes them: numerical quadrature of each basis polynomial."""
    def basis(j: int):
        others = [t for k, t in enumerate(nodes) if k != j]
        return lambda tau: math.prod((tau - t) / (nodes[j] - t) for t in others)
    return [quad(basis(j), nodes[0], sigma_to, epsrel=1e-12)[0] for j in range(len(nodes))]


@pytest.mark.parametrize("nodes, sigma_to", [
    ([14.6], 12.0),
    ([5.0, 7.1], 3.3),
    ([1.2, 1.9, 3.0, 4.4], 0.7),
    ([0.05, 0.09, 0.2, 0.5], 0.0),   # a last step to 0
    ([9.0, 14.6, 20.0, 80.0], 8.5),  # a short step after long ones
])
def test_coefficients_are_the_integrals_of_the_lagrange_basis(nodes, sigma_to):
    exact = lms_coefficients(nodes, sigma_to)
    assert exact == pytest.approx(lagrange_by_quadrature(nodes, sigma_to), rel=1e-10, abs=1e-13)
    # the basis sums to 1, so the coefficients sum to the step
    assert sum(exact) == pytest.approx(sigma_to - nodes[0], rel=1e-12)


def test_equal_steps_give_the_classic_adams_bashforth_coefficients():
    h = -0.25
    nodes = [1.0, 1.25, 1.5, 1.75]  # newest first, steps of h
    assert lms_coefficients(nodes, 1.0 + h) == pytest.approx(
        [h * c / 24 for c in (55, -59, 37, -9)], rel=1e-12)


def test_coefficients_integrate_cubics_exactly():
    nodes, sigma_to = [0.8, 1.1, 2.0, 3.7], 0.3
    p = lambda t: 2 - t + 0.5 * t**2 - 0.3 * t**3  # noqa: E731
    integral = lambda t: 2 * t - t**2 / 2 + t**3 / 6 - 0.3 * t**4 / 4  # noqa: E731
    estimate = sum(c * p(t) for c, t in zip(lms_coefficients(nodes, sigma_to), nodes, strict=True))
    assert estimate == pytest.approx(integral(sigma_to) - integral(nodes[0]), rel=1e-12)


def test_order_1_is_euler():
    sig = karras_sigmas(20)
    a, _, _ = run("LMS", sig, order=1)
    b, _, _ = run("Euler", sig)
    assert torch.equal(a, b)


@pytest.mark.parametrize("order, low, high", [
    (1, 0.85, 1.2),  # measured 1.01
    (2, 1.8, 2.3),   # measured 1.95
    (3, 2.6, 3.3),   # measured 2.85
    (4, 3.3, 4.5),   # measured 3.61 (3.38 on 8..64 steps)
])
def test_measured_order_matches_the_option(order, low, high):
    # 16..128 steps: at 8 steps the order-4 start-up (orders 1, 2, 3 first) still shows
    assert low <= fitted_order("LMS", steps=(16, 32, 64, 128), order=order) <= high


def test_full_run_to_zero_lands_on_the_exact_solution():
    # measured 6.0e-6 at 128 steps and 1.0e-2 at 16: the last step to 0 is 4th order too
    assert full_run_error("LMS", 128) < 2e-5
    assert full_run_error("LMS", 128) < full_run_error("LMS", 16) / 100


def test_converges_on_the_mixture():
    coarse, fine = mixture_refinement("LMS")  # measured 0.051 and 1.2e-4
    assert fine < 0.01 * coarse


def test_one_call_per_step_and_no_noise():
    a, calls, draws = run("LMS", karras_sigmas(17), seed=1)
    b, _, _ = run("LMS", karras_sigmas(17), seed=2)
    assert (calls, draws) == (17, 0)
    assert torch.equal(a, b)


def test_integral_valued_float_order_is_accepted():
    sig = karras_sigmas(10)
    assert torch.equal(run("LMS", sig, order=3.0)[0], run("LMS", sig, order=3)[0])


@pytest.mark.parametrize("order", [0, 5, -1, 2.5, "4", True, math.nan, math.inf, None])
def test_bad_order_is_refused(order):
    with pytest.raises(SamplerOptionError, match="order must be a whole number from 1 to 4"):
        samplers.sample("LMS", GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4),
                        order=order)
