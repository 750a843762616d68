"""LCM: take the clean prediction, re-noise it with fresh noise; exact for a true consistency model."""

from __future__ import annotations

import math

import pytest
import torch

import samplers
from samplers.noise import CellNoise, sigma_range
from samplers.protocol import drive
from samplers.registry import SamplerOptionError
from tests.analytic import Gaussian, karras_sigmas, start

MODEL = Gaussian()
N_SAMPLES = 4000


def consistency(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The Gaussian's exact consistency function: the PF-ODE's endpoint at sigma = 0.

    (A consistency model learns this map, boundary scalings included; the
    sampler only sees its output.)
    """
    sg = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return MODEL.mu + (x - MODEL.mu) * MODEL.s / (MODEL.s**2 + sg**2).sqrt()


def data_start(n: int, sigma_max: float, seed: int) -> torch.Tensor:
    """Samples of the exact noisy marginal N(mu, s^2 + sigma_max^2)."""
    z = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return MODEL.mu + math.sqrt(MODEL.s**2 + sigma_max**2) * z


def run(x, sig, seed=0, denoiser=consistency):
    gen = samplers.start_generator("LCM", x, sig, CellNoise(seed, *sigma_range(sig)))
    return drive(gen, denoiser, sig)


def test_registered_as_designed():
    info = samplers.info("LCM")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("ancestral", 1, "Uniform")
    assert info.options == {}


def test_each_step_renoises_the_prediction_with_the_cells_noise():
    sig = karras_sigmas(5)
    x = start((64,), float(sig[0]), seed=1)
    requests = []

    def recording(xr, s):
        requests.append(xr.clone())
        return consistency(xr, s)

    y, calls = run(x, sig, seed=7, denoiser=recording)
    assert calls == len(sig) - 1
    replay = CellNoise(7, *sigma_range(sig))
    for k in range(len(sig) - 2):
        pred = consistency(requests[k], sig[k].reshape(1))
        expected = pred + replay.gaussian(pred) * float(sig[k + 1])
        torch.testing.assert_close(requests[k + 1], expected, rtol=0, atol=0)
    # The last step goes to 0: the prediction itself, no noise.
    torch.testing.assert_close(y, consistency(requests[-1], sig[-2].reshape(1)), rtol=0, atol=0)


def test_one_step_is_the_models_prediction_whatever_the_seed():
    sig = torch.tensor([14.6, 0.0], dtype=torch.float64)
    x = start((256,), 14.6, seed=2)
    a, calls = run(x, sig, seed=1)
    b, _ = run(x, sig, seed=2)
    assert calls == 1 and torch.equal(a, b)
    torch.testing.assert_close(a, consistency(x, sig[:1]), rtol=0, atol=0)


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_samples_the_data_distribution_at_any_step_count(steps):
    sig = karras_sigmas(steps)
    x = data_start(N_SAMPLES, float(sig[0]), seed=3)
    y, _ = run(x, sig, seed=steps)
    assert abs(float(y.mean()) - MODEL.mu) < 4 * MODEL.s / math.sqrt(N_SAMPLES)
    assert abs(float(y.std()) - MODEL.s) < 4 * MODEL.s / math.sqrt(2 * N_SAMPLES)


def test_a_schedule_ending_above_zero_ends_with_a_sample_at_that_noise_level():
    sig = karras_sigmas(4, sigma_min=0.5)[:-1]
    x = data_start(N_SAMPLES, float(sig[0]), seed=4)
    y, _ = run(x, sig, seed=5)
    target = math.sqrt(MODEL.s**2 + 0.5**2)
    assert abs(float(y.std()) - target) < 4 * target / math.sqrt(2 * N_SAMPLES)


def test_does_not_converge_per_seed_and_same_seed_is_bit_identical():
    x = start((512,), 14.6, seed=6)
    four = samplers.sample("LCM", consistency, x, karras_sigmas(4), seed=3)
    eight = samplers.sample("LCM", consistency, x, karras_sigmas(8), seed=3)
    assert torch.equal(four, samplers.sample("LCM", consistency, x, karras_sigmas(4), seed=3))
    # Fresh noise each step: more steps give a different sample, about the data's spread away.
    assert float((four - eight).std()) > 0.5 * MODEL.s
    other = samplers.sample("LCM", consistency, x, karras_sigmas(4), seed=4)
    assert float((four - other).std()) > 0.5 * MODEL.s


def test_takes_no_options():
    sig = karras_sigmas(4)
    with pytest.raises(SamplerOptionError):
        samplers.sample("LCM", consistency, start((4,), float(sig[0])), sig, eta=1.0)
