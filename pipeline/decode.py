"""Latents to pictures: the batched VAE decode of finished cells and cheap previews.

Previews use a linear latent-to-RGB map fitted once per model by least squares
on a few synthetic colour images encoded with the model's own VAE, so any
SD-family VAE gets a preview map without a table of magic numbers.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

DECODE_BATCH = 8


def _free_cached_memory() -> None:
    from pipeline.engine import free_cached_memory  # the engine's, so one place decides (and tests spy)

    free_cached_memory()


def _vae_scaling(vae) -> tuple[float, Tensor | None, Tensor | None]:
    """(scale, mean, std): SDXL-style per-channel latents_mean/std, or the scalar shift_factor of
    SD3 / Flux VAEs as a mean with std 1 (both None when the VAE has neither)."""
    cfg = vae.config
    mean = getattr(cfg, "latents_mean", None)
    std = getattr(cfg, "latents_std", None)
    if mean is not None and std is not None:
        return cfg.scaling_factor, torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    shift = getattr(cfg, "shift_factor", None)
    if shift:
        return cfg.scaling_factor, torch.tensor(float(shift)), torch.tensor(1.0)
    return cfg.scaling_factor, None, None


def unscale_latents(vae, latents: Tensor) -> Tensor:
    """Sampler-space latents to what the VAE decoder takes, as diffusers pipelines do
    (SD3 and Flux: latents / scaling_factor + shift_factor)."""
    scale, mean, std = _vae_scaling(vae)
    if mean is not None:
        return latents * std.to(latents) / scale + mean.to(latents)
    return latents / scale


def _synthetic_images(size: int = 64) -> Tensor:
    """Solid colours and gradients in [-1, 1]: enough spread to fit a linear colour map."""
    ramp = torch.linspace(-1, 1, size)
    imgs = [torch.full((3, size, size), v) for v in (-1.0, 1.0)]
    for c in range(3):
        for sign in (-1.0, 1.0):
            img = torch.full((3, size, size), -0.2 * sign)
            img[c] = sign * 0.9
            imgs.append(img)
    imgs.append(torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size),
                             -ramp.view(1, -1).expand(size, size)]))
    imgs.append(torch.stack([ramp.view(-1, 1).expand(size, size), -ramp.view(1, -1).expand(size, size),
                             ramp.view(-1, 1).expand(size, size) * 0.5]))
    return torch.stack(imgs)


class Decoder:
    """Decodes finished cells in batches and makes previews of denoised estimates."""

    def __init__(self, pipe, batch: int = DECODE_BATCH) -> None:
        self.pipe = pipe
        self.vae = pipe.vae
        self.batch = batch
        self._preview_map: tuple[Tensor, Tensor] | None = None

    @property
    def dtype_name(self) -> str:
        """The VAE's dtype as a word, for messages ("float16")."""
        return str(next(self.vae.parameters()).dtype).removeprefix("torch.")

    @torch.no_grad()
    def decode(self, latents: list[Tensor]) -> list[Image.Image | None]:
        """Images for final latents, decoded up to `batch` at a time (shapes may differ); None for
        a latent whose decoded image holds NaN or inf (the VAE overflowed).

        Out of memory halves the batch (and keeps it halved for later calls) and decodes the same
        latents again, down to one at a time; there it raises torch.OutOfMemoryError.
        """
        out: list[Image.Image | None] = []
        i = 0
        while i < len(latents):
            j = i + 1
            while j < len(latents) and j - i < self.batch and latents[j].shape == latents[i].shape:
                j += 1
            try:
                out.extend(self._decode_same_shape(torch.cat(latents[i:j])))
            except torch.OutOfMemoryError:
                if j - i <= 1:
                    raise
                self.batch = max(1, (j - i) // 2)
                _free_cached_memory()
                continue  # the same latents again, fewer at a time
            i = j
        return out

    def _decode_same_shape(self, z: Tensor) -> list[Image.Image | None]:
        vae = self.vae
        dev = next(vae.parameters()).device
        dtype = next(vae.parameters()).dtype
        z = unscale_latents(vae, z.to(dev, torch.float32)).to(dtype)
        image = vae.decode(z, return_dict=False)[0].float()
        finite = torch.isfinite(image).flatten(1).all(dim=1).tolist()
        if not all(finite):
            image = torch.nan_to_num(image)  # those pictures are dropped; the rest convert cleanly
        pictures = self.pipe.image_processor.postprocess(image, output_type="pil")
        return [pic if ok else None for pic, ok in zip(pictures, finite, strict=True)]

    @torch.no_grad()
    def preview(self, denoised: Tensor) -> Tensor:
        """A (h, w, 3) uint8 RGB preview of a (1, C, h, w) latent, at latent resolution."""
        weight, bias = self._fit()
        z = denoised[0].float().cpu()
        rgb = torch.einsum("chw,cd->hwd", z, weight) + bias
        return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    @torch.no_grad()
    def _fit(self) -> tuple[Tensor, Tensor]:
        """The linear latent -> RGB map previews use, fitted once per model by least squares.

        Fitted in the direction previews go, on pairs (z, what the VAE decodes from z at latent
        resolution): z are the latents of simple colour images (encoded) and smooth random latents
        with about the spread of real ones. Fitting the other way (encode images, regress the
        image on the latent) misses how the decoder reads latents it did not make: on the built-in
        model the red channel's correlation was -0.2 to 0.6 and the mean error 54-80 (0..255);
        fitted on decodes it is 0.5-0.9 and 19-34 (tests/test_previews.py).
        """
        if self._preview_map is None:
            vae = self.vae
            dev = next(vae.parameters()).device
            dtype = next(vae.parameters()).dtype
            scale, mean, std = _vae_scaling(vae)
            z = vae.encode(_synthetic_images().to(dev, dtype)).latent_dist.mean.float().cpu()
            z = (z - mean) * scale / std if mean is not None else z * scale
            coarse = torch.randn(16, z.shape[1], 4, 4, generator=torch.Generator().manual_seed(0)) * 1.5
            z = torch.cat([z, torch.nn.functional.interpolate(coarse, size=z.shape[-2:], mode="bilinear")])
            decoded = vae.decode(unscale_latents(vae, z).to(dev, dtype), return_dict=False)[0]
            small = torch.nn.functional.interpolate(decoded.float().cpu().clamp(-1, 1), size=z.shape[-2:],
                                                    mode="area")
            a = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]),
                           torch.ones(z.numel() // z.shape[1], 1)], dim=1)
            b = small.permute(0, 2, 3, 1).reshape(-1, 3)
            sol = torch.linalg.lstsq(a.double(), b.double()).solution.float()
            self._preview_map = (sol[:-1], sol[-1])
        return self._preview_map
