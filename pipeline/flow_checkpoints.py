"""SD3 / SD3.5 and Flux single-file checkpoints (the reference code's key layout) into a pipeline.

People download these models as one .safetensors file in the layout of their reference code:
Stability's MMDiT under "model.diffusion_model." (SD3's all-in-one files also hold the VAE under
"first_stage_model." and CLIP-L, CLIP-G and T5 under "text_encoders.<name>.transformer."), and
Black Forest Labs' Flux transformer with bare keys ("double_blocks.N.img_attn.qkv.weight"). This
module builds a pipeline from such a file and a diffusers config folder of the same model: each
component from the file when the file holds it, else from the config folder's weights.

Why not diffusers' pipeline `from_single_file` alone (diffusers 0.42), which the SD family uses:
it takes a component that is missing from the file out of the config folder only when that
folder holds diffusers-named weights (diffusion_pytorch_model.safetensors), so the text
encoders, stored by transformers as model.safetensors, never load from it: every SD3 file
without text encoders and every transformer-only Flux file failed (with an error that is not a
ValueError, so it escaped as a traceback); and its Flux converter fixes FLUX.1's width (3072)
and MLP ratio, so it reads no other width. Here diffusers' converters still read SD3's MMDiT,
the VAE, CLIP and T5; the Flux transformer's keys are mapped below with the widths read from the
checkpoint (the map matches diffusers' convert_flux_transformer_checkpoint_to_diffusers on
purpose: tests/test_flow_single_file.py checks it against that function).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
_TEXT = "text_encoders."
_NOT_TRANSFORMER = (*VAE_PREFIXES, _TEXT, "conditioner.", "cond_stage_model.")


class FlowCheckpointError(ValueError):
    """A flow single-file checkpoint that cannot be built into a pipeline; the message says why."""


@dataclass(frozen=True)
class Part:
    """A pipeline component a single file may hold: its name, the file's key prefix, its words."""

    name: str
    prefix: str
    what: str


# What each family's all-in-one files can hold besides the transformer (pipeline component names).
PARTS = {
    "sd3": (Part("vae", "", "VAE"), Part("text_encoder", _TEXT + "clip_l.", "CLIP-L text encoder"),
            Part("text_encoder_2", _TEXT + "clip_g.", "CLIP-G text encoder"),
            Part("text_encoder_3", _TEXT + "t5xxl.", "T5 text encoder")),
    "flux": (Part("vae", "", "VAE"), Part("text_encoder", _TEXT + "clip_l.", "CLIP-L text encoder"),
             Part("text_encoder_2", _TEXT + "t5xxl.", "T5 text encoder")),
}


def transformer_keys(checkpoint: dict[str, Tensor]) -> dict[str, Tensor]:
    """The transformer's tensors under bare keys: those under "model.diffusion_model." when the
    file has that prefix (ComfyUI / Stability), else every key of no other component (BFL)."""
    if any(k.startswith(TRANSFORMER_PREFIX) for k in checkpoint):
        return {k.removeprefix(TRANSFORMER_PREFIX): v for k, v in checkpoint.items()
                if k.startswith(TRANSFORMER_PREFIX)}
    return {k: v for k, v in checkpoint.items() if not k.startswith(_NOT_TRANSFORMER)}


def part_keys(checkpoint: dict[str, Tensor], part: Part) -> dict[str, Tensor]:
    """The tensors of one component in the file (keys kept whole, as diffusers' converters want)."""
    prefixes = VAE_PREFIXES if part.name == "vae" else (part.prefix,)
    return {k: v for k, v in checkpoint.items() if k.startswith(prefixes)}


# ------------------------------------------------------------------ Flux transformer keys

# BFL module name -> diffusers module name (each module's weight / bias; RMS norms' "scale" is
# diffusers' "weight").
_FLUX_TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
}
_FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
    # fused along dim 0: split into the listed modules
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_FLUX_SINGLE = {
    "modulation.lin": "norm.linear", "norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k",
    "linear2": "proj_out",
    # q, k, v (hidden wide each) and the MLP's input, fused: BFL's SingleStreamBlock.linear1
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
}
_FLUX_BLOCK = re.compile(r"^(double_blocks|single_blocks)\.(\d+)\.(.+)\.(weight|bias|scale)$")
_FLUX_TOP_KEY = re.compile(r"^(.+)\.(weight|bias)$")
# BFL's final layer splits its modulation into (shift, scale), diffusers' AdaLayerNormContinuous
# into (scale, shift).
_SWAPPED = "final_layer.adaLN_modulation.1"


def _swap_halves(weight: Tensor) -> Tensor:
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _split(value: Tensor, names: tuple[str, ...], hidden: int) -> list[Tensor]:
    """A fused projection into its parts: q, k, v hidden wide each, the rest (the MLP) last."""
    sizes = [hidden] * 3 + ([value.shape[0] - 3 * hidden] if len(names) == 4 else [])
    if sum(sizes) != value.shape[0] or min(sizes) <= 0:
        raise FlowCheckpointError(f"a fused projection has {value.shape[0]} rows, which do not split into "
                                  f"{len(names)} parts of a {hidden}-wide transformer")
    return list(torch.split(value, sizes, dim=0))


def _flux_key(key: str) -> tuple[str, Any] | None:
    """(diffusers module or modules, leaf) for one bare BFL key; None for a key Flux does not have."""
    block = _FLUX_BLOCK.match(key)
    if block:
        kind, index, module, leaf = block.groups()
        table, prefix = ((_FLUX_DOUBLE, "transformer_blocks") if kind == "double_blocks"
                         else (_FLUX_SINGLE, "single_transformer_blocks"))
        target = table.get(module)
        if target is None:
            return None
        leaf = "weight" if leaf == "scale" else leaf
        if isinstance(target, tuple):
            return tuple(f"{prefix}.{index}.{t}" for t in target), leaf
        return f"{prefix}.{index}.{target}", leaf
    top = _FLUX_TOP_KEY.match(key)
    if top and top.group(1) in _FLUX_TOP:
        return _FLUX_TOP[top.group(1)], top.group(2)
    return None


def flux_to_diffusers(bare: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Flux transformer's BFL-layout tensors (bare keys) under FluxTransformer2DModel's names."""
    if "img_in.weight" not in bare:
        raise FlowCheckpointError("it has no Flux input projection (img_in.weight)")
    hidden = int(bare["img_in.weight"].shape[0])
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in bare.items():
        target = _flux_key(key)
        if target is None:
            unknown.append(key)
            continue
        names, leaf = target
        if isinstance(names, tuple):
            for name, piece in zip(names, _split(value, names, hidden), strict=True):
                out[f"{name}.{leaf}"] = piece
        else:
            out[f"{names}.{leaf}"] = _swap_halves(value) if key.startswith(_SWAPPED) else value
    if unknown:
        raise FlowCheckpointError(f"it has {len(unknown)} tensor(s) a FLUX.1 transformer does not have, "
                                  f"e.g. {sorted(unknown)[0]!r}")
    return out
