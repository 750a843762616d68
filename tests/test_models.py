"""The model layer: loading tiny SD-family models, the one-model cache, errors, prompt encoding."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import weakref
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from safetensors.torch import save_file

from pipeline import prompts
from pipeline.models import ModelLoadError, UnsupportedModelError, load_model, loaded_model
from tests.tiny_models import tiny_sd_single_file


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache and offline mode, for this test only."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf" / "hub"


def _sha10(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def _fake_hub_snapshot(cache: Path, repo: str, source: Path) -> Path:
    """Put a folder into the hub cache layout (refs/main -> snapshots/<commit>/) as a download would."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit


# ------------------------------------------------------------------ what a loaded model says


def test_sd1_folder_loads_with_its_description(sd_path: Path) -> None:
    m = load_model(str(sd_path))
    assert (m.family, m.prediction_type) == ("sd1", "epsilon")
    assert (m.vae_scale_factor, m.latent_channels, m.default_size) == (2, 4, (32, 32))
    assert m.device == torch.device("cpu") and m.dtype == torch.float32
    assert m.unet is m.pipe.unet and m.vae is m.pipe.vae and m.path == sd_path.resolve()
    assert m.scheduler_config == dict(m.pipe.scheduler.config)
    assert m.model_hash == _sha10(sd_path / "unet" / "diffusion_pytorch_model.safetensors")
    procs = list(m.unet.attn_processors.values()) + list(m.vae.attn_processors.values())
    assert procs and all(isinstance(p, AttnProcessor2_0) for p in procs)


def test_train_sigmas_come_from_the_schedulers_alphas_cumprod(sd_path: Path) -> None:
    m = load_model(str(sd_path))
    ac = m.pipe.scheduler.alphas_cumprod.double()
    assert m.train_sigmas.dtype == torch.float32 and m.train_sigmas.shape == (1000,)
    torch.testing.assert_close(m.train_sigmas.double(), ((1 - ac) / ac).sqrt(), rtol=1e-6, atol=0)
    assert (m.train_sigmas[1:] > m.train_sigmas[:-1]).all()
    # Stable Diffusion's well-known range.
    assert float(m.train_sigmas[0]) == pytest.approx(0.0292, abs=1e-4)
    assert float(m.train_sigmas[-1]) == pytest.approx(14.6146, abs=1e-3)


def test_v_prediction_model_is_sd2(sdv_path: Path) -> None:
    m = load_model(str(sdv_path))
    assert (m.family, m.prediction_type) == ("sd2", "v_prediction")


def test_sdxl_folder_loads(sdxl_path: Path) -> None:
    m = load_model(str(sdxl_path))
    assert (m.family, m.prediction_type, m.default_size) == ("sdxl", "epsilon", (32, 32))
    assert m.vae.dtype == torch.float32


def test_tiny_models_render_32px_images_with_diffusers(sd_path: Path, sdxl_path: Path) -> None:
    for path in (sd_path, sdxl_path):
        m = load_model(str(path))
        out = m.pipe("a cat", num_inference_steps=2, height=32, width=32, output_type="np",
                     generator=torch.Generator().manual_seed(0)).images
        assert out.shape == (1, 32, 32, 3)


# ------------------------------------------------------------------ the one-model cache


def test_same_name_device_dtype_returns_the_cached_model(sd_path: Path) -> None:
    m = load_model(str(sd_path))
    assert load_model(str(sd_path) + "/", device="cpu", dtype="float32") is m
    assert loaded_model() is m


def test_loading_another_model_frees_the_previous_one(sd_path: Path, sdv_path: Path) -> None:
    ref = weakref.ref(load_model(str(sd_path)).pipe)
    other = load_model(str(sdv_path))
    gc.collect()
    assert ref() is None and loaded_model() is other


def test_a_failed_load_keeps_the_previous_model(sd_path: Path, tmp_path: Path) -> None:
    m = load_model(str(sd_path))
    broken = tmp_path / "broken"
    shutil.copytree(sd_path, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a valid .safetensors"):
        load_model(str(broken))
    assert loaded_model() is m and load_model(str(sd_path)) is m
    assert prompts.encode(m, "still usable").embeds.shape == (1, 77, 32)


# ------------------------------------------------------------------ refusals and their messages


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "nope.safetensors"))


def test_folder_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_model(str(tmp_path))


def test_pickle_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not even read")
    with pytest.raises(ModelLoadError, match="allow_pickle=True"):
        load_model(str(ckpt))


def test_pickle_only_folder_needs_allow_pickle(sd_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(sd_path, folder)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    pickled_unet = StableDiffusionPipeline.from_pretrained(sd_path).unet
    pickled_unet.save_pretrained(unet.parent, safe_serialization=False)
    unet.unlink()
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(str(folder))
    assert load_model(str(folder), allow_pickle=True).family == "sd1"


def test_pickle_checkpoint_loads_when_allowed(tiny_dir: Path, sd_path: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    ckpt = tmp_path / "tiny-sd.ckpt"
    torch.save({"state_dict": load_file(str(tiny_sd_single_file(tiny_dir)))}, ckpt)
    m = load_model(str(ckpt), allow_pickle=True, config=sd_path)
    assert m.family == "sd1" and m.model_hash == _sha10(ckpt)


def test_corrupt_single_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 100)
    with pytest.raises(ModelLoadError, match="not a valid .safetensors"):
        load_model(str(bad))


def test_safetensors_without_a_unet_is_not_a_model(tmp_path: Path) -> None:
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(ModelLoadError, match="LoRA"):
        load_model(str(lora))


def test_unsupported_pipeline_is_refused_naming_what_works(tmp_path: Path) -> None:
    aura = tmp_path / "aura"
    aura.mkdir()
    (aura / "model_index.json").write_text(json.dumps(
        {"_class_name": "AuraFlowPipeline", "transformer": ["diffusers", "AuraFlowTransformer2DModel"]}))
    with pytest.raises(UnsupportedModelError, match="AuraFlowPipeline.*FluxPipeline"):
        load_model(str(aura))


def test_custom_code_component_is_refused(sd_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    shutil.copytree(sd_path, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["my_unet", "MyUNet"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedModelError, match="custom code"):
        load_model(str(folder))


def test_hub_id_not_cached_offline(offline_cache: Path) -> None:
    with pytest.raises(ModelLoadError, match="`hf download someone/some-model`"):
        load_model("someone/some-model")


def test_hub_id_loads_from_the_local_cache(sd_path: Path, offline_cache: Path) -> None:
    snap = _fake_hub_snapshot(offline_cache, "tiny-org/tiny-sd", sd_path)
    m = load_model("tiny-org/tiny-sd")
    assert m.family == "sd1" and m.path == snap and m.name == "tiny-org/tiny-sd"
    assert m.model_hash == _sha10(sd_path / "unet" / "diffusion_pytorch_model.safetensors")


def test_bad_device_and_dtype(sd_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="float16 is not supported on the CPU"):
        load_model(str(sd_path), device="cpu", dtype="float16")
    with pytest.raises(ModelLoadError, match="unsupported dtype"):
        load_model(str(sd_path), device="cpu", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_model(str(sd_path), device="cuda")


# ------------------------------------------------------------------ single-file checkpoints


def test_single_file_with_a_local_config_has_the_folders_weights(tiny_dir: Path, sd_path: Path) -> None:
    path = tiny_sd_single_file(tiny_dir)
    reference = StableDiffusionPipeline.from_pretrained(sd_path)
    m = load_model(str(path), config=sd_path)
    assert (m.family, m.model_hash) == ("sd1", _sha10(path))
    for part in ("unet", "vae", "text_encoder"):
        want, got = getattr(reference, part).state_dict(), getattr(m.pipe, part).state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_single_file_configs_come_from_the_hub_cache(tiny_dir: Path, sd_path: Path,
                                                     offline_cache: Path) -> None:
    path = tiny_sd_single_file(tiny_dir)
    with pytest.raises(ModelLoadError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        load_model(str(path))
    _fake_hub_snapshot(offline_cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", sd_path)
    assert load_model(str(path)).family == "sd1"


def test_single_file_without_a_vae_is_a_one_line_error(tiny_dir: Path, sd_path: Path, tmp_path: Path) -> None:
    """diffusers' SingleFileComponentError (a part neither in the file nor loadable) is no ValueError:
    it used to escape as a traceback."""
    from safetensors.torch import load_file, save_file

    state = {k: v for k, v in load_file(str(tiny_sd_single_file(tiny_dir))).items()
             if not k.startswith("first_stage_model.")}
    save_file(state, str(tmp_path / "no-vae.safetensors"))
    with pytest.raises(ModelLoadError, match="AutoencoderKL. Weights for this component appear") as err:
        load_model(str(tmp_path / "no-vae.safetensors"), config=sd_path)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ prompts


def test_prompt_cache_encodes_each_distinct_prompt_once(sd_path: Path) -> None:
    cache = prompts.PromptCache(load_model(str(sd_path)))
    first = cache.get("a cat")
    assert cache.get("a cat") is first
    cache.get("a dog")
    cache.pair("a cat", "")
    cache.pair("a dog", "")
    assert cache.encodes == 3 and len(cache) == 3  # "a cat", "a dog", ""


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_sd_pair_equals_diffusers_encode_prompt(sd_path: Path, negative: str) -> None:
    m = load_model(str(sd_path))
    cond, uncond = prompts.encode_pair(m, "a cat on the mat", negative)
    want_c, want_u = m.pipe.encode_prompt("a cat on the mat", m.device, 1, True,
                                          negative_prompt=negative or None)
    assert cond.embeds.shape == (1, 77, 32) and cond.pooled is None
    assert torch.equal(cond.embeds, want_c) and torch.equal(uncond.embeds, want_u)
    assert not cond.embeds.requires_grad


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_sdxl_pair_equals_diffusers_encode_prompt(sdxl_path: Path, negative: str) -> None:
    m = load_model(str(sdxl_path))
    cond, uncond = prompts.encode_pair(m, "a dog", negative)
    want = m.pipe.encode_prompt("a dog", device=m.device, do_classifier_free_guidance=True,
                                negative_prompt=negative or None)
    assert cond.embeds.shape == (1, 77, 64) and cond.pooled.shape == (1, 32)
    for got, expected in zip((cond.embeds, uncond.embeds, cond.pooled, uncond.pooled),
                             (want[0], want[1], want[2], want[3]), strict=True):
        assert torch.equal(got, expected)
    # force_zeros_for_empty_prompt: no negative prompt means an all-zero unconditional input.
    assert (uncond.embeds.abs().sum() == 0) == (negative == "")
    assert (uncond.pooled.abs().sum() == 0) == (negative == "")


def test_sdxl_empty_negative_is_encoded_without_force_zeros(sdxl_path: Path) -> None:
    m = load_model(str(sdxl_path))
    m.pipe.register_to_config(force_zeros_for_empty_prompt=False)
    try:
        _cond, uncond = prompts.encode_pair(m, "a dog", "")
        want = m.pipe.encode_prompt("a dog", device=m.device, do_classifier_free_guidance=True)
        assert uncond.embeds.abs().sum() > 0 and torch.equal(uncond.embeds, want[1])
        assert torch.equal(uncond.pooled, want[3])
    finally:
        m.pipe.register_to_config(force_zeros_for_empty_prompt=True)


def test_sdxl_time_ids_match_diffusers(sdxl_path: Path) -> None:
    m = load_model(str(sdxl_path))
    ids = prompts.sdxl_time_ids(width=48, height=32)
    want = m.pipe._get_add_time_ids((32, 48), (0, 0), (32, 48), torch.float32,
                                    text_encoder_projection_dim=32)
    assert ids.dtype == torch.float32 and torch.equal(ids, want)
    assert ids.tolist() == [[32.0, 48.0, 0.0, 0.0, 32.0, 48.0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_defaults_to_float16_with_sdxl_vae_in_float32(sd_path: Path, sdxl_path: Path) -> None:
    m = load_model(str(sd_path), device="cuda")
    assert m.dtype == torch.float16 and m.unet.dtype == torch.float16 and m.vae.dtype == torch.float16
    m = load_model(str(sdxl_path), device="cuda")
    assert m.unet.dtype == torch.float16 and m.vae.dtype == torch.float32
    cond, uncond = prompts.encode_pair(m, "a dog", "blurry")
    assert cond.embeds.device.type == "cuda" and cond.pooled.shape == (1, 32)
    assert load_model(str(sdxl_path), device="cuda", dtype="bfloat16").vae.dtype == torch.bfloat16


def test_identity_tells_models_files_and_dtypes_apart(sd_path: Path, sdv_path: Path, tmp_path: Path) -> None:
    from pipeline.models import unload_model

    first = load_model(str(sd_path)).identity
    unload_model()
    assert load_model(str(sd_path)).identity == first  # the same files loaded again: the same model
    assert load_model(str(sdv_path)).identity != first
    assert load_model(str(sd_path), dtype="bfloat16").identity != first
    copy = tmp_path / "copy"
    shutil.copytree(sd_path, copy)
    copied = load_model(str(copy)).identity
    assert copied != first  # another place on disk is another model as far as the cache knows
    unload_model()
    vae = copy / "vae" / "diffusion_pytorch_model.safetensors"
    vae.write_bytes(vae.read_bytes())  # rewritten: a VAE swapped under the same name
    assert load_model(str(copy)).identity != copied
