"""The model as a denoiser: UNet output (epsilon or v) -> denoised estimate D(x; sigma).

Samplers work on x = data + sigma * eps (Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models", Table 1, VP column): the
UNet sees c_in * x with c_in = 1 / sqrt(sigma^2 + 1) at the (fractional)
training timestep of sigma, and
    epsilon model:  D = x - sigma * eps
    v model:        D = c_in^2 * x - sigma * c_in * v   (Salimans & Ho 2022,
                    "Progressive Distillation", v = alpha eps - sigma_vp x0)
Classifier-free guidance (Ho & Salimans 2022) mixes the unconditional and
conditional estimates, D_u + cfg * (D_c - D_u), with both halves in one batch.

This module owns one batched model call over rows gathered from many cells;
it knows nothing about samplers or grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from samplers.schedules import sigma_to_t


@dataclass
class Row:
    """One cell's request for this tick.

    x: (1, C, h, w) latent in the sigma parametrisation; sigma: its noise
    level; timestep: the model timestep to use (None: derived from sigma);
    cond/uncond: prompt embeddings (1, L, D); pooled/uncond_pooled and
    time_ids: SDXL's extra conditioning; cfg: guidance scale; guidance: Flux's
    distilled guidance (None: the model's default; other models ignore it); pair: the cell's
    sampler is a CFG++ sampler, which gets (guided, unconditional) and so runs the
    unconditional half at any cfg (2 model rows per call).
    """

    x: Tensor
    sigma: float
    timestep: float | None
    cond: Tensor
    uncond: Tensor
    cfg: float
    pooled: Tensor | None = None
    uncond_pooled: Tensor | None = None
    time_ids: Tensor | None = None
    guidance: float | None = None
    pair: bool = False

    @property
    def guided(self) -> bool:
        # diffusers runs the unconditional half only when guidance_scale > 1; a CFG++ sampler
        # needs it at every cfg.
        return self.cfg > 1.0 or self.pair

    @property
    def model_rows(self) -> int:
        return 2 if self.guided else 1


class ModelDenoiser:
    """Turns batches of rows into UNet calls and UNet outputs into denoised latents."""

    def __init__(self, unet: torch.nn.Module, train_sigmas: Tensor, prediction_type: str) -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction type {prediction_type!r}")
        self.unet = unet
        self.train_sigmas = train_sigmas.float().cpu()
        self.prediction_type = prediction_type

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @torch.no_grad()
    def __call__(self, rows: list[Row]) -> list[Tensor | tuple[Tensor, Tensor]]:
        """Denoised estimates, one (1, C, h, w) tensor per row, in the rows' dtype; for a CFG++
        row the pair (guided, unconditional), both from the batch's two halves."""
        xs, sigmas, ts, ctx, extra = self._gather(rows)
        c_in = (sigmas**2 + 1).rsqrt().view(-1, 1, 1, 1)
        out = self.unet(
            (xs * c_in).to(self.dtype), ts.to(self.device), encoder_hidden_states=ctx,
            added_cond_kwargs=extra, return_dict=False,
        )[0].to(xs.dtype)
        if self.prediction_type == "epsilon":
            denoised = xs - sigmas.view(-1, 1, 1, 1) * out
        else:
            denoised = c_in**2 * xs - (sigmas.view(-1, 1, 1, 1) * c_in) * out
        return self._guide(rows, denoised)

    def _gather(self, rows: list[Row]):
        """Stack rows into one model batch: the unconditional halves, then the conditional ones."""
        order = [(r, True) for r in rows if r.guided] + [(r, False) for r in rows]
        work = torch.float32  # guidance and the eps/v conversion in full precision
        xs = torch.cat([r.x for r, _ in order]).to(self.device, work)
        sigmas = torch.tensor([r.sigma for r, _ in order], dtype=work, device=self.device)
        ts = torch.tensor(
            [float(sigma_to_t(torch.tensor(r.sigma), self.train_sigmas)) if r.timestep is None
             else float(r.timestep) for r, _ in order], dtype=torch.float32)
        ctx = torch.cat([(r.uncond if un else r.cond) for r, un in order]).to(self.device, self.dtype)
        extra = None
        if rows[0].time_ids is not None:
            extra = {
                "text_embeds": torch.cat([(r.uncond_pooled if un else r.pooled) for r, un in order])
                .to(self.device, self.dtype),
                "time_ids": torch.cat([r.time_ids for r, _ in order]).to(self.device, self.dtype),
            }
        return xs, sigmas, ts, ctx, extra

    @staticmethod
    def _guide(rows: list[Row], denoised: Tensor) -> list[Tensor | tuple[Tensor, Tensor]]:
        n_uncond = sum(r.guided for r in rows)
        uncond, cond = denoised[:n_uncond], denoised[n_uncond:]
        out: list[Tensor | tuple[Tensor, Tensor]] = []
        u = 0
        for i, r in enumerate(rows):
            d = cond[i : i + 1]
            if not r.guided:
                out.append(d.to(r.x.dtype))
                continue
            d_u = uncond[u : u + 1]
            u += 1
            d = d_u + r.cfg * (d - d_u)
            out.append((d.to(r.x.dtype), d_u.to(r.x.dtype)) if r.pair else d.to(r.x.dtype))
        return out
