"""The shipped built-in model (assets/builtin): loads offline, is small, renders, and obeys CFG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from grids.cells import CellSpec
from pipeline.model_sources import BUILTIN_DIR
from pipeline.models import load_model
from pipeline.render import render

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def cell(sampler="DPM++ 2M", steps=6, seed=1, cfg=5.0, prompt="grinning face") -> CellSpec:
    return CellSpec(model="builtin", prompt=prompt, negative_prompt="", width=None, height=None,
                    seed=seed, sampler=sampler, sampler_options=(), schedule="Karras", steps=steps,
                    cfg=cfg)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_folder_is_a_diffusers_sd_pipeline_with_safetensors_only():
    index = json.loads((BUILTIN_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in PARTS:
        assert (BUILTIN_DIR / part).is_dir(), part
    files = [f for f in BUILTIN_DIR.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    assert len([f for f in files if f.suffix == ".safetensors"]) == 3


def test_weights_are_at_most_40_mb():
    total = sum(f.stat().st_size for f in BUILTIN_DIR.rglob("*") if f.is_file())
    assert total <= 40 * 1024 * 1024, total


def test_diffusers_loads_it_offline():
    pipe = StableDiffusionPipeline.from_pretrained(BUILTIN_DIR, local_files_only=True)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"


def test_loads_as_builtin_sd1_at_64px():
    model = load_model("builtin")
    assert model.family == "sd1"
    assert model.default_size == (64, 64)
    assert model.prediction_type == "epsilon"
    assert model.latent_channels == 4 and model.vae_scale_factor == 4
    assert len(model.train_sigmas) == 1000
    assert abs(float(model.train_sigmas[-1]) - 14.61) < 0.05  # SD 1.x's largest training sigma


def test_a_2x2_grid_renders_finite_64px_images():
    grid = [cell(sampler=s, steps=n, seed=3) for s in ("Euler", "Euler a") for n in (4, 8)]
    results = render(grid)
    for r in results:
        assert r.ok, r.error
        assert r.image.size == (64, 64)
        assert torch.isfinite(r.latents).all()
        assert np.asarray(r.image).std() > 1.0  # not a blank image


def test_cfg_changes_the_image():
    a, b = render([cell(cfg=1.0), cell(cfg=5.0)])
    assert a.ok and b.ok
    diff = np.abs(np.asarray(a.image, dtype=float) - np.asarray(b.image, dtype=float)).mean()
    assert diff > 1.0, diff  # mean |difference| over 0..255 pixel values


def test_dedup_drops_pictures_closer_than_the_threshold_in_code_point_order():
    from scripts.prepare_builtin_data import DEDUP_RMSE, dedup

    white = np.full((8, 8, 3), 255, np.uint8)
    near = white.copy()
    near[:2] = 255 - int(255 * DEDUP_RMSE)  # a quarter of the pixels: RMSE about DEDUP_RMSE / 2
    far = np.zeros((8, 8, 3), np.uint8)
    assert dedup([white, near, far]) == [0, 2]
    assert dedup([near, white, far]) == [0, 2]
    assert dedup([white, far], threshold=1.01) == [0]  # nothing is 1.01 apart in [0, 1] pixels


def _ink_colour(image) -> np.ndarray:
    """Mean RGB of the non-white pixels (the drawing, not the background)."""
    a = np.asarray(image, dtype=float)
    return a[a.min(axis=2) < 200].mean(axis=0)


def test_the_prompt_decides_the_colours():
    # An untrained or colour-collapsed model draws every prompt in one hue; this one must not.
    prompts = ("heavy black heart", "upside-down face", "bottle with popping cork")
    heart, face, bottle = (_ink_colour(r.image) for r in render([cell(prompt=p, steps=10, seed=1)
                                                                 for p in prompts]))
    assert heart[0] - heart[1] > face[0] - face[1] + 40, (heart, face)  # red heart, yellow face
    assert bottle[1] > bottle[0] and face[0] > face[1], (bottle, face)  # green bottle


def test_the_default_grid_shows_convergence_against_non_convergence(tmp_path, capsys):
    """The defaults (grids.defaults; the app's page and the CLI without --spec share them) make the
    point of the tool on the built-in model: every deterministic row converges, every ancestral
    row does not. Run through the CLI, whose last line says where the grid is and the verdicts."""
    import cli
    from grids.spec import expand
    from ui.settings import Settings

    args = ["grid", "--out", str(tmp_path / "g"), "--quiet"]
    assert [c.spec for c in expand(cli.build_spec(cli.build_parser().parse_args(args)))] == \
        [c.spec for c in expand(Settings().to_spec())]  # one set of defaults
    assert cli.main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"grid: {tmp_path / 'g' / 'grid.png'}; converged: "), line
    verdicts = json.loads((tmp_path / "g" / "manifest.json").read_text())["metrics"]["series"]
    converged = {s["sampler"]: s["converged_at"] is not None for s in verdicts}
    assert converged == {"DPM++ 2M": True, "Euler": True, "Heun": True, "UniPC": True,
                         "DPM++ 2S a": False, "Euler a": False}, verdicts
    assert "not converged: DPM++ 2S a, Euler a (details:" in line
