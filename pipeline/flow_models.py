"""Rectified-flow model families (SD3 / SD3.5, Flux): telling them apart and what a loaded one is.

This module owns the flow side of loading: which pipeline classes are flow models and
their family names, telling the family of an original-format (single-file) transformer
checkpoint from its keys (a transformer whose family cannot be told is refused with a
message naming what works), the checks made on a loaded flow pipeline, and the facts
the engine needs about it (`FlowFacts`: the scheduler's shift, Flux's dynamic shift and
guidance embedding, the transformer's patch size). Loading itself stays in
pipeline.model_sources and pipeline.models, one path for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from samplers.flow_schedule import FlowShift

# diffusers pipeline class name -> family
FLOW_PIPELINES = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}
WORKS = ("Stable Diffusion 1.x, 2.x, XL, 3 / 3.5 (StableDiffusion3Pipeline) and FLUX.1 dev / schnell "
         "(FluxPipeline) text-to-image models")

# Keys (without the "model.diffusion_model." prefix) that name a family in an original-format
# checkpoint: SD3's MMDiT joint blocks (Stability's sd3 reference code) and Flux's double-stream
# blocks (BFL's flux reference code); diffusers' single-file loader looks for the same keys.
_SD3_KEY = "joint_blocks.0.context_block.adaLN_modulation.1.bias"
_FLUX_KEY = "double_blocks.0.img_attn.norm.key_norm.scale"
_FLUX_GUIDANCE_KEY = "guidance_in.in_layer.bias"
# SD3.5 Large has 38 joint blocks (SD3 / SD3.5 Medium 24); SD3.5 Medium's position table is 384 x 384
# patches (SD3's 192 x 192): diffusers' infer_diffusers_model_type tells them apart by the same keys,
# and picks each one's config repo by that kind.
_SD35_LARGE_KEY = "joint_blocks.37.x_block.mlp.fc1.weight"
_SD35_MEDIUM_POSITIONS = 384 * 384
# Keys of transformer families we do not run (so the message can say what the file is).
_OTHER_TRANSFORMERS = {
    "single_stream_modulation.lin.weight": "FLUX.2", "distilled_guidance_layer.in_proj.weight": "Chroma",
    "double_layers.0.attn.w2q.weight": "AuraFlow", "patchify_proj.weight": "LTX-Video",
    "cap_embedder.0.weight": "Lumina", "pos_embed.proj.weight": "a DiT-style transformer",
}
_TRANSFORMER_HINTS = ("transformer_blocks.", "single_blocks.", "double_blocks.", "joint_blocks.",
                      "x_embedder.")


class FlowFamilyError(ValueError):
    """A checkpoint whose flow family cannot be told or is not supported."""


@dataclass(frozen=True)
class FlowFacts:
    """What the engine needs to know about a loaded SD3 or Flux model beyond its family.

    shift: the scheduler's shift facts (fixed for SD3, resolution-dependent for Flux);
    guidance_embeds: the transformer takes a distilled-guidance value (FLUX.1-dev);
    patch: transformer patch size in latent pixels (SD3's patch embedding; Flux packs 2x2).
    """

    shift: FlowShift
    guidance_embeds: bool
    patch: int


def family_of_class(class_name: str | None) -> str | None:
    """The flow family a pipeline class name is, or None for any other class."""
    return FLOW_PIPELINES.get(class_name or "")


def checkpoint_family(keys: set[str] | dict[str, Any], name: str) -> tuple[str, str] | None:
    """(family, kind) of an original-format flow transformer checkpoint; None when it holds no
    transformer at all (so the caller can try the SD-family checks). kind (diffusers' name, which
    picks the config repo) is "sd3", "sd35_medium", "sd35_large", "flux-dev" or "flux-schnell".
    Raises FlowFamilyError for a transformer we cannot tell or do not run."""
    bare = {k.removeprefix("model.diffusion_model.") for k in keys}
    if _SD3_KEY in bare:
        return "sd3", _sd3_kind(bare, keys)
    if _FLUX_KEY in bare:
        shapes = keys if isinstance(keys, dict) else {}
        img_in = shapes.get("img_in.weight", shapes.get("model.diffusion_model.img_in.weight"))
        if img_in is not None and img_in.shape[1] != 64:
            raise FlowFamilyError(f"{name} is a FLUX.1 Fill/Depth-style checkpoint ({img_in.shape[1]} "
                                  f"input channels, not 64); this app renders {WORKS}")
        return "flux", ("flux-dev" if _FLUX_GUIDANCE_KEY in bare else "flux-schnell")
    for key, what in _OTHER_TRANSFORMERS.items():
        if key in bare:
            raise FlowFamilyError(f"{name} looks like a {what} checkpoint, which is not supported; "
                                  f"this app renders {WORKS}")
    if any(k.startswith(_TRANSFORMER_HINTS) for k in bare):
        raise FlowFamilyError(f"{name} holds transformer weights of a family that cannot be told (neither "
                              f"SD3's joint_blocks nor Flux's double_blocks); this app renders {WORKS}")
    return None


def _sd3_kind(bare: set[str], keys: set[str] | dict[str, Any]) -> str:
    """Which SD3 model an MMDiT checkpoint is: by depth (SD3.5 Large) or position table (SD3.5 Medium)."""
    if _SD35_LARGE_KEY in bare:
        return "sd35_large"
    shapes = keys if isinstance(keys, dict) else {}
    pos = shapes.get("pos_embed", shapes.get("model.diffusion_model.pos_embed"))
    return "sd35_medium" if pos is not None and pos.shape[1] == _SD35_MEDIUM_POSITIONS else "sd3"


def flow_facts(pipe: Any, family: str) -> FlowFacts:
    """The flow facts of a loaded SD3 or Flux pipeline (see FlowFacts)."""
    cfg = pipe.transformer.config
    patch = 2 if family == "flux" else int(cfg.get("patch_size", 2))
    shift = FlowShift.from_config(dict(pipe.scheduler.config), patch=patch,
                                  max_shift_default=1.15 if family == "flux" else 1.16)
    return FlowFacts(shift=shift, guidance_embeds=bool(cfg.get("guidance_embeds", False)), patch=patch)


def check_flow_supported(name: str, pipe: Any, family: str) -> None:
    """Refuse flow pipelines the engine cannot drive (a scheduler that is not flow matching, a
    transformer whose input is not its own latent, e.g. Flux Fill / Depth)."""
    sched = pipe.scheduler
    if type(sched).__name__ != "FlowMatchEulerDiscreteScheduler":
        raise FlowFamilyError(f"{name!r} has a {type(sched).__name__}; SD3 and Flux models are run "
                              "from their FlowMatchEulerDiscreteScheduler config")
    cfg = pipe.transformer.config
    latent = int(pipe.vae.config.latent_channels)
    want = latent * 4 if family == "flux" else latent
    if int(cfg.in_channels) != want:
        raise FlowFamilyError(f"{name!r}'s transformer takes {cfg.in_channels} input channels, not the "
                              f"{want} of its latents (an inpainting or control variant); use a "
                              "text-to-image checkpoint")
