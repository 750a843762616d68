"""Prompts to conditioning: text embeddings exactly as the diffusers pipelines make them.

This module owns turning prompt text into what the UNet is conditioned on:
`encode` (one prompt), `encode_pair` (prompt and negative prompt, with the
SDXL empty-negative rule), `PromptCache` (each distinct prompt encoded once
per grid) and `sdxl_time_ids` (SDXL's size conditioning). Encoding goes
through the pipeline's own `encode_prompt`, so embeddings match diffusers bit
for bit; prompts longer than CLIP's 77 tokens are truncated, as in diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.flow_prompts import FLOW_FAMILIES, encode_flow
from pipeline.models import LoadedModel


@dataclass(frozen=True, eq=False)
class Conditioning:
    """One prompt's encoding: embeds (1, L, D) for cross-attention; SDXL, SD3 and Flux add pooled (1, D2)."""

    embeds: Tensor
    pooled: Tensor | None = None

    def zeros(self) -> Conditioning:
        """The same shapes, all zeros (SDXL's unconditional input for an empty negative prompt)."""
        pooled = None if self.pooled is None else torch.zeros_like(self.pooled)
        return Conditioning(torch.zeros_like(self.embeds), pooled)


def _check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
    return prompt


@torch.no_grad()
def encode(model: LoadedModel, prompt: str) -> Conditioning:
    """The conditioning diffusers' pipeline computes for `prompt` (no guidance, one image)."""
    prompt = _check_prompt(prompt)
    pipe = model.pipe
    if model.family in FLOW_FAMILIES:
        return Conditioning(*encode_flow(model, prompt))
    if model.family == "sdxl":
        embeds, _neg, pooled, _neg_pooled = pipe.encode_prompt(
            prompt, device=model.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        return Conditioning(embeds, pooled)
    embeds, _neg = pipe.encode_prompt(prompt, model.device, 1, False)
    return Conditioning(embeds)


def zero_uncond(model: LoadedModel, negative: str) -> bool:
    """Whether the unconditional input is all zeros instead of the encoded negative prompt.

    diffusers' SDXL pipelines zero it when no negative prompt is given and the
    pipeline config has force_zeros_for_empty_prompt (true for SDXL base), and
    A1111 does the same for an empty negative prompt; an empty string here
    means "no negative prompt". SD 1.x/2.x always encode "".
    """
    return (model.family == "sdxl" and negative == ""
            and bool(model.pipe.config.get("force_zeros_for_empty_prompt", False)))


def encode_pair(model: LoadedModel, prompt: str, negative: str,
                cache: PromptCache | None = None) -> tuple[Conditioning, Conditioning]:
    """(cond, uncond): what a diffusers pipeline uses for classifier-free guidance.

    Equal to `pipe.encode_prompt(prompt, negative_prompt=negative or None,
    do_classifier_free_guidance=True)`; diffusers encodes the two texts in
    separate text-encoder calls, so encoding them one at a time (and reusing
    encodings through `cache`) gives the same tensors.
    """
    negative = _check_prompt(negative)
    get = cache.get if cache is not None else (lambda text: encode(model, text))
    cond = get(prompt)
    uncond = cond.zeros() if zero_uncond(model, negative) else get(negative)
    return cond, uncond


class PromptCache:
    """Each distinct prompt text encoded once for one model (use one per grid)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.encodes = 0  # text-encoder passes made, so tests can count them
        self._items: dict[str, Conditioning] = {}

    def get(self, prompt: str) -> Conditioning:
        prompt = _check_prompt(prompt)
        if prompt not in self._items:
            self._items[prompt] = encode(self.model, prompt)
            self.encodes += 1
        return self._items[prompt]

    def pair(self, prompt: str, negative: str) -> tuple[Conditioning, Conditioning]:
        """encode_pair through this cache."""
        return encode_pair(self.model, prompt, negative, cache=self)

    def __len__(self) -> int:
        return len(self._items)


def sdxl_time_ids(width: int, height: int) -> Tensor:
    """SDXL's add_time_ids for a text-to-image run: original size, crop (0, 0), target size.

    (1, 6) float32, each size as (height, width): what diffusers' SDXL pipeline
    builds by default, with original and target size both the image size.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
