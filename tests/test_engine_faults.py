"""Engine faults one level below the app (tests/test_hardening_faults.py): a sampler that fails on
its first step, out of memory in the VAE decode, NaN/inf in a decoded image, and the progress
totals meeting the work done."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import samplers
from pipeline import memory
from pipeline.engine import RunOptions
from pipeline.models import load_model
from pipeline.render import render
from tests.faults import inject_fault
from tests.test_engine import cell

# ---------------------------------------------------------------- a sampler that fails at once


@pytest.fixture
def fails_at_seed_9(monkeypatch):
    """Cells with seed 9 get a sampler generator that raises on its very first step."""
    real = samplers.start_generator

    def start(name, x, sigmas, noise, **options):
        if noise.seed == 9:
            def broken():
                raise FloatingPointError("step size underflow (injected)")
                yield  # a generator: the error comes at the first next(), in CellState.__init__
            return broken()
        return real(name, x, sigmas, noise, **options)

    monkeypatch.setattr(samplers, "start_generator", start)


def test_a_cell_failing_on_its_first_step_is_delivered_with_its_own_error(sd_path, fails_at_seed_9):
    seen, progress = {}, []
    results = render([cell(sd_path, seed=1), cell(sd_path, seed=9), cell(sd_path, seed=2)],
                     RunOptions(on_cell=lambda i, r: seen.setdefault(i, r),
                                on_progress=lambda p: progress.append(p.cells_done)))
    assert results[0].ok and results[2].ok
    assert results[1].error == "the sampler failed: step size underflow (injected)"
    assert results[1].image is None and results[1].denoiser_calls == 0
    assert sorted(seen) == [0, 1, 2] and seen[1].error == results[1].error
    assert progress[-1] == 3  # the dead cell counts as done


def test_a_grid_whose_only_cell_fails_at_once_reports_progress(sd_path, fails_at_seed_9):
    seen, progress = [], []
    results = render([cell(sd_path, seed=9)],
                     RunOptions(on_cell=lambda i, r: seen.append((i, r.error)),
                                on_progress=lambda p: progress.append((p.cells_done, p.cells_total))))
    assert results[0].error == "the sampler failed: step size underflow (injected)"
    assert seen == [(0, results[0].error)]
    assert progress == [(1, 1)]


# ---------------------------------------------------------------- out of memory in the VAE


def _vae_decode_spy(monkeypatch, model, fail_above: int | None = None, nan_at: int | None = None):
    """Record the batch size of every vae.decode call; raise OOM above `fail_above` images;
    make image `nan_at` of each batch NaN."""
    sizes = []
    real = model.vae.decode

    def decode(z, *args, **kwargs):
        sizes.append(z.shape[0])
        if fail_above is not None and z.shape[0] > fail_above:
            raise torch.OutOfMemoryError("CUDA out of memory (injected in the VAE)")
        out = real(z, *args, **kwargs)
        if nan_at is not None and z.shape[0] > nan_at:
            out[0][nan_at] = float("nan")
        return out

    monkeypatch.setattr(model.vae, "decode", decode)
    return sizes


def test_out_of_memory_in_the_vae_halves_the_decode_batch_and_gives_the_same_images(sd_path, monkeypatch):
    grid = [cell(sd_path, seed=s, steps=2) for s in range(6)]  # finish together: one decode batch
    reference = render(grid)
    model = load_model(str(sd_path))
    sizes = _vae_decode_spy(monkeypatch, model, fail_above=1)
    freed = []
    monkeypatch.setattr(memory, "free_cached_memory", lambda: freed.append(1))
    results = render(grid)
    assert sizes[:3] == [6, 3, 1] and set(sizes[3:]) == {1} and len(sizes) == 3 + 5
    assert len(freed) == 2  # before each retry
    for a, b in zip(results, reference, strict=True):
        assert a.ok, a.error
        diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
        assert diff.max() <= 1  # the same images (CPU kernels may round one level apart per batch size)


def test_out_of_memory_in_the_vae_even_one_image_at_a_time_raises(sd_path, monkeypatch):
    model = load_model(str(sd_path))
    _vae_decode_spy(monkeypatch, model, fail_above=0)
    with pytest.raises(torch.OutOfMemoryError):
        render([cell(sd_path, seed=s, steps=2) for s in range(2)])


def test_free_cached_memory_empties_the_cuda_cache_only_when_cuda_is_there(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    memory.free_cached_memory()
    assert emptied == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    memory.free_cached_memory()
    assert emptied == [1]


def test_unet_out_of_memory_frees_the_cache_before_each_retry(sd_path, monkeypatch):
    freed = []
    monkeypatch.setattr(memory, "free_cached_memory", lambda: freed.append(1))

    def fault(rows: int) -> None:
        if rows > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    inject_fault(monkeypatch, fault)
    results = render([cell(sd_path, seed=s, steps=2) for s in range(4)], RunOptions(max_batch=8))
    assert all(r.ok for r in results)
    assert len(freed) == 2  # 8 -> 4 -> 2


# ---------------------------------------------------------------- NaN or inf from the VAE


def test_nan_in_a_decoded_image_fails_that_cell_only(sd_path, monkeypatch):
    model = load_model(str(sd_path))
    grid = [cell(sd_path, seed=s, steps=2) for s in (1, 2, 3)]
    reference = render(grid)
    _vae_decode_spy(monkeypatch, model, nan_at=1)
    seen = {}
    results = render(grid, RunOptions(on_cell=lambda i, r: seen.setdefault(i, r)))
    assert results[0].ok and results[2].ok
    assert not results[1].ok and results[1].image is None
    assert "VAE" in results[1].error and "NaN or inf" in results[1].error
    assert sorted(seen) == [0, 1, 2] and seen[1].error == results[1].error
    for i in (0, 2):
        assert np.array_equal(np.asarray(results[i].image), np.asarray(reference[i].image))


# ---------------------------------------------------------------- progress totals


@pytest.mark.parametrize("sampler", ["Heun", "DPM2", "DPM2 a", "DPM++ SDE", "DPM++ 2S a", "Euler"])
def test_model_calls_done_meet_the_total_at_the_end(sd_path, sampler):
    reports = []
    results = render([cell(sd_path, sampler=sampler, steps=4, seed=s) for s in (1, 2)],
                     RunOptions(on_progress=lambda p: reports.append((p.calls_done, p.calls_total))))
    done = sum(r.denoiser_calls for r in results)
    assert reports[0][1] == done  # the first estimate is already exact for these samplers
    assert reports[-1] == (done, done)


def test_progress_total_is_settled_for_cached_and_failed_cells(sd_path):
    from pipeline.cache import CellCache

    cache = CellCache()
    render([cell(sd_path, steps=3)], cache=cache)
    reports = []
    render([cell(sd_path, steps=3), cell(sd_path, steps=2, seed=5), cell(sd_path, size=33)],
           RunOptions(on_progress=lambda p: reports.append((p.calls_done, p.calls_total))), cache=cache)
    assert reports[-1] == (2, 2)  # only the one new cell's two calls were work of this run
