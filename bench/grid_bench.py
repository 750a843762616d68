"""Grid benchmark: one seed-locked sampler x steps grid through the batched engine and cell by cell.

The same grid is rendered twice in one run:

    engine     pipeline.render: every live cell's UNet request batched into
               shared calls, each prompt encoded once, decodes batched;
    per cell   one diffusers StableDiffusionPipeline call per cell, as A1111
               renders a grid: the matching diffusers scheduler, the prompt
               encoded again, one image decoded.

Both paths run diffusers schedulers ("diffusers:<Scheduler>" cells in the
engine), so they compute the same images; the benchmark checks that and prints
the largest latent difference. For each path it prints wall time, UNet forward
calls and rows (counted by wrapping unet.forward), calls/s, rows/s and peak
memory (peak RSS on the CPU, reset per path through /proc/self/clear_refs;
torch.cuda.max_memory_allocated on CUDA), and the speed-up. It also measures
adding a step-count column to a cached grid against rendering that column
alone, and UNet throughput at batch 1..16 rows. --native adds an engine-only
run of the same grid with this project's own samplers.

    .venv/bin/python bench/grid_bench.py --json out/grid_bench.json          # CPU, small model
    python bench/grid_bench.py --device cuda --fp16 --sd15 --json out.json   # GPU, SD 1.5 at 512 px
    .venv/bin/python bench/grid_bench.py --flow sd3 --json out/flow.json   # SD3 / Flux: bench/flow_bench.py

See docs/PERFORMANCE.md for what the models are and the figures measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffusers  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

from bench.models import DEFAULT_CACHE, build_model, parameter_counts  # noqa: E402
from grids.cells import CellSpec  # noqa: E402
from pipeline.cache import CellCache  # noqa: E402
from pipeline.cells import CellResult  # noqa: E402
from pipeline.engine import RunOptions, auto_max_batch  # noqa: E402
from pipeline.models import LoadedModel, load_model  # noqa: E402
from pipeline.render import render  # noqa: E402

DIFFUSERS_SAMPLERS: list[tuple[str, dict[str, Any]]] = [
    ("EulerDiscreteScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("HeunDiscreteScheduler", {}),
    ("DDIMScheduler", {}),
    ("UniPCMultistepScheduler", {}),
]
NATIVE_SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "Heun", "DDIM", "UniPC"]
STEPS = [10, 20, 30, 40]
PROMPT, NEGATIVE, SEED, CFG = "a photo of a cat", "blurry", 1234, 7.0
TARGETS = {"cpu": 1.3, "cuda": 2.5}  # speed-up the engine aims for (reported, not asserted)
COLUMN_TARGET = 1.10  # adding a column costs <= its own work + 10%
THROUGHPUT_ROWS = (1, 2, 8, 16)


# ------------------------------------------------------------------ the grid


def grid(samplers: Sequence[tuple[str, dict[str, Any]]], steps: Sequence[int], model: str,
         size: int, cfg: float = CFG) -> list[CellSpec]:
    """Sampler x steps cells, one prompt, one seed (a seed-locked grid)."""
    return [CellSpec(model=model, prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size,
                     seed=SEED, sampler=name, sampler_options=tuple(sorted(flags.items())),
                     schedule="Automatic", steps=n, cfg=cfg)
            for name, flags in samplers for n in steps]


def diffusers_samplers() -> list[tuple[str, dict[str, Any]]]:
    """The benchmark's diffusers samplers as engine sampler names with their config flags."""
    return [(f"diffusers:{cls}", flags) for cls, flags in DIFFUSERS_SAMPLERS]


def native_samplers() -> list[tuple[str, dict[str, Any]]]:
    """This project's own samplers, no options."""
    return [(name, {}) for name in NATIVE_SAMPLERS]


# ------------------------------------------------------------------ counting, memory, timing


class UNetCounter:
    """Counts a UNet's forward calls, the batch rows they evaluate and the time spent in them,
    by wrapping unet.forward (on CUDA each call is synchronised so its time is its own)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.reset()
        inner = unet.forward

        @functools.wraps(inner)
        def counted(sample, *args, **kwargs):
            sync(sample.device)
            t0 = time.perf_counter()
            out = inner(sample, *args, **kwargs)
            sync(sample.device)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.rows += int(sample.shape[0])
            return out

        unet.forward = counted

    def reset(self) -> None:
        self.calls = self.rows = 0
        self.seconds = 0.0

    def remove(self) -> None:
        """Put the UNet's own forward back."""
        del self.unet.forward


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, ru_maxrss) for this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start or the last reset, in MiB (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PathStats:
    """One measured render: wall time, UNet calls, rows and time inside the UNet, peak memory."""

    wall_s: float
    model_calls: int
    model_rows: int
    unet_s: float
    start_rss_mb: float
    peak_rss_mb: float
    peak_rss_is_per_path: bool
    peak_cuda_mb: float | None

    @property
    def calls_per_s(self) -> float:
        return self.model_calls / self.wall_s

    @property
    def rows_per_s(self) -> float:
        return self.model_rows / self.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "calls_per_s": self.calls_per_s, "rows_per_s": self.rows_per_s,
                "ms_per_row_in_unet": 1000 * self.unet_s / max(self.model_rows, 1),
                "outside_unet_s": self.wall_s - self.unet_s}


def measure(fn: Callable[[], Any], counter: UNetCounter, device: torch.device) -> tuple[PathStats, Any]:
    """Run fn once: its result and its wall time, UNet calls/rows and peak memory."""
    counter.reset()
    sync(device)
    per_path = reset_peak_rss()
    start = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    wall = time.perf_counter() - t0
    cuda_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    stats = PathStats(wall, counter.calls, counter.rows, counter.seconds, start, peak_rss_mb(), per_path,
                      cuda_mb)
    return stats, out


# ------------------------------------------------------------------ the two paths


@dataclass
class EngineRunner:
    """Renders grids of one model, size and guidance scale through pipeline.render."""

    model: str
    size: int
    cfg: float
    loader: Callable[[str], LoadedModel]
    max_batch: int | None = None

    def grid(self, samplers: Sequence[tuple[str, dict[str, Any]]], steps: Sequence[int]) -> list[CellSpec]:
        return grid(samplers, steps, self.model, self.size, self.cfg)

    def results(self, specs: list[CellSpec], cache: CellCache | None = None) -> list[CellResult]:
        """One CellResult per cell; a failed cell stops the benchmark."""
        results = render(specs, RunOptions(max_batch=self.max_batch), cache=cache, loader=self.loader)
        failed = [(r.spec.sampler, r.spec.steps, r.error) for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"engine cells failed: {failed}")
        return results

    def __call__(self, specs: list[CellSpec],
                 cache: CellCache | None = None) -> list[tuple[torch.Tensor, Any]]:
        """(latents, image) per cell."""
        return [(r.latents, r.image) for r in self.results(specs, cache)]


def cell_pipeline(model: LoadedModel) -> StableDiffusionPipeline:
    """A diffusers SD pipeline over the loaded model's own modules (same weights, no copy)."""
    parts = {k: v for k, v in model.pipe.components.items()}
    pipe = StableDiffusionPipeline(**{**parts, "requires_safety_checker": False})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_cell(pipe: StableDiffusionPipeline, base_config: dict[str, Any],
                  spec: CellSpec) -> tuple[torch.Tensor, Any]:
    """One cell as A1111 renders it: a fresh scheduler, the prompts encoded, the image decoded.

    Returns the final latents (caught by a step-end callback) and the image.
    """
    cls = getattr(diffusers, spec.sampler.removeprefix("diffusers:"))
    pipe.scheduler = cls.from_config(base_config, **dict(spec.sampler_options))
    final: dict[str, torch.Tensor] = {}

    def keep(_pipe, _i, _t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    out = pipe(spec.prompt, negative_prompt=spec.negative_prompt or None, guidance_scale=spec.cfg,
               num_inference_steps=spec.steps, width=spec.width, height=spec.height,
               generator=torch.Generator("cpu").manual_seed(spec.seed), callback_on_step_end=keep,
               callback_on_step_end_tensor_inputs=["latents"])
    return final["latents"].float().cpu(), out.images[0]


def per_cell_run(specs: list[CellSpec], pipe: StableDiffusionPipeline,
                 base_config: dict[str, Any]) -> list[tuple[torch.Tensor, Any]]:
    """Every cell through its own pipeline call, one after another."""
    return [pipeline_cell(pipe, base_config, s) for s in specs]


def same_images(a: list[tuple[torch.Tensor, Any]], b: list[tuple[torch.Tensor, Any]],
                tolerance: float) -> dict[str, Any]:
    """Largest latent and 8-bit pixel difference between two renders of the same cells."""
    lat = max(float((x - y).abs().max()) for (x, _), (y, _) in zip(a, b, strict=True))
    pix = max(int(np.abs(np.asarray(p, dtype=int) - np.asarray(q, dtype=int)).max())
              for (_, p), (_, q) in zip(a, b, strict=True))
    return {"max_latent_diff": lat, "max_pixel_diff": pix, "tolerance": tolerance,
            "ok": lat <= tolerance}


# ------------------------------------------------------------------ the other measurements


def add_column(samplers: list[tuple[str, dict[str, Any]]], steps: list[int], run: EngineRunner,
               measure_fn: Callable, repeats: int = 2) -> dict[str, Any]:
    """Time rendering the last step column onto a cached grid of the others vs that column alone.

    The grid of the other columns is rendered once; each repeat then extends a
    fresh cache holding those cells and renders the column alone, alternately,
    and the fastest of each counts (the two see the same machine conditions).
    """
    base_specs, full, column = (run.grid(samplers, steps[:-1]), run.grid(samplers, steps),
                                run.grid(samplers, steps[-1:]))
    base, done = measure_fn(lambda: run.results(base_specs))
    extends, alones = [], []
    for _ in range(max(1, repeats)):
        cache = CellCache()
        for r in done:
            cache.put(r.spec.key(), r)
        extends.append(measure_fn(lambda c=cache: run(full, c))[0])
        alones.append(measure_fn(lambda: run(column))[0])
    extend = min(extends, key=lambda p: p.wall_s)
    alone = min(alones, key=lambda p: p.wall_s)
    return {"base_steps": steps[:-1], "added_steps": steps[-1], "repeats": len(extends),
            "base": base.as_dict(), "extend": extend.as_dict(), "column_alone": alone.as_dict(),
            "extend_walls_s": [p.wall_s for p in extends], "alone_walls_s": [p.wall_s for p in alones],
            "ratio": extend.wall_s / alone.wall_s, "target": COLUMN_TARGET}


@torch.no_grad()
def time_unet(model: LoadedModel, rows: int, size: int, seconds: float = 1.0) -> float:
    """ms per UNet call on `rows` rows of the grid's latent shape (about `seconds` of repeats)."""
    unet, dev, dt = model.unet, model.device, model.dtype
    side = size // model.vae_scale_factor
    x = torch.randn(rows, model.latent_channels, side, side, device=dev, dtype=dt)
    ctx = torch.randn(rows, 77, unet.config.cross_attention_dim, device=dev, dtype=dt)
    t = torch.full((rows,), 500.0, device=dev)
    times = []
    for _ in range(2):  # warm-up, then one call to size the repeats
        t0 = time.perf_counter()
        unet(x, t, encoder_hidden_states=ctx, return_dict=False)
        sync(dev)
        times.append(time.perf_counter() - t0)
    reps = max(2, math.ceil(seconds / max(times[-1], 1e-6)))
    t0 = time.perf_counter()
    for _ in range(reps):
        unet(x, t, encoder_hidden_states=ctx, return_dict=False)
    sync(dev)
    return 1000 * (time.perf_counter() - t0) / reps


def unet_throughput(model: LoadedModel, size: int, rows: Sequence[int] = THROUGHPUT_ROWS,
                    seconds: float = 1.0) -> list[dict[str, float]]:
    """ms per UNet call and per row at several batch sizes: how much batching can gain here."""
    out = []
    for b in rows:
        ms = time_unet(model, b, size, seconds)
        out.append({"rows": b, "ms_per_call": ms, "ms_per_row": ms / b})
    return out


def machine(device: torch.device) -> dict[str, Any]:
    """Where the figures come from."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "device": str(device),
            "load_average": os.getloadavg()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--fp16", action="store_true", help="float16 weights (CUDA only)")
    ap.add_argument("--sd15", action="store_true", help="SD 1.5-architecture model (default: the small one)")
    ap.add_argument("--model", help="an existing diffusers SD folder instead of a built random-weight model")
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_CACHE, help="where built models are kept")
    ap.add_argument("--size", type=int, help="image side in px (default 128; 512 with --sd15)")
    ap.add_argument("--steps", type=int, nargs="+", default=STEPS)
    ap.add_argument("--cfg", type=float, default=CFG)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    ap.add_argument("--max-batch", type=int, help="engine rows per UNet call (default: automatic)")
    ap.add_argument("--tolerance", type=float, help="max latent difference counted as the same image")
    ap.add_argument("--native", action="store_true", help="also time the grid with native samplers")
    ap.add_argument("--no-column", action="store_true", help="skip the add-a-column measurement")
    ap.add_argument("--column-repeats", type=int, default=2, help="repeats of the add-a-column timing")
    ap.add_argument("--probe-seconds", type=float, default=1.0,
                    help="time spent per batch size in the UNet throughput probe")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--flow", choices=("sd3", "flux"),
                    help="benchmark a flow model instead (bench/flow_bench.py: Euler vs its own pipeline)")
    args = ap.parse_args(argv)
    if args.flow:
        return args
    if args.fp16 and args.device == "cpu":
        ap.error("--fp16 needs --device cuda")
    args.size = args.size or (512 if args.sd15 else 128)
    args.tolerance = args.tolerance or (5e-2 if args.fp16 else 1e-3)
    return args


def model_info(path: str, args: argparse.Namespace, model: LoadedModel) -> dict[str, Any]:
    cfg = model.unet.config
    return {"path": path, "kind": "given" if args.model else ("sd15" if args.sd15 else "small"),
            "dtype": str(model.dtype), "size_px": args.size,
            "latent_shape": [model.latent_channels, *(2 * [args.size // model.vae_scale_factor])],
            "unet": {"block_out_channels": list(cfg.block_out_channels),
                     "layers_per_block": cfg.layers_per_block,
                     "cross_attention_dim": cfg.cross_attention_dim,
                     "attention_head_dim": cfg.attention_head_dim},
            "parameters": parameter_counts(Path(path))}


def print_path(label: str, s: PathStats) -> None:
    mem = (f"peak RSS {s.peak_rss_mb:6.0f} MiB ({s.peak_rss_mb - s.start_rss_mb:+.0f})"
           + ("" if s.peak_rss_is_per_path else " (process peak)"))
    if s.peak_cuda_mb is not None:
        mem += f", peak CUDA {s.peak_cuda_mb:8.0f} MiB"
    print(f"{label:10s} {s.wall_s:8.2f} s  {s.model_calls:5d} UNet calls ({s.calls_per_s:6.2f}/s)  "
          f"{s.model_rows:5d} rows ({s.rows_per_s:6.2f}/s)  in UNet {s.unet_s:7.2f} s  {mem}", flush=True)


def print_summary(report: dict[str, Any]) -> None:
    same, col = report["same_images"], report.get("add_column")
    print(f"\nspeed-up (per-cell wall / engine wall): {report['speedup']:.2f}x "
          f"(target >= {report['target_speedup']}x on {report['machine']['device']})")
    print(f"same images: max latent diff {same['max_latent_diff']:.2e} (tolerance {same['tolerance']:g}), "
          f"max pixel diff {same['max_pixel_diff']} -> {'OK' if same['ok'] else 'DIFFERENT'}")
    if col:
        print(f"add a {col['added_steps']}-step column to a cached grid: {col['extend']['wall_s']:.2f} s vs "
              f"{col['column_alone']['wall_s']:.2f} s alone -> ratio {col['ratio']:.3f} "
              f"(target <= {col['target']})")
    print("UNet throughput: " + ", ".join(f"batch {t['rows']}: {t['ms_per_row']:.1f} ms/row"
                                          for t in report["unet_throughput"]))
    m = report["machine"]
    print(f"torch threads {m['torch_threads']} (interop {m['torch_interop_threads']}), "
          f"load average at start {m['load_average'][0]:.2f}", flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the figures; return (and optionally write) them as a dict."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.flow:
        from bench.flow_bench import run_flow

        return run_flow(args)
    device = torch.device(args.device)
    dtype = torch.float16 if args.fp16 else torch.float32
    path = args.model or str(build_model("sd15" if args.sd15 else "small", args.model_dir))
    loader = functools.partial(load_model, device=device, dtype=dtype)
    model = loader(path)
    device = model.device
    report: dict[str, Any] = {"command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                              "machine": machine(device), "model": model_info(path, args, model)}

    run = EngineRunner(path, args.size, args.cfg, loader, args.max_batch)
    pipe, base_config = cell_pipeline(model), dict(model.pipe.scheduler.config)
    counter = UNetCounter(model.unet)
    try:
        report.update(_measure_all(args, model, run, pipe, base_config, counter, device))
    finally:
        counter.remove()
    print_summary(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return report


def _measure_all(args, model, run, pipe, base_config, counter, device) -> dict[str, Any]:
    """Warm up, then the throughput probe, both paths, the comparison, the column and native runs."""
    specs = run.grid(diffusers_samplers(), args.steps)
    warm = run.grid(diffusers_samplers()[:2], [2])
    run(warm)
    per_cell_run(warm[:1], pipe, base_config)
    latent_px = (args.size // model.vae_scale_factor) ** 2
    out: dict[str, Any] = {
        "grid": {"samplers": [f"{n} {f}" if f else n for n, f in diffusers_samplers()],
                 "steps": list(args.steps), "cells": len(specs), "cfg": args.cfg, "seed": SEED,
                 "prompt": PROMPT, "negative_prompt": NEGATIVE},
        "max_batch": args.max_batch or f"auto ({auto_max_batch(device, latent_px)})",
        "unet_throughput": unet_throughput(model, args.size, seconds=args.probe_seconds),
    }
    print(f"{len(specs)} cells at {args.size}px on {device}, {torch.get_num_threads()} threads", flush=True)
    measure_fn = functools.partial(measure, counter=counter, device=device)
    engine, ours = measure_fn(lambda: run(specs))
    print_path("engine", engine)
    cells, theirs = measure_fn(lambda: per_cell_run(specs, pipe, base_config))
    print_path("per cell", cells)
    out.update({"engine": engine.as_dict(), "per_cell": cells.as_dict(),
                "speedup": cells.wall_s / engine.wall_s, "target_speedup": TARGETS[device.type],
                "same_images": same_images(ours, theirs, args.tolerance)})
    if not args.no_column and len(args.steps) > 1:
        out["add_column"] = add_column(diffusers_samplers(), list(args.steps), run, measure_fn,
                                       args.column_repeats)
    if args.native:
        native, _ = measure_fn(lambda: run(run.grid(native_samplers(), args.steps)))
        print_path("native", native)
        out["native"] = {"samplers": NATIVE_SAMPLERS, **native.as_dict()}
    return out


if __name__ == "__main__":
    main()
