"""The properties every native sampler shares, on both parametrisations (VE and rectified flow).

One parametrized suite over `samplers.names()` x {VE, flow}: reproducibility per seed, where
noise comes from (only stochastic samplers draw it), float32 against float64, convergence of
the deterministic samplers on the nonlinear mixture, the data distribution of the stochastic
ones, ancestral samplers not converging per seed, SDE samplers following one noise path across
step counts, eta = 0 as the deterministic counterpart, and (on flow) the measured order of
every deterministic solver against the flow Gaussian's exact ODE solution. Per-sampler facts
stay in the per-sampler test files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import samplers
from samplers import FLOW, VE, Parametrisation, SamplerOptionError
from samplers.noise import sigma_range
from samplers.protocol import drive
from tests.analytic import (
    CountingNoise,
    FlowGaussian,
    FlowMixture,
    FreshNoise,
    Gaussian,
    Mixture,
    flow_sigmas,
    karras_sigmas,
    rms,
)


@dataclass(frozen=True)
class Family:
    """A parametrisation with its analytic models and schedules."""

    param: Parametrisation
    gaussian: Any
    mixture: Any
    schedule: Callable[[int], torch.Tensor]  # n steps to sigma 0

    @property
    def sigma_max(self) -> float:
        return float(self.schedule(1)[0])

    def start(self, shape: tuple[int, ...], seed: int, dtype=torch.float64) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(shape, generator=g, dtype=dtype) * self.sigma_max


FAMILIES = {
    "ve": Family(VE, Gaussian(), Mixture(), lambda n: karras_sigmas(n)),
    # SD3's shift 3 on the linear flow schedule ("Simple" on SD3's table)
    "flow": Family(FLOW, FlowGaussian(), FlowMixture(), lambda n: flow_sigmas(n, shift=3.0)),
}
NATIVE = [n for n in samplers.names() if samplers.info(n).family != "diffusers"]
STOCHASTIC = [n for n in NATIVE if samplers.info(n).kind != "deterministic"]
# Enough steps that Restart restarts (A1111's rule: 20 or more).
STEPS = 24


def each(names: list[str]):
    return pytest.mark.parametrize(("name", "family"), [(n, f) for n in names for f in FAMILIES])


@contextmanager
def one_thread() -> Iterator[None]:
    """The mixture denoiser's softmax on torch's threads costs more than the work on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(name: str, family: str, x: torch.Tensor, sigmas: torch.Tensor, *, seed: int = 0,
        denoiser=None, noise_cls=CountingNoise, **options) -> tuple[torch.Tensor, int, Any]:
    """(result, denoiser calls, the noise source) of one run."""
    fam = FAMILIES[family]
    noise = noise_cls(seed, *sigma_range(sigmas))
    gen = samplers.start_generator(name, x, sigmas, noise, param=fam.param, **options)
    denoise = denoiser or fam.gaussian.denoiser
    pairs = samplers.info(name).cfg_pp
    if pairs:  # a CFG++ sampler gets (guided, unconditional): equal here, so it runs as its base
        denoise = (lambda d: lambda xx, ss: (d(xx, ss), d(xx, ss)))(denoise)
    result, calls = drive(gen, denoise, sigmas, pairs=pairs)
    return result, calls, noise


@each(NATIVE)
def test_same_seed_is_bit_identical_and_only_stochastic_samplers_draw_noise(name, family):
    fam = FAMILIES[family]
    sig, x = fam.schedule(STEPS), fam.start((16, 2), seed=1)
    a, _, noise = run(name, family, x, sig, seed=3)
    b, _, _ = run(name, family, x, sig, seed=3)
    c, _, _ = run(name, family, x, sig, seed=4)
    assert torch.equal(a, b)
    if samplers.info(name).kind == "deterministic":
        assert noise.draws == 0 and torch.equal(a, c)
    else:
        assert noise.draws > 0 and not torch.equal(a, c)


@each(NATIVE)
def test_float32_keeps_its_dtype_and_matches_float64(name, family):
    fam = FAMILIES[family]
    sig, x = fam.schedule(STEPS), fam.start((64, 2), seed=1)
    wide, _, _ = run(name, family, x, sig, seed=2)
    narrow, _, _ = run(name, family, x.float(), sig.float(), seed=2)
    assert narrow.dtype == torch.float32
    assert rms(narrow.double(), wide) < 1e-4  # measured at most 2.3e-5 (the SDE samplers on VE)


# first order (tests/test_comfyui_samplers.py measures the ComfyUI ones on the Gaussian)
FIRST_ORDER = {"Euler", "DDIM", "Euler CFG++", "Gradient Estimation", "Gradient Estimation CFG++", "heunpp2"}


@each([n for n in NATIVE if samplers.info(n).kind == "deterministic"])
def test_deterministic_samplers_converge_on_the_mixture(name, family):
    """Doubling 64 -> 128 steps moves the result 8^p times less than 8 -> 16 for order p:
    measured 0.12 (Euler, DDIM), 1e-4..0.012 (the others) on VE, 0.002..0.046 on flow."""
    fam = FAMILIES[family]
    x = fam.start((256, 2), seed=4)
    with one_thread():
        out = {n: run(name, family, x, fam.schedule(n), denoiser=fam.mixture.denoiser)[0]
               for n in (8, 16, 64, 128)}
    bound = 0.2 if name in FIRST_ORDER else 0.03 if family == "ve" else 0.06
    if name.startswith("Gradient Estimation"):
        # measured 0.254 on VE: gamma 2 extrapolation reaches first order only past ~64 steps
        # (slopes 0.44, 0.76, 0.89 on the Gaussian, tests/test_comfyui_samplers.py)
        bound = 0.35
    assert rms(out[64], out[128]) < bound * rms(out[8], out[16])


# LCM re-noises the model's clean estimate: it samples the data only with a consistency
# model (tests/test_lcm.py), not with an ordinary denoiser.
@each([n for n in STOCHASTIC if n != "LCM"])
def test_stochastic_samplers_sample_the_data_distribution(name, family):
    fam = FAMILIES[family]
    x = fam.start((4000, 1), seed=5)
    out, _, _ = run(name, family, x, fam.schedule(100), seed=6)
    assert float(out.mean()) == pytest.approx(fam.gaussian.mu, abs=0.05)
    assert float(out.std()) == pytest.approx(fam.gaussian.s, rel=0.08)


@each([n for n in STOCHASTIC if samplers.info(n).kind == "ancestral" and samplers.info(n).uses_steps])
def test_ancestral_samplers_do_not_converge_per_seed(name, family):
    """Fresh noise every step: 24 and 48 steps give different samples of the data, not one."""
    fam = FAMILIES[family]
    x = fam.start((512, 1), seed=7)
    a, _, _ = run(name, family, x, fam.schedule(STEPS), seed=8)
    b, _, _ = run(name, family, x, fam.schedule(2 * STEPS), seed=8)
    assert rms(a, b) > 0.3 * fam.gaussian.s


@each([n for n in STOCHASTIC if samplers.info(n).kind == "sde"])
def test_sde_samplers_follow_one_noise_path_across_step_counts(name, family):
    """On the cell's Brownian path, 20 and 40 steps land close together; with fresh noise per
    step (no shared path) they are as far apart as two different samples."""
    fam = FAMILIES[family]
    x = fam.start((512, 1), seed=9)
    one_path = [run(name, family, x, fam.schedule(n), seed=10)[0] for n in (20, 40)]
    fresh = [run(name, family, x, fam.schedule(n), seed=10, noise_cls=FreshNoise)[0] for n in (20, 40)]
    assert rms(*one_path) < 0.5 * rms(*fresh)


WITH_ETA = [n for n in STOCHASTIC if "eta" in samplers.info(n).options]


@each(WITH_ETA)
def test_eta_zero_draws_no_noise_and_ignores_the_seed(name, family):
    fam = FAMILIES[family]
    sig, x = fam.schedule(STEPS), fam.start((16, 2), seed=1)
    a, _, noise = run(name, family, x, sig, seed=1, eta=0.0)
    b, _, _ = run(name, family, x, sig, seed=2, eta=0.0)
    assert noise.draws == 0 and torch.equal(a, b)


# eta = 0 runs the deterministic counterpart step for step. On flow the SDE samplers run in
# VE-equivalent coordinates from the SNR-safe first sigma, a different discretisation of the
# same ODE than the counterpart's; their eta = 0 forms are measured in ORDERS below instead.
# (sampler, counterpart, families, bit for bit): the SDE pairs are the same algebra with the
# floating-point operations in another order.
COUNTERPARTS = [("Euler a", "Euler", FAMILIES, True), ("DPM2 a", "DPM2", FAMILIES, True),
                ("DDIM", "Euler", FAMILIES, True), ("DPM++ 2M SDE", "DPM++ 2M", ["ve"], False),
                ("DPM++ SDE", "DPM++ 2S a", ["ve"], False),
                ("DPM++ 2M SDE Heun", "res_multistep", ["ve"], False)]


@pytest.mark.parametrize(("name", "counterpart", "family", "exact"),
                         [(a, b, f, e) for a, b, fams, e in COUNTERPARTS for f in fams])
def test_eta_zero_is_the_deterministic_counterpart(name, counterpart, family, exact):
    fam = FAMILIES[family]
    sig, x = fam.schedule(STEPS), fam.start((64, 2), seed=2)
    with one_thread():
        a, _, _ = run(name, family, x, sig, denoiser=fam.mixture.denoiser, eta=0.0)
        b, _, _ = run(counterpart, family, x, sig, denoiser=fam.mixture.denoiser,
                      **({"eta": 0.0} if "eta" in samplers.info(counterpart).options else {}))
    assert torch.equal(a, b) if exact else rms(a, b) < 1e-12


@pytest.mark.parametrize("name", NATIVE)
def test_an_unknown_option_is_refused_naming_what_the_sampler_takes(name):
    fam = FAMILIES["ve"]
    with pytest.raises(SamplerOptionError, match="takes"):
        run(name, "ve", fam.start((2, 2), seed=0), fam.schedule(4), no_such_option=1)


# ------------------------------------------------------------------------ orders on flow

# (sampler, options, lowest and highest fitted order over 8-64 steps) on the flow Gaussian
# along SD3's shift-3 schedule from sigma 1 to shift(0.02); docs/SAMPLERS.md has the table.
FLOW_ORDERS = [
    ("Euler", {}, 0.9, 1.1), ("Heun", {}, 1.9, 2.3), ("DPM2", {}, 1.7, 2.2),
    ("LMS", {}, 2.8, 3.6), ("DPM++ 2M", {}, 1.7, 2.2), ("DEIS", {}, 2.8, 3.6),
    ("res_multistep", {}, 1.8, 2.2), ("UniPC", {}, 1.6, 2.3), ("DDIM", {}, 0.9, 1.1),
    ("Euler a", {"eta": 0.0}, 0.9, 1.1), ("DPM2 a", {"eta": 0.0}, 1.7, 2.2),
    ("DPM++ 2S a", {"eta": 0.0}, 1.8, 2.2), ("DPM++ SDE", {"eta": 0.0}, 1.8, 2.2),
    ("DPM++ 2M SDE", {"eta": 0.0}, 1.4, 2.2), ("DPM++ 2M SDE Heun", {"eta": 0.0}, 1.6, 2.2),
    ("DPM++ 3M SDE", {"eta": 0.0}, 2.2, 2.9), ("DPM fast", {"eta": 0.0}, 2.3, 3.0),
    ("ER-SDE", {"eta": 0.0}, 1.2, 1.8), ("Restart", {"restart_list": {}}, 1.9, 2.3),
]
# PLMS and iPNDM use equal-step Adams-Bashforth weights and low-order warm-up steps, which
# on flow's curved start cap them at order 2 (their errors cancel between 8 and 64 steps).
FLOW_ORDERS_MORE_STEPS = [("PLMS", {}, 1.7, 2.2), ("iPNDM", {}, 1.7, 2.2)]


def flow_order(name: str, shift: float, steps=(8, 16, 32, 64), **options) -> float:
    """Slope of -log(error) against log(steps): error against the exact flow ODE solution at
    the schedule's end (t = 0.02, not 0: the jump to 0 has an error more steps do not remove)."""
    model = FlowGaussian()
    x = FAMILIES["flow"].start((256, 2), seed=1)
    logs = []
    for n in steps:
        sig = flow_sigmas(n, end=0.02, shift=shift)
        out, _, _ = run(name, "flow", x, sig, **options)
        logs.append((math.log(n), math.log(rms(out, model.exact(x, 1.0, float(sig[-1]))))))
    mean_n = sum(a for a, _ in logs) / len(logs)
    mean_e = sum(b for _, b in logs) / len(logs)
    return -sum((a - mean_n) * (b - mean_e) for a, b in logs) / sum((a - mean_n) ** 2 for a, _ in logs)


@pytest.mark.parametrize(("name", "options", "low", "high"), FLOW_ORDERS,
                         ids=[f"{n}{'-' if o else ''}{'-'.join(o)}" for n, o, *_ in FLOW_ORDERS])
def test_deterministic_flow_solvers_converge_at_their_order(name, options, low, high):
    assert low <= flow_order(name, 3.0, **options) <= high


@pytest.mark.parametrize(("name", "options", "low", "high"), FLOW_ORDERS_MORE_STEPS)
def test_equal_step_multistep_solvers_are_second_order_on_flow(name, options, low, high):
    assert low <= flow_order(name, 3.0, steps=(32, 64, 128, 256), **options) <= high


def test_flow_lms_last_step_to_zero_returns_the_denoised_estimate():
    """ComfyUI's LMS (Forge runs it on flow models) ends with D; on VE ours integrates to 0."""
    fam = FAMILIES["flow"]
    sig, x = fam.schedule(6), fam.start((8, 2), seed=3)
    seen = []

    def denoiser(xx, sigma):
        d = fam.gaussian.denoiser(xx, sigma)
        seen.append(d)
        return d

    out, _, _ = run("LMS", "flow", x, sig, denoiser=denoiser)
    assert torch.equal(out, seen[-1])
