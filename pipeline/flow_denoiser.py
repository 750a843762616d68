"""A rectified-flow transformer (SD3 / SD3.5, Flux) as a denoiser over rows from many cells.

A flow model's noisy latent is x = (1 - sigma) x0 + sigma eps and the transformer
predicts the velocity v = eps - x0 (Lipman et al. 2023, "Flow Matching for Generative
Modeling"; Liu et al. 2023, "Flow Straight and Fast"), so the denoised estimate is
    D(x; sigma) = x - sigma v.
The model sees x itself (no input scaling) at the timestep its pipeline passes:
SD3's transformer takes t = 1000 sigma; Flux's takes sigma (FluxPipeline passes t / 1000,
cast to the latents' dtype first, which is repeated here), plus the distilled-guidance
value on guidance-distilled models (FLUX.1-dev; default 3.5 as in FluxPipeline). Flux's
transformer works on 2x2 patches of the latent packed into tokens with (0, row, column)
position ids; cells keep their latents unpacked (1, 16, h, w), exactly as FluxPipeline
draws the initial noise, and rows are packed for the call and unpacked after it.

Classifier-free guidance ("true CFG" on Flux) mixes the unconditional and conditional
estimates, D_u + cfg (D_c - D_u), which equals guiding v as the pipelines do (D is affine
in v at fixed x and sigma); the unconditional half runs only when cfg > 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.denoiser import ModelDenoiser, Row
from pipeline.zero_tokens import collapsed, trailing_zero_tokens

FLUX_DEFAULT_GUIDANCE = 3.5  # FluxPipeline's guidance_scale default


def pack(x: Tensor) -> Tensor:
    """(B, C, h, w) latents -> (B, h/2 * w/2, 4C) tokens of 2x2 patches (FluxPipeline's layout)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: Tensor, h: int, w: int) -> Tensor:
    """The inverse of `pack` for latents of height h and width w."""
    b, _n, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(h: int, w: int) -> Tensor:
    """Flux's image position ids for h x w latents: (0, row, column) of each 2x2 patch."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


class FlowDenoiser(ModelDenoiser):
    """Batches of rows -> transformer calls -> denoised latents, for one SD3 or Flux model.

    Rows share ModelDenoiser's layout (unconditional halves first) and guidance; a row's
    `timestep`, when given (the diffusers adapter's), is in the scheduler's units (1000 sigma).
    """

    def __init__(self, transformer: torch.nn.Module, family: str) -> None:
        if family not in ("sd3", "flux"):
            raise ValueError(f"{family!r} is not a flow-model family (sd3 or flux)")
        self.unet = transformer  # the network the engine places and counts, under the base name
        self.family = family
        self.guidance_embeds = bool(getattr(transformer.config, "guidance_embeds", False))

    @torch.no_grad()
    def __call__(self, rows: list[Row]) -> list[Tensor]:
        """Denoised estimates, one (1, C, h, w) tensor per row, in the rows' dtype."""
        order = [(r, True) for r in rows if r.guided] + [(r, False) for r in rows]
        work = torch.float32
        xs = torch.cat([r.x for r, _ in order]).to(self.device, work)
        sigmas = torch.tensor([r.sigma for r, _ in order], dtype=work, device=self.device)
        # the scheduler's timestep: 1000 sigma in float32, as FlowMatchEulerDiscreteScheduler keeps it
        ts = torch.tensor([1000.0 * r.sigma if r.timestep is None else float(r.timestep)
                           for r, _ in order], dtype=work, device=self.device)
        ctx = torch.cat([(r.uncond if un else r.cond) for r, un in order]).to(self.device, self.dtype)
        pooled = torch.cat([(r.uncond_pooled if un else r.pooled) for r, un in order])
        pooled = pooled.to(self.device, self.dtype)
        if self.family == "sd3":
            v = self._sd3(xs.to(self.dtype), ts, ctx, pooled)
        else:
            v = self._flux(xs, ts, ctx, pooled, [r for r, _ in order])
        denoised = xs - sigmas.view(-1, 1, 1, 1) * v.to(work)
        return self._guide(rows, denoised)

    def _sd3(self, xs: Tensor, ts: Tensor, ctx: Tensor, pooled: Tensor) -> Tensor:
        """SD3's transformer; the zero tokens of a pipeline without T5 run as one (pipeline.zero_tokens)."""
        zeros = trailing_zero_tokens(ctx)
        if zeros < 2:
            return self.unet(hidden_states=xs, timestep=ts, encoder_hidden_states=ctx,
                             pooled_projections=pooled, return_dict=False)[0]
        short = ctx[:, : ctx.shape[1] - zeros + 1]
        with collapsed(self.unet, zeros):
            return self.unet(hidden_states=xs, timestep=ts, encoder_hidden_states=short,
                             pooled_projections=pooled, return_dict=False)[0]

    def _flux(self, xs: Tensor, ts: Tensor, ctx: Tensor, pooled: Tensor, rows: list[Row]) -> Tensor:
        h, w = xs.shape[-2:]
        guidance = None
        if self.guidance_embeds:
            guidance = torch.tensor([FLUX_DEFAULT_GUIDANCE if r.guidance is None else float(r.guidance)
                                     for r in rows], dtype=torch.float32, device=self.device)
        out = self.unet(
            hidden_states=pack(xs.to(self.dtype)), timestep=ts.to(self.dtype) / 1000, guidance=guidance,
            pooled_projections=pooled, encoder_hidden_states=ctx,
            txt_ids=torch.zeros(ctx.shape[1], 3, device=self.device, dtype=self.dtype),
            img_ids=image_ids(h, w).to(self.device, self.dtype), return_dict=False)[0]
        return unpack(out, h, w)
