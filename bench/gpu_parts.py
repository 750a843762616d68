"""The rendering measurements bench/gpu_check.py makes, and what all its measurements share.

    grid_item        the grid benchmark: pipeline.render against one diffusers pipeline call per
                     cell on the same cells, with the same-image check (bench/grid_bench.py's paths)
    precision_item   the same cells rendered in float16 and bfloat16 against float32
    Clock, time_call, unet_call, random_model   an item's deadline, timing one model call, the
                     models (built in memory on the device with seeded random weights, bench/models.py)

bench/gpu_capacity.py has memory, throughput and the flow models. Every item function takes a
Clock and fills an `out` dict as it goes, so an item cut short by its budget or an error still
reports what it measured. This module holds the only imports of the engine's API.
"""

from __future__ import annotations

import functools
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch

# The grid benchmark's paths and counters, the models, and the engine's API. These are the only
# imports of the project's packages (the layout may move; only these lines follow it).
from bench import grid_bench as gb
from bench.models import build_flow_pipeline, build_pipeline
from core.cells import CellSpec
from pipeline.engine import RunOptions
from pipeline.memory import (  # noqa: F401 (the first two are gpu_capacity's)
    ACTIVATION_BYTES_PER_LATENT_PIXEL,
    FREE_SHARE,
    auto_max_batch,
)
from pipeline.models import LoadedModel
from pipeline.models import _describe as describe_model
from pipeline.models import _place as place_model
from pipeline.render import render
from samplers.plan import denoiser_calls

PRECISION_SAMPLERS: list[tuple[str, dict[str, Any]]] = [("Euler", {}), ("DPM++ 2M", {}), ("Euler a", {})]
MIB = 2**20


class OutOfTime(Exception):
    """An item's time budget ran out (or would, by the estimate) before it finished."""


@dataclass
class Clock:
    """An item's deadline (time.monotonic seconds)."""

    deadline: float

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.left() <= 0

    def check(self, need: float = 0.0, what: str = "") -> None:
        """Raise OutOfTime unless `need` seconds are left."""
        if self.left() < need:
            raise OutOfTime(f"{what}: needs ~{need:.0f} s, {max(0.0, self.left()):.0f} s left of its budget")


def sync(device: torch.device) -> None:
    gb.sync(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ models


def random_model(kind: str, device: torch.device, dtype: torch.dtype, tokenizer_dir: Path) -> LoadedModel:
    """A `bench.models.PIPELINE_CONFIGS` (SD 1.5 / SDXL) or `FLOW_CONFIGS` (SD3 / Flux) pipeline built
    on `device`, cast to `dtype` and placed as pipeline.models.load_model places a loaded one
    (SDXL's VAE stays float32 under float16, SDPA)."""
    flow = kind.split("-")[0] in ("sd3", "flux")
    pipe = (build_flow_pipeline if flow else build_pipeline)(kind, device, tokenizer_dir)
    pipe.to(dtype=dtype)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.train(False)  # eval mode, as from_pretrained leaves them
    # a path that names no file: the model's identity matches nothing else
    model = describe_model(f"random:{kind}", pipe, device, dtype, Path(f"<random {kind}>"), ())
    place_model(model)
    return model


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def vae_dtype(model: LoadedModel) -> str:
    return dtype_name(next(model.vae.parameters()).dtype)


# ------------------------------------------------------------------ timing one call


def unet_call(model: LoadedModel, rows: int, px: int) -> Callable[[], Any]:
    """One UNet call on `rows` rows of a px x px image's latents, inputs made once (SDXL's extra
    conditioning included)."""
    unet, dev, dt = model.unet, model.device, model.dtype
    side, cfg = px // model.vae_scale_factor, unet.config
    x = torch.randn(rows, model.latent_channels, side, side, device=dev, dtype=dt)
    ctx = torch.randn(rows, 77, cfg.cross_attention_dim, device=dev, dtype=dt)
    t = torch.full((rows,), 500.0, device=dev)
    extra = None
    if model.family == "sdxl":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        ids = torch.tensor([[px, px, 0, 0, px, px]], device=dev, dtype=dt).repeat(rows, 1)
        extra = {"text_embeds": torch.randn(rows, pooled, device=dev, dtype=dt), "time_ids": ids}
    return lambda: unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=extra, return_dict=False)


@torch.no_grad()
def time_call(call: Callable[[], Any], device: torch.device, seconds: float, clock: Clock,
              what: str) -> float:
    """ms per call: a warm-up call, one to size the repeats, then about `seconds` of repeats."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - t0)
    reps = max(1, math.ceil(seconds / max(times[-1], 1e-6)))
    clock.check(reps * times[-1], what)
    t0 = time.perf_counter()
    for _ in range(reps):
        call()
    sync(device)
    return 1000 * (time.perf_counter() - t0) / reps


class Counter(gb.UNetCounter):
    """bench.grid_bench.UNetCounter for any network: the flow transformers take keywords only."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.unet = net
        self.reset()
        inner = net.forward

        @functools.wraps(inner)
        def counted(*args, **kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            sync(x.device)
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            sync(x.device)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.rows += int(x.shape[0])
            return out

        net.forward = counted


# ------------------------------------------------------------------ (1) the grid benchmark


def cell_pipeline(model: LoadedModel):
    """A diffusers pipeline of the model's own class over its modules (same weights, no copy)."""
    if model.family != "sdxl":
        return gb.cell_pipeline(model)
    pipe = diffusers.StableDiffusionXLPipeline(**model.pipe.components, force_zeros_for_empty_prompt=True,
                                               add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sdxl_cell(pipe, base_config: dict[str, Any], spec: CellSpec) -> tuple[torch.Tensor, Any]:
    """One SDXL cell through the pipeline, to its final latents; decoded here in the VAE's own
    dtype. diffusers' SDXL pipeline decodes a float16 UNet's latents with a float32 VAE only by
    upcasting a float16 VAE itself; given the float32 VAE the engine keeps, it would feed it
    float16 latents (a dtype error), so the decode is done as its upcast path does it."""
    cls = getattr(diffusers, spec.sampler.removeprefix("diffusers:"))
    pipe.scheduler = cls.from_config(base_config, **dict(spec.sampler_options))
    latents = pipe(spec.prompt, negative_prompt=spec.negative_prompt or None, guidance_scale=spec.cfg,
                   num_inference_steps=spec.steps, width=spec.width, height=spec.height,
                   generator=torch.Generator("cpu").manual_seed(spec.seed), output_type="latent").images
    vae = pipe.vae
    image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return latents.float().cpu(), pipe.image_processor.postprocess(image, output_type="pil")[0]


def engine_render(specs: list[CellSpec], model: LoadedModel, clock: Clock) -> Render:
    """(latents, image) per cell through pipeline.render; stops between ticks when the clock runs out."""
    results = render(specs, RunOptions(should_stop=clock.expired), loader=lambda _name: model)
    if clock.expired():
        raise OutOfTime("the engine path ran out of its budget")
    failed = [(r.spec.sampler, r.spec.steps, r.error) for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"engine cells failed: {failed}")
    return [(r.latents.float().cpu(), r.image) for r in results]


Render = list[tuple[torch.Tensor, Any]]  # (final latents on the CPU, PIL image) per cell


def per_cell_render(specs: list[CellSpec], model: LoadedModel, clock: Clock) -> Render:
    """Every cell through its own diffusers pipeline call, one after another."""
    pipe, base = cell_pipeline(model), dict(model.pipe.scheduler.config)
    out = []
    for spec in specs:
        if clock.expired():
            raise OutOfTime(f"the per-cell path ran out of its budget after {len(out)} of {len(specs)} cells")
        cell = sdxl_cell(pipe, base, spec) if model.family == "sdxl" else gb.pipeline_cell(pipe, base, spec)
        out.append(cell)
    return out


def grid_cost(model: LoadedModel, px: int, clock: Clock) -> dict[str, float]:
    """Seconds per 2-row UNet call, per row of a big batch, and per image decode: the grid's price list."""
    dev = model.device
    big = min(16, auto_max_batch(dev, (px // model.vae_scale_factor) ** 2, model.dtype))
    t2 = time_call(unet_call(model, 2, px), dev, 0.0, clock, "cost probe") / 1000
    tbig = time_call(unet_call(model, big, px), dev, 0.0, clock, "cost probe") / 1000 / big
    z = torch.randn(1, model.latent_channels, px // model.vae_scale_factor, px // model.vae_scale_factor)
    t_dec = time_call(lambda: model.vae.decode(z.to(dev, next(model.vae.parameters()).dtype)), dev, 0.0,
                      clock, "cost probe") / 1000
    return {"s_per_call_2_rows": t2, "s_per_row_batched": tbig, "batched_rows": big, "s_per_decode": t_dec}


def grid_estimate(specs: list[CellSpec], cost: dict[str, float]) -> float:
    """Seconds both paths should take: per cell, one 2-row call per denoiser call; the engine, its rows
    at the batched price; a decode per cell in each; 30 % for everything else."""
    calls = sum(denoiser_calls(s) for s in specs)
    per_cell = calls * cost["s_per_call_2_rows"]
    engine = 2 * calls * cost["s_per_row_batched"]
    return 1.3 * (per_cell + engine + 2 * len(specs) * cost["s_per_decode"])


def grid_item(model: LoadedModel, px: int, step_sets: Sequence[Sequence[int]], tolerance: float,
              clock: Clock, out: dict[str, Any]) -> None:
    """Warm up, price the grid, take the largest step set that fits the budget, render it both ways;
    `tolerance` is the same-image check's, relative to the largest latent value."""
    samplers = gb.diffusers_samplers()
    specs_for = lambda steps: gb.grid(samplers, steps, model.name, px)  # noqa: E731
    out.update({"model": model_facts(model, px), "tolerance": tolerance})
    warm = specs_for([2])[:2]
    engine_render(warm, model, clock)
    per_cell_render(warm[:1], model, clock)
    cost = grid_cost(model, px, clock)
    out["cost"] = cost
    fits = [steps for steps in step_sets if grid_estimate(specs_for(steps), cost) <= clock.left()]
    if not fits:
        need = grid_estimate(specs_for(step_sets[-1]), cost)
        raise OutOfTime(f"even steps {list(step_sets[-1])} need ~{need:.0f} s, {clock.left():.0f} s left")
    steps = list(fits[0])
    specs = specs_for(steps)
    out["grid"] = {"samplers": [n for n, _ in samplers], "steps": steps, "cells": len(specs),
                   "cfg": gb.CFG, "seed": gb.SEED, "estimate_s": grid_estimate(specs, cost),
                   "skipped_step_sets": [list(s) for s in step_sets[: step_sets.index(fits[0])]]}
    counter = Counter(model.unet)
    try:
        measure = lambda fn: gb.measure(fn, counter, model.device)  # noqa: E731
        engine, ours = measure(lambda: engine_render(specs, model, clock))
        out["engine"] = engine.as_dict()
        cells, theirs = measure(lambda: per_cell_render(specs, model, clock))
        out["per_cell"] = cells.as_dict()
    finally:
        counter.remove()
    out["speedup"] = cells.wall_s / engine.wall_s
    out["target_speedup"] = gb.TARGETS[model.device.type]
    out["same_images"] = {**same_images(ours, theirs, tolerance),
                          "cells": [f"{s.sampler.removeprefix('diffusers:')} {s.steps}" for s in specs]}


def same_images(ours: Render, theirs: Render, tolerance: float) -> dict[str, Any]:
    """The largest latent difference between two renders of the same cells, relative to the largest
    latent value (random weights make latents of any scale), per cell and overall; same when it is
    within `tolerance`. Also the largest 8-bit pixel difference."""
    diffs = [float((x - y).abs().max()) for (x, _), (y, _) in zip(ours, theirs, strict=True)]
    scale = max(float(x.abs().max()) for x, _ in theirs)
    pixels = gb.same_images(ours, theirs, tolerance)["max_pixel_diff"]
    relative = max(diffs) / max(scale, 1e-12)
    return {"max_latent_diff": max(diffs), "max_latent_value": scale, "relative_diff": relative,
            "tolerance": tolerance, "ok": relative <= tolerance, "max_pixel_diff": pixels,
            "per_cell_max_latent_diff": diffs}


def model_facts(model: LoadedModel, px: int) -> dict[str, Any]:
    side = px // model.vae_scale_factor
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"family": model.family, "size_px": px, "latent_shape": [model.latent_channels, side, side],
            "dtype": dtype_name(model.dtype), "vae_dtype": vae_dtype(model),
            "unet_parameters": count(model.unet), "vae_parameters": count(model.vae)}


# ------------------------------------------------------------------ (2) precision


def compare(ref: list[tuple[torch.Tensor, Any]], got: list[tuple[torch.Tensor, Any]]) -> dict[str, Any]:
    """Latent and 8-bit pixel differences of a render against the float32 reference, cell by cell."""
    lat = [(g - r).abs() for (r, _), (g, _) in zip(ref, got, strict=True)]
    pix = [np.abs(np.asarray(p, dtype=int) - np.asarray(q, dtype=int)) for (_, p), (_, q) in zip(ref, got,
                                                                                                   strict=True)]
    scale = float(torch.cat([r.abs().flatten() for r, _ in ref]).mean())
    mean = float(torch.cat([d.flatten() for d in lat]).mean())
    return {"max_latent_diff": max(float(d.max()) for d in lat), "mean_latent_diff": mean,
            "mean_latent_diff_relative": mean / max(scale, 1e-12),
            "max_pixel_diff": int(max(p.max() for p in pix)),
            "mean_pixel_diff": float(np.mean([p.mean() for p in pix])),
            "finite": all(bool(torch.isfinite(g).all()) for g, _ in got)}


def precision_item(build: Callable[[torch.dtype], LoadedModel], px: int, steps: int,
                   dtypes: Sequence[torch.dtype], clock: Clock, out: dict[str, Any]) -> None:
    """The same cells (native samplers, one step count) in float32 and then each of `dtypes`. The
    float32 reference runs with TF32 off (cuDNN would otherwise use it for convolutions)."""
    model = build(torch.float32)
    specs = gb.grid(PRECISION_SAMPLERS, [steps], model.name, px)
    out["cells"] = {"samplers": [n for n, _ in PRECISION_SAMPLERS], "steps": steps, "size_px": px}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        t0 = time.perf_counter()
        ref = engine_render(specs, model, clock)
        out["float32_s"] = time.perf_counter() - t0
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    del model
    free_memory()
    for dt in dtypes:
        out[dtype_name(dt)] = reduced_precision(build, dt, specs, ref, clock, out["float32_s"])


def reduced_precision(build: Callable[[torch.dtype], LoadedModel], dt: torch.dtype, specs: list[CellSpec],
                      ref: Render, clock: Clock, float32_s: float) -> dict[str, Any]:
    """One dtype's render of the cells against the float32 reference; an error (an op without a
    kernel for the dtype) is recorded as this dtype's finding."""
    clock.check(float32_s / 4, f"{dtype_name(dt)} render")
    model = None
    try:
        model = build(dt)
        t0 = time.perf_counter()
        got = engine_render(specs, model, clock)  # the same model name: the loader hands this model
        found = {"seconds": time.perf_counter() - t0, "vae_dtype": vae_dtype(model), **compare(ref, got)}
        if model.family == "sdxl" and dt == torch.float16:
            found["vae_in_float16"] = vae_half_decode(model, ref)
        return found
    except OutOfTime:
        raise
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"}
    finally:
        del model
        free_memory()


@torch.no_grad()
def vae_half_decode(model: LoadedModel, ref: list[tuple[torch.Tensor, Any]]) -> dict[str, Any]:
    """SDXL's VAE upcast, tested: the float32 reference latents decoded by the VAE cast to float16
    (what the engine avoids), against the float32 decode of the same latents."""
    vae = model.vae
    original = next(vae.parameters()).dtype
    try:
        vae.to(torch.float16)
        z = torch.cat([r for r, _ in ref]).to(model.device, torch.float16) / vae.config.scaling_factor
        half = vae.decode(z, return_dict=False)[0].float()
        vae.to(torch.float32)
        full = vae.decode(z.float(), return_dict=False)[0]
    finally:
        vae.to(original)
    finite = bool(torch.isfinite(half).all())
    diff = (half - full).abs().nan_to_num(float("inf"))
    return {"finite": finite, "max_abs_diff": float(diff.max()),
            "max_abs_value": float(half.abs().nan_to_num(0).max())}


# ------------------------------------------------------------------ (4) the flow models' grid


def flow_cells(model: LoadedModel, px: int, steps: Sequence[int]) -> list[CellSpec]:
    """Native Euler cells on a flow model: SD3 with CFG 4 and a negative prompt (2 rows a call), Flux
    dev with its distilled guidance only (1 row)."""
    cfg, negative = (4.0, gb.NEGATIVE) if model.family == "sd3" else (1.0, "")
    return [CellSpec(model=model.name, prompt=gb.PROMPT, negative_prompt=negative, width=px, height=px,
                     seed=gb.SEED, sampler="Euler", sampler_options=(), schedule="Automatic", steps=n,
                     cfg=cfg) for n in steps]


def flow_pipeline_render(specs: list[CellSpec], model: LoadedModel, clock: Clock) -> Render:
    """Every cell through the model's own StableDiffusion3Pipeline / FluxPipeline call (images only:
    Flux's pipeline returns packed latents)."""
    out = []
    for spec in specs:
        if clock.expired():
            raise OutOfTime(f"the per-cell path ran out of its budget after {len(out)} of {len(specs)} cells")
        sd3 = model.family == "sd3"
        kw = {"guidance_scale": spec.cfg, "negative_prompt": spec.negative_prompt} if sd3 else {}
        image = model.pipe(spec.prompt, num_inference_steps=spec.steps, height=spec.height, width=spec.width,
                           generator=torch.Generator("cpu").manual_seed(spec.seed), **kw).images[0]
        out.append((torch.zeros(()), image))
    return out


def flow_grid_item(model: LoadedModel, px: int, step_sets: Sequence[Sequence[int]], tolerance: float,
                   clock: Clock, out: dict[str, Any]) -> None:
    """The grid benchmark on a flow model: native Euler cells through pipeline.render against one
    pipeline call per cell; same images when the mean 8-bit pixel difference of every cell is within
    `tolerance` (a fraction of 255; the flow tests allow 2/255 in float32)."""
    warm = flow_cells(model, px, [2])
    engine_render(warm, model, clock)
    flow_pipeline_render(warm, model, clock)
    t0 = time.perf_counter()
    flow_pipeline_render(warm, model, clock)
    per_step = (time.perf_counter() - t0) / 3  # 2 steps + prompt encoding and decoding
    estimate = lambda specs: 2.3 * per_step * sum(s.steps + 1 for s in specs)  # noqa: E731
    fits = [steps for steps in step_sets if estimate(flow_cells(model, px, steps)) <= clock.left()]
    if not fits:
        need = estimate(flow_cells(model, px, step_sets[-1]))
        raise OutOfTime(f"even steps {list(step_sets[-1])} need ~{need:.0f} s, {clock.left():.0f} s left")
    specs = flow_cells(model, px, fits[0])
    out["cells"] = {"sampler": "Euler", "steps": list(fits[0]), "cells": len(specs), "cfg": specs[0].cfg,
                    "seed": gb.SEED, "estimate_s": estimate(specs), "s_per_pipeline_step": per_step}
    counter = Counter(model.unet)
    try:
        measure = lambda fn: gb.measure(fn, counter, model.device)  # noqa: E731
        engine, ours = measure(lambda: engine_render(specs, model, clock))
        out["engine"] = engine.as_dict()
        cells, theirs = measure(lambda: flow_pipeline_render(specs, model, clock))
        out["per_cell"] = cells.as_dict()
    finally:
        counter.remove()
    out["speedup"] = cells.wall_s / engine.wall_s
    diffs = [np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
             for (_, a), (_, b) in zip(ours, theirs, strict=True)]
    worst = max(float(d.mean()) / 255 for d in diffs)
    out["same_images"] = {"max_mean_pixel_diff": worst, "max_pixel_diff": int(max(d.max() for d in diffs)),
                          "tolerance": tolerance, "ok": worst <= tolerance,
                          "cells": [f"Euler {s.steps}" for s in specs]}
