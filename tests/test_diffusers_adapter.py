"""The diffusers adapter: real diffusers schedulers driven by an analytic denoiser."""

from __future__ import annotations

import re

import pytest
import torch

import samplers
from samplers import diffusers_adapter
from tests.analytic import Gaussian, Mixture

MODEL = Gaussian(mu=0.3, s=0.7)
TRAIN = samplers.train_sigmas()


def _start(sig: torch.Tensor, seed: int = 0, shape=(64, 2)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32) * sig[0].float()


def _vp_start(x: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
    """Where a diffusers pipeline starts an alpha-type scheduler, in sigma terms.

    Pipelines start every scheduler from unit noise times init_noise_sigma; for
    alpha-type schedulers (init_noise_sigma 1) that is noise * sqrt(1 + sigma0^2)
    in the sigma parametrisation, not noise * sigma0.
    """
    s0 = float(sig[0])
    return x / s0 * (1 + s0**2) ** 0.5


def _pair(native: str, adapted: str, steps: int, denoiser=MODEL.denoiser, **flags):
    sig = samplers.sigmas("Automatic", steps, TRAIN, sampler=adapted, sampler_options=flags)
    x = _start(sig)
    a = samplers.sample(adapted, denoiser, x, sig, **flags)
    b = samplers.sample(native, denoiser, x, sig.float())
    return a, b


@pytest.mark.parametrize("steps", [5, 20])
def test_euler_adapter_matches_native_euler(steps):
    a, b = _pair("Euler", "diffusers:EulerDiscreteScheduler", steps, Mixture().denoiser)
    assert torch.allclose(a, b, atol=2e-5), (a - b).abs().max()


@pytest.mark.parametrize("steps", [5, 20])
def test_heun_adapter_matches_native_heun(steps):
    a, b = _pair("Heun", "diffusers:HeunDiscreteScheduler", steps, Mixture().denoiser)
    assert torch.allclose(a, b, atol=2e-5), (a - b).abs().max()


@pytest.mark.parametrize("steps", [8, 25])
def test_dpmpp_2m_karras_adapter_matches_native(steps):
    sig = samplers.sigmas("Automatic", steps, TRAIN, sampler="DPM++ 2M (diffusers)")
    # the (diffusers) entry carries Karras sigmas, the same range as A1111's DPM++ 2M Karras
    karras = samplers.sigmas("Karras", steps, TRAIN)
    assert torch.allclose(sig.float(), karras.float(), rtol=1e-4)
    x = _start(sig)
    den = Mixture().denoiser
    a = samplers.sample("DPM++ 2M (diffusers)", den, x, sig)
    b = samplers.sample("DPM++ 2M", den, _vp_start(x, sig), sig.float())
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_alpha_type_scheduler_ddim_matches_euler_on_its_sigmas():
    # DDIM with eta 0 is an Euler step in sigma. diffusers' DDIM keeps a
    # variance-preserving latent and ends at alphas_cumprod[0], so this checks
    # the adapter's conversions both ways.
    sig = samplers.sigmas("Automatic", 10, TRAIN, sampler="diffusers:DDIMScheduler")
    final = sig[-1].item()
    assert final == pytest.approx(TRAIN[0].item(), rel=1e-4)
    x = _start(sig)
    a = samplers.sample("diffusers:DDIMScheduler", MODEL.denoiser, x, sig)
    b = samplers.sample("Euler", MODEL.denoiser, _vp_start(x, sig), sig.float())
    assert torch.allclose(a, b / (1 + final**2) ** 0.5, atol=2e-5), (a - b).abs().max()


def test_karras_flag_via_schedule_type():
    sig = samplers.sigmas("Karras", 12, TRAIN, sampler="diffusers:EulerDiscreteScheduler")
    assert torch.allclose(sig.float(), samplers.sigmas("Karras", 12, TRAIN).float(), rtol=1e-4)


def test_ancestral_diffusers_sampler_is_seeded():
    name = "Euler a (diffusers)"
    sig = samplers.sigmas("Automatic", 10, TRAIN, sampler=name)
    x = _start(sig)
    a = samplers.sample(name, MODEL.denoiser, x, sig, seed=1)
    b = samplers.sample(name, MODEL.denoiser, x, sig, seed=1)
    c = samplers.sample(name, MODEL.denoiser, x, sig, seed=2)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.05


def test_every_equivalent_runs_and_lands_near_the_data():
    for name in samplers.names():
        if not name.endswith("(diffusers)"):
            continue
        sig = samplers.sigmas("Automatic", 30, TRAIN, sampler=name)
        x = _start(sig, shape=(4, 4, 10, 12))  # latent-shaped: diffusers UniPC needs 4-D
        out = samplers.sample(name, MODEL.denoiser, x, sig, seed=3)
        assert torch.isfinite(out).all(), name
        assert abs(out.mean() - MODEL.mu) < 0.1, (name, out.mean())
        assert abs(out.std() - MODEL.s) < 0.1, (name, out.std())


def test_info_of_equivalents_and_raw_classes():
    assert samplers.info("Heun (diffusers)").calls_per_step == 2
    assert samplers.info("Euler a (diffusers)").kind == "ancestral"
    assert samplers.info("DPM++ 2M SDE (diffusers)").kind == "sde"
    raw = samplers.info("diffusers:UniPCMultistepScheduler")
    assert raw.family == "diffusers" and "solver_order" in raw.options


def test_unknown_scheduler_class_suggests():
    with pytest.raises(samplers.UnknownSamplerError, match="EulerDiscreteScheduler"):
        samplers.info("diffusers:EulerDiscretScheduler")


def test_wrong_option_and_wrong_sigmas_are_refused():
    sig = samplers.sigmas("Automatic", 10, TRAIN, sampler="diffusers:EulerDiscreteScheduler")
    x = _start(sig)
    with pytest.raises(samplers.SamplerOptionError, match="use_karras_sigma"):
        samplers.sample("diffusers:EulerDiscreteScheduler", MODEL.denoiser, x, sig,
                        use_karras_sigma=True)
    with pytest.raises(ValueError, match="own sigma schedule"):
        samplers.sample("diffusers:EulerDiscreteScheduler", MODEL.denoiser, x,
                        samplers.sigmas("Karras", 10, TRAIN))


def test_schedule_types_diffusers_cannot_follow():
    with pytest.raises(ValueError, match="cannot follow"):
        diffusers_adapter.schedule_overrides("Align Your Steps")


# --- schedule types on the "(diffusers)" entries ----------------------------------------------

EQUIVALENT_NAMES = [f"{a1111} (diffusers)" for a1111, *_ in diffusers_adapter.EQUIVALENTS]
SIGMA_TYPES = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas",
               "Beta": "use_beta_sigmas"}
SPACINGS = {"Uniform": "linspace", "SGM Uniform": "trailing", "DDIM": "leading"}
ALL_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas")


def _class_of(name: str) -> tuple[str, dict]:
    a1111 = name.removesuffix(" (diffusers)")
    _, class_name, preset, _ = next(e for e in diffusers_adapter.EQUIVALENTS if e[0] == a1111)
    return class_name, preset


def _init_keys(class_name: str) -> set[str]:
    import inspect

    import diffusers

    return set(inspect.signature(getattr(diffusers, class_name).__init__).parameters)


def _expected_config(class_name: str, preset: dict, schedule: str) -> dict | None:
    """The config flags a diffusers user sets for `schedule`, or None where the class has none
    (diffusers' from_config would drop the flag and run its own sigmas)."""
    keys = _init_keys(class_name)
    base = {k: v for k, v in preset.items() if k not in ALL_SIGMA_FLAGS}
    if schedule in SIGMA_TYPES and SIGMA_TYPES[schedule] in keys:
        return {**base, SIGMA_TYPES[schedule]: True}
    if schedule in SPACINGS and "timestep_spacing" in keys and class_name not in ("LCMScheduler",
                                                                                    "TCDScheduler"):
        return {**base, "timestep_spacing": SPACINGS[schedule]}
    return None


def _diffusers_sigmas(class_name: str, config: dict, steps: int) -> torch.Tensor:
    """The sigmas of diffusers' own scheduler configured that way (built here, not by the adapter)."""
    import diffusers

    scheduler = getattr(diffusers, class_name).from_config(
        {**diffusers_adapter.SD_SCHEDULER_CONFIG, **config, "prediction_type": "epsilon"})
    scheduler.set_timesteps(steps)
    return diffusers_adapter.own_sigmas(scheduler)


@pytest.mark.parametrize("schedule", [s for s in samplers.schedule_names() if s != "Automatic"])
@pytest.mark.parametrize("name", EQUIVALENT_NAMES)
def test_every_equivalent_follows_every_schedule_type_or_refuses_it(name, schedule):
    class_name, preset = _class_of(name)
    expected = _expected_config(class_name, preset, schedule)
    steps = 6
    if expected is None:
        with pytest.raises(ValueError, match=f"{re.escape(name)} cannot follow the '{schedule}' schedule"):
            samplers.sigmas(schedule, steps, TRAIN, sampler=name)
        return
    sig = samplers.sigmas(schedule, steps, TRAIN, sampler=name)
    assert torch.allclose(sig.double(), _diffusers_sigmas(class_name, expected, steps), rtol=1e-6), sig
    if schedule in SIGMA_TYPES:
        # a sigma type lays out exactly the native schedule's levels (diffusers' defining formulas)
        native = samplers.sigmas(schedule, steps, TRAIN)
        assert torch.allclose(sig.float(), native.float(), rtol=1e-4, atol=1e-6), (sig, native)
    elif preset.get("use_karras_sigmas"):
        assert not torch.allclose(sig.float(), samplers.sigmas("Karras", steps, TRAIN).float(), rtol=1e-2)
    # ...and the run takes those sigmas with the flags schedule_overrides gives
    flags = diffusers_adapter.schedule_overrides(schedule, name)
    x = _start(sig, shape=(1, 4, 4, 4))
    out = samplers.sample(name, MODEL.denoiser, x, sig, seed=3, **flags)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", EQUIVALENT_NAMES)
def test_schedule_flags_set_every_sigma_flag_the_class_knows(name):
    class_name, preset = _class_of(name)
    known = [f for f in ALL_SIGMA_FLAGS if f in _init_keys(class_name)]
    for schedule in ("Karras", "Exponential", "Beta", "Uniform", "SGM Uniform", "DDIM"):
        try:
            flags = diffusers_adapter.schedule_overrides(schedule, name)
        except ValueError:
            continue
        assert set(known) <= set(flags), (schedule, flags)
        assert [f for f in known if flags[f]] == ([SIGMA_TYPES[schedule]] if schedule in SIGMA_TYPES else [])
        assert flags.get("timestep_spacing") == SPACINGS.get(schedule)
        assert set(flags) <= _init_keys(class_name)  # nothing the class would drop
    assert diffusers_adapter.schedule_overrides("Automatic", name) == {}  # the preset applies


@pytest.mark.parametrize("name, schedule", [
    ("Euler a (diffusers)", "Karras"), ("DDIM (diffusers)", "Exponential"), ("PLMS (diffusers)", "Beta"),
    ("DDPM (diffusers)", "Karras"), ("diffusers:EulerAncestralDiscreteScheduler", "Karras"),
    ("diffusers:LCMScheduler", "Karras"), ("diffusers:LCMScheduler", "Uniform"),
    ("diffusers:TCDScheduler", "SGM Uniform"), ("diffusers:DPMSolverSinglestepScheduler", "DDIM"),
])
def test_a_schedule_type_the_scheduler_has_no_flag_for_is_refused_not_ignored(name, schedule):
    with pytest.raises(ValueError, match=f"{re.escape(name)} cannot follow the '{schedule}' schedule.*"
                                         "It can follow: Automatic") as err:
        samplers.sigmas(schedule, 8, TRAIN, sampler=name)
    if name.endswith("(diffusers)"):
        native = name.removesuffix(" (diffusers)")
        assert f"native '{native}' on {schedule}" in str(err.value)


def test_raw_class_follows_a_type_it_has_a_flag_for():
    sig = samplers.sigmas("Exponential", 8, TRAIN, sampler="diffusers:DPMSolverSinglestepScheduler")
    assert torch.allclose(sig.float(), samplers.sigmas("Exponential", 8, TRAIN).float(), rtol=1e-4)
    lcm = samplers.sigmas("Automatic", 4, TRAIN, sampler="diffusers:LCMScheduler")
    assert len(lcm) == 5


@pytest.mark.parametrize("name, cls_name", [("DDIM (diffusers)", "DDIMScheduler"),
                                            ("PLMS (diffusers)", "PNDMScheduler")])
@pytest.mark.parametrize("steps", [5, 10])
def test_ddim_and_plms_on_uniform_skip_only_diffusers_no_op_last_step(name, cls_name, steps):
    # "linspace" spacing ends at timestep 0, and with set_alpha_to_one=False the last step goes
    # from alphas_cumprod[0] to alphas_cumprod[0]: diffusers calls the model and keeps the latent.
    # The adapter skips that call: n sigmas for n steps, strictly descending, and the very latent a
    # diffusers loop making all n calls ends with.
    import diffusers

    sig = samplers.sigmas("Uniform", steps, TRAIN, sampler=name)
    assert len(sig) == steps and (sig[1:] < sig[:-1]).all()
    assert float(sig[-1]) == pytest.approx(float(TRAIN[0]), rel=1e-5)
    flags = diffusers_adapter.schedule_overrides("Uniform", name)
    x = _start(sig, shape=(2, 4, 3, 3))
    gen = samplers.start_generator(name, x, sig, samplers.CellNoise(0, 0.03, 14.6), **flags)
    ours, calls = samplers.protocol.drive(gen, MODEL.denoiser, sig)

    scheduler = getattr(diffusers, cls_name).from_config(
        {**diffusers_adapter.SD_SCHEDULER_CONFIG, "timestep_spacing": "linspace"})
    scheduler.set_timesteps(steps)
    sample, theirs_calls = x / sig[0].float() * scheduler.init_noise_sigma, 0
    for t in scheduler.timesteps:
        abar = float(scheduler.alphas_cumprod[int(t)])
        sigma = ((1 - abar) / abar) ** 0.5
        x_ve = sample * (1 + sigma**2) ** 0.5
        eps = (x_ve - MODEL.denoiser(x_ve, torch.full((2,), sigma))) / sigma
        sample, theirs_calls = scheduler.step(eps, t, sample).prev_sample, theirs_calls + 1
    assert int(scheduler.timesteps[-1]) == 0
    assert calls == theirs_calls - 1
    assert torch.allclose(ours, sample, atol=1e-6), (ours - sample).abs().max()


def test_ddim_on_uniform_with_clip_sample_is_refused_clearly():
    with pytest.raises(ValueError, match="clip_sample"):
        samplers.sigmas("Uniform", 10, TRAIN, sampler="DDIM (diffusers)",
                        sampler_options={"clip_sample": True})


def test_config_keys_the_model_only_defaulted_are_left_to_the_new_class_as_diffusers_does():
    """SD 1.5's scheduler_config.json has no timestep_spacing: its PNDMScheduler takes its own default
    ("leading") and records the key in _use_default_values, and diffusers' from_config then gives an
    Euler scheduler Euler's own default ("linspace"). The engine must build the same scheduler, or its
    "diffusers:" cells differ from a diffusers pipeline on every model loaded from such a config (found
    by bench/gpu_check.py on a model built in memory)."""
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    file_config = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
                   "steps_offset": 1, "clip_sample": False}
    loaded = dict(PNDMScheduler.from_config(file_config).config)
    assert "timestep_spacing" in loaded["_use_default_values"] and loaded["timestep_spacing"] == "leading"
    theirs = EulerDiscreteScheduler.from_config(loaded)
    theirs.set_timesteps(4)
    ours = diffusers_adapter.scheduler_sigmas("Euler (diffusers)", 4, scheduler_config=loaded)
    assert torch.allclose(ours.float(), theirs.sigmas.float(), rtol=1e-5)
    assert float(ours[0]) == pytest.approx(14.6146, rel=1e-3)  # linspace starts at the top sigma
    written = dict(loaded, _use_default_values=[])  # the same values written in the file: kept
    leading = diffusers_adapter.scheduler_sigmas("Euler (diffusers)", 4, scheduler_config=written)
    assert float(leading[0]) < 10
