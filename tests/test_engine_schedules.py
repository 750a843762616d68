"""Schedule types through the sampling plan (samplers.plan.plan_cell) and the engine on the
tiny SD-family models: the model family picks the Align Your Steps list, and a diffusers sampler
follows a schedule type with its class's flags or the cell fails saying why."""

from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

import samplers
from core.cells import CellSpec
from pipeline.models import load_model
from pipeline.render import render
from samplers.plan import plan_cell
from samplers.schedules import AYS_SIGMAS


def cell(model, sampler="Euler", steps=10, schedule="Automatic", seed=1, **options) -> CellSpec:
    return CellSpec(model=str(model), prompt="a cat", negative_prompt="", width=32, height=32, seed=seed,
                    sampler=sampler, sampler_options=tuple(sorted(options.items())), schedule=schedule,
                    steps=steps, cfg=5.0)


def cell_sigmas(spec: CellSpec, model) -> tuple[torch.Tensor, dict]:
    """The sigmas and options the engine runs `spec` with on `model` (its sampling plan)."""
    plan = plan_cell(spec, model.facts)
    return plan.sigmas, plan.options


def _ays(family: str) -> torch.Tensor:
    return torch.tensor([*AYS_SIGMAS[family], 0.0], dtype=torch.float64)


@pytest.mark.parametrize("which, family", [("sdxl_path", "SDXL"), ("sd_path", "SD1.5")])
def test_align_your_steps_uses_the_models_family_list(request, which, family):
    model = load_model(str(request.getfixturevalue(which)))
    assert (model.family == "sdxl") == (family == "SDXL")
    # 11 steps lay out the 11 published levels themselves, then 0
    sig, _ = cell_sigmas(cell(model.name, steps=11, schedule="Align Your Steps"), model)
    assert torch.allclose(sig, _ays(family), rtol=1e-6)
    # other schedule types are unaffected by the family
    karras, _ = cell_sigmas(cell(model.name, steps=10, schedule="Karras"), model)
    assert torch.equal(karras, samplers.sigmas("Karras", 10, model.train_sigmas).double())


def test_sdxl_align_your_steps_cell_renders(sdxl_path):
    result = render([cell(sdxl_path, steps=4, schedule="Align Your Steps")])[0]
    assert result.ok, result.error
    model = load_model(str(sdxl_path))
    sig, _ = cell_sigmas(cell(sdxl_path, steps=4, schedule="Align Your Steps"), model)
    expected = samplers.sigmas("Align Your Steps", 4, model.train_sigmas, family="SDXL").double()
    assert torch.allclose(sig, expected)
    assert not torch.allclose(sig, samplers.sigmas("Align Your Steps", 4, model.train_sigmas).double())


@pytest.mark.parametrize("sampler, schedule", [("Euler a (diffusers)", "Karras"),
                                               ("DDIM (diffusers)", "Beta"),
                                               ("diffusers:LCMScheduler", "Uniform")])
def test_a_schedule_the_diffusers_class_cannot_follow_fails_the_cell_saying_why(sd_path, sampler,
                                                                               schedule):
    model = load_model(str(sd_path))
    with pytest.raises(ValueError, match=f"cannot follow the '{schedule}' schedule"):
        cell_sigmas(cell(sd_path, sampler=sampler, schedule=schedule), model)
    result = render([cell(sd_path, sampler=sampler, schedule=schedule, steps=3)])[0]
    assert not result.ok and "cannot follow" in result.error


def test_diffusers_preset_karras_gives_way_to_the_cells_schedule_type(sd_path):
    # "DPM++ 2M (diffusers)" presets use_karras_sigmas=True; on Exponential the cell sets it False
    # and must equal diffusers' own pipeline configured with use_exponential_sigmas=True.
    spec = cell(sd_path, sampler="DPM++ 2M (diffusers)", steps=5, schedule="Exponential")
    model = load_model(str(sd_path))
    sig, options = cell_sigmas(spec, model)
    assert options["use_karras_sigmas"] is False and options["use_exponential_sigmas"] is True
    assert torch.allclose(sig.float(), samplers.sigmas("Exponential", 5, model.train_sigmas).float(),
                          rtol=1e-4)
    ours = render([spec])[0]
    assert ours.ok, ours.error
    pipe = StableDiffusionPipeline.from_pretrained(sd_path)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config,
                                                             use_exponential_sigmas=True)
    theirs = pipe(spec.prompt, guidance_scale=spec.cfg, num_inference_steps=spec.steps, width=32,
                  height=32, generator=torch.Generator("cpu").manual_seed(spec.seed),
                  output_type="latent").images
    assert torch.allclose(ours.latents, theirs, atol=2e-4, rtol=1e-4), (ours.latents - theirs).abs().max()


def test_a_combined_diffusers_name_takes_its_schedule_flags(sd_path):
    # "Euler (diffusers) Karras" on Automatic is "Euler (diffusers)" on Karras. (On this model's
    # "leading" config diffusers' Euler takes its Karras range from the leading timesteps, so the
    # levels are diffusers', not the native Karras schedule's.)
    model = load_model(str(sd_path))
    combined = cell_sigmas(cell(sd_path, sampler="Euler (diffusers) Karras", steps=6), model)
    explicit = cell_sigmas(cell(sd_path, sampler="Euler (diffusers)", steps=6, schedule="Karras"), model)
    assert combined[1]["use_karras_sigmas"] is True
    assert torch.equal(combined[0], explicit[0]) and combined[1] == explicit[1]
    plain = cell_sigmas(cell(sd_path, sampler="Euler (diffusers)", steps=6), model)[0]
    assert not torch.allclose(combined[0], plain)
