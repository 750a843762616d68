"""diffusers scripts for cells: the scheduler and flags chosen, prompts as exact literals, the
script compiles for every sampler that has one, and runs on the tiny model to the engine's image."""

from __future__ import annotations

import ast

import numpy as np
import pytest

import samplers
from core.cells import CellSpec
from pipeline.render import render
from report.snippet import diffusers_scheduler, diffusers_snippet, snippet_unavailable_reason

NO_EQUIVALENT = {"DPM++ 2S a", "DPM fast", "DPM adaptive", "Restart", "DPM++ 2M SDE Heun", "LCM", "DEIS",
                 "ER-SDE", "iPNDM", "res_multistep",
                 # ComfyUI's variants and ComfyUI-only samplers (samplers/comfyui.py)
                 "lms", "dpmpp_3m_sde", "uni_pc_bh2", "Gradient Estimation", "Gradient Estimation CFG++",
                 "Euler CFG++", "Euler a CFG++", "DPM++ 2S a CFG++", "DPM++ 2M CFG++", "res_multistep_cfg_pp",
                 "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "heunpp2", "ipndm_v", "seeds_2",
                 "seeds_3", "exp_heun_2_x0", "exp_heun_2_x0_sde", "SA-Solver", "SA-Solver PECE"}


def cell(sampler="DPM++ 2M", schedule="Automatic", options=(), prompt="a cat", negative="", steps=20,
         cfg=7.0, seed=123, size=(512, 512), model="m") -> CellSpec:
    return CellSpec(model=model, prompt=prompt, negative_prompt=negative, width=size[0], height=size[1],
                    seed=seed, sampler=sampler, sampler_options=tuple(sorted(options)), schedule=schedule,
                    steps=steps, cfg=cfg)


def call_keywords(script: str, func: str) -> dict:
    """The literal keyword arguments of the call to `func` ("pipe", "from_config") in the script."""
    for node in ast.walk(ast.parse(script)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == func:
                return {k.arg: ast.literal_eval(k.value) for k in node.keywords
                        if not isinstance(k.value, (ast.Call, ast.Name, ast.Attribute))}
    raise AssertionError(f"no call to {func} in the script")


@pytest.mark.parametrize("name", samplers.names())
def test_every_sampler_compiles_or_says_why_not(name):
    script = diffusers_snippet(cell(sampler=name), "org/model", "sd1")
    if name in NO_EQUIVALENT:
        assert script is None
        assert "diffusers has no scheduler for" in snippet_unavailable_reason(cell(sampler=name))
    else:
        assert script is not None and snippet_unavailable_reason(cell(sampler=name)) is None
        compile(script, "cell.py", "exec")


@pytest.mark.parametrize("sampler,schedule,scheduler,flags", [
    ("DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPM++ 2M", "Exponential", "DPMSolverMultistepScheduler", {"use_exponential_sigmas": True}),
    ("DPM++ 2M SDE", "Automatic", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "use_exponential_sigmas": True}),
    ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "linspace"}),
    ("UniPC", "Automatic", "UniPCMultistepScheduler", {"timestep_spacing": "linspace"}),  # Normal
    ("Euler", "Simple", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("DDIM", "Automatic", "DDIMScheduler", {"timestep_spacing": "leading"}),
    ("Euler (diffusers)", "Automatic", "EulerDiscreteScheduler", {}),
    ("DPM++ 2M (diffusers)", "Beta", "DPMSolverMultistepScheduler",
     {"use_karras_sigmas": False, "use_beta_sigmas": True}),  # the schedule's flag replaces the preset's
    ("DPM++ SDE (diffusers)", "Automatic", "DPMSolverSDEScheduler",
     {"use_karras_sigmas": True, "noise_sampler_seed": 123}),  # seeded as the adapter seeds it
])
def test_scheduler_and_flags(sampler, schedule, scheduler, flags):
    script = diffusers_snippet(cell(sampler=sampler, schedule=schedule), "org/model", "sd1")
    assert f"pipe.scheduler = {scheduler}.from_config(pipe.scheduler.config" in script
    assert call_keywords(script, "from_config") == flags
    same = diffusers_scheduler(cell(sampler=sampler, schedule=schedule)).same_image
    assert same == ("diffusers" in sampler)


@pytest.mark.parametrize("sampler,schedule", [("Euler a", "Karras"), ("Euler a", "Exponential"),
                                              ("DDIM", "Karras"), ("PLMS", "Beta")])
def test_schedules_a_scheduler_would_silently_ignore_give_no_script(sampler, schedule):
    # EulerAncestralDiscreteScheduler, DDIM and PNDM have no sigma flags: from_config would drop
    # use_karras_sigmas and render another image than the one the script claims to reproduce
    reason = snippet_unavailable_reason(cell(sampler=sampler, schedule=schedule))
    assert reason is not None and "has no setting for the" in reason
    assert diffusers_snippet(cell(sampler=sampler, schedule=schedule), "m") is None


def test_options_diffusers_can_take_and_cannot():
    script = diffusers_snippet(cell(sampler="DDIM", options=[("eta", 0.4)]), "m")
    assert call_keywords(script, "pipe")["eta"] == 0.4
    assert diffusers_snippet(cell(sampler="Euler a", options=[("eta", 1.0)]), "m") is not None  # the default
    assert diffusers_snippet(cell(sampler="Euler a", options=[("eta", 0.5)]), "m") is None
    assert snippet_unavailable_reason(cell(sampler="Euler a", options=[("eta", 0.5)])) == \
        "diffusers' EulerAncestralDiscreteScheduler has no setting for Euler a's eta=0.5"
    assert "cannot follow the 'KL Optimal' schedule" in snippet_unavailable_reason(
        cell(sampler="Euler", schedule="KL Optimal"))
    script = diffusers_snippet(cell(sampler="diffusers:EulerDiscreteScheduler",
                                    options=[("timestep_spacing", "trailing"), ("steps_offset", 1)]), "m")
    assert call_keywords(script, "from_config") == {"timestep_spacing": "trailing", "steps_offset": 1}


@pytest.mark.parametrize("prompt", ["a \"cat\", on: a mat\nline two", "it's a \\ backslash '''", "猫 🐱",
                                    "Negative prompt: inside", ""])
def test_prompts_are_exact_python_literals(prompt):
    script = diffusers_snippet(cell(prompt=prompt, negative=prompt + " neg", seed=4294967295, cfg=6.5,
                                    size=(640, 384), steps=33), "m")
    assert call_keywords(script, "pipe") == {
        "prompt": prompt, "negative_prompt": prompt + " neg", "num_inference_steps": 33,
        "guidance_scale": 6.5, "width": 640, "height": 384}
    assert 'generator=torch.Generator("cpu").manual_seed(4294967295)' in script
    assert call_keywords(diffusers_snippet(cell(negative=""), "m"), "pipe")["negative_prompt"] is None


@pytest.mark.parametrize("model,family,line", [
    ("org/model", "sd1", "pipe = StableDiffusionPipeline.from_pretrained("),
    ("/models/xl", "sdxl", "pipe = StableDiffusionXLPipeline.from_pretrained("),
    ("org/model", None, "pipe = AutoPipelineForText2Image.from_pretrained("),
    ("/m/v1-5.safetensors", None, "pipe = StableDiffusionPipeline.from_single_file("),
    ("/m/xl.safetensors", "sdxl", "pipe = StableDiffusionXLPipeline.from_single_file("),
    ("builtin", "sd1", "pipe = StableDiffusionPipeline.from_pretrained("),
])
def test_pipeline_class_per_family_and_source(model, family, line):
    script = diffusers_snippet(cell(), model, family)
    assert line in script
    assert repr("assets/builtin" if model == "builtin" else model) in script
    assert ("safety_checker=None" in script) == ("StableDiffusionPipeline." in line)


def run_script(script: str, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(script, "cell.py", "exec"), namespace)
    assert (tmp_path / "cell.png").is_file()
    return namespace["image"]


def test_diffusers_cell_script_renders_the_engines_image(sd_path, tmp_path, monkeypatch):
    spec = cell(sampler="Euler (diffusers)", prompt="a cat, on: a mat", negative="blurry", steps=3, cfg=5.0,
                seed=7, size=(32, 32), model=str(sd_path))
    ours = render([spec])[0]
    assert ours.ok, ours.error
    image = run_script(diffusers_snippet(spec, str(sd_path), "sd1"), tmp_path, monkeypatch)
    diff = np.abs(np.asarray(image, dtype=int) - np.asarray(ours.image, dtype=int))
    assert image.size == (32, 32) and diff.max() <= 1  # uint8 rounding of float-tolerance differences


def test_native_sampler_script_runs_on_the_tiny_model(sd_path, tmp_path, monkeypatch):
    spec = cell(sampler="DPM++ 2M", steps=2, size=(32, 32), model=str(sd_path))
    image = run_script(diffusers_snippet(spec, str(sd_path)), tmp_path, monkeypatch)  # family unknown: Auto
    assert image.size == (32, 32) and np.asarray(image).std() > 0
