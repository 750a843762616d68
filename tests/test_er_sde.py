"""ER-SDE against the analytic Gaussian: its integrals, the noise-free solver's order, the
distribution of its samples, Brownian-path consistency, determinism per seed, options.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

import samplers
from samplers.er_sde import noise_scale, stage_integrals
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import drive
from samplers.registry import SamplerOptionError
from tests.analytic import CountingNoise, FreshNoise, Gaussian, karras_sigmas, karras_steps, rms, start

GAUSS = Gaussian()
SIGMA_MAX = 14.6
SIGMA_END = 0.05


def log_phi_slope(sigma: float) -> float:
    """phi'(sigma) / phi(sigma) for phi(sigma) = sigma (exp(sigma^0.3) + 10)."""
    e = math.exp(sigma**0.3)
    return 1 / sigma + 0.3 * sigma**-0.7 * e / (e + 10)


def drift_exact(x0: torch.Tensor, sigma0: float, sigma1: float) -> torch.Tensor:
    """Exact solution of the noise-free ER-SDE, dx/dsigma = (phi'/phi)(x - D), for the Gaussian.

    With y = x - mu and D - mu = s^2 / (s^2 + sigma^2) y, y' = (phi'/phi) sigma^2 / (s^2 + sigma^2) y.
    """
    rate = quad(lambda s: log_phi_slope(s) * s * s / (GAUSS.s**2 + s * s), sigma1, sigma0,
                epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    return GAUSS.mu + (x0 - GAUSS.mu) * math.exp(-rate)


def fitted_order(steps, **options) -> float:
    """Slope of -log(error) vs log(steps) of the noise-free solver against drift_exact at SIGMA_END."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = drift_exact(x0, SIGMA_MAX, SIGMA_END)
    log_n = [math.log(n) for n in steps]
    log_e = [math.log(rms(samplers.sample("ER-SDE", GAUSS.denoiser, x0, karras_steps(n), s_noise=0.0,
                                          **options), exact)) for n in steps]
    mean_n, mean_e = sum(log_n) / len(log_n), sum(log_e) / len(log_e)
    cov = sum((a - mean_n) * (b - mean_e) for a, b in zip(log_n, log_e, strict=True))
    return -cov / sum((a - mean_n) ** 2 for a in log_n)


def run(sigmas: torch.Tensor, noise: CellNoise, x0: torch.Tensor, **options) -> tuple[torch.Tensor, int]:
    return drive(samplers.start_generator("ER-SDE", x0, sigmas, noise, **options), GAUSS.denoiser, sigmas)


def test_registered_as_an_sde_sampler():
    info = samplers.info("ER-SDE")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("sde", 1, "Karras")
    assert info.options == {"eta": 1.0, "s_noise": 1.0, "max_stage": 3}
    assert 20 <= len(info.description) <= 300 and info.description.endswith(".")


# --- the step's ingredients ------------------------------------------------------------------

@pytest.mark.parametrize("sigma, sigma_next", [(14.6, 9.0), (1.0, 0.7), (0.05, 0.03)])
def test_stage_integrals(sigma, sigma_next):
    s1 = quad(lambda s: 1 / noise_scale(s), sigma_next, sigma, epsrel=1e-13)[0]
    s2 = quad(lambda s: (s - sigma) / noise_scale(s), sigma_next, sigma, epsrel=1e-13)[0]
    assert stage_integrals(sigma, sigma_next) == pytest.approx((s1, s2), rel=1e-11)


def test_noise_free_first_step_is_the_stage_one_formula():
    sig = karras_steps(1)
    s, s_next = float(sig[0]), float(sig[1])
    x0 = start((64, 2), SIGMA_MAX, seed=2)
    r = noise_scale(s_next) / noise_scale(s)
    d = GAUSS.denoiser(x0, torch.full((64,), s, dtype=torch.float64))
    got = samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, s_noise=0.0)
    assert rms(got, r * x0 + (1 - r) * d) < 1e-15


# --- the noise-free solver (s_noise = 0) -----------------------------------------------------

@pytest.mark.parametrize("max_stage, low, high", [
    (3, 1.95, 2.6),   # measured 2.34 (slopes 2.56, 2.33, 2.14 between 8/16/32/64 steps; 2.06 to 128)
    (2, 1.95, 2.5),   # measured 2.19
    (1, 0.85, 1.15),  # measured 0.96
])
def test_noise_free_order(max_stage, low, high):
    # Stage 3's derivative estimates are backward differences (first-order accurate), so the
    # full solver is second order, not third: the slope tends to 2 as steps grow.
    assert low <= fitted_order((8, 16, 32, 64), max_stage=max_stage) <= high


def test_noise_free_run_to_zero_solves_the_drift_not_the_probability_flow():
    # measured against the drift's exact solution: 5.9e-3 (16 steps), 5.9e-4 (64); against the
    # probability-flow ODE's 0.28 at any step count: without its noise the SDE under-disperses.
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    drift = drift_exact(x0, SIGMA_MAX, 0.0)
    err = {n: samplers.sample("ER-SDE", GAUSS.denoiser, x0, karras_sigmas(n), s_noise=0.0) for n in (16, 64)}
    assert rms(err[64], drift) < 1e-3 < 5e-3 < rms(err[16], drift)
    assert rms(err[64], GAUSS.exact(x0, SIGMA_MAX, 0.0)) > 0.2
    assert float(err[64].std()) < 0.75 * float(GAUSS.exact(x0, SIGMA_MAX, 0.0).std())


@pytest.mark.parametrize("noise_free", [{"s_noise": 0.0}, {"eta": 0.0}], ids=["s_noise 0", "eta 0"])
def test_noise_free_draws_no_noise_and_ignores_the_seed(noise_free):
    sig = karras_sigmas(10)
    x0 = start((64, 2), SIGMA_MAX, seed=3)
    noise = CountingNoise(1, *sigma_range(sig))
    a, _ = run(sig, noise, x0, **noise_free)
    assert noise.gaussians == noise.brownians == 0
    assert torch.equal(a, samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, seed=2, **noise_free))


# --- the SDE (s_noise = 1) -------------------------------------------------------------------

def test_one_call_and_one_brownian_increment_per_step():
    sig = karras_sigmas(10)
    noise = CountingNoise(1, *sigma_range(sig))
    _, calls = run(sig, noise, start((64, 2), SIGMA_MAX, seed=3))
    assert calls == 10
    assert noise.brownians == 9 and noise.gaussians == 0  # none on the final step to 0


def test_noise_keeps_each_sample_away_from_the_ode_solution():
    # per seed the SDE does not converge to the deterministic answer: measured RMS distance to the
    # PF-ODE solution 0.65 at 20 and at 80 steps, on data of std 0.8
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, 0.0)
    for n in (20, 80):
        assert rms(samplers.sample("ER-SDE", GAUSS.denoiser, x0, karras_sigmas(n), seed=3), exact) > 0.4


def test_samples_have_the_data_distribution():
    # 4000 independent samples (one seed, each element its own noise): measured mean 0.4914,
    # std 0.8076 at 50 steps for mu = 0.5, s = 0.8; standard errors 0.0126 and 0.0089.
    n = 4000
    x = samplers.sample("ER-SDE", GAUSS.denoiser, start((n,), SIGMA_MAX, seed=3), karras_sigmas(50), seed=5)
    se_mean, se_std = GAUSS.s / math.sqrt(n), GAUSS.s / math.sqrt(2 * (n - 1))
    assert abs(float(x.mean()) - GAUSS.mu) < 3 * se_mean
    assert abs(float(x.std()) - GAUSS.s) < 3 * se_std


def test_brownian_path_keeps_step_counts_consistent():
    # measured n vs 2n RMS distance, Brownian path vs fresh noise per step:
    # n=10: 0.044 vs 0.35, n=20: 0.017 vs 0.35, n=40: 0.008 vs 0.34
    x0 = start((256, 2), SIGMA_MAX, seed=1)

    def result(n: int, kind: type[CellNoise]) -> torch.Tensor:
        sig = karras_sigmas(n)
        return run(sig, kind(7, *sigma_range(sig)), x0)[0]

    brownian = [rms(result(n, CellNoise), result(2 * n, CellNoise)) for n in (10, 20)]
    fresh = [rms(result(n, FreshNoise), result(2 * n, FreshNoise)) for n in (10, 20)]
    assert brownian[0] < 0.25 * fresh[0] and brownian[1] < 0.1 * fresh[1]
    assert brownian[1] < 0.6 * brownian[0]  # and the Brownian runs keep getting closer
    assert min(fresh) > 0.2


def test_s_noise_scales_the_injected_noise():
    sig = karras_sigmas(10)
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    free = samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, s_noise=0.0)
    half = samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, seed=3, s_noise=0.5)
    full = samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, seed=3, s_noise=1.0)
    assert 0 < rms(half, free) < rms(full, free)


@pytest.mark.parametrize("options, what", [
    ({"s_noise": -0.1}, "s_noise"), ({"s_noise": float("nan")}, "s_noise"), ({"s_noise": "1"}, "s_noise"),
    ({"max_stage": 0}, "max_stage"), ({"max_stage": 4}, "max_stage"), ({"max_stage": 2.5}, "max_stage"),
    ({"eta": -0.5}, "eta"), ({"eta": float("inf")}, "eta"), ({"eta": "0"}, "eta"),
])
def test_rejects_bad_options(options, what):
    with pytest.raises(SamplerOptionError, match=what):
        samplers.sample("ER-SDE", GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4), **options)


# --- eta: the noise-scale function blended toward phi(sigma) = sigma ------------------------

# Results of the sampler before it took eta (float.hex, recorded from the previous code):
# x0 = start((3, 2), 14.6, seed=11) on karras_sigmas(7) with seed 5, default options, and with
# max_stage=2, s_noise=0.5.
BEFORE_ETA = {
    (): ["0x1.7d4462e78e064p+0", "0x1.99b12b6b41846p+0", "-0x1.aface62680c10p-5",
         "0x1.4ab09d036f9e8p-5", "0x1.b25124bb035dap-3", "0x1.4dbb9ad9a549cp+0"],
    (("max_stage", 2), ("s_noise", 0.5)): [
        "0x1.27552073ca55cp+0", "0x1.7dbbd78eecc02p+0", "0x1.c6a0fc7cd4ad0p-5",
        "-0x1.49c2240f6ed30p-5", "0x1.d7b9a0f42800ap-3", "0x1.a7099a324c64bp-1"],
}


@pytest.mark.parametrize("options", list(BEFORE_ETA))
@pytest.mark.parametrize("eta", [None, 1.0, 1])
def test_eta_one_is_the_previous_sampler_bit_for_bit(options, eta):
    extra = {} if eta is None else {"eta": eta}
    got = samplers.sample("ER-SDE", GAUSS.denoiser, start((3, 2), SIGMA_MAX, seed=11), karras_sigmas(7),
                          seed=5, **dict(options), **extra)
    assert [float(v).hex() for v in got.flatten()] == BEFORE_ETA[options]


def test_eta_zero_noise_scale_is_sigma_and_its_integrals_are_logs():
    assert noise_scale(2.5, 0.0) == 2.5
    assert noise_scale(2.5, 1.0) == noise_scale(2.5)
    s1, s2 = stage_integrals(3.0, 1.5, 0.0)
    assert s1 == pytest.approx(math.log(2.0), rel=1e-13)
    assert s2 == pytest.approx(1.5 - 3.0 * math.log(2.0), rel=1e-12)  # int (s - 3)/s ds over [1.5, 3]
    half = quad(lambda s: 1 / noise_scale(s, 0.5), 1.5, 3.0, epsrel=1e-13)[0]
    assert stage_integrals(3.0, 1.5, 0.5)[0] == pytest.approx(half, rel=1e-11)


def test_eta_zero_converges_to_the_probability_flow_ode_at_second_order():
    # errors against the exact PF-ODE solution at SIGMA_END: measured 3.8e-2, 6.4e-3, 1.3e-3, 2.9e-4
    # at 8/16/32/64 steps, fitted order 2.34 (stage 3; its backward differences keep it second order)
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, SIGMA_END)
    steps = (8, 16, 32, 64)
    errors = [rms(samplers.sample("ER-SDE", GAUSS.denoiser, x0, karras_steps(n), seed=3, eta=0.0), exact)
              for n in steps]
    log_n = [math.log(n) for n in steps]
    log_e = [math.log(e) for e in errors]
    mean_n, mean_e = sum(log_n) / len(log_n), sum(log_e) / len(log_e)
    order = -sum((a - mean_n) * (b - mean_e) for a, b in zip(log_n, log_e, strict=True)) \
        / sum((a - mean_n) ** 2 for a in log_n)
    assert order >= 2.0, (order, errors)
    assert errors[-1] < 1e-3
    # the full run to sigma 0 lands on the ODE's answer too (1.5e-3 at 40 steps)
    to_zero = samplers.sample("ER-SDE", GAUSS.denoiser, x0, karras_sigmas(40), eta=0.0)
    assert rms(to_zero, GAUSS.exact(x0, SIGMA_MAX, 0.0)) < 5e-3


def test_eta_zero_first_step_is_ddim():
    sig = karras_steps(1)
    s, s_next = float(sig[0]), float(sig[1])
    x0 = start((64, 2), SIGMA_MAX, seed=2)
    d = GAUSS.denoiser(x0, torch.full((64,), s, dtype=torch.float64))
    got = samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, seed=4, eta=0.0)
    assert rms(got, s_next / s * x0 + (1 - s_next / s) * d) < 1e-15


def test_eta_scales_the_noise_between_the_ode_and_the_default():
    sig = karras_sigmas(20)
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    ode = samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, eta=0.0)
    dist = [rms(samplers.sample("ER-SDE", GAUSS.denoiser, x0, sig, seed=3, eta=eta), ode)
            for eta in (0.25, 0.5, 1.0)]
    assert 0 < dist[0] < dist[1] < dist[2]


def test_eta_reaches_the_sampler_from_a_grid_cell():
    # a grid passes its eta to every sampler whose options name it (grids.spec), as for DDIM or Euler a
    from grids.spec import GridSpec, expand

    cells = expand(GridSpec(sampler="ER-SDE", seed=1, eta=0.0, s_noise=1.0))
    # only options that differ from the sampler's defaults are kept (as A1111 writes them)
    assert dict(cells[0].spec.sampler_options) == {"eta": 0.0}
    cells = expand(GridSpec(sampler="ER-SDE", seed=1, eta=0.5, s_noise=0.5))
    assert dict(cells[0].spec.sampler_options) == {"eta": 0.5, "s_noise": 0.5}
