"""The samplers ComfyUI has and A1111 lacks, as one parametrized suite: registry facts, measured
orders on the analytic Gaussian, eta 0 = the deterministic counterpart, stochastic ones keep
mean and variance and do not converge per seed, call counts, CFG++'s defining update."""

from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import PairExpectedError, drive
from samplers.registry import SamplerOptionError
from tests.analytic import Gaussian, karras_sigmas, karras_steps, rms, start

GAUSS = Gaussian()
SIGMA_MAX, SIGMA_END = 14.6, 0.05
# (name, kind, calls per step, CFG++)
NEW = [
    ("Gradient Estimation", "deterministic", 1, False),
    ("Gradient Estimation CFG++", "deterministic", 1, True),
    ("Euler CFG++", "deterministic", 1, True), ("Euler a CFG++", "ancestral", 1, True),
    ("DPM++ 2S a CFG++", "ancestral", 2, True), ("DPM++ 2M CFG++", "deterministic", 1, True),
    ("res_multistep_cfg_pp", "deterministic", 1, True), ("res_multistep_ancestral", "ancestral", 1, False),
    ("res_multistep_ancestral_cfg_pp", "ancestral", 1, True), ("heunpp2", "deterministic", 3, False),
    ("ipndm_v", "deterministic", 1, False), ("seeds_2", "sde", 2, False), ("seeds_3", "sde", 3, False),
    ("exp_heun_2_x0", "deterministic", 2, False), ("exp_heun_2_x0_sde", "sde", 2, False),
    ("SA-Solver", "sde", 1, False), ("SA-Solver PECE", "sde", 2, False),
]
STOCHASTIC = [n for n, kind, _, _ in NEW if kind != "deterministic"]


def plain(name):
    """A denoiser for `name`: the Gaussian's, answered as a (guided, uncond) pair for CFG++."""
    if samplers.info(name).cfg_pp:
        return lambda x, s: (GAUSS.denoiser(x, s), GAUSS.denoiser(x, s))
    return GAUSS.denoiser


def fitted_order(name, steps=(8, 16, 32, 64), **options) -> float:
    """Slope of -log(RMS error) vs log(steps) on Karras steps to SIGMA_END, against the exact ODE."""
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, SIGMA_END)
    log_n = [math.log(n) for n in steps]
    log_e = [math.log(rms(samplers.sample(name, plain(name), x0, karras_steps(n), **options), exact))
             for n in steps]
    mn, me = sum(log_n) / len(log_n), sum(log_e) / len(log_e)
    cov = sum((a - mn) * (b - me) for a, b in zip(log_n, log_e, strict=True))
    return -cov / sum((a - mn) ** 2 for a in log_n)


@pytest.mark.parametrize("name,kind,calls,cfg_pp", NEW)
def test_registered_with_kind_cost_and_tooltip(name, kind, calls, cfg_pp):
    info = samplers.info(name)
    assert (info.kind, info.calls_per_step, info.cfg_pp) == (kind, calls, cfg_pp)
    assert 40 <= len(info.description) <= 300 and info.description.endswith(".")
    if cfg_pp:
        assert "2 model rows per call even at cfg 1" in info.description


# measured slopes (8/16/32/64 Karras steps to sigma 0.05), noise off where there is any
@pytest.mark.parametrize("name,options,low,high", [
    ("Gradient Estimation", {}, 0.6, 1.2),         # 0.44, 0.76, 0.89: first order (gamma 2 extrapolates)
    ("Gradient Estimation CFG++", {}, 0.6, 1.2),   # the same at cfg 1
    ("Euler CFG++", {}, 0.85, 1.15),               # Euler's 0.94, 0.97, 0.98
    ("DPM++ 2M CFG++", {}, 1.8, 2.3),
    ("DPM++ 2S a CFG++", {"eta": 0.0}, 1.8, 2.3),
    ("res_multistep_ancestral", {"eta": 0.0}, 1.85, 2.3),  # 1.94, 2.12, 2.07 (= res_multistep)
    ("res_multistep_cfg_pp", {}, 1.85, 2.3),
    ("heunpp2", {}, 0.9, 1.1),                     # 0.95, 0.98, 0.99: first order, Euler's constant x 0.86
    ("ipndm_v", {"max_order": 3}, 2.2, 3.6),       # 2.40: errors 6.2e-3, 2.8e-4, 1.6e-4, 2.9e-5
    ("ipndm_v", {"max_order": 2}, 1.8, 2.2),       # exact variable-step AB2
    ("seeds_2", {"eta": 0.0}, 1.85, 2.1),          # 1.88, 1.95, 1.98
    ("seeds_2", {"eta": 0.0, "solver_type": "phi_2"}, 1.9, 2.1),  # 1.99, 2.00, 2.00
    ("seeds_3", {"eta": 0.0}, 2.5, 3.2),           # 2.46, 2.78, 2.90 -> 3
    ("exp_heun_2_x0", {}, 1.85, 2.1),              # 1.86, 1.94, 1.97
    ("SA-Solver", {"eta": 0.0}, 2.8, 4.5),         # 1.27, 4.02, 4.01 (predictor 3, corrector 4)
    ("SA-Solver PECE", {"eta": 0.0}, 3.5, 4.5),    # 3.39, 4.24, 4.09
])
def test_order_on_the_analytic_gaussian(name, options, low, high):
    assert low <= fitted_order(name, **options) <= high


def test_ipndm_v_default_order_four_weights_are_comfyuis_not_adams_bashforth():
    from samplers.ipndm import variable_weights
    assert [round(w * 24, 9) for w in variable_weights([-1.0, -1.0, -1.0, -1.0])] == [57, -65, 43, -11]
    assert [round(w * 12, 9) for w in variable_weights([-1.0, -1.0, -1.0])] == [23, -16, 5]
    # so max_order 4 stalls near 1e-4 where max_order 3 keeps converging
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, SIGMA_END)
    err = {k: rms(samplers.sample("ipndm_v", GAUSS.denoiser, x0, karras_steps(128), max_order=k), exact)
           for k in (3, 4)}
    assert err[3] < 1e-5 < 5e-5 < err[4]


@pytest.mark.parametrize("name,base,options", [
    ("seeds_2", "DPM++ 2S a", {"eta": 0.0}),
    ("exp_heun_2_x0_sde", "exp_heun_2_x0", {"eta": 0.0}),
    ("res_multistep_ancestral", "res_multistep", {"eta": 0.0}),
    ("Euler a CFG++", "Euler CFG++", {"eta": 0.0}),
    ("res_multistep_ancestral_cfg_pp", "res_multistep_cfg_pp", {"eta": 0.0}),
])
def test_eta_zero_is_the_deterministic_counterpart(name, base, options):
    x0 = start((64, 2), SIGMA_MAX, seed=2)
    sig = karras_sigmas(10)
    got = samplers.sample(name, plain(name), x0, sig, seed=1, **options)
    want = samplers.sample(base, plain(base), x0, sig, **({"eta": 0.0} if base == "DPM++ 2S a" else {}))
    assert rms(got, want) < 1e-13
    assert torch.equal(got, samplers.sample(name, plain(name), x0, sig, seed=2, **options))  # no noise


@pytest.mark.parametrize("name", ["seeds_3", "SA-Solver", "SA-Solver PECE", "DPM++ 2S a CFG++"])
def test_eta_zero_draws_no_noise(name):
    x0, sig = start((64, 2), SIGMA_MAX, seed=2), karras_sigmas(10)
    a = samplers.sample(name, plain(name), x0, sig, seed=1, eta=0.0)
    assert torch.equal(a, samplers.sample(name, plain(name), x0, sig, seed=9, eta=0.0))


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_ones_keep_mean_and_variance(name):
    # 4000 independent samples of N(0.5, 0.8^2) at 50 Karras steps; standard errors 0.0126, 0.0089.
    # Euler a CFG++ is first order like Euler a, whose std is 0.740 at 50 steps, 0.779 at 200:
    # it gets 400.
    n = 4000
    steps = 400 if name == "Euler a CFG++" else 50
    x = samplers.sample(name, plain(name), start((n,), SIGMA_MAX, seed=3), karras_sigmas(steps), seed=5)
    se_mean, se_std = GAUSS.s / math.sqrt(n), GAUSS.s / math.sqrt(2 * (n - 1))
    assert abs(float(x.mean()) - GAUSS.mu) < 3.5 * se_mean
    assert abs(float(x.std()) - GAUSS.s) < 3.5 * se_std


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_ones_do_not_converge_per_seed_and_are_seeded(name):
    x0 = start((256, 2), SIGMA_MAX, seed=1)
    exact = GAUSS.exact(x0, SIGMA_MAX, 0.0)
    runs = {n: samplers.sample(name, plain(name), x0, karras_sigmas(n), seed=3) for n in (20, 80)}
    # the SA-Solvers add noise only in their 20%-80% window: less spread, still far from the ODE
    floor = 0.15 if name.startswith("SA-Solver") else 0.3
    assert all(rms(r, exact) > floor for r in runs.values())
    again = samplers.sample(name, plain(name), x0, karras_sigmas(20), seed=3)
    other = samplers.sample(name, plain(name), x0, karras_sigmas(20), seed=4)
    assert torch.equal(runs[20], again) and rms(runs[20], other) > 0.05


@pytest.mark.parametrize("name,steps,calls", [
    ("heunpp2", 10, 27), ("seeds_2", 10, 19), ("seeds_3", 10, 28), ("exp_heun_2_x0", 10, 19),
    ("SA-Solver", 10, 10), ("SA-Solver PECE", 10, 19), ("DPM++ 2S a CFG++", 10, 19),
    ("Gradient Estimation", 10, 10), ("ipndm_v", 10, 10),
])
def test_call_counts(name, steps, calls):
    sig = karras_sigmas(steps)
    x0 = start((8, 2), SIGMA_MAX)
    gen = samplers.start_generator(name, x0, sig, CellNoise(0, *sigma_range(sig)))
    assert drive(gen, plain(name), sig, pairs=samplers.info(name).cfg_pp)[1] == calls


# ---------------------------------------------------------------- CFG++

COND, UNCOND = Gaussian(mu=1.0, s=0.6), Gaussian(mu=-0.5, s=1.0)


def guided_pair(w: float):
    """(D_u + w (D_c - D_u), D_u) for the two-Gaussian cond/uncond pair."""
    def denoise(x, s):
        c, u = COND.denoiser(x, s), UNCOND.denoiser(x, s)
        return u + w * (c - u), u
    return denoise


def _d(g, x, s):
    return g(x, torch.full((len(x),), s, dtype=x.dtype))


@pytest.mark.parametrize("w", [1.0, 1.5])
def test_euler_cfg_pp_is_its_defining_update(w):
    # Chung et al. 2024, Algorithm 1 in sigma form: x_next = D_g + sigma_next (x - D_u) / sigma
    sig, g = karras_sigmas(8), guided_pair(w)
    x = x0 = start((32, 2), SIGMA_MAX, seed=4)
    for s, t in zip(sig.tolist()[:-1], sig.tolist()[1:], strict=True):
        dg, du = _d(g, x, s)
        x = dg + t * (x - du) / s
    assert rms(samplers.sample("Euler CFG++", g, x0, sig), x) < 1e-14
    # it is not plain Euler on the guided estimate: the re-noising uses the unconditional noise
    euler = samplers.sample("Euler", lambda xx, ss: g(xx, ss)[0], x0, sig)
    assert rms(euler, x) > 1e-3


def test_dpmpp_2m_cfg_pp_is_its_defining_update():
    sig, g = karras_sigmas(8), guided_pair(1.3)
    s_ = sig.tolist()
    x = x0 = start((32, 2), SIGMA_MAX, seed=4)
    old_u = None
    for i in range(len(s_) - 1):
        dg, du = _d(g, x, s_[i])
        if s_[i + 1] == 0:
            x = dg
            break
        h = math.log(s_[i] / s_[i + 1])
        new = dg + math.exp(-h) * (x - du)
        if old_u is not None:
            r = math.log(s_[i - 1] / s_[i]) / h
            new = new - math.expm1(-h) / (2 * r) * (dg - old_u)
        x, old_u = new, du
    assert rms(samplers.sample("DPM++ 2M CFG++", g, x0, sig), x) < 1e-13


@pytest.mark.parametrize("name,base", [
    ("Euler CFG++", "Euler"), ("DPM++ 2M CFG++", "DPM++ 2M"), ("res_multistep_cfg_pp", "res_multistep"),
    ("Gradient Estimation CFG++", "Gradient Estimation"), ("DPM++ 2S a CFG++", "DPM++ 2S a"),
    ("Euler a CFG++", "Euler a"), ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral"),
])
def test_cfg_pp_equals_its_base_when_guided_equals_unconditional(name, base):
    x0, sig = start((64, 2), SIGMA_MAX, seed=2), karras_sigmas(10)
    got = samplers.sample(name, plain(name), x0, sig, seed=3)
    assert rms(got, samplers.sample(base, GAUSS.denoiser, x0, sig, seed=3)) < 1e-13


def test_cfg_pp_sampler_with_a_one_tensor_denoiser_is_told_what_to_return():
    with pytest.raises(PairExpectedError, match=r"pair \(guided_x0, unconditional_x0\)"):
        samplers.sample("Euler CFG++", GAUSS.denoiser, start((4, 2), SIGMA_MAX), karras_sigmas(4))


def test_cfg_pp_nan_in_the_unconditional_half_is_named():
    def bad(x, s):
        return GAUSS.denoiser(x, s), torch.full_like(x, float("nan"))
    with pytest.raises(samplers.NonFiniteError, match="unconditional denoised estimate"):
        samplers.sample("DPM++ 2M CFG++", bad, start((4, 2), SIGMA_MAX), karras_sigmas(4))


@pytest.mark.parametrize("name,options,what", [
    ("seeds_2", {"r": 0.0}, "r"), ("seeds_2", {"solver_type": "phi_3"}, "solver_type"),
    ("seeds_3", {"r_1": 0.7, "r_2": 0.5}, "r_1"), ("SA-Solver", {"predictor_order": 0}, "predictor_order"),
    ("SA-Solver", {"sde_start_percent": 0.9, "sde_end_percent": 0.2}, "sde_start_percent"),
    ("Gradient Estimation", {"ge_gamma": float("nan")}, "ge_gamma"), ("Euler a CFG++", {"eta": -1}, "eta"),
])
def test_bad_options_are_refused_by_name(name, options, what):
    with pytest.raises(SamplerOptionError, match=what):
        samplers.sample(name, plain(name), start((4, 2), SIGMA_MAX), karras_sigmas(4), **options)


def test_sa_solver_noise_window_is_comfyuis_default():
    from samplers.sa_solver import noise_window
    from samplers.schedules import t_to_sigma, train_sigmas
    hi, lo = noise_window(samplers.VE, 0.2, 0.8)
    train = train_sigmas().double()
    assert hi == pytest.approx(float(t_to_sigma(0.8 * 999, train)), rel=1e-12)
    assert lo == pytest.approx(float(t_to_sigma(0.2 * 999, train)), rel=1e-12)
    assert 5.0 < hi < 5.2 and 0.56 < lo < 0.58
    # s_noise 0 is not eta 0 (ComfyUI's meaning): tau stays in the coefficients
    x0, sig = start((64, 2), SIGMA_MAX, seed=2), karras_sigmas(10)
    quiet = samplers.sample("SA-Solver", GAUSS.denoiser, x0, sig, s_noise=0.0)
    ode = samplers.sample("SA-Solver", GAUSS.denoiser, x0, sig, eta=0.0)
    assert rms(quiet, ode) > 1e-3


@pytest.mark.parametrize("name,steps,calls", [
    ("seeds_3", 10, 28), ("SA-Solver PECE", 10, 19), ("DPM++ 2S a CFG++", 10, 19), ("seeds_2", 10, 19),
    ("Gradient Estimation", 10, 10),
])
def test_the_grid_estimates_the_calls_exactly(name, steps, calls):
    from core.cells import CellSpec
    from samplers.plan import denoiser_calls, model_rows

    spec = CellSpec(model="m", prompt="p", negative_prompt="", width=64, height=64, seed=1, sampler=name,
                    sampler_options=(), schedule="Karras", steps=steps, cfg=1.0)
    assert denoiser_calls(spec) == calls
    # CFG++ runs the unconditional half at cfg 1 too: 2 rows per call
    assert model_rows(spec) == calls * (2 if samplers.info(name).cfg_pp else 1)
