"""More fidelity: negative prompts with CFG on SDXL and SD 1.x/2.x through the "<name> (diffusers)"
samplers (deterministic and ancestral), batched in one grid at a non-square size, against diffusers'
own pipelines; and SDXL from a single-file (original SGM / A1111 layout) checkpoint."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from pipeline.engine import RunOptions
from pipeline.models import ModelLoadError, load_model
from pipeline.render import render
from tests.test_engine import cell, diffusers_latents

# "<A1111 name> (diffusers)" entries and the scheduler class + config flags diffusers' docs map them to.
NAMED = {
    "DPM++ 2M (diffusers)": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "Euler a (diffusers)": ("EulerAncestralDiscreteScheduler", {}),
}
# (negative prompt, cfg, seed): distinct negatives and guidance scales in one batched grid.
NEGATIVES = [("blurry, low quality", 6.0, 7), ("a dog", 3.0, 11)]


def _grid(path: Path, sampler: str, width: int, height: int, steps: int = 5):
    return [replace(cell(path, sampler=sampler, steps=steps, cfg=cfg, negative=neg, seed=seed),
                    width=width, height=height) for neg, cfg, seed in NEGATIVES]


def _assert_equals_pipeline(pipe_cls, path: Path, sampler: str, width: int, height: int) -> None:
    grid = _grid(path, sampler, width, height)
    # the same cells without the negative prompt: the negative must matter, or the check is vacuous
    plain = [replace(spec, negative_prompt="") for spec in grid]
    results = render(grid + plain, RunOptions(max_batch=None))
    scheduler, flags = NAMED[sampler]
    for spec, ours, without in zip(grid, results, results[len(grid):], strict=False):
        assert ours.ok, ours.error
        assert ours.latents.shape == (1, 4, height // 2, width // 2)
        theirs = diffusers_latents(pipe_cls, path, scheduler, spec, **flags)
        assert torch.allclose(ours.latents, theirs, atol=2e-4, rtol=1e-4), \
            (spec.negative_prompt, (ours.latents - theirs).abs().max())
        assert (ours.latents - without.latents).abs().max() > 0.05, spec.negative_prompt


@pytest.mark.parametrize("sampler", list(NAMED))
def test_sdxl_negative_prompt_and_cfg_equal_the_sdxl_pipeline(sdxl_path, sampler):
    # 48x32 px: a width/height mix-up in SDXL's size conditioning (time ids) would show here
    _assert_equals_pipeline(StableDiffusionXLPipeline, sdxl_path, sampler, width=48, height=32)


@pytest.mark.parametrize("sampler", list(NAMED))
@pytest.mark.parametrize("which", ["sd_path", "sdv_path"])
def test_sd_negative_prompt_named_samplers_equal_the_sd_pipeline(request, which, sampler):
    # test_engine covers "diffusers:<Class>" names alone at 32x32; these are the A1111-named
    # entries (their presets applied by the adapter), batched, non-square, epsilon and v-prediction
    path = request.getfixturevalue(which)
    _assert_equals_pipeline(StableDiffusionPipeline, path, sampler, width=32, height=48)


# ------------------------------------------------------------------ SDXL single-file checkpoints


def _sha10(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def test_sdxl_single_file_with_a_local_config_has_the_folders_weights(sdxl_single_file, sdxl_deep_path):
    reference = StableDiffusionXLPipeline.from_pretrained(sdxl_deep_path)
    m = load_model(str(sdxl_single_file), config=sdxl_deep_path)
    assert isinstance(m.pipe, StableDiffusionXLPipeline)
    assert (m.family, m.prediction_type, m.model_hash) == ("sdxl", "epsilon", _sha10(sdxl_single_file))
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = getattr(reference, part).state_dict(), getattr(m.pipe, part).state_dict()
        assert want.keys() == got.keys(), part
        assert all(torch.equal(want[k], got[k]) for k in want), part


def test_sdxl_single_file_renders_the_folders_cells(sdxl_single_file, sdxl_deep_path):
    from core.cells import CellSpec

    spec = cell(sdxl_deep_path, sampler="Euler a (diffusers)", steps=4, cfg=5.0, negative="blurry")
    from_folder = render([spec])[0]
    from_file = render([CellSpec(**{**spec.__dict__, "model": str(sdxl_single_file)})],
                       loader=lambda name: load_model(name, config=sdxl_deep_path))[0]
    assert from_folder.ok and from_file.ok, (from_folder.error, from_file.error)
    assert torch.allclose(from_file.latents, from_folder.latents, atol=1e-5, rtol=1e-5)
    theirs = diffusers_latents(StableDiffusionXLPipeline, sdxl_deep_path, "EulerAncestralDiscreteScheduler",
                               spec)
    assert torch.allclose(from_file.latents, theirs, atol=2e-4, rtol=1e-4)


def test_sdxl_single_file_configs_come_from_the_hub_cache(sdxl_single_file, sdxl_deep_path, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    repo = "stabilityai/stable-diffusion-xl-base-1.0"  # diffusers' config repo for an xl_base checkpoint
    with pytest.raises(ModelLoadError, match=repo):
        load_model(str(sdxl_single_file))
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(sdxl_deep_path, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    m = load_model(str(sdxl_single_file))
    assert m.family == "sdxl" and m.pipe.text_encoder_2.config.num_hidden_layers == 10
