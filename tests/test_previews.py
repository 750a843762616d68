"""Preview quality on the built-in model: a cell's linear latent-to-RGB previews look like its image.

The engine's previews (pipeline.decode.Decoder.preview) map a denoised latent to RGB with a linear
fit, at latent resolution. Here they are compared with the cell's VAE-decoded image box-averaged
to that resolution (64 px -> 16x16), in 0..255 pixel units.

Measured (torch CPU float32, these four cells, Euler 10 steps Karras), with the map fitted on VAE
decodes: final-preview mean |error| to its own image 28.6 / 33.8 / 18.5 / 23.2; per-channel
correlation red 0.70 / 0.50 / 0.86 / 0.58, green 0.95-0.98, blue 0.91-0.98. (The earlier map,
fitted on encoded synthetic images, gave errors 54-80 and red correlations -0.22 to 0.56.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.cells import CellSpec
from pipeline.engine import RunOptions
from pipeline.render import render

PROMPTS = ("grinning face", "heavy black heart", "bottle with popping cork", "upside-down face")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def results():
    cells = [CellSpec(model="builtin", prompt=p, negative_prompt="", width=None, height=None, seed=1 + i,
                      sampler="Euler", sampler_options=(), schedule="Karras", steps=10, cfg=5.0)
             for i, p in enumerate(PROMPTS)]
    out = render(cells, RunOptions(preview_every=1))
    assert all(r.ok for r in out), [r.error for r in out]
    return out


def _downsampled(result) -> torch.Tensor:
    """The decoded image box-averaged to the preview's size, (h, w, 3) float in 0..255."""
    h, w = result.previews[0].shape[:2]
    img = torch.tensor(np.asarray(result.image), dtype=torch.float32).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(img, size=(h, w), mode="area")[0].permute(1, 2, 0)


def _mae(preview: torch.Tensor, image: torch.Tensor) -> float:
    return float((preview.float() - image).abs().mean())


def _luma_corr(preview: torch.Tensor, image: torch.Tensor) -> float:
    return float(np.corrcoef(preview.float().mean(-1).flatten(), image.mean(-1).flatten())[0, 1])


def test_previews_are_at_latent_resolution_for_every_step(results):
    for r in results:
        assert sorted(r.previews) == list(range(10))
        assert all(p.shape == (16, 16, 3) and p.dtype == torch.uint8 for p in r.previews.values())


def test_final_preview_looks_like_its_own_image_more_than_any_other(results):
    images = [_downsampled(r) for r in results]
    for i, r in enumerate(results):
        final = r.previews[max(r.previews)]
        errors = [_mae(final, img) for img in images]
        assert int(np.argmin(errors)) == i, errors
        assert _luma_corr(final, images[i]) > 0.45, _luma_corr(final, images[i])


def test_an_early_preview_is_further_from_the_image_than_the_last(results):
    # at step 0 the denoised estimate is already a pale emoji-shaped blob (luminance correlation
    # 0.67-0.93 measured), and it sharpens into the image: 0.95-0.98 at the last step
    gaps = []
    for r in results:
        image = _downsampled(r)
        first, last = r.previews[0], r.previews[max(r.previews)]
        gaps.append(_luma_corr(last, image) - _luma_corr(first, image))
    assert min(gaps) > 0.02 and sum(gaps) / len(gaps) > 0.1, gaps  # measured 0.049-0.285, mean 0.165


def test_final_preview_has_the_images_colours(results):
    # red varies least in these yellow/red emoji, so its bound is the loosest
    for r in results:
        image, final = _downsampled(r), r.previews[max(r.previews)].float()
        corr = [float(np.corrcoef(final[..., k].flatten(), image[..., k].flatten())[0, 1]) for k in range(3)]
        assert corr[0] > 0.35 and corr[1] > 0.85 and corr[2] > 0.8, corr
        assert _mae(final, image) < 45, _mae(final, image)
