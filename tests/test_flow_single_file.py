"""SD3 / SD3.5 and Flux from one .safetensors file in the reference code's key layout, offline.

The files are the tiny diffusers models of tests/tiny_flow_models.py written back into the
original layout (tests/single_file_checkpoints.py, the inverse of diffusers' converters). Each is
loaded by the app's loader with its diffusers folder as `config`, must hold the folder's weights
exactly and render the folder's cell; damaged files and a missing config are one-line
ModelLoadErrors.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from PIL import Image
from safetensors.torch import load_file, save_file

from pipeline.models import ModelLoadError, load_model
from pipeline.render import render
from tests.single_file_checkpoints import (
    SD3_PREFIX,
    flux_single_file,
    flux_transformer_state_dict,
    sd3_single_file,
    sd3_transformer_state_dict,
)
from tests.test_engine import cell
from tests.test_models import _fake_hub_snapshot
from tests.tiny_flow_models import tiny_flux, tiny_sd3

# name -> (the file, its config folder, family, pipeline class, the cell's settings)
SD3_CELL = {"cfg": 4.0, "negative": "blurry"}
CASES = {
    "sd3-all-in-one": (lambda d: sd3_single_file(d), lambda d: tiny_sd3(d, single_file=True), "sd3",
                       StableDiffusion3Pipeline, SD3_CELL),
    "sd3-mmdit-vae": (lambda d: sd3_single_file(d, text_encoders=False),
                      lambda d: tiny_sd3(d, single_file=True), "sd3", StableDiffusion3Pipeline, SD3_CELL),
    "sd35-all-in-one": (lambda d: sd3_single_file(d, sd35=True),
                        lambda d: tiny_sd3(d, sd35=True, single_file=True), "sd3", StableDiffusion3Pipeline,
                        SD3_CELL),
    "flux-dev-transformer": (lambda d: flux_single_file(d), lambda d: tiny_flux(d), "flux", FluxPipeline,
                             {"cfg": 1.0}),
}
PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _sha10(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def _one_line_error(path: Path, config: Path | None, match: str) -> str:
    with pytest.raises(ModelLoadError, match=match) as err:
        load_model(str(path), config=config)
    assert "\n" not in str(err.value)
    return str(err.value)


# --------------------------------------------------------------- the key maps themselves


@pytest.mark.parametrize("sd35", [False, True])
def test_sd3_original_layout_reads_back_through_diffusers_converter(tiny_dir, sd35):
    """The test files' SD3 layout is the one diffusers reads: its own converter returns the weights."""
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    transformer = StableDiffusion3Pipeline.from_pretrained(tiny_sd3(tiny_dir, sd35=sd35)).transformer
    original = sd3_transformer_state_dict(transformer)
    assert "joint_blocks.1.x_block.attn.qkv.weight" in original and "final_layer.linear.weight" in original
    back = convert_sd3_transformer_checkpoint_to_diffusers({SD3_PREFIX + k: v for k, v in original.items()})
    want = transformer.state_dict()
    assert back.keys() == want.keys() and all(torch.equal(back[k], want[k]) for k in want)


def test_flux_key_map_agrees_with_diffusers_converter(tiny_dir):
    """pipeline.flow_checkpoints' Flux map against diffusers' own converter, which fixes FLUX.1's width
    (3072, MLP 4x) for the single blocks' fused linear1: it gets shape-only stand-ins of that width
    there, and every other tensor is compared by value."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from pipeline.flow_checkpoints import flux_to_diffusers

    transformer = FluxPipeline.from_pretrained(tiny_flux(tiny_dir)).transformer
    original = flux_transformer_state_dict(transformer)
    assert "double_blocks.0.img_attn.qkv.weight" in original and "single_blocks.0.linear1.weight" in original
    ours = flux_to_diffusers(dict(original))
    want = transformer.state_dict()
    assert ours.keys() == want.keys() and all(torch.equal(ours[k], want[k]) for k in want)
    stand_in = dict(original)
    for leaf in ("weight", "bias"):
        shape = (3 * 3072 + 4 * 3072, *original[f"single_blocks.0.linear1.{leaf}"].shape[1:])
        stand_in[f"single_blocks.0.linear1.{leaf}"] = torch.empty(shape, device="meta")
    theirs = convert_flux_transformer_checkpoint_to_diffusers(stand_in)
    assert theirs.keys() == ours.keys()
    compared = [k for k in theirs if not theirs[k].is_meta]
    assert len(compared) == len(ours) - 8  # q, k, v, mlp weight and bias of the one single block
    assert all(torch.equal(theirs[k], ours[k]) for k in compared)


# --------------------------------------------------------------- loading and rendering


@pytest.mark.parametrize("case", list(CASES))
def test_single_file_has_the_folders_weights_and_renders_its_cell(tiny_dir, case):
    make_file, make_folder, family, pipe_cls, settings = CASES[case]
    path, folder = make_file(tiny_dir), make_folder(tiny_dir)
    model = load_model(str(path), config=folder)
    assert (model.family, model.path, model.model_hash) == (family, path, _sha10(path))
    assert isinstance(model.pipe, pipe_cls)
    reference = pipe_cls.from_pretrained(folder)
    for part in PARTS + (("text_encoder_3",) if family == "sd3" else ()):
        want, got = getattr(reference, part).state_dict(), getattr(model.pipe, part).state_dict()
        assert want.keys() == got.keys(), part
        assert all(torch.equal(want[k], got[k]) for k in want), part
        assert not getattr(model.pipe, part).training, part  # T5 in training mode would apply dropout
    spec = cell(folder, steps=4, **settings)
    from_folder = render([spec])[0]
    from_file = render([replace(spec, model=str(path))],
                       loader=lambda name: load_model(name, config=folder))[0]
    assert from_folder.ok and from_file.ok, (from_folder.error, from_file.error)
    assert torch.allclose(from_file.latents, from_folder.latents, atol=1e-6, rtol=0)
    diff = np.abs(np.asarray(from_file.image, np.float64) - np.asarray(from_folder.image, np.float64)) / 255
    assert diff.mean() < 1e-4


def test_sd3_single_file_takes_its_config_from_the_hub_cache(tiny_dir, tmp_path, monkeypatch):
    """With no config=, the configs (and any part the file lacks) come from the model's diffusers repo
    in the local cache, offline; not in the cache, the message names that repo and config=."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    path = sd3_single_file(tiny_dir, text_encoders=False)
    message = _one_line_error(path, None, "stabilityai/stable-diffusion-3-medium-diffusers")
    assert "config=" in message and "hf download" in message
    _fake_hub_snapshot(tmp_path / "hf" / "hub", "stabilityai/stable-diffusion-3-medium-diffusers",
                       tiny_sd3(tiny_dir, single_file=True))
    assert load_model(str(path)).family == "sd3"


def test_flux_single_file_without_a_config_offline_names_the_repo(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    message = _one_line_error(flux_single_file(tiny_dir), None, "black-forest-labs/FLUX.1-dev")
    assert "config=" in message


# --------------------------------------------------------------- damaged files, wrong configs


def _without(path: Path, out: Path, key: str) -> Path:
    state = load_file(str(path))
    del state[key]
    save_file(state, str(out))
    return out


@pytest.mark.parametrize("case,key,match", [
    ("sd3-all-in-one", SD3_PREFIX + "joint_blocks.1.x_block.attn.qkv.weight",
     "has no tensor 'joint_blocks.1"),
    ("sd3-all-in-one", "text_encoders.t5xxl.transformer.encoder.final_layer_norm.weight",
     "no weights for text_encoder_3 tensor 'encoder.final_layer_norm"),
    ("flux-dev-transformer", "single_blocks.0.linear1.weight", "lacks 4 tensor"),  # q, k, v, MLP in
    ("flux-dev-transformer", "double_blocks.0.img_attn.norm.query_norm.scale", "lacks 1 tensor"),
])
def test_file_missing_a_tensor_is_a_one_line_error(tiny_dir, tmp_path, case, key, match):
    make_file, make_folder, *_ = CASES[case]
    path = _without(make_file(tiny_dir), tmp_path / "damaged.safetensors", key)
    assert "incomplete" in _one_line_error(path, make_folder(tiny_dir), match)


def test_file_missing_a_vae_tensor_is_a_one_line_error(tiny_dir, tmp_path):
    path = _without(sd3_single_file(tiny_dir), tmp_path / "no-vae-conv.safetensors",
                    "first_stage_model.decoder.conv_in.weight")
    message = _one_line_error(path, tiny_sd3(tiny_dir, single_file=True), "its VAE lacks tensors")
    assert "incomplete" in message


@pytest.mark.parametrize("case", ["sd3-all-in-one", "flux-dev-transformer"])
def test_truncated_file_is_a_one_line_error(tiny_dir, tmp_path, case):
    make_file, make_folder, *_ = CASES[case]
    data = make_file(tiny_dir).read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 4096])
    _one_line_error(path, make_folder(tiny_dir), "corrupt or truncated")


def test_config_folder_of_another_model_is_refused(tiny_dir, sd_path):
    message = _one_line_error(flux_single_file(tiny_dir), tiny_sd3(tiny_dir, single_file=True),
                              "FluxPipeline checkpoint, but the config folder")
    assert "StableDiffusion3Pipeline" in message
    _one_line_error(sd3_single_file(tiny_dir), sd_path, "StableDiffusion3Pipeline checkpoint")


def test_flux_schnell_file_with_a_dev_config_says_so(tiny_dir):
    schnell = flux_single_file(tiny_dir, guidance=False)
    _one_line_error(schnell, tiny_flux(tiny_dir), "schnell file with a dev")


def test_part_missing_from_file_and_config_is_named(tiny_dir, tmp_path):
    config = tmp_path / "flux-no-vae"
    shutil.copytree(tiny_flux(tiny_dir), config)
    for weights in (config / "vae").glob("*.safetensors"):
        weights.unlink()
    message = _one_line_error(flux_single_file(tiny_dir), config, "holds no VAE")
    assert "no vae weights" in message


# --------------------------------------------------------------- telling SD3 models apart


def test_sd3_kinds_pick_their_own_config_repo():
    """SD3.5 Large (38 joint blocks) and Medium (384 x 384 position table) are told apart from SD3
    Medium, as diffusers' infer_diffusers_model_type does, so each gets its own default config."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS

    from pipeline.flow_models import checkpoint_family

    base = SD3_PREFIX + "joint_blocks.0.context_block.adaLN_modulation.1.bias"

    def kind(**extra) -> str:
        shapes = {base: torch.empty(9216, device="meta"), **{SD3_PREFIX + k: v for k, v in extra.items()}}
        return checkpoint_family(shapes, "x")[1]

    assert kind(pos_embed=torch.empty(1, 192 * 192, 1536, device="meta")) == "sd3"
    assert kind(pos_embed=torch.empty(1, 384 * 384, 1536, device="meta")) == "sd35_medium"
    assert kind(**{"joint_blocks.37.x_block.mlp.fc1.weight": torch.empty(1, device="meta")}) == "sd35_large"
    assert all(k in DIFFUSERS_DEFAULT_PIPELINE_PATHS for k in ("sd3", "sd35_medium", "sd35_large"))


def test_the_cli_loads_a_flux_transformer_file_with_its_config_folder(tiny_dir, tmp_path, capsys):
    """`cli.py grid --model FILE --config DIR`: offline, a transformer-only file takes the other
    parts from the folder and draws the folder's image; a --config that is no model folder is a
    one-line usage error."""
    import json

    import cli

    path, folder = flux_single_file(tiny_dir), tiny_flux(tiny_dir)
    base = ["grid", "--prompt", "a red cat", "--seed", "3", "--cfg", "1", "--sampler", "Euler",
            "--steps", "4", "--width", "32", "--height", "32", "--x", "none", "--y", "none", "--quiet"]
    assert cli.main([*base, "--model", str(path), "--config", str(folder), "--out", str(tmp_path / "f")]) == 0
    assert cli.main([*base, "--model", str(folder), "--out", str(tmp_path / "d")]) == 0
    cells = [json.loads((tmp_path / o / "manifest.json").read_text())["cells"][0] for o in ("f", "d")]
    images = [np.asarray(Image.open(tmp_path / o / c["file"]), np.float64)
              for o, c in zip("fd", cells, strict=True)]
    assert np.abs(images[0] - images[1]).mean() / 255 < 1e-4
    capsys.readouterr()
    not_a_model = ["--model", str(path), "--config", str(tmp_path), "--out", str(tmp_path / "x")]
    assert cli.main([*base, *not_a_model]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--config" in err[0] and "model_index.json" in err[0], err


def test_the_app_loads_a_flux_transformer_file_with_its_config_folder(tiny_dir, tmp_path):
    """`app.py --model FILE --config DIR`: the model holder loads the file with that folder; a
    --config that is no model folder stops the app with one line."""
    import app
    from ui.models import ModelHolder

    path, folder = flux_single_file(tiny_dir), tiny_flux(tiny_dir)
    config = app.config_from(app.build_parser().parse_args(["--model", str(path), "--config", str(folder)]))
    assert config.config_folder == folder
    model = ModelHolder(config).load(str(path))
    assert model.family == "flux" and model.path == path
    with pytest.raises(SystemExit, match="not a diffusers model folder"):
        app.config_from(app.build_parser().parse_args(["--config", str(tmp_path)]))
