"""The diffusers adapter: real diffusers schedulers driven by an analytic denoiser."""

from __future__ import annotations

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
