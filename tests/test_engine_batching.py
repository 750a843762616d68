"""How the engine spends the model: CFG halves in one batch, batched VAE decode, the automatic batch
limit from free GPU memory, the progress estimate of time left, and a cache that never crosses models."""

from __future__ import annotations

import math
import time

import pytest
import torch

from core.progress import Progress
from pipeline import memory
from pipeline.cache import CellCache
from pipeline.engine import RunOptions
from pipeline.memory import auto_max_batch
from pipeline.models import load_model
from pipeline.render import render
from tests.test_engine import cell


def _batch_spy(monkeypatch, module, method: str) -> list[int]:
    """Batch size of every call of `module.<method>` (the UNet's forward, the VAE's decode)."""
    sizes = []
    real = getattr(module, method)

    def spy(batch, *args, **kwargs):
        sizes.append(batch.shape[0])
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(module, method, spy)
    return sizes


# ---------------------------------------------------------------- classifier-free guidance


@pytest.mark.parametrize("cfg,rows_per_call", [(5.0, 2), (1.0, 1)])
def test_cfg_runs_both_halves_in_one_call_and_cfg_1_runs_one(sd_path, monkeypatch, cfg, rows_per_call):
    model = load_model(str(sd_path))
    rows = _batch_spy(monkeypatch, model.unet, "forward")
    result = render([cell(sd_path, steps=5, cfg=cfg)])[0]
    assert result.ok and result.denoiser_calls == 5
    assert rows == [rows_per_call] * 5  # one UNet forward per step, unconditional half included


def test_cells_with_and_without_guidance_share_one_call(sd_path, monkeypatch):
    model = load_model(str(sd_path))
    rows = _batch_spy(monkeypatch, model.unet, "forward")
    render([cell(sd_path, steps=3, cfg=5.0), cell(sd_path, steps=3, cfg=1.0)], RunOptions(max_batch=16))
    assert rows == [3, 3, 3]  # 2 rows + 1 row per tick


# ---------------------------------------------------------------- batched VAE decode


def test_cells_finishing_together_are_decoded_in_batches_of_eight(sd_path, monkeypatch):
    model = load_model(str(sd_path))
    sizes = _batch_spy(monkeypatch, model.vae, "decode")
    grid = [cell(sd_path, steps=2, seed=s) for s in range(10)] + [cell(sd_path, steps=3, seed=1)]
    results = render(grid, RunOptions(max_batch=32))
    assert all(r.ok for r in results)
    assert sizes == [8, 2, 1]  # ten finish on one tick, the 3-step cell a tick later


# ---------------------------------------------------------------- the automatic batch limit


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device with `free[0]` bytes free (nothing held by PyTorch's cache)."""
    free = [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free[0], 80 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    return free


CUDA = torch.device("cuda", 0)
SD15_LATENT = 64 * 64  # 512x512 pixels


def test_auto_batch_on_the_cpu_is_fixed():
    assert auto_max_batch(torch.device("cpu"), SD15_LATENT) == memory.CPU_MAX_ROWS


def test_auto_batch_scales_with_free_memory_and_latent_size(fake_gpu):
    fake_gpu[0] = 8 << 30
    eight = auto_max_batch(CUDA, SD15_LATENT)
    # the documented estimate: ~190 MiB of activations per fp16 row at 64x64 latents, 70% of free memory
    per_row = memory.ACTIVATION_BYTES_PER_LATENT_PIXEL * SD15_LATENT
    assert 150 << 20 <= per_row <= 300 << 20
    assert eight == int(0.7 * (8 << 30) / per_row)
    assert 15 <= eight <= 40  # batch 8 with CFG at 512x512 fits an 8 GB card, as users find
    fake_gpu[0] = 16 << 30
    assert auto_max_batch(CUDA, SD15_LATENT) in (2 * eight, 2 * eight + 1)
    assert auto_max_batch(CUDA, 4 * SD15_LATENT) == int(0.7 * (16 << 30) / (4 * per_row))  # 1024x1024
    assert auto_max_batch(CUDA, SD15_LATENT, torch.float32) == int(0.7 * (16 << 30) / (2 * per_row))


def test_auto_batch_counts_memory_pytorch_holds_in_its_cache_as_free(fake_gpu, monkeypatch):
    fake_gpu[0] = 4 << 30
    before = auto_max_batch(CUDA, SD15_LATENT)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 6 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2 << 30)  # 4 GiB cached, unused
    assert auto_max_batch(CUDA, SD15_LATENT) > before
    assert auto_max_batch(CUDA, SD15_LATENT) in (2 * before, 2 * before + 1)


def test_auto_batch_is_clamped(fake_gpu, monkeypatch):
    fake_gpu[0] = 10 << 20  # almost nothing free: still one row (an OOM then says so clearly)
    assert auto_max_batch(CUDA, SD15_LATENT) == 1
    fake_gpu[0] = 1 << 40
    assert auto_max_batch(CUDA, SD15_LATENT) == memory.MAX_AUTO_ROWS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CUDA device torch cannot use
    assert auto_max_batch(CUDA, SD15_LATENT) == memory.CPU_MAX_ROWS


# ---------------------------------------------------------------- estimate of time left


def test_eta_is_the_remaining_calls_at_the_rate_so_far():
    p = Progress(cells_total=2, calls_total=10)
    assert p.eta_seconds is None  # nothing measured yet
    p.started = time.perf_counter() - 4.0
    p.calls_done = 4  # 1 s per call so far
    assert p.eta_seconds == pytest.approx(6.0, rel=0.05)
    p.calls_done = 10
    assert p.eta_seconds == 0.0


def test_eta_falls_during_a_render_and_ends_at_zero(sd_path):
    etas = []
    render([cell(sd_path, steps=n, seed=n) for n in (2, 4, 6)],
           RunOptions(max_batch=1, on_progress=lambda p: etas.append(p.eta_seconds)))
    assert all(e is not None and math.isfinite(e) and e >= 0 for e in etas)
    assert etas[-1] == 0.0 and etas[0] > 0
    assert etas[0] > etas[len(etas) // 2] > etas[-1]


# ---------------------------------------------------------------- the cache never crosses models


def test_a_cache_hit_never_crosses_models_or_dtypes(sd_path, sdv_path):
    cache = CellCache()
    first = render([cell(sd_path, steps=2)], cache=cache)[0]
    again = render([cell(sd_path, steps=2)], cache=cache)[0]
    assert again.cached and torch.equal(again.latents, first.latents)

    # Another model's files under the same name: the spec key is the same, the model is not.
    same_name = cell(sdv_path, steps=2)
    renamed = render([same_name], cache=cache,
                     loader=lambda name: load_model(str(sdv_path)))[0]
    assert not renamed.cached
    posing = render([cell(sd_path, steps=2)], cache=cache, loader=lambda name: load_model(str(sdv_path)))[0]
    assert not posing.cached and torch.equal(posing.latents, renamed.latents)

    # The same files in another dtype: rendered again, not served from the float32 cell.
    bf16 = render([cell(sd_path, steps=2)], cache=cache,
                  loader=lambda name: load_model(name, dtype="bfloat16"))[0]
    assert not bf16.cached
    assert render([cell(sd_path, steps=2)], cache=cache,
                  loader=lambda name: load_model(name, dtype="bfloat16"))[0].cached
    back = render([cell(sd_path, steps=2)], cache=cache)[0]
    assert back.cached and torch.equal(back.latents, first.latents)
