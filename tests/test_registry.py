"""The registry and the plain-function entry point: names, info, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch

import samplers
from samplers.protocol import NonFiniteError
from tests.analytic import Gaussian, karras_sigmas, start

A1111 = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "PLMS", "UniPC", "LCM",
]
MODEL = Gaussian()


def test_every_a1111_name_is_registered_in_a1111_order():
    assert samplers.names()[: len(A1111)] == A1111


def test_extra_samplers_beyond_a1111():
    extra = {"DDPM", "iPNDM", "DEIS", "res_multistep", "ER-SDE"}
    assert extra <= set(samplers.names())


@pytest.mark.parametrize("name", A1111)
def test_info_fields_are_complete(name):
    info = samplers.info(name)
    assert info.kind in ("deterministic", "ancestral", "sde")
    assert info.calls_per_step in (1, 2, 3)
    assert 20 <= len(info.description) <= 300 and info.description.endswith(".")
    if info.uses_schedule:
        assert info.default_schedule in samplers.schedule_names()


def test_kinds_and_costs_users_know():
    expect = {
        "Euler": ("deterministic", 1), "Euler a": ("ancestral", 1), "Heun": ("deterministic", 2),
        "DPM2": ("deterministic", 2), "DPM2 a": ("ancestral", 2), "DPM++ 2M": ("deterministic", 1),
        "DPM++ SDE": ("sde", 2), "DPM++ 2M SDE": ("sde", 1), "DPM++ 3M SDE": ("sde", 1),
        "DPM++ 2S a": ("ancestral", 2), "LMS": ("deterministic", 1), "DDIM": ("deterministic", 1),
        "UniPC": ("deterministic", 1), "PLMS": ("deterministic", 1),
    }
    for name, (kind, calls) in expect.items():
        info = samplers.info(name)
        assert (info.kind, info.calls_per_step) == (kind, calls), name
    assert samplers.info("DPM adaptive").uses_steps is False
    assert samplers.info("Euler").uses_steps is True


def test_default_schedules_match_a1111():
    expect = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Exponential",
              "DPM++ 2M SDE Heun": "Exponential", "DPM++ 3M SDE": "Exponential", "Euler a": "Uniform",
              "Euler": "Uniform", "LMS": "Uniform", "Heun": "Uniform", "DPM2": "Karras", "DPM2 a": "Karras",
              "DPM++ 2S a": "Karras"}
    for name, schedule in expect.items():
        assert samplers.info(name).default_schedule == schedule, name
    for name in ("DPM2", "DPM2 a", "DPM++ 3M SDE"):
        assert samplers.info(name).discard_penultimate, name


@pytest.mark.parametrize("combined,base,schedule", [
    ("DPM++ 2M Karras", "DPM++ 2M", "Karras"), ("DPM2 a Karras", "DPM2 a", "Karras"),
    ("LMS Karras", "LMS", "Karras"), ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
    ("DPM++ SDE Karras", "DPM++ SDE", "Karras"), ("dpm++ 2m karras", "DPM++ 2M", "Karras"),
    ("Euler a", "Euler a", None),
])
def test_combined_names_resolve(combined, base, schedule):
    info, implied = samplers.resolve(combined)
    assert (info.name, implied) == (base, schedule)


def test_combined_name_picks_schedule_for_automatic():
    train = samplers.train_sigmas()
    a = samplers.sigmas("Automatic", 10, train, sampler="Euler Karras")
    b = samplers.sigmas("Karras", 10, train)
    assert torch.equal(a, b)


def test_automatic_uses_default_and_discards_penultimate():
    train = samplers.train_sigmas()
    dpm2 = samplers.sigmas("Automatic", 10, train, sampler="DPM2")
    full = samplers.sigmas("Karras", 11, train)
    assert torch.allclose(dpm2, torch.cat([full[:-2], full[-1:]]))
    assert len(dpm2) == 11


@pytest.mark.parametrize("typo,hint", [("Eulr a", "Euler a"), ("DPM++2M", "DPM++ 2M"),
                                       ("hune", "Heun")])
def test_unknown_sampler_suggests_closest(typo, hint):
    with pytest.raises(samplers.UnknownSamplerError, match=f"did you mean.*'{re.escape(hint)}'"):
        samplers.info(typo)


@pytest.mark.parametrize("typo,hint", [("DPM++ 2M Karas", "DPM++ 2M Karras"),
                                       ("Euler a Exponental", "Euler a Exponential"),
                                       ("DPM2 a Karas", "DPM2 a Karras")])
def test_combined_name_typo_suggests_the_combined_name_first(typo, hint):
    with pytest.raises(samplers.UnknownSamplerError, match=f"did you mean '{re.escape(hint)}'"):
        samplers.info(typo)


def test_unknown_sampler_is_a_value_error():
    with pytest.raises(ValueError):
        samplers.info("no such thing")


def _run(name="Euler", steps=10, denoiser=MODEL.denoiser, **opts):
    sig = karras_sigmas(steps)
    return samplers.sample(name, denoiser, start((16, 2), float(sig[0])), sig, **opts)


def test_option_the_sampler_does_not_take_is_refused():
    with pytest.raises(samplers.SamplerOptionError, match="does not take option.*eta.*it takes"):
        _run("Euler", eta=0.5)


def test_sigmas_must_descend():
    sig = torch.tensor([14.6, 3.0, 5.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly descending"):
        samplers.sample("Euler", MODEL.denoiser, start((4,), 14.6), sig)


@pytest.mark.parametrize("bad", [torch.tensor([1.0]), torch.tensor([[2.0, 1.0]]),
                                 torch.tensor([2.0, float("nan"), 0.0]), torch.tensor([1.0, -1.0])])
def test_malformed_sigmas_are_refused(bad):
    with pytest.raises(ValueError, match="sigmas"):
        samplers.sample("Euler", MODEL.denoiser, torch.zeros(4), bad)


def test_nan_from_denoiser_names_the_step():
    calls = []

    def broken(x, sigma):
        calls.append(1)
        out = MODEL.denoiser(x, sigma)
        return out * float("nan") if len(calls) == 4 else out

    with pytest.raises(NonFiniteError, match="step 4 of 10"):
        _run("Euler", denoiser=broken)


def test_inf_from_denoiser_is_reported_for_second_order_sampler():
    def broken(x, sigma):
        return torch.full_like(x, math.inf) if float(sigma[0]) < 1.0 else MODEL.denoiser(x, sigma)

    with pytest.raises(NonFiniteError, match="NaN or inf at step"):
        _run("Heun", denoiser=broken)


def test_denoiser_gets_batched_sigma():
    seen = []

    def spy(x, sigma):
        seen.append((tuple(x.shape), tuple(sigma.shape)))
        return MODEL.denoiser(x, sigma)

    _run("DPM++ 2M", denoiser=spy)
    assert seen and all(s == ((16, 2), (16,)) for s in seen)


@pytest.mark.parametrize("name", A1111 + ["DDPM", "iPNDM", "DEIS", "res_multistep", "ER-SDE"])
def test_same_seed_same_bits_and_finite(name):
    a = _run(name, steps=12, seed=7)
    b = _run(name, steps=12, seed=7)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
