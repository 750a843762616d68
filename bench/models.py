"""Random-weight Stable Diffusion-architecture models for the grid benchmark, built offline.

Two models, both made in code from config dicts (no download) with seeded
random weights, and saved once as diffusers folders under a cache directory:

    small   SD 1.5's UNet block structure scaled down for a 2-core CPU:
            block_out_channels (64, 128, 256, 256), layers_per_block 1,
            cross-attention dim 256, attention head dim 8 (23.6 M parameters);
            a 4-layer, 256-wide CLIP-style text encoder; a 4-level VAE with
            SD's layout (latent factor 8, 4 latent channels) at 1/4 of SD's widths.
    sd15    SD 1.5's own UNet, CLIP ViT-L/14 text encoder and VAE configs
            (860 M + 123 M + 84 M parameters), for the GPU benchmark.

Both use SD 1.5's scheduler config (PNDM, scaled-linear betas, steps_offset 1),
so every diffusers scheduler built from it is the one an SD 1.5 user gets.
The tokenizer is the tests' tiny byte-level BPE CLIP vocabulary: real CLIP
token ids are irrelevant to the cost of a model call, and it needs no download.

    path = build_model("small", cache_dir)      # idempotent per config
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tests.tiny_models import BOS, EOS, MAX_TOKENS, write_tokenizer_files

SEED = 0
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "grid-bench-models"

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

# runwayml/stable-diffusion-v1-5, unet/config.json
SD15_UNET: dict[str, Any] = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": (320, 640, 1280, 1280),
    "center_input_sample": False, "cross_attention_dim": 768, "down_block_types": _SD_DOWN,
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 64, "up_block_types": _SD_UP,
}

# runwayml/stable-diffusion-v1-5, vae/config.json
SD15_VAE: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215,
}

# openai/clip-vit-large-patch14's text model (SD 1.5's text_encoder); token ids come from the tokenizer.
CLIP_L_TEXT: dict[str, Any] = {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "max_position_embeddings": MAX_TOKENS, "vocab_size": 49408, "hidden_act": "quick_gelu",
    "projection_dim": 768, "layer_norm_eps": 1e-5,
}

# runwayml/stable-diffusion-v1-5, scheduler/scheduler_config.json
SD15_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "clip_sample": False,
}

# The CPU benchmark model: SD 1.5's block structure at a fraction of its widths.
SMALL_UNET: dict[str, Any] = {
    **SD15_UNET, "block_out_channels": (64, 128, 256, 256), "layers_per_block": 1,
    "cross_attention_dim": 256, "sample_size": 16,
}
SMALL_VAE: dict[str, Any] = {
    **SD15_VAE, "block_out_channels": (32, 64, 128, 128), "layers_per_block": 1, "sample_size": 128,
}
SMALL_TEXT: dict[str, Any] = {
    **CLIP_L_TEXT, "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4,
    "num_hidden_layers": 4, "vocab_size": 1000, "projection_dim": 256,
}

CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "small": {"unet": SMALL_UNET, "vae": SMALL_VAE, "text": SMALL_TEXT},
    "sd15": {"unet": SD15_UNET, "vae": SD15_VAE, "text": CLIP_L_TEXT},
}


def config_digest(kind: str) -> str:
    """A short hash of a model's configs, so a changed config builds a new folder."""
    text = json.dumps([CONFIGS[kind], SD15_SCHEDULER, SEED], sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def parameter_counts(path: Path) -> dict[str, int]:
    """Parameters per component of a model folder, from its safetensors headers (no weights loaded)."""
    counts = {}
    for comp in ("unet", "text_encoder", "vae"):
        total = 0
        for f in sorted((Path(path) / comp).glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
        counts[comp] = total
    return counts


def _tokenizer(cache: Path) -> CLIPTokenizer:
    files = write_tokenizer_files(cache / "_tokenizer_files")
    return CLIPTokenizer.from_pretrained(str(files), model_max_length=MAX_TOKENS, pad_token=EOS)


def _text_encoder(config: dict[str, Any], tok: CLIPTokenizer) -> CLIPTextModel:
    # bos/eos ids must be the tokenizer's: CLIP pools the hidden state at the eos token.
    ids = {"bos_token_id": tok.convert_tokens_to_ids(BOS), "eos_token_id": tok.convert_tokens_to_ids(EOS),
           "pad_token_id": tok.convert_tokens_to_ids(tok.pad_token)}
    return CLIPTextModel(CLIPTextConfig(**config, **ids))


def _pipeline(kind: str, cache: Path) -> StableDiffusionPipeline:
    cfg = CONFIGS[kind]
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(SEED)
        tok = _tokenizer(cache)
        return StableDiffusionPipeline(
            vae=AutoencoderKL(**cfg["vae"]), text_encoder=_text_encoder(cfg["text"], tok), tokenizer=tok,
            unet=UNet2DConditionModel(**cfg["unet"]), scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_model(kind: str, cache_dir: Path | None = None) -> Path:
    """The diffusers folder of model `kind` ("small" or "sd15"), built and saved on first use."""
    if kind not in CONFIGS:
        raise ValueError(f"unknown benchmark model {kind!r}; choose from {', '.join(CONFIGS)}")
    cache = Path(cache_dir or DEFAULT_CACHE)
    folder = cache / f"{kind}-{config_digest(kind)}"
    if (folder / "model_index.json").is_file():
        return folder
    pipe = _pipeline(kind, cache)
    partial = cache / f".{folder.name}.partial"
    pipe.save_pretrained(partial, safe_serialization=True)
    partial.rename(folder)  # only a complete folder is ever found by the check above
    return folder
