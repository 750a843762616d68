"""Capacity measurements for bench/gpu_check.py: memory against the engine's estimate,
throughput by batch size, and the flow models (SD3, Flux) that need both.

    memory_item      the engine's per-row memory estimate (auto_max_batch) against the measured
                     peak of one model call at several batch sizes
    throughput_item  ms per model call and per row at several batch sizes
    flow_support     whether this build's engine can run flow models
    flow_item        a flow model's grid benchmark (gpu_parts.flow_grid_item), memory and throughput
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import diffusers
import numpy as np
import torch

from bench.gpu_parts import (
    ACTIVATION_BYTES_PER_LATENT_PIXEL,
    FREE_SHARE,
    MIB,
    Clock,
    LoadedModel,
    OutOfTime,
    auto_max_batch,
    dtype_name,
    flow_grid_item,
    free_memory,
    sync,
    time_call,
)


def estimated_row_bytes(latent_pixels: int, dtype: torch.dtype) -> float:
    """The engine's per-row activation estimate (pipeline.engine.auto_max_batch's formula)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return latent_pixels * ACTIVATION_BYTES_PER_LATENT_PIXEL * itemsize / 2


@torch.no_grad()
def peak_bytes(call: Callable[[], Any], device: torch.device) -> float:
    """Bytes of tensors one call holds at its peak above what was allocated before it: CUDA's
    max_memory_allocated, or on the CPU the same figure rebuilt from the torch profiler's memory
    records (each op's allocations and frees, summed in time order)."""
    free_memory()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        call()
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        call()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return float(peak)


@torch.no_grad()
def memory_item(make_call: Callable[[int], Callable[[], Any]], device: torch.device, dtype: torch.dtype,
                latent_pixels: int, batches: Sequence[int], clock: Clock, out: dict[str, Any]) -> None:
    """Measured peak per batch size, a least-squares line through them (fixed + per-row bytes), and
    the engine's estimate per row and the batch limit it picks now."""
    est = estimated_row_bytes(latent_pixels, dtype)
    out.update({"estimate_per_row_mib": est / MIB, "latent_pixels": latent_pixels, "dtype": dtype_name(dtype),
                "auto_max_batch": auto_max_batch(device, latent_pixels, dtype),
                "measured_with": "torch.cuda.max_memory_allocated" if device.type == "cuda" else
                "torch profiler memory records (CPU: live tensor bytes; the estimate is made for CUDA, "
                "and on the CPU the engine uses a fixed 16 rows)", "batches": []})
    make_call(batches[0])()  # lazy allocations (kernels, workspaces) before the first reading
    for rows in batches:
        clock.check(0.5, f"memory at {rows} rows")
        peak = peak_bytes(make_call(rows), device)
        out["batches"].append({"rows": rows, "peak_mib": peak / MIB, "per_row_mib": peak / rows / MIB,
                               "estimate_over_measured": est / max(peak / rows, 1.0)})
    points = [(b["rows"], b["peak_mib"]) for b in out["batches"]]
    if len(points) >= 2:
        slope, fixed = np.polyfit([r for r, _ in points], [m for _, m in points], 1)
        out["fit"] = {"per_row_mib": float(slope), "fixed_mib": float(fixed),
                      "estimate_over_measured": est / MIB / float(slope) if slope > 0 else None}
    if device.type == "cuda" and out.get("fit", {}).get("per_row_mib", 0) > 0:
        free, total = torch.cuda.mem_get_info(device)
        out["free_mib"], out["total_mib"] = free / MIB, total / MIB
        out["rows_that_fit_by_measurement"] = int(FREE_SHARE * free / (out["fit"]["per_row_mib"] * MIB))


def throughput_item(make_call: Callable[[int], Callable[[], Any]], device: torch.device,
                    batches: Sequence[int], seconds: float, clock: Clock, out: dict[str, Any]) -> None:
    """ms per call, ms per row and rows/s at each batch size (the most batching can gain); an out-of-memory
    batch ends the list, recorded."""
    out["batches"] = []
    for rows in batches:
        clock.check(0.2, f"throughput at {rows} rows")
        try:
            ms = time_call(make_call(rows), device, seconds, clock, f"throughput at {rows} rows")
        except torch.OutOfMemoryError:
            free_memory()
            out["batches"].append({"rows": rows, "error": "out of memory"})
            break
        out["batches"].append({"rows": rows, "ms_per_call": ms, "ms_per_row": ms / rows,
                               "rows_per_s": 1000 * rows / ms})


# ------------------------------------------------------------------ (4) flow models


def flow_support() -> dict[str, Any]:
    """Whether this build's engine can run flow models: pipeline.flow_models (the flow families and
    their facts) and an SD3 or Flux pipeline among those pipeline.model_sources loads."""
    try:
        flow = importlib.import_module("pipeline.flow_models")
        sources = importlib.import_module("pipeline.model_sources")
    except ImportError as err:
        return {"supported": False, "reason": f"no pipeline.flow_models ({err})"}
    families = getattr(flow, "FLOW_PIPELINES", {})
    loadable = sorted(n for n in getattr(sources, "PIPELINES", {}) if n in families)
    if not loadable:
        return {"supported": False, "reason": "no SD3 or Flux pipeline in pipeline.model_sources.PIPELINES"}
    return {"supported": True, "pipelines": loadable}


def flow_call(model: torch.nn.Module, rows: int, px: int, text_tokens: int) -> Callable[[], Any]:
    """One transformer call on `rows` rows of a px x px image (latent factor 8): SD3 takes the latent
    as an image and patchifies it; Flux takes 2x2-packed latent tokens with their position ids."""
    cfg, p = model.config, next(model.parameters())
    dev, dt, side = p.device, p.dtype, px // 8
    rand = lambda *shape: torch.randn(*shape, device=dev, dtype=dt)  # noqa: E731
    txt, pooled = rand(rows, text_tokens, cfg.joint_attention_dim), rand(rows, cfg.pooled_projection_dim)
    if not isinstance(model, diffusers.FluxTransformer2DModel):
        x, t = rand(rows, cfg.in_channels, side, side), torch.full((rows,), 500.0, device=dev, dtype=dt)
        return lambda: model(hidden_states=x, encoder_hidden_states=txt, pooled_projections=pooled,
                             timestep=t, return_dict=False)
    h = side // 2
    img_ids = torch.zeros(h * h, 3, device=dev, dtype=dt)
    img_ids[:, 1] = torch.arange(h, device=dev).repeat_interleave(h)
    img_ids[:, 2] = torch.arange(h, device=dev).repeat(h)
    txt_ids = torch.zeros(text_tokens, 3, device=dev, dtype=dt)
    x, t = rand(rows, h * h, cfg.in_channels), torch.full((rows,), 0.5, device=dev, dtype=dt)
    guidance = torch.full((rows,), 3.5, device=dev, dtype=dt) if cfg.guidance_embeds else None
    return lambda: model(hidden_states=x, encoder_hidden_states=txt, pooled_projections=pooled, timestep=t,
                         img_ids=img_ids, txt_ids=txt_ids, guidance=guidance, return_dict=False)


def flow_item(model: LoadedModel, px: int, text_tokens: int, step_sets: Sequence[Sequence[int]],
              tolerance: float, memory_batches: Sequence[int], throughput_batches: Sequence[int],
              seconds: float, clock: Clock, out: dict[str, Any]) -> None:
    """A flow model: the grid benchmark (gpu_parts.flow_grid_item) in up to 60 % of the item's time,
    then its transformer's memory against the engine's estimate and its throughput, as for the UNets."""
    net = model.unet
    out["model"] = {"family": model.family, "size_px": px, "text_tokens": text_tokens,
                    "dtype": dtype_name(model.dtype), "parameters": sum(p.numel() for p in net.parameters())}
    grid: dict[str, Any] = {}
    out["grid"] = grid
    try:
        flow_grid_item(model, px, step_sets, tolerance, Clock(time.monotonic() + 0.6 * clock.left()), grid)
        grid["status"] = "ok"
    except OutOfTime as err:
        grid.update(status="partial" if "engine" in grid else "skipped", reason=f"over budget: {err}")
    except Exception as err:  # noqa: BLE001 (a finding; memory and throughput still run)
        grid.update(status="error", error=f"{type(err).__name__}: {err}")
    make = lambda rows: flow_call(net, rows, px, text_tokens)  # noqa: E731
    out["memory"] = {}
    memory_item(make, model.device, model.dtype, (px // 8) ** 2, memory_batches, clock, out["memory"])
    out["throughput"] = {}
    throughput_item(make, model.device, throughput_batches, seconds, clock, out["throughput"])
