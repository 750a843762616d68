"""diffusers' rectified-flow schedulers through the adapter: "<name> (diffusers, flow)" and
"diffusers:FlowMatch...", on the analytic flow Gaussian (no model, no network)."""

from __future__ import annotations

import pytest
import torch

import samplers
from samplers import SamplerFlowError
from samplers.diffusers_run import build
from tests.analytic import FlowGaussian, rms

MODEL = FlowGaussian()
SHIFT = 3.0
TABLE = samplers.flow_train_sigmas(SHIFT)
FLOW_NAMES = [n for n in samplers.names() if n.endswith("(diffusers, flow)")]
DETERMINISTIC = [n for n in FLOW_NAMES if samplers.info(n).kind == "deterministic"]


def noise(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def run(name: str, steps: int, x: torch.Tensor, seed: int = 1, **options) -> torch.Tensor:
    sig = samplers.sigmas("Automatic", steps, TABLE, sampler=name)
    return samplers.sample(name, MODEL.denoiser, x * float(sig[0]), sig, seed=seed, flow=True,
                           shift=SHIFT, **options)


def test_the_flow_entries_are_registered_as_flow_only():
    assert FLOW_NAMES == [f"{n} (diffusers, flow)" for n in
                          ("Euler", "Heun", "DPM++ 2M", "UniPC", "DEIS", "SA-Solver")]
    for name in [*FLOW_NAMES, "diffusers:FlowMatchEulerDiscreteScheduler"]:
        info = samplers.info(name)
        assert info.supports_flow and not info.supports_ve and info.family == "diffusers"
    assert samplers.info("Heun (diffusers, flow)").calls_per_step == 2
    assert samplers.info("SA-Solver (diffusers, flow)").kind == "sde"


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_the_adapter_runs_the_scheduler_as_a_diffusers_loop_does(name):
    """The same scheduler stepped by hand with the velocity (x - D) / sigma gives the same latent."""
    keywords = samplers.info(name).fn.keywords
    x = noise()
    scheduler = build(keywords["_class_name"], keywords["_preset"], {}, None, seed=1, shift=SHIFT)
    scheduler.set_timesteps(12)
    sample, generator = x.clone(), torch.Generator().manual_seed(1)
    extra = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
    own = scheduler.sigmas.tolist()
    for i, t in enumerate(scheduler.timesteps):
        if own[i + 1] == own[i] and i + 1 == len(scheduler.timesteps):
            break  # DEIS / SA-Solver: a last step of length 0 (the adapter skips it)
        sigma = torch.full((len(sample),), own[i])
        v = (sample - MODEL.denoiser(sample, sigma)) / own[i]
        sample = scheduler.step(v, t, sample, **extra).prev_sample
    ours = run(name, 12, x, seed=1)
    if samplers.info(name).kind == "deterministic":
        assert torch.equal(ours, sample)
    else:  # the adapter's noise is the cell's generator, not this one: same law, other draws
        assert ours.shape == sample.shape


def test_flowmatch_euler_is_native_euler_on_the_normal_schedule():
    """FlowMatchEulerDiscreteScheduler's default sigmas are ComfyUI's Normal on the flow table."""
    auto = samplers.sigmas("Automatic", 10, TABLE, sampler="Euler (diffusers, flow)")
    normal = samplers.sigmas("Normal", 10, TABLE, sampler="Euler")
    torch.testing.assert_close(auto.float(), normal.float(), rtol=1e-6, atol=0)
    x = noise()
    ours = samplers.sample("Euler", MODEL.denoiser, x, normal.float(), flow=True)
    assert rms(run("Euler (diffusers, flow)", 10, x), ours) < 1e-6
    assert torch.equal(run("diffusers:FlowMatchEulerDiscreteScheduler", 10, x),
                       run("Euler (diffusers, flow)", 10, x))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_flow_schedulers_converge_to_the_exact_solution(name):
    x = noise(256)
    exact = MODEL.exact(x.double(), 1.0, 0.0)
    errors = [rms(run(name, n, x).double(), exact) for n in (10, 40)]
    assert errors[1] < 0.5 * errors[0]


def test_sa_solver_on_flow_samples_the_data_distribution():
    out = run("SA-Solver (diffusers, flow)", 60, noise(4000, seed=3)[:, :1], seed=5)
    assert float(out.mean()) == pytest.approx(MODEL.mu, abs=0.06)
    assert float(out.std()) == pytest.approx(MODEL.s, rel=0.1)


def test_flow_schedulers_are_refused_on_sd_models_and_sd_schedulers_on_flow_models():
    with pytest.raises(SamplerFlowError, match="only on flow models.*'Euler \\(diffusers\\)'"):
        samplers.sigmas("Automatic", 10, samplers.train_sigmas(), sampler="Euler (diffusers, flow)")
    with pytest.raises(SamplerFlowError,
                       match="only on SD-family models.*'DPM\\+\\+ 2M \\(diffusers, flow\\)'"):
        samplers.sigmas("Automatic", 10, TABLE, sampler="DPM++ 2M (diffusers)")
    sig = samplers.sigmas("Automatic", 5, TABLE, sampler="Euler (diffusers, flow)")
    with pytest.raises(SamplerFlowError, match="only on flow models"):
        samplers.sample("Euler (diffusers, flow)", MODEL.denoiser, noise(), sig)


def test_flow_schedule_types_follow_what_diffusers_can_set():
    karras = samplers.sigmas("Karras", 10, TABLE, sampler="Euler (diffusers, flow)")
    assert float(karras[0]) == pytest.approx(1.0) and float(karras[-1]) == 0 and len(karras) == 11
    with pytest.raises(ValueError, match="It can follow: Automatic\\."):
        samplers.sigmas("Karras", 10, TABLE, sampler="DPM++ 2M (diffusers, flow)")


def test_deis_and_sa_solver_end_at_their_last_sigma_as_diffusers_runs_them():
    """On flow sigmas their last step has length 0: n sigmas for n steps, ending above 0."""
    for name in ("DEIS (diffusers, flow)", "SA-Solver (diffusers, flow)"):
        sig = samplers.sigmas("Automatic", 10, TABLE, sampler=name)
        assert len(sig) == 10 and float(sig[-1]) > 0
