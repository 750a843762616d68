"""Tiny SD3 / SD3.5 and Flux models as single .safetensors files in their original key layout.

People download SD3 and Flux as one file in the layout of the reference code, not as diffusers
folders: Stability's MMDiT ("model.diffusion_model.joint_blocks.N.x_block.attn.qkv.weight", q, k
and v fused; the VAE under "first_stage_model."; the text encoders under "text_encoders.clip_l.",
".clip_g.", ".t5xxl." in transformers' own layout) and Black Forest Labs' Flux transformer
("double_blocks.N.img_attn.qkv.weight", "single_blocks.N.linear1.weight" fusing q, k, v and the
MLP input; transformer only, no prefix: the VAE and text encoders are separate downloads).

The maps below are the inverse of diffusers' single-file converters
(diffusers.loaders.single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers and
convert_flux_transformer_checkpoint_to_diffusers, read for their exact key names; written here
from those names, not copied). The reference code splits an adaptive norm's projection into
(shift, scale) where diffusers splits it into (scale, shift): those weights have their halves
swapped (SD3's last context block and both final layers).

    sd3_single_file(tmp)                      tiny_sd3(single_file=True) as an all-in-one file
                                              (MMDiT, VAE, CLIP-L, CLIP-G, T5), as
                                              sd3_medium_incl_clips_t5xxlfp8.safetensors
    sd3_single_file(tmp, text_encoders=False) MMDiT and VAE only, as sd3_medium.safetensors
    sd3_single_file(tmp, sd35=True)           the SD3.5-style model (qk norms, dual attention)
    flux_single_file(tmp)                     tiny_flux's transformer alone, as flux1-dev.safetensors

Each is read back with the folder it was made from as `config`. Builders are idempotent per path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from safetensors.torch import save_file
from torch import Tensor

from tests.tiny_flow_models import tiny_flux, tiny_sd3
from tests.tiny_models import _ldm_vae_key

SD3_PREFIX = "model.diffusion_model."
# diffusers module name -> original module name; each module's .weight / .bias follow it.
_SD3_TOP = {
    "pos_embed.proj": "x_embedder.proj", "context_embedder": "context_embedder",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "proj_out": "final_layer.linear", "norm_out.linear": "final_layer.adaLN_modulation.1",
}
_SD3_BLOCK = {
    "norm1.linear": "x_block.adaLN_modulation.1", "norm1_context.linear": "context_block.adaLN_modulation.1",
    "attn.to_out.0": "x_block.attn.proj", "attn.to_add_out": "context_block.attn.proj",
    "attn.norm_q": "x_block.attn.ln_q", "attn.norm_k": "x_block.attn.ln_k",
    "attn.norm_added_q": "context_block.attn.ln_q", "attn.norm_added_k": "context_block.attn.ln_k",
    "attn2.to_out.0": "x_block.attn2.proj", "attn2.norm_q": "x_block.attn2.ln_q",
    "attn2.norm_k": "x_block.attn2.ln_k",
    "ff.net.0.proj": "x_block.mlp.fc1", "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1", "ff_context.net.2": "context_block.mlp.fc2",
}
# original fused module -> the diffusers modules it concatenates, in order (along dim 0)
_SD3_FUSED = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
}
_FLUX_TOP = {
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "context_embedder": "txt_in", "x_embedder": "img_in",
    "proj_out": "final_layer.linear", "norm_out.linear": "final_layer.adaLN_modulation.1",
}
_FLUX_DOUBLE = {
    "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
    "attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm",
    "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
}
_FLUX_DOUBLE_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_FLUX_SINGLE = {"norm.linear": "modulation.lin", "attn.norm_q": "norm.query_norm",
                "attn.norm_k": "norm.key_norm", "proj_out": "linear2"}
_FLUX_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}
# Flux's RMS norms keep their weight as ".scale"
_FLUX_LEAF = {"weight": "scale"}


def swap_halves(weight: Tensor) -> Tensor:
    """(scale, shift) <-> (shift, scale): the reference code's order of an adaptive norm's projection."""
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _convert(sd: dict[str, Tensor], renames: dict[str, str], fused: dict[str, tuple[str, ...]],
             norm_leaf: dict[str, str] | None = None) -> dict[str, Tensor]:
    """Pop from `sd` every module in `renames` / `fused` (diffusers names) and return them under their
    original names; `norm_leaf` renames the leaf of modules whose original name ends in "_norm"."""
    out: dict[str, Tensor] = {}
    for leaf in ("weight", "bias"):
        for new, old in renames.items():
            if f"{new}.{leaf}" in sd:
                tail = (norm_leaf or {}).get(leaf, leaf) if old.endswith("_norm") else leaf
                out[f"{old}.{tail}"] = sd.pop(f"{new}.{leaf}")
        for old, parts in fused.items():
            if f"{parts[0]}.{leaf}" in sd:
                out[f"{old}.{leaf}"] = torch.cat([sd.pop(f"{p}.{leaf}") for p in parts], dim=0)
    return out


def _blocks(sd: dict[str, Tensor], prefix: str, original: str, renames: dict[str, str],
            fused: dict[str, tuple[str, ...]], norm_leaf: dict[str, str] | None = None) -> dict[str, Tensor]:
    """Every block `prefix`.N. of a diffusers state dict under `original`.N. (popped from sd)."""
    count = len({k.split(".")[1] for k in sd if k.startswith(prefix + ".")})
    out: dict[str, Tensor] = {}
    for i in range(count):
        head = f"{prefix}.{i}."
        block = {k.removeprefix(head): sd.pop(k) for k in list(sd) if k.startswith(head)}
        for key, value in _convert(block, renames, fused, norm_leaf).items():
            out[f"{original}.{i}.{key}"] = value
        assert not block, f"unconverted keys in {prefix}.{i}: {sorted(block)}"
    return out


def sd3_transformer_state_dict(transformer: torch.nn.Module) -> dict[str, Tensor]:
    """An SD3 / SD3.5 diffusers transformer's weights in Stability's MMDiT layout (no prefix)."""
    sd = dict(transformer.state_dict())
    out = {"pos_embed": sd.pop("pos_embed.pos_embed")}
    out |= _blocks(sd, "transformer_blocks", "joint_blocks", _SD3_BLOCK, _SD3_FUSED)
    out |= _convert(sd, _SD3_TOP, {})
    assert not sd, f"unconverted transformer keys: {sorted(sd)}"
    last = len({k.split(".")[1] for k in out if k.startswith("joint_blocks.")}) - 1
    swapped = (f"joint_blocks.{last}.context_block.adaLN", "final_layer.adaLN")
    for key in [k for k in out if k.startswith(swapped)]:
        out[key] = swap_halves(out[key])
    return out


def flux_transformer_state_dict(transformer: torch.nn.Module) -> dict[str, Tensor]:
    """A Flux diffusers transformer's weights in Black Forest Labs' layout (no prefix)."""
    sd = dict(transformer.state_dict())
    out = _blocks(sd, "transformer_blocks", "double_blocks", _FLUX_DOUBLE, _FLUX_DOUBLE_FUSED, _FLUX_LEAF)
    out |= _blocks(sd, "single_transformer_blocks", "single_blocks", _FLUX_SINGLE, _FLUX_SINGLE_FUSED,
                   _FLUX_LEAF)
    out |= _convert(sd, _FLUX_TOP, {})
    assert not sd, f"unconverted transformer keys: {sorted(sd)}"
    for key in ("final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias"):
        out[key] = swap_halves(out[key])
    return out


def ldm_vae_state_dict(vae: torch.nn.Module) -> dict[str, Tensor]:
    """An AutoencoderKL's weights in the LDM layout under "first_stage_model." (as in SD3's file)."""
    num_up = len(vae.config.up_block_types)
    out = {}
    for key, value in vae.state_dict().items():
        if ".mid_block.attentions." in key and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention projections are 1x1 convolutions
        out["first_stage_model." + _ldm_vae_key(key, num_up)] = value
    return out


def sd3_text_encoders_state_dict(pipe: StableDiffusion3Pipeline) -> dict[str, Tensor]:
    """SD3's text encoders as its all-in-one file holds them: transformers' own keys under
    text_encoders.clip_l / clip_g / t5xxl ".transformer."; CLIP-L without a projection (the
    reference code does not project CLIP-L's pooled output; diffusers puts the identity there)."""
    out = {}
    for name, encoder in (("clip_l", pipe.text_encoder), ("clip_g", pipe.text_encoder_2),
                          ("t5xxl", pipe.text_encoder_3)):
        for key, value in encoder.state_dict().items():
            skip = key.endswith("position_ids") or (name == "clip_l" and key.startswith("text_projection"))
            if not skip:
                out[f"text_encoders.{name}.transformer.{key}"] = value
    return out


def _save(state: dict[str, Tensor], path: Path) -> Path:
    # safetensors refuses tensors that share memory (T5's tied embeddings): store plain copies
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path))
    return path


def sd3_single_file(tmp_path: Path, *, sd35: bool = False, text_encoders: bool = True) -> Path:
    """tiny_sd3(single_file=True) (or its SD3.5 form) as one original-format file: MMDiT under
    "model.diffusion_model.", VAE under "first_stage_model.", and (text_encoders) CLIP-L, CLIP-G and
    T5. Read it back with config=tiny_sd3(tmp_path, sd35=sd35, single_file=True)."""
    name = ("tiny-sd35" if sd35 else "tiny-sd3") + ("-all" if text_encoders else "-mmdit-vae")
    path = Path(tmp_path) / f"{name}.safetensors"
    if not path.is_file():
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3(tmp_path, sd35=sd35, single_file=True))
        state = {SD3_PREFIX + k: v for k, v in sd3_transformer_state_dict(pipe.transformer).items()}
        state |= ldm_vae_state_dict(pipe.vae)
        if text_encoders:
            state |= sd3_text_encoders_state_dict(pipe)
        _save(state, path)
    return path


def flux_single_file(tmp_path: Path, *, guidance: bool = True) -> Path:
    """tiny_flux's transformer alone in Black Forest Labs' layout (keys without a prefix), as
    flux1-dev.safetensors is published. Read it back with config=tiny_flux(tmp_path, guidance=...)."""
    path = Path(tmp_path) / ("tiny-flux1-dev.safetensors" if guidance else "tiny-flux1-schnell.safetensors")
    if not path.is_file():
        pipe = FluxPipeline.from_pretrained(tiny_flux(tmp_path, guidance=guidance))
        _save(flux_transformer_state_dict(pipe.transformer), path)
    return path
