"""Tiny random-weight Stable Diffusion-family models, built offline for tests.

Everything is made in code: configs, weights (seeded, so every build is
identical), and a byte-level BPE CLIP tokenizer whose vocab.json/merges.txt
are written here. A 32x32-pixel image (16x16 latents) with a few steps takes
milliseconds on a CPU.

    tiny_sd(tmp)                        SD 1.x-style diffusers folder (epsilon)
    tiny_sd(tmp, "v_prediction")        SD 2.x-style v-prediction folder
    tiny_sdxl(tmp)                      SDXL-style folder (two text encoders, text_time UNet)
    tiny_sd_single_file(tmp)            the tiny SD 1.x model as one original-format
                                        (LDM / A1111) .safetensors checkpoint
    tiny_sdxl_deep_text2(tmp)           SDXL folder whose second text encoder is 10 layers, 48 wide
    tiny_sdxl_single_file(tmp)          that SDXL model as one original-format (SGM / A1111)
                                        .safetensors checkpoint

Builders are idempotent per folder: calling one twice with the same tmp path
returns the folder already built.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

SEED = 0
TEXT_HIDDEN = 32
MAX_TOKENS = 77  # CLIP's real context length, so embeddings have SD's (1, 77, D) shape
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# A few merges so common words become single tokens, as with the real CLIP vocabulary.
_MERGES = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>"), ("c", "a"),
           ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("r", "e"), ("e", "d</w>"), ("a", "t</w>")]


def _byte_unicode() -> list[str]:
    """CLIP's reversible byte -> printable unicode table (256 entries), as transformers builds it."""
    table = bytes_to_unicode()
    return [table[b] for b in range(256)]


def write_tokenizer_files(folder: Path) -> Path:
    """Write vocab.json and merges.txt of a tiny byte-level BPE CLIP vocabulary; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _byte_unicode()
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in _MERGES] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in _MERGES]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _tokenizer(tmp: Path, pad_token: str = EOS) -> CLIPTokenizer:
    files = write_tokenizer_files(tmp / "_tokenizer_files")
    return CLIPTokenizer.from_pretrained(str(files), model_max_length=MAX_TOKENS, pad_token=pad_token)


def _text_config(tok: CLIPTokenizer, projection_dim: int = TEXT_HIDDEN) -> CLIPTextConfig:
    # bos/eos ids must be the tokenizer's: CLIP pools the hidden state at the eos token.
    return CLIPTextConfig(
        vocab_size=1000, hidden_size=TEXT_HIDDEN, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=projection_dim,
        bos_token_id=tok.convert_tokens_to_ids(BOS), eos_token_id=tok.convert_tokens_to_ids(EOS),
        pad_token_id=tok.convert_tokens_to_ids(tok.pad_token), hidden_act="quick_gelu")


def _vae(force_upcast: bool = True) -> AutoencoderKL:
    # Two levels: vae_scale_factor 2, so 32x32 px images have 16x16 latents.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=32, force_upcast=force_upcast)


def _scheduler(prediction_type: str) -> EulerDiscreteScheduler:
    # Stable Diffusion 1.x/2.x/XL's training noise schedule.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading", prediction_type=prediction_type)


def _sd_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4, norm_num_groups=32)


def _sdxl_unet() -> UNet2DConditionModel:
    time_dim = 8
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * TEXT_HIDDEN, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        # SDXL's extra embedding: 6 time ids (original size, crop, target size) + pooled text.
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_HIDDEN, norm_num_groups=32)


def tiny_sd(tmp_path: Path, prediction_type: str = "epsilon") -> Path:
    """A tiny StableDiffusionPipeline folder (SD 1.x layout; "v_prediction" makes an SD 2.x-style model)."""
    folder = Path(tmp_path) / f"tiny-sd-{prediction_type}"
    if (folder / "model_index.json").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(SEED)
        tok = _tokenizer(Path(tmp_path))
        pipe = StableDiffusionPipeline(
            vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)), tokenizer=tok, unet=_sd_unet(),
            scheduler=_scheduler(prediction_type), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_sdxl(tmp_path: Path) -> Path:
    """A tiny StableDiffusionXLPipeline folder: two text encoders, a text_time UNet, force_zeros on."""
    folder = Path(tmp_path) / "tiny-sdxl"
    if (folder / "model_index.json").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        tok = _tokenizer(Path(tmp_path))
        tok_2 = _tokenizer(Path(tmp_path), pad_token="!")  # SDXL's second tokenizer pads with "!"
        pipe = StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(tok_2)), tokenizer=tok,
            tokenizer_2=tok_2, unet=_sdxl_unet(), scheduler=_scheduler("epsilon"),
            force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# ------------------------------------------------------------ original (LDM) checkpoint format


def _ldm_resnet(name: str) -> str:
    """diffusers ResnetBlock2D parameter names -> LDM ResBlock names (inverse of diffusers' converter)."""
    for new, old in (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                     ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
                     ("conv_shortcut", "skip_connection")):
        if name.startswith(new + "."):
            return old + name[len(new):]
    return name


def _ldm_unet_key(key: str, layers_per_block: int, attn_up_blocks: set[int]) -> str:
    """One diffusers UNet key -> its key in an LDM `model.diffusion_model.` state dict."""
    mapping = DIFFUSERS_TO_LDM_MAPPING["unet"]
    flat = mapping["layers"] | mapping["addition_embed_type"]
    if key in flat:
        return flat[key]
    parts = key.split(".")
    per = layers_per_block + 1  # LDM gives each level's downsampler / upsampler its own slot
    if parts[0] == "mid_block":
        index = 2 * int(parts[2]) if parts[1] == "resnets" else 1
        rest = ".".join(parts[3:])
        return f"middle_block.{index}." + (_ldm_resnet(rest) if parts[1] == "resnets" else rest)
    block, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{1 + block * per + layers_per_block}.0.op.{rest.removeprefix('conv.')}"
        slot = 0 if kind == "resnets" else 1
        name = _ldm_resnet(rest) if kind == "resnets" else rest
        return f"input_blocks.{1 + block * per + j}.{slot}.{name}"
    if kind == "upsamplers":
        slot = 2 if block in attn_up_blocks else 1
        return f"output_blocks.{block * per + layers_per_block}.{slot}.{rest}"
    slot = 0 if kind == "resnets" else 1
    name = _ldm_resnet(rest) if kind == "resnets" else rest
    return f"output_blocks.{block * per + j}.{slot}.{name}"


def _ldm_vae_key(key: str, num_up: int) -> str:
    """One diffusers AutoencoderKL key -> its key in an LDM `first_stage_model.` state dict."""
    flat = DIFFUSERS_TO_LDM_MAPPING["vae"]
    if key in flat:
        return flat[key]
    side, parts = key.split(".", 1)[0], key.split(".")[1:]
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            rest = ".".join(parts[3:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(parts[2]) + 1}.{rest}"
        layer = attn[parts[3]]
        return f"{side}.mid.attn_1.{layer}.{parts[-1]}"
    block = int(parts[1]) if side == "encoder" else num_up - 1 - int(parts[1])  # LDM's up is reversed
    level = "down" if side == "encoder" else "up"
    if parts[2] in ("downsamplers", "upsamplers"):
        return f"{side}.{level}.{block}.{parts[2][:-2]}.conv.{parts[-1]}"
    rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
    return f"{side}.{level}.{block}.block.{parts[3]}.{rest}"


def _ldm_unet_and_vae(pipe) -> dict[str, torch.Tensor]:
    """A pipeline's UNet and VAE weights under their original-format (LDM / SGM) keys."""
    cfg = pipe.unet.config
    attn_up = {i for i, t in enumerate(cfg.up_block_types) if "CrossAttn" in t}
    out: dict[str, torch.Tensor] = {}
    for key, value in pipe.unet.state_dict().items():
        out["model.diffusion_model." + _ldm_unet_key(key, cfg.layers_per_block, attn_up)] = value
    num_up = len(pipe.vae.config.up_block_types)
    for key, value in pipe.vae.state_dict().items():
        if ".mid_block.attentions." in key and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention projections are 1x1 convolutions
        out["first_stage_model." + _ldm_vae_key(key, num_up)] = value
    return out


def ldm_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """An SD 1.x pipeline's weights as an original-format (CompVis LDM / A1111) checkpoint."""
    out = _ldm_unet_and_vae(pipe)
    for key, value in pipe.text_encoder.state_dict().items():
        if key != "embeddings.position_ids":
            out["cond_stage_model.transformer.text_model." + key.removeprefix("text_model.")] = value
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def tiny_sd_single_file(tmp_path: Path) -> Path:
    """The tiny SD 1.x model (tiny_sd) as one original-format .safetensors checkpoint.

    Loading it offline needs the diffusers configs of the same architecture:
    pass the tiny_sd folder (Path(tmp_path) / "tiny-sd-epsilon") as `config`.
    """
    path = Path(tmp_path) / "tiny-sd.safetensors"
    if not path.is_file():
        pipe = StableDiffusionPipeline.from_pretrained(tiny_sd(tmp_path), safety_checker=None)
        save_file(ldm_state_dict(pipe), str(path))
    return path


# ------------------------------------------------------------ SDXL in the original (SGM) format

# diffusers tells an SDXL base checkpoint by a key of its second text encoder's 10th block
# (single_file_utils.CHECKPOINT_KEY_NAMES["xl_base"]), and tells the two text encoders apart by
# their widths, so the second needs at least 10 layers and a width of its own.
SDXL_SINGLE_FILE_TEXT2_LAYERS = 10
SDXL_SINGLE_FILE_TEXT2_HIDDEN = 48


def tiny_sdxl_deep_text2(tmp_path: Path) -> Path:
    """An SDXL folder like tiny_sdxl whose second text encoder is 10 layers deep and 48 wide (the
    first stays 32 wide): the shape of model a single-file SDXL checkpoint can be read back as."""
    folder = Path(tmp_path) / "tiny-sdxl-deep-text2"
    if (folder / "model_index.json").is_file():
        return folder
    hidden_2, time_dim = SDXL_SINGLE_FILE_TEXT2_HIDDEN, 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        tok = _tokenizer(Path(tmp_path))
        tok_2 = _tokenizer(Path(tmp_path), pad_token="!")
        cfg_2 = _text_config(tok_2)
        cfg_2.num_hidden_layers, cfg_2.hidden_size = SDXL_SINGLE_FILE_TEXT2_LAYERS, hidden_2
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN + hidden_2, attention_head_dim=(2, 4), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + cfg_2.projection_dim, norm_num_groups=32)
        pipe = StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)),
            text_encoder_2=CLIPTextModelWithProjection(cfg_2), tokenizer=tok,
            tokenizer_2=tok_2, unet=unet, scheduler=_scheduler("epsilon"),
            force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _open_clip_state_dict(text_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModelWithProjection's weights in OpenCLIP's layout (SDXL's embedder 1):
    q/k/v fused into in_proj, fc1/fc2 -> c_fc/c_proj, text_projection stored as (hidden, proj)."""
    sd = {k.removeprefix("text_model."): v for k, v in text_model.state_dict().items()}
    out = {"positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           "ln_final.weight": sd.pop("final_layer_norm.weight"),
           "ln_final.bias": sd.pop("final_layer_norm.bias"),
           "text_projection": sd.pop("text_projection.weight").T}
    sd.pop("embeddings.position_ids", None)
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in sorted(layers):
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [sd.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"])
            for new, old in names.items():
                out[dst + f"{old}.{kind}"] = sd.pop(src + f"{new}.{kind}")
    assert not sd, f"unconverted text encoder keys: {sorted(sd)}"
    return out


def ldm_sdxl_state_dict(pipe: StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    """An SDXL pipeline's weights as an original-format (Stability SGM / A1111) checkpoint."""
    out = _ldm_unet_and_vae(pipe)
    for key, value in pipe.text_encoder.state_dict().items():
        if key != "embeddings.position_ids":
            out["conditioner.embedders.0.transformer.text_model." + key.removeprefix("text_model.")] = value
    for key, value in _open_clip_state_dict(pipe.text_encoder_2).items():
        out["conditioner.embedders.1.model." + key] = value
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def tiny_sdxl_single_file(tmp_path: Path) -> Path:
    """tiny_sdxl_deep_text2 as one original-format .safetensors checkpoint.

    Loading it offline needs the diffusers configs of the same architecture:
    pass the tiny_sdxl_deep_text2 folder as `config`.
    """
    path = Path(tmp_path) / "tiny-sdxl.safetensors"
    if not path.is_file():
        pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_deep_text2(tmp_path))
        save_file(ldm_sdxl_state_dict(pipe), str(path))
    return path
