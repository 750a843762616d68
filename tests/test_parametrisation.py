"""The model parametrisation (VE / rectified flow), flow training sigmas, and the flow analytic models."""

from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers import FLOW, VE, SamplerFlowError
from samplers.noise import CellNoise, sigma_range
from samplers.parametrisation import in_ve_coordinates
from samplers.protocol import drive
from tests.analytic import FlowGaussian, FlowMixture, flow_sigmas

STEP_PAIRS = [(1.0, 0.9), (0.9, 0.5), (0.5, 0.49), (0.3, 0.01), (0.05, 0.0)]


def test_alpha_and_half_log_snr_of_each_parametrisation():
    assert VE.alpha(3.0) == 1.0 and FLOW.alpha(0.25) == 0.75
    assert VE.half_log_snr(2.0) == -math.log(2.0)
    assert FLOW.half_log_snr(0.25) == pytest.approx(math.log(3.0))
    assert FLOW.half_log_snr(1.0) == -math.inf and FLOW.half_log_snr(0.0) == math.inf
    for param in (VE, FLOW):
        for sigma in (1e-4, 0.1, 0.5, 0.9, 0.999):
            assert param.sigma_at(param.half_log_snr(sigma)) == pytest.approx(sigma, rel=1e-12)
            assert param.from_ve_sigma(param.ve_sigma(sigma)) == pytest.approx(sigma, rel=1e-12)
            # lambda = log(alpha / sigma) = -log(ve_sigma) in both
            assert param.half_log_snr(sigma) == pytest.approx(-math.log(param.ve_sigma(sigma)))
    assert FLOW.sigma_at(-800.0) == 1.0 and FLOW.sigma_at(800.0) == pytest.approx(0.0, abs=1e-300)


@pytest.mark.parametrize(("sigma", "sigma_next"), STEP_PAIRS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, 1.5])
def test_ancestral_step_lands_on_the_next_signal_and_noise_levels(sigma, sigma_next, eta):
    """x_down = a_d x0 + s_d e; scale * x_down + up z must be (1 - s') x0 + s' e' exactly."""
    for param in (VE, FLOW):
        step = param.ancestral_step(sigma, sigma_next, eta)
        assert step.scale * param.alpha(step.down) == pytest.approx(param.alpha(sigma_next), abs=1e-15)
        assert (step.scale * step.down) ** 2 + step.up**2 == pytest.approx(sigma_next**2, abs=1e-15)
        assert 0 <= step.down <= sigma_next
        if eta == 0:
            assert (step.down, step.up, step.scale) == (sigma_next, 0.0, 1.0)


def test_flow_ancestral_step_is_comfyuis_rf_step():
    # ComfyUI's sample_euler_ancestral_RF: down = s' (1 + (s'/s - 1) eta), the rest from alpha.
    step = FLOW.ancestral_step(0.8, 0.6, 0.7)
    down = 0.6 * (1 + (0.6 / 0.8 - 1) * 0.7)
    assert step.down == pytest.approx(down)
    assert step.scale == pytest.approx(0.4 / (1 - down))
    assert step.up == pytest.approx(math.sqrt(0.36 - down**2 * 0.4**2 / (1 - down) ** 2))


def test_renoise_raises_the_noise_level_and_keeps_the_signal():
    step = FLOW.renoise(0.2, 0.6)
    assert step.scale * 0.8 == pytest.approx(0.4)
    assert (step.scale * 0.2) ** 2 + step.up**2 == pytest.approx(0.36)
    assert VE.renoise(1.0, 2.0).up == pytest.approx(math.sqrt(3.0)) and VE.renoise(1.0, 2.0).scale == 1.0


def test_first_sigma_offset_follows_the_models_shift():
    assert VE.first_sigma(14.6) == 14.6 and FLOW.first_sigma(0.9) == 0.9
    assert FLOW.first_sigma(1.0) == pytest.approx(0.9999)
    s = 3.0
    t = 1 - 1e-4
    assert FLOW.with_shift(s).first_sigma(1.0) == pytest.approx(s * t / (1 + (s - 1) * t))
    with pytest.raises(ValueError, match="shift"):
        FLOW.with_shift(0.0)


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_flow_train_sigmas_are_the_shifted_table(shift):
    table = samplers.flow_train_sigmas(shift=shift, num_train_timesteps=1000)
    assert table.dtype == torch.float32 and len(table) == 1000
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.allclose(table.double(), shift * t / (1 + (shift - 1) * t), rtol=1e-6)
    assert float(table[-1]) == 1.0 and bool((table[1:] > table[:-1]).all())


@pytest.mark.parametrize("bad", [{"shift": 0}, {"shift": -1.0}, {"shift": math.nan},
                                 {"num_train_timesteps": 1}, {"num_train_timesteps": 10.5}])
def test_flow_train_sigmas_refuse_bad_input(bad):
    with pytest.raises(ValueError):
        samplers.flow_train_sigmas(**bad)


@pytest.mark.parametrize("model", [FlowGaussian(), FlowMixture()], ids=["gaussian", "mixture"])
@pytest.mark.parametrize("sigma", [0.2, 0.6, 0.95])
def test_flow_denoisers_are_the_posterior_mean(model, sigma):
    """Monte Carlo: D(x) = E[x0 | x] means E[(x0 - D(x)) f(x)] = 0 for any f, here f = 1, x."""
    g = torch.Generator().manual_seed(0)
    n = 400_000
    if isinstance(model, FlowGaussian):
        x0 = model.mu + model.s * torch.randn(n, 1, generator=g, dtype=torch.float64)
    else:
        centres = torch.tensor(model.centres, dtype=torch.float64)
        k = torch.randint(len(centres), (n,), generator=g)
        x0 = centres[k] + model.s * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    resid = x0 - model.denoiser(x, torch.full((n,), sigma, dtype=torch.float64))
    assert resid.mean(0).abs().max() < 5e-3
    assert (resid * x).mean(0).abs().max() < 5e-3


def test_flow_gaussian_exact_solution_keeps_the_marginals():
    model = FlowGaussian()
    eps = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for sigma in (0.7, 0.3, 0.0):
        x = model.exact(eps, 1.0, sigma)
        assert float(x.mean()) == pytest.approx((1 - sigma) * model.mu, abs=5e-3)
        sd = ((1 - sigma) ** 2 * model.s**2 + sigma**2) ** 0.5
        assert float(x.std()) == pytest.approx(sd, rel=5e-3)
    # consistent with itself: 1 -> 0.5 -> 0 equals 1 -> 0
    mid = model.exact(eps, 1.0, 0.5)
    assert torch.allclose(model.exact(mid, 0.5, 0.0), model.exact(eps, 1.0, 0.0), atol=1e-12)


def test_in_ve_coordinates_hands_the_model_flow_sigmas_and_scaled_samples():
    """A VE Euler run on x / alpha asks the model at flow sigmas with flow samples."""
    sig = flow_sigmas(4)
    seen = []

    def denoiser(x, sigma):
        seen.append(float(sigma[0]))
        return FlowGaussian().denoiser(x, sigma)

    x = torch.randn(3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    noise = CellNoise(0, *sigma_range(sig))
    gen = in_ve_coordinates(lambda xv, sv, nv: samplers.start_generator("Euler", xv, sv, nv),
                            x, sig, noise, FLOW)
    drive(gen, denoiser, sig)
    assert seen[0] == pytest.approx(0.9999) and seen[1:] == pytest.approx(sig[1:-1].tolist())


def test_flow_sigmas_above_one_are_refused():
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        samplers.sample("Euler", FlowGaussian().denoiser, x, torch.tensor([2.0, 0.5, 0.0]), flow=True)


def test_sd_only_diffusers_samplers_are_refused_on_flow_models():
    assert not samplers.info("Euler (diffusers)").supports_flow
    with pytest.raises(SamplerFlowError, match="flow models"):
        samplers.sample("Euler (diffusers)", FlowGaussian().denoiser, torch.zeros(1, 1),
                        flow_sigmas(3), flow=True)


def test_every_native_sampler_declares_a_flow_form():
    for name in samplers.names():
        info = samplers.info(name)
        if info.family != "diffusers":
            assert info.flow_form in ("unchanged", "parametrised", "ve-coordinates", "refused"), name
            assert ("param" in info.inputs) == (info.flow_form == "parametrised"), name
