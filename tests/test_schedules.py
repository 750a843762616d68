"""Schedule types: each matches its defining formula (recomputed here with numpy), the
shared properties hold for every type, training sigmas match diffusers, and bad input
is refused with a useful message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import samplers
from samplers import schedules as S

TRAIN = S.train_sigmas()  # float32, as the app uses it
TRAIN64 = TRAIN.double()
T = TRAIN64.numpy()
N = len(T)
SMIN, SMAX = float(T[0]), float(T[-1])
TYPES = [s for s in S.SCHEDULES if s != "Automatic"]
SD_TYPES = [s for s in TYPES if s != "Optimal Steps"]  # Optimal Steps' tables are flow models' (below)


def _zero(a: np.ndarray) -> np.ndarray:
    return np.append(a, 0.0)


def _interp_t(t: np.ndarray) -> np.ndarray:
    """Sigma at fractional timesteps: log sigma linear between integer timesteps."""
    return np.exp(np.interp(t, np.arange(N), np.log(T)))


def _t_of(sigma: float) -> float:
    return float(np.interp(np.log(sigma), np.log(T), np.arange(N)))


def _check(name: str, steps: int, expected: np.ndarray, **opts) -> None:
    got = S.compute(name, steps, TRAIN64, **opts)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- formulas


@pytest.mark.parametrize("steps", [1, 7, 20])
def test_karras_exponential_polyexponential_formulas(steps):
    r = np.linspace(0, 1, steps)
    for rho in (7.0, 3.0):
        lo, hi = SMIN ** (1 / rho), SMAX ** (1 / rho)
        _check("Karras", steps, _zero((hi + r * (lo - hi)) ** rho), rho=None if rho == 7 else rho)
    _check("Exponential", steps, _zero(np.exp(np.linspace(math.log(SMAX), math.log(SMIN), steps))))
    for rho in (1.0, 2.5):
        ramp = np.linspace(1, 0, steps) ** rho
        poly = np.exp(ramp * (math.log(SMAX) - math.log(SMIN)) + math.log(SMIN))
        _check("Polyexponential", steps, _zero(poly), rho=None if rho == 1 else rho)


@pytest.mark.parametrize("steps", [1, 7, 20])
def test_timestep_schedules_formulas(steps):
    # A1111: Uniform = k-diffusion get_sigmas (t = linspace(N-1, 0, n)); Normal the same
    # over t(smax)..t(smin); SGM Uniform drops the last of n+1 timesteps.
    uniform = _zero(_interp_t(np.linspace(N - 1, 0, steps)))
    _check("Uniform", steps, uniform)
    _check("Normal", steps, uniform)
    _check("SGM Uniform", steps, _zero(_interp_t(np.linspace(N - 1, 0, steps + 1)[:-1])))


@pytest.mark.parametrize("steps", [1, 7, 20, 150])
def test_simple_takes_every_n_th_training_sigma_from_the_top(steps):
    _check("Simple", steps, _zero(np.array([T[-(1 + int(i * (N / steps)))] for i in range(steps)])))


@pytest.mark.parametrize("steps", [1, 7, 20, 150])
def test_ddim_matches_diffusers_leading_spacing(steps):
    from diffusers import DDIMScheduler
    ddim = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         steps_offset=1, timestep_spacing="leading")
    ddim.set_timesteps(steps)
    _check("DDIM", steps, _zero(T[ddim.timesteps.numpy()]))


@pytest.mark.parametrize("steps", [5, 20])
def test_ddim_equals_a1111_loop_when_it_gives_n_values(steps):
    c, idx = N // steps, []
    x = 1
    while x < N:
        idx.append(x)
        x += c
    assert len(idx) == steps
    _check("DDIM", steps, _zero(T[idx][::-1]))


@pytest.mark.parametrize("steps", [1, 2, 7, 20])
def test_kl_optimal_comfyui_and_a1111_forms(steps):
    i = np.arange(steps) / max(steps - 1, 1)
    _check("kl_optimal", steps, _zero(np.tan(i * math.atan(SMIN) + (1 - i) * math.atan(SMAX))))
    # A1111: n + 1 values over i/n and no final 0 (the image keeps sigma_min of noise)
    j = np.arange(steps + 1) / steps
    _check("KL Optimal", steps, np.tan(j * math.atan(SMIN) + (1 - j) * math.atan(SMAX)))


@pytest.mark.parametrize("steps", [1, 7, 20, 150])
@pytest.mark.parametrize("a,b", [(0.6, 0.6), (0.5, 0.7)])
def test_beta_comfyui_definition(steps, a, b):
    # ComfyUI: Beta quantiles of 1 - linspace(0, 1, n, endpoint=False) on whole training timesteps,
    # repeats dropped
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), a, b) * (N - 1))
    kept = [int(t) for k, t in enumerate(ts) if k == 0 or t != ts[k - 1]]
    _check("beta", steps, _zero(T[kept]), alpha=a, beta=b)


@pytest.mark.parametrize("steps", [1, 5, 7, 20, 300])
def test_ddim_uniform_comfyui_walk(steps):
    idx = list(range(1, N, N // steps))
    got = S.compute("ddim_uniform", steps, TRAIN64)
    np.testing.assert_allclose(got.numpy(), _zero(T[idx][::-1]), rtol=1e-12)
    assert len(S.compute("ddim_uniform", 7, TRAIN64)) == 9  # 8 steps for 7, as in ComfyUI


@pytest.mark.parametrize("steps", [1, 2, 7, 20])
def test_linear_quadratic_mochi_definition(steps):
    if steps == 1:
        t = np.array([0.0])
    else:
        ls = steps // 2
        qs = steps - ls
        diff = ls - 0.025 * steps
        qc, lc = diff / (ls * qs**2), 0.025 / ls - 2 * diff / qs**2
        lin = [i * 0.025 / ls for i in range(ls)]
        t = np.array(lin + [qc * i * i + lc * i + qc * ls**2 for i in range(ls, steps)])
    _check("linear_quadratic", steps, _zero(SMAX * (1 - t)))


@pytest.mark.parametrize("steps", [2, 7, 20])
def test_laplace_definition(steps):
    x = np.linspace(0, 1, steps)
    lam = -0.5 * np.sign(0.5 - x) * np.log(1 - 2 * np.abs(0.5 - x) + 1e-5)
    _check("Laplace", steps, _zero(np.clip(np.exp(lam), SMIN, SMAX)))


@pytest.mark.parametrize("family", ["SD1.5", "SDXL"])
@pytest.mark.parametrize("steps", [2, 7, 10, 11, 20])
def test_align_your_steps_log_linear_resampling(family, steps):
    levels = np.array(S.AYS_SIGMAS[family])
    # A1111's loglinear_interp: interpolate the reversed log levels, then reverse back
    ys = np.log(levels[::-1])
    resampled = np.exp(np.interp(np.linspace(0, 1, steps), np.linspace(0, 1, 11), ys))[::-1]
    _check("Align Your Steps", steps, _zero(resampled), family=family)


def test_align_your_steps_levels_and_families():
    ten = S.compute("Align Your Steps", 10, TRAIN64)
    assert (ten[0].item(), ten[-2].item(), ten[-1].item()) == pytest.approx((14.615, 0.029, 0.0), rel=1e-12)
    sd15, sdxl = S.compute("ays", 11, TRAIN64), S.compute("ays", 11, TRAIN64, family="sdxl")
    assert (sd15[3].item(), sdxl[3].item()) == (2.697, 2.181)
    assert S.compute("ays", 1, TRAIN64).tolist() == [14.615, 0.0]
    eleven = S.compute("Align Your Steps", 11, TRAIN64, family="SDXL")
    assert eleven[:-1].tolist() == list(S.AYS_SIGMAS["SDXL"])


@pytest.mark.parametrize("steps", [1, 7, 20])
@pytest.mark.parametrize("a,b", [(0.6, 0.6), (0.5, 0.7), (2.0, 1.0)])
def test_beta_a1111_definition(steps, a, b):
    ppf = scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps), a, b)
    _check("Beta", steps, _zero(SMIN + ppf * (SMAX - SMIN)), alpha=a, beta=b)


def test_karras_equals_diffusers_euler_karras():
    from diffusers import EulerDiscreteScheduler
    euler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   use_karras_sigmas=True)
    euler.set_timesteps(20)
    ours = S.compute("Karras", 20, TRAIN)
    assert len(ours) == len(euler.sigmas) == 21
    assert torch.allclose(ours, euler.sigmas.float(), rtol=1e-4, atol=0)


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("name", SD_TYPES)
@pytest.mark.parametrize("train", [TRAIN, TRAIN64], ids=["f32", "f64"])
def test_every_type_shape_order_and_range(name, train):
    for steps in (1, 2, 5, 20, 150) if name != "GITS" else (2, 5, 20, 150):  # GITS: 2 steps or more
        sig = S.compute(name, steps, train)
        assert sig.dtype == train.dtype and sig.ndim == 1
        assert (sig[1:] < sig[:-1]).all(), (name, steps)
        if name in ("beta", "ddim_uniform"):  # ComfyUI's: a step more or fewer at some counts
            assert 0.8 * steps <= len(sig) - 1 <= 1.2 * steps, (name, steps)
            assert sig[-1].item() == 0.0
            continue
        assert len(sig) == steps + 1
        if name == "KL Optimal":  # A1111's stops at sigma_min
            assert sig[-1].item() == pytest.approx(SMIN, rel=1e-6)
            continue
        assert sig[-1].item() == 0.0 and sig[-2].item() > 0
        assert sig[-2].item() >= 0.99 * SMIN  # AYS ends at its own 0.029
        if name not in ("DDIM", "Align Your Steps"):
            assert sig[0].item() == pytest.approx(SMAX, rel=1e-6), (name, steps)
        if name in ("Karras", "Exponential", "Polyexponential", "Uniform", "Normal", "Beta") and steps > 1:
            assert sig[-2].item() == pytest.approx(SMIN, rel=1e-6), (name, steps)


@pytest.mark.parametrize("name", SD_TYPES)
def test_discard_penultimate_drops_exactly_the_next_to_last(name):
    full = S.compute(name, 9, TRAIN)
    cut = S.compute(name, 8, TRAIN, discard_penultimate=True)
    assert len(cut) == 9
    assert torch.equal(cut, torch.cat([full[:-2], full[-1:]]))


# ---------------------------------------------------------------- overrides


@pytest.mark.parametrize("name", ["Karras", "Exponential", "Polyexponential", "kl_optimal", "Beta",
                                  "Uniform", "Normal"])
def test_range_overrides_set_both_ends(name):
    sig = S.compute(name, 12, TRAIN64, sigma_min=0.1, sigma_max=8.0)
    assert sig[0].item() == pytest.approx(8.0, rel=1e-9)
    assert sig[-2].item() == pytest.approx(0.1, rel=1e-9)


def test_sgm_uniform_override_spans_the_timesteps_of_the_range():
    sig = S.compute("SGM Uniform", 4, TRAIN64, sigma_min=0.1, sigma_max=8.0)
    hi, lo = _t_of(8.0), _t_of(0.1)
    np.testing.assert_allclose(sig.numpy(), _zero(_interp_t(np.linspace(hi, lo, 5)[:-1])), rtol=1e-9)
    assert sig[0].item() == pytest.approx(8.0, rel=1e-9)


def test_one_sided_override_keeps_the_other_training_end():
    sig = S.compute("Karras", 10, TRAIN64, sigma_max=5.0)
    assert sig[0].item() == pytest.approx(5.0) and sig[-2].item() == pytest.approx(SMIN)


@pytest.mark.parametrize("name", ["Simple", "DDIM", "Align Your Steps", "beta", "ddim_uniform"])
def test_fixed_level_types_ignore_overrides(name):
    assert torch.equal(S.compute(name, 10, TRAIN), S.compute(name, 10, TRAIN, sigma_min=0.5, sigma_max=5.0))


def test_timestep_types_clamp_overrides_to_the_training_range():
    sig = S.compute("Normal", 10, TRAIN64, sigma_max=100.0)
    assert sig[0].item() == pytest.approx(SMAX, rel=1e-12)


def test_float32_duplicates_are_refused():
    with pytest.raises(ValueError, match="repeats noise levels"):
        S.compute("Normal", 1000, TRAIN, sigma_min=1.0, sigma_max=1.00001)


# ---------------------------------------------------------------- training sigmas


def test_train_sigmas_sd_endpoints():
    assert TRAIN.dtype == torch.float32 and len(TRAIN) == 1000
    assert TRAIN[0].item() == pytest.approx(0.0292, abs=1e-3)
    assert TRAIN[-1].item() == pytest.approx(14.6146, abs=1e-3)
    assert (TRAIN[1:] > TRAIN[:-1]).all()


@pytest.mark.parametrize("kw", [
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    dict(beta_schedule="squaredcos_cap_v2"),
])
def test_train_sigmas_match_diffusers_alphas_cumprod(kw):
    from diffusers import DDPMScheduler
    ac = DDPMScheduler(**kw).alphas_cumprod
    expected = ((1 - ac) / ac) ** 0.5
    ours = S.train_sigmas(**kw)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=0)
    assert torch.equal(S.train_sigmas_from_alphas_cumprod(ac), expected)


def test_train_sigmas_errors():
    with pytest.raises(ValueError, match="beta_schedule"):
        S.train_sigmas(beta_schedule="cosine-ish")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        S.train_sigmas(num_train_timesteps=1)
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        S.train_sigmas(beta_start=0.02, beta_end=0.01)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        S.train_sigmas_from_alphas_cumprod(torch.tensor([0.5, 1.5]))


# ---------------------------------------------------------------- sigma <-> timestep


def test_sigma_to_t_gives_exact_integers_at_training_sigmas():
    for train in (TRAIN, TRAIN64):
        t = S.sigma_to_t(train, train)
        assert t.dtype == train.dtype
        assert torch.equal(t, torch.arange(N, dtype=train.dtype))
        assert torch.equal(S.t_to_sigma(torch.arange(N, dtype=train.dtype), train), train)


def test_timestep_mapping_is_log_linear_and_round_trips():
    t = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * (N - 1)
    sig = S.t_to_sigma(t, TRAIN64)
    np.testing.assert_allclose(sig.numpy(), _interp_t(t.numpy()), rtol=1e-12)
    assert torch.allclose(S.sigma_to_t(sig, TRAIN64), t, rtol=0, atol=1e-9)
    mid = S.t_to_sigma(10.5, TRAIN64)
    assert mid.item() == pytest.approx(math.sqrt(T[10] * T[11]), rel=1e-12)
    assert S.sigma_to_t(math.sqrt(T[10] * T[11]), TRAIN64).item() == pytest.approx(10.5, abs=1e-12)


def test_timestep_mapping_clamps_outside_the_training_range():
    t = S.sigma_to_t(torch.tensor([1e-4, 0.0, 100.0]), TRAIN)
    assert t.tolist() == [0.0, 0.0, N - 1]
    assert S.t_to_sigma(torch.tensor([-3.0, 2000.0]), TRAIN).tolist() == [TRAIN[0].item(), TRAIN[-1].item()]


# ---------------------------------------------------------------- names and errors


def test_schedule_names_in_a1111_order():
    assert S.SCHEDULES == ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential",
                           "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM",
                           "Beta", "Laplace", "beta", "kl_optimal", "ddim_uniform", "linear_quadratic",
                           "GITS", "Optimal Steps")


@pytest.mark.parametrize("typed,name", [
    ("karras", "Karras"), ("KARRAS", "Karras"), ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "kl_optimal"),
    ("KL_Optimal", "KL Optimal"), ("kl optimal", "KL Optimal"),
    ("ays", "Align Your Steps"), ("align_your_steps", "Align Your Steps"), ("ddim_uniform", "ddim_uniform"),
    ("DDIM uniform", "DDIM"), ("exponential", "Exponential"), ("polyexponential", "Polyexponential"),
    ("simple", "Simple"), ("normal", "Normal"), ("beta", "beta"), ("BETA", "Beta"), ("Beta", "Beta"),
    ("uniform", "Uniform"), (" Automatic ", "Automatic"), ("linear quadratic", "linear_quadratic"),
    ("laplace", "Laplace"),
])
def test_canonical_names(typed, name):
    assert S.canonical(typed) == name


def test_every_comfyui_scheduler_name_is_a_schedule_type():
    comfyui = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
               "linear_quadratic", "kl_optimal"]
    assert list(S.COMFYUI_SCHEDULERS) == comfyui
    for name in comfyui:
        assert S.canonical(name) in S.SCHEDULES
        assert len(S.compute(name, 10, TRAIN)) >= 10


def test_unknown_comfyui_style_name_suggests_both_conventions():
    with pytest.raises(S.UnknownScheduleError, match="'kl_optimal'.*'KL Optimal'|'KL Optimal'.*'kl_optimal'"):
        S.canonical("kl_optimall")


def test_unknown_schedule_suggests_closest():
    with pytest.raises(S.UnknownScheduleError, match="did you mean 'Karras'"):
        S.canonical("Karas")
    assert issubclass(S.UnknownScheduleError, ValueError)
    with pytest.raises(S.UnknownScheduleError, match="did you mean 'Karras'"):
        S.compute("Karas", 10, TRAIN)


@pytest.mark.parametrize("steps,match", [
    (0, "between 1 and"), (-3, "between 1 and"), (1001, "between 1 and"),
    (2.5, "whole number"), (20.0, "whole number"), (True, "whole number"), ("20", "whole number"),
])
def test_bad_steps(steps, match):
    with pytest.raises(ValueError, match=match):
        S.compute("Karras", steps, TRAIN)


@pytest.mark.parametrize("opts,match", [
    (dict(sigma_min=2.0, sigma_max=1.0), "sigma_min .* must be below sigma_max"),
    (dict(sigma_min=SMAX), "must be below sigma_max"),
    (dict(sigma_min=0.5, sigma_max=torch.tensor(0.5)), "must be below sigma_max"),
    (dict(sigma_min=0.0), "sigma_min must be a finite number > 0"),
    (dict(sigma_max=-1.0), "sigma_max must be"),
    (dict(sigma_max=float("nan")), "sigma_max must be"),
    (dict(rho=0), "rho must be"),
    (dict(alpha=-1), "alpha must be"),
    (dict(family="SD4"), "unknown model family"),
])
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        S.compute("Karras", 10, TRAIN, **opts)


def test_other_refusals():
    with pytest.raises(ValueError, match="Automatic"):
        S.compute("Automatic", 10, TRAIN)
    with pytest.raises(ValueError, match="strictly ascending"):
        S.compute("Karras", 10, TRAIN.flip(0))
    small = TRAIN[::100]  # a 10-timestep model
    assert len(S.compute("Simple", 10, small)) == 11
    with pytest.raises(ValueError, match="Simple schedule takes at most 10"):
        S.compute("Simple", 11, small)
    with pytest.raises(ValueError, match="DDIM schedule takes at most 9"):
        S.compute("DDIM", 10, small)
    assert len(S.compute("DDIM", 999, TRAIN)) == 1000
    assert len(S.compute("Simple", 1000, TRAIN)) == 1001


def test_unknown_schedule_option_is_a_value_error_listing_the_options():
    import inspect

    import samplers

    with pytest.raises(ValueError, match="unknown schedule option.*foo.*sigma_min, sigma_max, rho, alpha, "
                                         "beta, family"):
        samplers.sigmas("Karras", 10, TRAIN, foo=1)
    # the listed options are exactly what schedules.compute takes
    takes = [p.name for p in inspect.signature(S.compute).parameters.values()
             if p.kind is p.KEYWORD_ONLY and p.name != "discard_penultimate"]
    assert list(samplers.SCHEDULE_OPTIONS) == takes


def test_schedule_options_do_not_apply_to_diffusers_samplers():
    import samplers

    with pytest.raises(ValueError, match="own sigmas.*rho"):
        samplers.sigmas("Karras", 10, TRAIN, sampler="Euler (diffusers)", rho=5)


# --- flow models' tables (ComfyUI's schedulers on ModelSamplingDiscreteFlow) ----------------

FLOW_SHIFTS = [1.0, 3.0, math.exp(1.15)]  # SD3 uses 3; Flux e^mu, at most e^1.15 by default


def flow_shifted(t, shift):
    return shift * t / (1 + (shift - 1) * t)


@pytest.mark.parametrize("shift", FLOW_SHIFTS)
@pytest.mark.parametrize("schedule", [s for s in S.SCHEDULES
                                      if s not in ("Automatic", "Align Your Steps", "Laplace", "GITS")])
@pytest.mark.parametrize("steps", [1, 4, 20, 50])
def test_every_schedule_type_runs_on_a_flow_table(schedule, steps, shift):
    # family: the model's, as the plan passes it on Flux (only Optimal Steps reads it)
    sig = S.compute(schedule, steps, samplers.flow_train_sigmas(shift), discard_penultimate=False,
                    family="FLUX")
    assert float(sig[0]) <= 1 and bool((sig[1:] < sig[:-1]).all())
    if schedule in ("beta", "ddim_uniform"):  # ComfyUI's: a step more or fewer at some counts
        assert 0.8 * steps <= len(sig) - 1 <= 1.2 * steps + 1 and float(sig[-1]) == 0
        return
    assert len(sig) == steps + 1
    # A1111's KL Optimal stops at sigma_min, as A1111 runs it
    assert float(sig[-1]) > 0 if schedule == "KL Optimal" else float(sig[-1]) == 0


@pytest.mark.parametrize("shift", FLOW_SHIFTS)
@pytest.mark.parametrize("steps", [4, 20, 25, 50])
def test_flow_simple_is_fluxs_shifted_linspace(shift, steps):
    """Every N/n-th table entry from the top: shift(linspace(1, 1/n, n)), FluxPipeline's default."""
    sig = S.compute("Simple", steps, samplers.flow_train_sigmas(shift))
    t = torch.linspace(1, 1 / steps, steps, dtype=torch.float64)
    torch.testing.assert_close(sig[:-1].double(), flow_shifted(t, shift), rtol=1e-6, atol=0)


@pytest.mark.parametrize("shift", FLOW_SHIFTS)
@pytest.mark.parametrize("steps", [4, 28])
def test_flow_normal_and_sgm_uniform_space_sigma_evenly_then_shift(shift, steps):
    """ComfyUI: timestep(sigma) = 1000 sigma, sigma(timestep) = shift(timestep / 1000); the same
    sigmas diffusers' SD3 scheduler runs by default (samplers.flow_schedule.pipeline_sigmas)."""
    from samplers.flow_schedule import pipeline_sigmas

    table = samplers.flow_train_sigmas(shift)
    lo = float(table[0])
    normal = S.compute("Normal", steps, table)
    expected = flow_shifted(torch.linspace(1, lo, steps, dtype=torch.float64), shift)
    torch.testing.assert_close(normal[:-1].double(), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(normal.double(), pipeline_sigmas("sd3", steps, shift), rtol=1e-6, atol=0)
    sgm = S.compute("SGM Uniform", steps, table)
    expected = flow_shifted(torch.linspace(1, lo, steps + 1, dtype=torch.float64)[:-1], shift)
    torch.testing.assert_close(sgm[:-1].double(), expected, rtol=1e-6, atol=0)
    assert torch.equal(S.compute("Uniform", steps, table), normal)


@pytest.mark.parametrize("steps", [5, 20])
def test_flow_beta_reads_table_entries_at_the_beta_quantiles(steps):
    table = samplers.flow_train_sigmas(3.0)
    sig = S.compute("Beta", steps, table, alpha=0.6, beta=0.6)
    q = 1 - np.arange(steps) / steps
    idx = np.rint(scipy.stats.beta.ppf(q, 0.6, 0.6) * 999).astype(int)
    assert sig[:-1].tolist() == table[idx].tolist()


def test_flow_ranged_types_use_the_tables_ends():
    table = samplers.flow_train_sigmas(3.0)
    for schedule in ("Karras", "Exponential", "kl_optimal", "Polyexponential"):
        sig = S.compute(schedule, 10, table)
        assert float(sig[0]) == pytest.approx(1.0) and float(sig[-2]) == pytest.approx(float(table[0]))


def test_flow_tables_refuse_align_your_steps_and_sigma_above_one():
    table = samplers.flow_train_sigmas(3.0)
    with pytest.raises(ValueError, match="flow models"):
        S.compute("Align Your Steps", 10, table)
    with pytest.raises(ValueError, match="not a flow model's"):
        S.compute("Laplace", 10, table)
    with pytest.raises(ValueError, match="at most 1"):
        S.compute("Karras", 10, table, sigma_max=2.0)


def test_a_table_ending_at_one_that_is_not_a_flow_table_is_refused():
    fake = torch.linspace(0.5, 1.0, 1000)
    with pytest.raises(ValueError, match="flow_train_sigmas"):
        S.compute("Normal", 10, fake)
