"""DPM2 and DPM2 a against the analytic Gaussian and Mixture models."""

from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers._math import ancestral_step
from samplers.registry import SamplerOptionError
from tests.analytic import karras_sigmas, start
from tests.test_euler import (
    GAUSS,
    SIGMA_MAX,
    Recorder,
    assert_gaussian_marginal,
    fitted_order,
    full_run_error,
    rms,
    run,
)


@pytest.mark.parametrize("name, kind, options", [
    ("DPM2", "deterministic", {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}),
    ("DPM2 a", "ancestral", {"eta": 1.0, "s_noise": 1.0}),
])
def test_registered_as_a1111_knows_them(name, kind, options):
    info = samplers.info(name)
    assert (info.kind, info.calls_per_step, info.default_schedule) == (kind, 2, "Karras")
    assert info.discard_penultimate is True
    assert info.options == options
    assert info.description


def test_dpm2_is_second_order():
    # measured 2.17 on 8..64 steps (2.07 between 32 and 64)
    assert 1.8 <= fitted_order("DPM2") <= 2.4


def test_dpm2_full_run_to_zero_lands_on_the_exact_solution():
    # measured 4.5e-4 at 128 steps: the last Euler jump from sigma_min = 0.03 dominates
    assert full_run_error("DPM2", 128) < 1e-3
    assert full_run_error("DPM2", 128) < full_run_error("DPM2", 16) / 4


@pytest.mark.parametrize("steps", [1, 4, 12])
def test_dpm2_asks_at_the_log_midpoint_and_calls_2n_minus_1(steps):
    sig = [float(s) for s in karras_sigmas(steps)]
    rec = Recorder()
    _, calls, _ = run("DPM2", karras_sigmas(steps), denoiser=rec)
    assert calls == 2 * steps - 1
    expected = []
    for s, s_next in zip(sig, sig[1:], strict=False):
        expected.append(s)
        if s_next > 0:
            expected.append(math.sqrt(s * s_next))  # exp of the mean of the logs
    assert rec.sigmas == pytest.approx(expected, rel=1e-12)


def test_dpm2_a_midpoint_is_between_sigma_and_sigma_down():
    sig = [float(s) for s in karras_sigmas(5)]
    rec = Recorder()
    _, calls, draws = run("DPM2 a", karras_sigmas(5), denoiser=rec)
    assert (calls, draws) == (9, 4)
    down, _ = ancestral_step(sig[0], sig[1], 1.0)
    assert rec.sigmas[:3] == pytest.approx([sig[0], math.sqrt(sig[0] * down), sig[1]], rel=1e-12)


def test_dpm2_churn_is_stochastic_and_uses_the_noise_source():
    sig = karras_sigmas(8)
    plain, _, none = run("DPM2", sig, seed=1)
    a, _, draws = run("DPM2", sig, seed=1, s_churn=1.0)
    b, _, _ = run("DPM2", sig, seed=1, s_churn=1.0)
    c, _, _ = run("DPM2", sig, seed=2, s_churn=1.0)
    assert (none, draws) == (0, 8)
    assert torch.equal(a, b)
    assert rms(a, c) > 1e-3 and rms(a, plain) > 1e-3


def test_dpm2_a_samples_the_data_distribution():
    # measured at 200 steps: mean 0.492, std 0.8004 (4 SE = 0.036, 0.025)
    assert_gaussian_marginal("DPM2 a", 200)


@pytest.mark.parametrize("name, options", [
    ("DPM2", {"s_churn": -1.0}),
    ("DPM2", {"s_noise": -1.0}),
    ("DPM2", {"s_tmin": math.nan}),
    ("DPM2", {"s_tmin": 3.0, "s_tmax": 2.0}),
    ("DPM2 a", {"eta": -1.0}),
    ("DPM2 a", {"eta": "high"}),
    ("DPM2 a", {"s_noise": -0.1}),
    ("DPM2 a", {"s_noise": math.inf}),
])
def test_bad_options_are_refused(name, options):
    with pytest.raises(SamplerOptionError, match=next(iter(options))):
        samplers.sample(name, GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4),
                        **options)
