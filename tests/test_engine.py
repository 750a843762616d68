"""The grid engine on tiny random-weight SD-family models: fidelity, seed locking, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from grids.cells import CellSpec
from pipeline.cache import CellCache
from pipeline.engine import RunOptions
from pipeline.models import load_model
from pipeline.render import render


def cell(model, sampler="Euler", steps=4, seed=1, cfg=5.0, prompt="a cat", negative="",
         schedule="Automatic", size=32, **options) -> CellSpec:
    return CellSpec(model=str(model), prompt=prompt, negative_prompt=negative, width=size,
                    height=size, seed=seed, sampler=sampler,
                    sampler_options=tuple(sorted(options.items())), schedule=schedule,
                    steps=steps, cfg=cfg)


def diffusers_latents(pipe_cls, path, scheduler: str, spec: CellSpec, **flags) -> torch.Tensor:
    pipe = pipe_cls.from_pretrained(path)
    cls = getattr(__import__("diffusers"), scheduler)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **flags)
    out = pipe(spec.prompt, negative_prompt=spec.negative_prompt or None,
               guidance_scale=spec.cfg, num_inference_steps=spec.steps, width=spec.width,
               height=spec.height, generator=torch.Generator("cpu").manual_seed(spec.seed),
               output_type="latent")
    return out.images


FIDELITY = [
    ("EulerDiscreteScheduler", {}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DDIMScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {}),
    ("HeunDiscreteScheduler", {}),
]


@pytest.mark.parametrize("scheduler,flags", FIDELITY)
@pytest.mark.parametrize("which", ["sd_path", "sdv_path"])
def test_diffusers_cell_equals_diffusers_pipeline(request, which, scheduler, flags):
    path = request.getfixturevalue(which)
    spec = cell(path, sampler=f"diffusers:{scheduler}", steps=5, cfg=4.0, negative="blurry",
                **flags)
    ours = render([spec])[0]
    assert ours.ok, ours.error
    theirs = diffusers_latents(StableDiffusionPipeline, path, scheduler, spec, **flags)
    assert torch.allclose(ours.latents, theirs, atol=2e-4, rtol=1e-4), \
        (ours.latents - theirs).abs().max()


def test_sdxl_cell_equals_diffusers_sdxl_pipeline(sdxl_path):
    spec = cell(sdxl_path, sampler="diffusers:EulerDiscreteScheduler", steps=4, cfg=5.0)
    ours = render([spec])[0]
    assert ours.ok, ours.error
    theirs = diffusers_latents(StableDiffusionXLPipeline, sdxl_path, "EulerDiscreteScheduler", spec)
    assert torch.allclose(ours.latents, theirs, atol=2e-4, rtol=1e-4), \
        (ours.latents - theirs).abs().max()


def test_decoded_image_equals_diffusers_image(sd_path):
    spec = cell(sd_path, sampler="diffusers:EulerDiscreteScheduler", steps=3)
    ours = render([spec])[0]
    pipe = StableDiffusionPipeline.from_pretrained(sd_path)
    theirs = pipe(spec.prompt, guidance_scale=spec.cfg, num_inference_steps=3, width=32, height=32,
                  generator=torch.Generator("cpu").manual_seed(spec.seed)).images[0]
    diff = np.abs(np.asarray(ours.image, dtype=int) - np.asarray(theirs, dtype=int))
    assert diff.max() <= 1  # uint8 rounding of float-tolerance differences


GRID_SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ SDE", "Heun", "diffusers:DDIMScheduler"]


def _grid(path):
    return [cell(path, sampler=s, steps=n, seed=3 + i, prompt=p)
            for i, (s, n, p) in enumerate(
                (s, n, p) for s in GRID_SAMPLERS for n in (3, 5) for p in ("a cat", "a dog"))]


@pytest.mark.parametrize("max_batch", [1, 3, None])
def test_cell_is_the_same_alone_or_in_any_grid_at_any_batch(sd_path, max_batch):
    grid = _grid(sd_path)
    together = render(grid, RunOptions(max_batch=max_batch))
    for i in (0, 7, len(grid) - 1):
        alone = render([grid[i]])[0]
        assert together[i].ok and alone.ok
        assert torch.allclose(together[i].latents, alone.latents, rtol=1e-4, atol=1e-4), (i, max_batch)
    shuffled = list(reversed(grid))
    again = render(shuffled, RunOptions(max_batch=max_batch))
    for i, spec in enumerate(shuffled):
        j = grid.index(spec)
        assert torch.allclose(again[i].latents, together[j].latents, rtol=1e-4, atol=1e-4)


def test_seed_changes_the_image_and_same_seed_repeats(sd_path):
    a, b, c = render([cell(sd_path, seed=1), cell(sd_path, seed=1), cell(sd_path, seed=2)])
    assert torch.equal(a.latents, b.latents)
    assert (a.latents - c.latents).abs().mean() > 0.1


def test_each_prompt_is_encoded_once_per_grid(sd_path, monkeypatch):
    from pipeline import prompts

    calls = []
    real = prompts.encode

    def counting(model, prompt):
        calls.append(prompt)
        return real(model, prompt)

    monkeypatch.setattr(prompts, "encode", counting)
    render(_grid(sd_path))
    assert sorted(calls) == ["", "a cat", "a dog"]


def test_cache_renders_only_new_cells(sd_path):
    cache = CellCache()
    first = [cell(sd_path, steps=n) for n in (2, 3)]
    render(first, cache=cache)
    seen = []
    results = render(first + [cell(sd_path, steps=4)], RunOptions(on_cell=lambda i, r: seen.append(r)),
                     cache=cache)
    assert [r.cached for r in results] == [True, True, False]
    assert [r.model_calls for r in results][2] == 4
    assert torch.allclose(results[0].latents, render(first[:1])[0].latents, rtol=1e-4, atol=1e-4)
    assert len(seen) == 3


def test_cache_is_bounded_lru(sd_path):
    cache = CellCache(max_cells=2)
    specs = [cell(sd_path, steps=n) for n in (1, 2, 3)]
    results = render(specs, cache=cache)
    model_id = load_model(str(sd_path)).identity
    assert results[0].model_id == model_id
    assert len(cache) == 2
    assert cache.get(specs[0].key(), model_id) is None and cache.get(specs[2].key(), model_id) is not None
    assert cache.get(specs[2].key()) is None  # a key alone, without the model, matches nothing


def test_cache_is_bounded_in_bytes(sd_path):
    from pipeline.cache import result_bytes

    one = render([cell(sd_path, steps=1)], RunOptions(preview_every=1))[0]
    size = result_bytes(one)
    assert size == 32 * 32 * 3 + 4 * 16 * 16 * 4 + 16 * 16 * 3  # image, float32 latents, one preview
    cache = CellCache(max_bytes=2 * size + 10)
    specs = [cell(sd_path, steps=1, seed=s) for s in (1, 2, 3)]
    render(specs, RunOptions(preview_every=1), cache=cache)
    assert len(cache) == 2 and cache.bytes == 2 * size
    model_id = load_model(str(sd_path)).identity
    assert cache.get(specs[0].key(), model_id) is None and cache.get(specs[1].key(), model_id) is not None


def test_cells_stream_as_they_finish_and_progress_counts_calls(sd_path):
    order, progress = [], []
    grid = [cell(sd_path, steps=n) for n in (6, 2, 4)]
    render(grid, RunOptions(on_cell=lambda i, r: order.append(i),
                            on_progress=lambda p: progress.append((p.cells_done, p.calls_done))))
    assert order == [1, 2, 0]  # fewer steps finish first
    assert progress[-1] == (3, 12)
    assert all(b[1] >= a[1] for a, b in zip(progress, progress[1:], strict=False))


def test_stop_between_ticks_keeps_finished_cells(sd_path):
    done = []
    grid = [cell(sd_path, steps=2), cell(sd_path, steps=30)]
    results = render(grid, RunOptions(on_cell=lambda i, r: done.append(i),
                                      should_stop=lambda: bool(done)))
    assert results[0].ok
    assert results[1].error.startswith("stopped by the user at step ") and results[1].image is None
    assert results[1].previews == {}  # none asked for; with preview_every the last ones stay
    assert results[1].model_calls <= 3


def test_nan_in_one_cell_fails_that_cell_only(sd_path, monkeypatch):
    from pipeline import denoiser

    real = denoiser.ModelDenoiser._guide

    def poisoned(rows, out):
        res = real(rows, out)
        return [r * float("nan") if row.cfg == 7.5 else r for row, r in zip(rows, res, strict=True)]

    monkeypatch.setattr(denoiser.ModelDenoiser, "_guide", staticmethod(poisoned))
    results = render([cell(sd_path), cell(sd_path, cfg=7.5), cell(sd_path, seed=9)])
    assert results[0].ok and results[2].ok
    assert not results[1].ok and "NaN or inf at step 1 of 4" in results[1].error


def test_out_of_memory_halves_the_batch_and_gives_the_same_images(sd_path):
    grid = [cell(sd_path, seed=s, steps=3) for s in range(4)]
    reference = render(grid, RunOptions(max_batch=1))
    sizes = []

    def fault(rows: int) -> None:
        sizes.append(rows)
        if rows > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    results = render(grid, RunOptions(max_batch=8, inject_fault=fault))
    assert max(sizes) == 8 and sizes[-1] <= 2
    for a, b in zip(results, reference, strict=True):
        assert torch.allclose(a.latents, b.latents, rtol=1e-4, atol=1e-4)


def test_previews_every_k_steps(sd_path):
    res = render([cell(sd_path, steps=6)], RunOptions(preview_every=2))[0]
    assert sorted(res.previews) == [0, 2, 4, 5]
    p = res.previews[4]
    assert p.dtype == torch.uint8 and p.shape == (16, 16, 3)


def test_size_not_a_multiple_of_the_latent_factor_fails_clearly(sd_path):
    res = render([cell(sd_path, size=33), cell(sd_path)])
    assert "not a multiple of 2" in res[0].error and res[1].ok


def test_default_size_comes_from_the_model(sd_path):
    spec = cell(sd_path)
    unsized = CellSpec(**{**spec.__dict__, "width": None, "height": None})
    res = render([unsized])[0]
    model = load_model(str(sd_path))
    assert (res.spec.width, res.spec.height) == model.default_size
    assert res.image.size == model.default_size


def test_unknown_model_is_a_clear_error(tmp_path):
    from pipeline.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="not found|does not exist|no such"):
        render([cell(tmp_path / "missing")])
