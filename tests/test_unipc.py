"""UniPC (Zhao et al. 2023): orders of accuracy, the corrector's gain, the final step to 0.

Orders are fitted slopes of log(max error) vs log(steps) on Karras schedules
ending at sigma_min = 0.05 (no final jump to 0), against the Gaussian's exact
probability-flow solution. Measured when written (seed 0, (256, 2), 16-128 steps
unless said): order 3 + corrector (UniPC-3, lower_order_final off): 4.02 (bh1) /
4.01 (bh2); default settings over 8-64 steps: 3.23 / 3.04, but 2.18 / 2.19 from
80 to 160 steps (the final first-order step); UniP-1 / UniP-2 without corrector:
0.98 / 2.13; UniPC-1 / UniPC-2 with corrector: 2.08 / 3.12. On the mixture
(uniform-in-lambda schedule, 10/15/20 steps) UniPC's RMS error is 0.53/0.35/0.16
(bh1) and 0.49/0.33/0.16 (bh2) of DPM-Solver++(2M)'s.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import samplers
from samplers.registry import SamplerOptionError
from tests.analytic import Gaussian, Mixture, karras_sigmas, start

SMAX, SMIN = 14.6, 0.05
GAUSS = Gaussian()
MIX = Mixture()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: torch's thread pool only adds overhead (10x on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_sigma_min(n: int) -> torch.Tensor:
    """n Karras steps from SMAX to SMIN, without the final 0."""
    return karras_sigmas(n + 1, sigma_min=SMIN, sigma_max=SMAX)[:-1]


def exponential(n: int) -> torch.Tensor:
    """n steps uniform in log-sigma (uniform in lambda) from SMAX to SMIN."""
    return torch.exp(torch.linspace(math.log(SMAX), math.log(SMIN), n + 1, dtype=torch.float64))


def fitted_order(ns: list[int], errors: list[float]) -> float:
    return float(-np.polyfit(np.log(ns), np.log(errors), 1)[0])


def gaussian_errors(ns: list[int], **options: object) -> list[float]:
    x = start((256, 2), SMAX)
    exact = GAUSS.exact(x, SMAX, SMIN)
    return [float((samplers.sample("UniPC", GAUSS.denoiser, x, to_sigma_min(n), **options)
                   - exact).abs().max()) for n in ns]


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_order3_with_corrector_converges_at_order_at_least_3(variant: str) -> None:
    # UniP-3 + UniC-3 is 4th order in theory; lower_order_final off so the last
    # step is not a first-order one (see the next test).
    ns = [16, 32, 64, 128]
    errors = gaussian_errors(ns, variant=variant, lower_order_final=False)
    assert fitted_order(ns, errors) >= 3.6
    assert errors[-1] < 5e-6


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_default_settings_converge_fast_at_practical_step_counts(variant: str) -> None:
    ns = [8, 16, 32, 64]
    errors = gaussian_errors(ns, variant=variant)
    assert fitted_order(ns, errors) >= 2.6
    assert errors[-1] < 2e-4
    # Asymptotically the final, uncorrected first-order step (lower_order_final,
    # as the paper's code does) caps the global order at 2.
    tail = gaussian_errors([80, 160], variant=variant)
    assert 1.8 < fitted_order([80, 160], tail) < 2.6


@pytest.mark.parametrize("order", [1, 2])
def test_predictor_alone_has_its_order(order: int) -> None:
    ns = [16, 32, 64, 128]
    errors = gaussian_errors(ns, order=order, use_corrector=False, lower_order_final=False)
    assert abs(fitted_order(ns, errors) - order) < 0.25


@pytest.mark.parametrize("order", [1, 2])
def test_corrector_raises_the_order_by_one(order: int) -> None:
    ns = [16, 32, 64, 128]
    errors = gaussian_errors(ns, order=order, lower_order_final=False)
    assert fitted_order(ns, errors) >= order + 0.8
    plain = gaussian_errors(ns, order=order, use_corrector=False, lower_order_final=False)
    assert errors[-1] < plain[-1] / 10


def test_full_run_to_zero_lands_on_the_exact_solution() -> None:
    x = start((256, 2), SMAX)
    exact = GAUSS.exact(x, SMAX, 0.0)
    errors = [float((samplers.sample("UniPC", GAUSS.denoiser, x, karras_sigmas(n, SMIN, SMAX))
                     - exact).abs().max()) for n in (15, 30, 60)]
    # What remains from 30 steps on is the fixed error of the final denoise from
    # sigma_min = 0.05 (about sigma_min^2 / (2 s^2) relative), not the solver's.
    assert errors[0] < 0.012 and errors[1] < 0.006
    assert abs(errors[2] - errors[1]) < 0.05 * errors[1]


def test_final_step_to_zero_returns_the_last_denoised_estimate() -> None:
    seen: list[torch.Tensor] = []

    def recording(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append(MIX.denoiser(x, sigma))
        return seen[-1]

    x = start((64, 2), SMAX)
    out = samplers.sample("UniPC", recording, x, karras_sigmas(12, SMIN, SMAX))
    assert len(seen) == 12  # one call per step, none at sigma = 0
    assert torch.equal(out, seen[-1])


@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_one_call_per_step(steps: int) -> None:
    calls = []

    def counting(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(float(sigma[0]))
        return GAUSS.denoiser(x, sigma)

    x = start((16,), SMAX)
    for sig in (karras_sigmas(steps, SMIN, SMAX), to_sigma_min(steps)):
        calls.clear()
        out = samplers.sample("UniPC", counting, x, sig)
        assert len(calls) == steps and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def mixture_reference() -> tuple[torch.Tensor, torch.Tensor]:
    """Start and a scipy DOP853 solve (rtol 1e-10) of dx/dlog(sigma) = x - D(x; sigma)."""
    x = start((64, 2), SMAX, seed=1)

    def rhs(u: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).reshape(x.shape)
        sigma = torch.full((x.shape[0],), math.exp(u), dtype=torch.float64)
        return (xt - MIX.denoiser(xt, sigma)).reshape(-1).numpy()

    sol = solve_ivp(rhs, (math.log(SMAX), math.log(SMIN)), x.reshape(-1).numpy(),
                    method="DOP853", rtol=1e-10, atol=1e-12)
    assert sol.success
    return x, torch.from_numpy(sol.y[:, -1]).reshape(x.shape)


def dpmpp_2m(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Baseline: DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), test-local."""
    old, h_last = None, 0.0
    for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        d = MIX.denoiser(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        h = math.log(s / t)
        r = h_last / h
        d_eff = d if old is None else (1 + 1 / (2 * r)) * d - 1 / (2 * r) * old
        x = (t / s) * x - math.expm1(-h) * d_eff
        old, h_last = d, h
    return x


@pytest.mark.parametrize("steps", [10, 15, 20])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_beats_second_order_multistep_on_the_mixture(mixture_reference, variant: str,
                                                     steps: int) -> None:
    # Uniform in lambda, the closest analytic stand-in for UniPC's "Normal"
    # default. (On Karras at 10 steps the two are even; UniPC wins from 12 on.)
    x, reference = mixture_reference
    sig = exponential(steps)
    rms = lambda y: float((y - reference).pow(2).mean().sqrt())  # noqa: E731
    unipc_error = rms(samplers.sample("UniPC", MIX.denoiser, x, sig, variant=variant))
    assert unipc_error < 0.7 * rms(dpmpp_2m(x, sig))


def test_deterministic_and_float32_agrees_with_float64() -> None:
    x = start((64, 2), SMAX)
    sig = karras_sigmas(15, SMIN, SMAX)
    a = samplers.sample("UniPC", MIX.denoiser, x, sig, seed=1)
    b = samplers.sample("UniPC", MIX.denoiser, x, sig, seed=2)
    assert torch.equal(a, b)
    c = samplers.sample("UniPC", MIX.denoiser, x.float(), sig.float(), variant="bh2")
    assert c.dtype == torch.float32
    d = samplers.sample("UniPC", MIX.denoiser, x, sig, variant="bh2")
    assert float((c.double() - d).abs().max()) < 1e-4


@pytest.mark.parametrize("options", [
    {"variant": "bh3"}, {"variant": None}, {"order": 0}, {"order": 4}, {"order": 2.5},
    {"order": True}, {"lower_order_final": "yes"}, {"use_corrector": 1},
])
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(SamplerOptionError):
        samplers.sample("UniPC", GAUSS.denoiser, start((4,), SMAX), karras_sigmas(5), **options)


def test_registry_entry() -> None:
    info = samplers.info("UniPC")
    assert (info.kind, info.calls_per_step, info.default_schedule) == ("deterministic", 1, "Normal")
    assert info.discard_penultimate  # as ComfyUI: see the schedule tests below
    assert info.options == {"variant": "bh1", "order": 3, "lower_order_final": True,
                            "use_corrector": True}


# ------------------------------------------------------------ the schedule at few steps


@pytest.mark.parametrize("steps", [4, 5, 8, 10])
def test_automatic_schedule_has_diffusers_spacing(steps: int) -> None:
    # Normal with the penultimate sigma (sigma_min) discarded: t = 999, 999 (n-1)/n, ..., 999/n,
    # then 0, i.e. diffusers' UniPCMultistepScheduler's linspace timesteps (which round t to whole
    # numbers, hence the tolerance)
    train = samplers.train_sigmas()
    ours = samplers.sigmas("Automatic", steps, train, sampler="UniPC").double()
    theirs = samplers.sigmas("Automatic", steps, train, sampler="UniPC (diffusers)").double()
    assert len(ours) == steps + 1 and float(ours[-1]) == 0.0
    assert float(ours[-2]) > 3 * float(train.min())  # no step down to sigma_min before the 0
    assert torch.allclose(ours, theirs, rtol=0.01, atol=0)


@pytest.mark.parametrize("steps", [4, 5, 8])
def test_few_steps_are_as_accurate_as_diffusers_unipc(steps: int) -> None:
    # Before the discard, the last real step ran from t ~ 1000/n to sigma_min, longer in lambda
    # than all the others together: the error at 5 steps was 4.26 (measured), 10x diffusers'.
    train = samplers.train_sigmas()
    ours = samplers.sigmas("Automatic", steps, train, sampler="UniPC")
    theirs = samplers.sigmas("Automatic", steps, train, sampler="UniPC (diffusers)").double()
    x = start((256, 2), float(ours[0]))
    exact = GAUSS.exact(x, float(ours[0]), 0.0)
    error = float((samplers.sample("UniPC", GAUSS.denoiser, x, ours) - exact).abs().max())
    reference = float((samplers.sample("UniPC (diffusers)", GAUSS.denoiser, x, theirs) - exact).abs().max())
    assert error < 1.15 * reference
    assert error < 0.8  # 0.63 / 0.45 / 0.22 measured at 4 / 5 / 8 steps
