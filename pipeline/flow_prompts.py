"""Prompts to conditioning for the rectified-flow families (SD3 / SD3.5, Flux).

This module owns encoding one prompt for an SD3 or Flux pipeline exactly as the
pipeline's own `__call__` does, through the pipeline's `encode_prompt`:

- SD3 (Esser et al. 2024, "Scaling Rectified Flow Transformers"): the penultimate hidden
  states of CLIP-L and CLIP-G side by side, zero-padded to T5's width, followed by T5's
  embeddings (256 tokens; zeros of the transformer's joint_attention_dim when the
  pipeline has no T5), and the two CLIPs' pooled projections side by side. The
  unconditional input is the encoded negative prompt ("" when none is given).
- Flux: T5's embeddings (512 tokens) and CLIP-L's pooled output. Flux's text position
  ids are zeros (the denoiser makes them).

A prompt is encoded alone; diffusers encodes the prompt and the negative prompt in
separate text-encoder calls too, so caching each text gives the pipeline's tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

FLOW_FAMILIES = ("sd3", "flux")


@torch.no_grad()
def encode_flow(model: Any, prompt: str) -> tuple[Tensor, Tensor]:
    """(embeds (1, L, D), pooled (1, P)) of `prompt` for a loaded SD3 or Flux model."""
    pipe = model.pipe
    if model.family == "sd3":
        embeds, _neg, pooled, _neg_pooled = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=model.device,
            num_images_per_prompt=1, do_classifier_free_guidance=False)
        return embeds, pooled
    if model.family == "flux":
        embeds, pooled, _text_ids = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, device=model.device, num_images_per_prompt=1)
        return embeds, pooled
    raise ValueError(f"{model.family!r} is not a flow-model family ({', '.join(FLOW_FAMILIES)})")
