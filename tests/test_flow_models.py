"""Flow models (SD3 / SD3.5, Flux) in the engine, against diffusers' own pipelines.

Tiny random-weight pipelines are built offline (tests/tiny_flow_models.py) with timestep
embeddings scaled up, so a wrong schedule, shift or timestep changes the picture by far
more than the 2/255 mean pixel difference the fidelity checks allow.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from pipeline.flow_denoiser import image_ids, pack, unpack
from pipeline.models import load_model
from pipeline.prompts import encode
from pipeline.render import render
from samplers.flow_schedule import FlowShift, model_shift, pipeline_sigmas
from tests.test_engine import cell
from tests.tiny_flow_models import flux_scheduler

PIPES = {"sd3_path": StableDiffusion3Pipeline, "flux_path": FluxPipeline, "flux_schnell_path": FluxPipeline}
MAX_MEAN_DIFF = 2 / 255


def pipeline_image(which: str, path, spec, load: dict | None = None, scheduler: dict | None = None,
                   **kw) -> np.ndarray:
    """The family's own pipeline output for a cell, as floats in [0, 1] (H, W, 3); `scheduler`:
    config changes to its FlowMatchEulerDiscreteScheduler."""
    pipe = PIPES[which].from_pretrained(path, **(load or {}))
    if scheduler:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, **scheduler)
    pipe.set_progress_bar_config(disable=True)
    if which == "sd3_path":
        kw = {"guidance_scale": spec.cfg, "negative_prompt": spec.negative_prompt, **kw}
    elif spec.cfg > 1:
        kw = {"true_cfg_scale": spec.cfg, "negative_prompt": spec.negative_prompt, **kw}
    out = pipe(spec.prompt, num_inference_steps=spec.steps, height=spec.height, width=spec.width,
               generator=torch.Generator("cpu").manual_seed(spec.seed), output_type="np", **kw)
    return out.images[0]


def mean_diff(image, reference: np.ndarray) -> float:
    return float(np.abs(np.asarray(image, dtype=np.float64) / 255 - reference).mean())


# --------------------------------------------------------------- the tiny models themselves


@pytest.mark.parametrize("which", list(PIPES))
def test_tiny_flow_models_run_offline_and_depend_strongly_on_the_schedule(request, which):
    path = request.getfixturevalue(which)
    spec = cell(path, steps=8, cfg=1.0)
    default = pipeline_image(which, path, spec)
    other = pipeline_image(which, path, spec, sigmas=list(np.linspace(1.0, 1 / 8, 8) ** 2))
    assert default.shape == (32, 32, 3) and 0.2 < default.mean() < 0.8
    # a wrong schedule is seen at several times the fidelity tolerance
    assert np.abs(default - other).mean() > 3 * MAX_MEAN_DIFF


def test_flux_dev_guidance_changes_the_image(flux_path):
    spec = cell(flux_path, steps=4, cfg=1.0)
    a = pipeline_image("flux_path", flux_path, spec)
    b = pipeline_image("flux_path", flux_path, spec, guidance_scale=1.0)
    assert np.abs(a - b).mean() > 5 * MAX_MEAN_DIFF


# --------------------------------------------------------------- loading and conditioning


def test_loading_describes_flow_models(sd3_path, flux_path, flux_schnell_path):
    sd3 = load_model(str(sd3_path))
    assert (sd3.family, sd3.prediction_type, sd3.latent_channels) == ("sd3", "flow", 16)
    assert sd3.flow.shift.shift == 3.0 and not sd3.flow.shift.dynamic and not sd3.flow.guidance_embeds
    assert sd3.default_size == (32, 32)  # transformer sample_size 16 x VAE scale 2
    # the training table is the shifted flow table at the scheduler's shift (diffusers' own)
    table = FlowMatchEulerDiscreteScheduler(shift=3.0).sigmas.flip(0)
    assert torch.allclose(sd3.train_sigmas, table, atol=1e-6)
    dev = load_model(str(flux_path))
    assert (dev.family, dev.flow.shift.dynamic, dev.flow.guidance_embeds) == ("flux", True, True)
    assert load_model(str(flux_schnell_path)).flow.guidance_embeds is False


@torch.no_grad()  # as the pipelines encode (T5 differs by ~1e-5 with autograd on)
def test_prompt_encoding_equals_the_pipelines(sd3_path, flux_path):
    sd3 = load_model(str(sd3_path))
    same = torch.equal
    embeds, _n, pooled, _np = sd3.pipe.encode_prompt("a red cat", None, None,
                                                     do_classifier_free_guidance=False)
    ours = encode(sd3, "a red cat")
    assert ours.embeds.shape == (1, 77 + 256, 48) and same(ours.embeds, embeds)
    assert same(ours.pooled, pooled) and ours.pooled.shape == (1, 64)
    flux = load_model(str(flux_path))
    embeds, pooled, _ids = flux.pipe.encode_prompt("a red cat", None)
    ours = encode(flux, "a red cat")
    assert ours.embeds.shape == (1, 512, 48) and same(ours.embeds, embeds)
    assert same(ours.pooled, pooled)


def test_sd3_without_t5_feeds_zeros_as_diffusers_does(tiny_dir):
    from tests.tiny_flow_models import tiny_sd3

    path = tiny_sd3(tiny_dir, t5=False)
    model = load_model(str(path))
    ours = encode(model, "a red cat")
    assert ours.embeds.shape == (1, 77 + 256, 48) and not ours.embeds[:, 77:].any()
    spec = cell(path, steps=5, cfg=3.0, negative="blurry")
    result = render([spec])[0]
    assert result.ok, result.error
    theirs = pipeline_image("sd3_path", path, spec, load={"text_encoder_3": None, "tokenizer_3": None})
    assert mean_diff(result.image, theirs) < MAX_MEAN_DIFF


def test_flux_packing_round_trips_and_ids_are_row_column():
    x = torch.randn(3, 16, 6, 8)
    tokens = pack(x)
    assert tokens.shape == (3, 12, 64) and torch.equal(unpack(tokens, 6, 8), x)
    assert torch.equal(FluxPipeline._pack_latents(x, 3, 16, 6, 8), tokens)
    assert torch.equal(image_ids(6, 8), FluxPipeline._prepare_latent_image_ids(1, 3, 4, "cpu", torch.float32))


# --------------------------------------------------------------- the model's own shift and schedule


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (128, 128), (1024, 1024)])
@pytest.mark.parametrize("steps", [1, 4, 9, 28])
def test_flux_automatic_sigmas_are_the_pipelines(size, steps):
    """mu from the image token count exactly as FluxPipeline's calculate_shift; sigmas as set_timesteps."""
    lh, lw = size[1] // 8, size[0] // 8
    facts = FlowShift.from_config(dict(flux_scheduler().config))
    mu = calculate_shift((lh // 2) * (lw // 2), 256, 4096, 0.5, 1.15)
    assert math.isclose(model_shift(facts, lh, lw), math.exp(mu), rel_tol=1e-12)
    sched = flux_scheduler()
    sched.set_timesteps(sigmas=list(np.linspace(1.0, 1 / steps, steps)), mu=mu)
    ours = pipeline_sigmas("flux", steps, model_shift(facts, lh, lw))
    assert torch.allclose(ours.float(), sched.sigmas, atol=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
@pytest.mark.parametrize("steps", [1, 5, 28])
def test_sd3_automatic_sigmas_are_the_schedulers_own_spacing(shift, steps):
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    assert torch.allclose(pipeline_sigmas("sd3", steps, shift).float(), sched.sigmas, atol=1e-6)


# --------------------------------------------------------------- fidelity: native Euler


@pytest.mark.parametrize("which,cfg,negative", [
    ("sd3_path", 4.0, "blurry"), ("flux_path", 1.0, ""), ("flux_schnell_path", 1.0, ""),
    ("flux_path", 3.0, "blurry"),  # Flux's true CFG with a negative prompt
])
@pytest.mark.parametrize("schedule", ["Automatic", "Simple"])
def test_native_euler_reproduces_the_pipeline(request, which, cfg, negative, schedule):
    """Automatic = the pipeline's default sigmas; Simple = the pipeline run with
    sigmas = linspace(1, 1/N, N) (the same thing on Flux; not on SD3)."""
    path = request.getfixturevalue(which)
    spec = cell(path, sampler="Euler", steps=8, cfg=cfg, negative=negative, schedule=schedule)
    ours = render([spec])[0]
    assert ours.ok, ours.error
    kw = {} if schedule == "Automatic" else {"sigmas": list(np.linspace(1.0, 1 / 8, 8))}
    assert mean_diff(ours.image, pipeline_image(which, path, spec, **kw)) < MAX_MEAN_DIFF


@pytest.mark.parametrize("which,changes,pipeline_kw,scheduler", [
    ("sd3_path", {"shift": 6.0}, {}, {"shift": 6.0}),
    ("flux_path", {"guidance": 1.5}, {"guidance_scale": 1.5}, None),
    # a fixed shift replaces Flux's resolution-dependent one
    ("flux_path", {"shift": 2.0}, {}, {"use_dynamic_shifting": False, "shift": 2.0}),
])
def test_shift_and_guidance_settings_reproduce_the_pipeline(request, which, changes, pipeline_kw, scheduler):
    path = request.getfixturevalue(which)
    spec = replace(cell(path, sampler="Euler", steps=8, cfg=1.0), **changes)
    ours, default = render([spec, cell(path, sampler="Euler", steps=8, cfg=1.0)])
    assert ours.ok, ours.error
    theirs = pipeline_image(which, path, spec, scheduler=scheduler, **pipeline_kw)
    assert mean_diff(ours.image, theirs) < MAX_MEAN_DIFF
    assert mean_diff(default.image, theirs) > 3 * MAX_MEAN_DIFF  # the setting mattered


def test_flow_cell_is_the_same_alone_or_in_a_grid_with_sd_cells(sd_path, sd3_path, flux_path):
    """SD3, Flux and SD 1.x cells share one grid through the model axis; batching, neighbours
    and sizes do not change a cell's image."""
    grid = [cell(sd3_path, steps=4, cfg=4.0, seed=s, size=size) for s, size in ((1, 32), (2, 48))]
    grid += [cell(flux_path, steps=4, cfg=1.0, seed=s, size=size) for s, size in ((3, 32), (4, 48))]
    grid += [cell(sd_path, steps=4, seed=5), cell(flux_path, steps=4, cfg=2.0, negative="dog", seed=6)]
    together = render(grid)
    for spec, result in zip(grid, together, strict=True):
        assert result.ok, result.error
        alone = render([spec])[0]
        assert torch.allclose(result.latents, alone.latents, atol=1e-5), spec
    assert together[0].latents.shape == (1, 16, 16, 16) and together[4].latents.shape == (1, 4, 16, 16)


# --------------------------------------------------------------- bad input


def test_flux_size_must_fit_the_2x2_packing(flux_path):
    result = render([replace(cell(flux_path, cfg=1.0), width=34, height=32)])[0]
    assert not result.ok and "multiple of 4" in result.error and "32x32" in result.error


@pytest.mark.parametrize("keys,message", [
    (["transformer_blocks.0.attn.to_q.weight", "x_embedder.weight"], "cannot be told"),
    (["model.diffusion_model.double_layers.0.attn.w2q.weight"], "AuraFlow"),
    (["double_blocks.0.img_attn.norm.key_norm.scale", "img_in.weight"], "Fill/Depth"),
])
def test_transformer_checkpoint_of_an_unknown_family_is_refused_in_one_line(tmp_path, keys, message):
    from safetensors.torch import save_file

    from pipeline.models import UnsupportedModelError

    path = tmp_path / "mystery.safetensors"
    save_file({k: torch.zeros(2, 384 if k == "img_in.weight" else 2) for k in keys}, str(path))
    with pytest.raises(UnsupportedModelError, match=message) as err:
        load_model(str(path))
    assert "\n" not in str(err.value) and "FLUX.1" in str(err.value)


def test_single_file_flow_checkpoints_are_told_apart_by_their_keys():
    from pipeline.flow_models import checkpoint_family

    prefix = "model.diffusion_model."
    assert checkpoint_family({prefix + "joint_blocks.0.context_block.adaLN_modulation.1.bias"}, "x") == \
        ("sd3", "sd3")
    flux = {"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1)}
    assert checkpoint_family(flux, "x") == ("flux", "flux-schnell")
    dev = {**flux, "guidance_in.in_layer.bias": torch.zeros(1)}
    assert checkpoint_family(dev, "x") == ("flux", "flux-dev")
    # an SD UNet: not a flow transformer, left to the SD-family checks
    assert checkpoint_family({prefix + "input_blocks.0.0.weight"}, "x") is None


@pytest.mark.parametrize("which,family", [("flux_path", "flux"), ("sd3_path", "sd3")])
def test_flow_hub_id_loads_from_the_local_cache(request, which, family, tmp_path, monkeypatch):
    import hashlib

    from tests.test_models import _fake_hub_snapshot

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    source = request.getfixturevalue(which)
    snap = _fake_hub_snapshot(tmp_path / "hf" / "hub", f"tiny-org/{family}", source)
    model = load_model(f"tiny-org/{family}")
    assert (model.family, model.path) == (family, snap)
    weights = source / "transformer" / "diffusion_pytorch_model.safetensors"
    assert model.model_hash == hashlib.sha256(weights.read_bytes()).hexdigest()[:10]  # the transformer's


@pytest.mark.parametrize("which,family,changes", [
    ("flux_path", "flux", {"cfg": 2.0, "negative_prompt": "a dog", "guidance": 2.0}),
    ("sd3_path", "sd3", {"schedule": "Simple", "shift": 4.0}),
])
def test_flow_snippet_renders_the_same_image(request, which, family, changes, tmp_path, monkeypatch):
    """The manifest's diffusers script for a flow cell (its pipeline, shift, CFG, guidance) runs and
    gives the cell's image."""
    from PIL import Image

    from report.snippet import diffusers_snippet

    path = request.getfixturevalue(which)
    spec = replace(cell(path, sampler="Euler", steps=8, cfg=1.0), **changes)
    ours = render([spec])[0]
    script = diffusers_snippet(spec, str(path), family)
    assert f"from diffusers import FlowMatchEulerDiscreteScheduler, {PIPES[which].__name__}" in script
    monkeypatch.chdir(tmp_path)
    exec(compile(script, "snippet.py", "exec"), {})
    theirs = np.asarray(Image.open(tmp_path / "cell.png"), dtype=np.float64) / 255
    assert mean_diff(ours.image, theirs) < MAX_MEAN_DIFF
    assert diffusers_snippet(replace(spec, sampler="DPM++ 2M"), str(path), family) is None


@pytest.mark.parametrize("sampler", ["diffusers:FlowMatchEulerDiscreteScheduler", "Euler (diffusers, flow)"])
@pytest.mark.parametrize("which,cfg", [("sd3_path", 4.0), ("flux_path", 1.0), ("flux_schnell_path", 1.0)])
def test_diffusers_flow_euler_reproduces_the_pipeline_default(request, which, cfg, sampler):
    """The pipelines' own scheduler through the adapter: SD3's own spacing, and FluxPipeline's
    linspace(1, 1/N, N) shifted by exp(mu), which is not the scheduler's own spacing."""
    path = request.getfixturevalue(which)
    spec = cell(path, sampler=sampler, steps=8, cfg=cfg, negative="blurry" if cfg > 1 else "")
    ours = render([spec])[0]
    assert ours.ok, ours.error
    assert mean_diff(ours.image, pipeline_image(which, path, spec)) < MAX_MEAN_DIFF


def test_diffusers_flow_schedulers_run_in_a_flow_grid(flux_path):
    from samplers.diffusers_adapter import FLOW_SUFFIX

    names = ["Heun", "DPM++ 2M", "UniPC"]
    results = render([cell(flux_path, sampler=f"{n}{FLOW_SUFFIX}", steps=6, cfg=1.0) for n in names]
                     + [cell(flux_path, sampler="DPM++ 2M (diffusers)", steps=6, cfg=1.0)])
    assert all(r.ok for r in results[:3]), [r.error for r in results]
    assert not results[3].ok and "flow" in results[3].error  # an SD-family scheduler, refused
