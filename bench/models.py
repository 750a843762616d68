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

bench/gpu_check.py builds its models in memory instead, straight on the GPU
(`build_pipeline`, `build_flow_pipeline`): SD 1.5 and SDXL base 1.0
(2.57 B UNet, CLIP-L + CLIP-G 695 M) pipelines, tiny stand-ins of both for
--smoke, and SD3-Medium (2.03 B) and Flux.1-dev (11.9 B) pipelines (full-size transformer
and VAE, shallow text encoders of the right widths).

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
from collections.abc import Iterator
from contextlib import contextmanager
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


# ------------------------------------------------------------------ in-memory models for bench/gpu_check.py
#
# SDXL base 1.0's configs (stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder_2/),
# tiny stand-ins of both families for --smoke, and the SD3-Medium / Flux.1-dev transformer configs.
# These models are built straight on the target device with seeded random weights and never saved.

SDXL_UNET: dict[str, Any] = {
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": (5, 10, 20), "block_out_channels": (320, 640, 1280),
    "cross_attention_dim": 2048, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D",
                                                      "CrossAttnDownBlock2D"),
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "norm_eps": 1e-5,
    "norm_num_groups": 32, "out_channels": 4, "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128, "transformer_layers_per_block": (1, 2, 10),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "use_linear_projection": True,
}
SDXL_VAE: dict[str, Any] = {**SD15_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
# laion/CLIP-ViT-bigG-14's text tower (SDXL's text_encoder_2, with projection)
CLIP_G_TEXT: dict[str, Any] = {
    "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
    "max_position_embeddings": MAX_TOKENS, "vocab_size": 49408, "hidden_act": "gelu", "projection_dim": 1280,
    "layer_norm_eps": 1e-5,
}

# --smoke stand-ins: each family's layout (SDXL's text_time UNet and two encoders) at a few thousand
# parameters per block, 2-level VAE (latent factor 2), so a 32 px cell takes milliseconds on a CPU.
_TINY_TEXT = {**CLIP_L_TEXT, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
              "num_hidden_layers": 2, "vocab_size": 1000, "projection_dim": 32}
_TINY_VAE = {**SD15_VAE, "block_out_channels": (32, 64), "down_block_types": ("DownEncoderBlock2D",) * 2,
             "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "sample_size": 32}
TINY_SD15_UNET = {**SD15_UNET, "block_out_channels": (32, 64), "layers_per_block": 1,
                  "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                  "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 32,
                  "attention_head_dim": 4, "sample_size": 16}
TINY_SDXL_UNET = {**SDXL_UNET, "block_out_channels": (32, 64), "layers_per_block": 1,
                  "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                  "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "attention_head_dim": (2, 4),
                  "transformer_layers_per_block": (1, 1), "cross_attention_dim": 64,
                  "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32,
                  "sample_size": 16}

PIPELINE_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": {"unet": SD15_UNET, "vae": SD15_VAE, "text": CLIP_L_TEXT},
    "sdxl": {"unet": SDXL_UNET, "vae": SDXL_VAE, "text": CLIP_L_TEXT, "text_2": CLIP_G_TEXT},
    "sd15-tiny": {"unet": TINY_SD15_UNET, "vae": _TINY_VAE, "text": _TINY_TEXT},
    "sdxl-tiny": {"unet": TINY_SDXL_UNET, "text": _TINY_TEXT, "text_2": _TINY_TEXT,
                  "vae": {**_TINY_VAE, "scaling_factor": 0.13025, "force_upcast": True}},
}

# stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json (2.0 B parameters)
SD3_MEDIUM_TRANSFORMER: dict[str, Any] = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 24, "attention_head_dim": 64,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 192,
}
# black-forest-labs/FLUX.1-dev transformer/config.json (11.9 B parameters)
FLUX_DEV_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768,
    "guidance_embeds": True, "axes_dims_rope": (16, 56, 56),
}
FLOW_CONFIGS: dict[str, dict[str, Any]] = {
    "sd3": SD3_MEDIUM_TRANSFORMER,
    "flux": FLUX_DEV_TRANSFORMER,
    "sd3-tiny": {**SD3_MEDIUM_TRANSFORMER, "sample_size": 16, "num_layers": 2, "attention_head_dim": 8,
                 "num_attention_heads": 2, "joint_attention_dim": 32, "caption_projection_dim": 16,
                 "pooled_projection_dim": 32, "pos_embed_max_size": 32},
    "flux-tiny": {**FLUX_DEV_TRANSFORMER, "in_channels": 64, "num_layers": 1, "num_single_layers": 1,
                  "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                  "pooled_projection_dim": 32, "axes_dims_rope": (4, 6, 6)},
}


@contextmanager
def _seeded_on(device: torch.device) -> Iterator[None]:
    """Build on `device` from seed SEED, leaving the caller's RNG state alone."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(SEED)
        yield


def build_pipeline(kind: str, device: torch.device | str, tokenizer_dir: Path) -> Any:
    """A float32 SD 1.5- or SDXL-architecture pipeline (`PIPELINE_CONFIGS`) with seeded random
    weights allocated and initialised on `device` itself (no download, nothing saved): the same
    weights on every build on the same device."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    cfg, dev = PIPELINE_CONFIGS[kind], torch.device(device)
    # Only the modules are made under the device context: the scheduler's tables stay on the CPU,
    # where a loaded pipeline has them.
    tok = _tokenizer(tokenizer_dir)
    # SDXL's second tokenizer pads with "!"; its encoder is CLIP-G with a projection (pooled output).
    tok_2 = CLIPTokenizer.from_pretrained(str(tokenizer_dir / "_tokenizer_files"),
                                          model_max_length=MAX_TOKENS, pad_token="!")
    with _seeded_on(dev):
        parts = {"vae": AutoencoderKL(**cfg["vae"]), "text_encoder": _text_encoder(cfg["text"], tok),
                 "tokenizer": tok, "unet": UNet2DConditionModel(**cfg["unet"])}
        if "text_2" in cfg:
            ids = {name: tok_2.convert_tokens_to_ids(token)
                   for name, token in (("bos_token_id", BOS), ("eos_token_id", EOS), ("pad_token_id", "!"))}
            text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_2"], **ids))
    parts["scheduler"] = PNDMScheduler.from_config(SD15_SCHEDULER)
    if "text_2" not in cfg:
        return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    return StableDiffusionXLPipeline(**parts, text_encoder_2=text_2, tokenizer_2=tok_2,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)


# Flow pipelines around those transformers. The text encoders are shallow (2 layers) but give the
# widths the transformer takes (SD3: CLIP projections 768 + 1280 = its pooled 2048, T5 width = its
# joint dim 4096; Flux: CLIP width 768, T5 width 4096), and the tokenizers pad to the pipelines' real
# lengths (SD3 77 + 256 T5 tokens, Flux 512), so each call costs what the real model's call costs.
# The VAE is SD3's / Flux's 16-channel one (no quant convs, latent shift).
FLOW_VAE: dict[str, Any] = {k: v for k, v in SD15_VAE.items() if k != "scaling_factor"} | {
    "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False, "sample_size": 1024}
FLOW_VAE_NORM = {"sd3": {"scaling_factor": 1.5305, "shift_factor": 0.0609},
                 "flux": {"scaling_factor": 0.3611, "shift_factor": 0.1159}}
_TINY_FLOW_VAE = {**FLOW_VAE, "block_out_channels": (32, 32, 64, 64), "layers_per_block": 1,
                  "sample_size": 64}


def _clip(tok: CLIPTokenizer, hidden: int, projection: int, with_projection: bool) -> Any:
    from transformers import CLIPTextModelWithProjection

    cfg = {**_TINY_TEXT, "hidden_size": hidden, "intermediate_size": 2 * hidden, "projection_dim": projection}
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in
           (("bos_token_id", BOS), ("eos_token_id", EOS), ("pad_token_id", tok.pad_token))}
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(CLIPTextConfig(**cfg, **ids))


def _t5(tok: Any, width: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=len(tok), d_model=width, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=0, feed_forward_proj="gated-gelu", is_encoder_decoder=False))


def build_flow_pipeline(kind: str, device: torch.device | str, tokenizer_dir: Path) -> Any:
    """A float32 StableDiffusion3Pipeline ("sd3", "sd3-tiny") or FluxPipeline ("flux", "flux-tiny")
    around a FLOW_CONFIGS transformer, with seeded random weights made on `device`."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    from tests.tiny_flow_models import flux_scheduler, t5_tokenizer

    family, cfg = kind.split("-")[0], FLOW_CONFIGS[kind]
    tiny = kind.endswith("-tiny")
    tok, tok_t5 = _tokenizer(tokenizer_dir), t5_tokenizer()
    tok_2 = CLIPTokenizer.from_pretrained(str(tokenizer_dir / "_tokenizer_files"),
                                          model_max_length=MAX_TOKENS, pad_token="!")
    pooled, joint = cfg["pooled_projection_dim"], cfg["joint_attention_dim"]
    with _seeded_on(torch.device(device)):
        vae = AutoencoderKL(**(_TINY_FLOW_VAE if tiny else FLOW_VAE), **FLOW_VAE_NORM[family])
        t5 = _t5(tok_t5, joint)
        if family == "flux":  # the pooled input is CLIP-L's pooled output: its width
            clip, transformer = _clip(tok, pooled, pooled, False), FluxTransformer2DModel(**cfg)
            return FluxPipeline(scheduler=flux_scheduler(), vae=vae, text_encoder=clip, tokenizer=tok,
                                text_encoder_2=t5, tokenizer_2=tok_t5, transformer=transformer)
        # SD3's pooled input is CLIP-L's and CLIP-G's projections side by side; their hidden states,
        # side by side and zero-padded, join T5's, so together they must fit in T5's width
        proj, hidden = ((pooled // 2, pooled - pooled // 2), joint // 4) if tiny else ((768, 1280), 64)
        return StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**cfg), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae, text_encoder=_clip(tok, hidden, proj[0], True), tokenizer=tok,
            text_encoder_2=_clip(tok_2, hidden, proj[1], True), tokenizer_2=tok_2, text_encoder_3=t5,
            tokenizer_3=tok_t5)
