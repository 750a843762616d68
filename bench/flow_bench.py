"""Flow-model grid benchmark (`bench/grid_bench.py --flow sd3|flux`): engine vs one pipeline call per cell.

The same seed-locked grid (sampler/schedule rows x step counts) is rendered twice:

    engine     pipeline.render: every live cell's transformer request batched into shared
               calls, each prompt encoded once, decodes batched;
    per cell   one StableDiffusion3Pipeline / FluxPipeline call per cell: the prompt encoded
               again, the pipeline's own FlowMatchEulerDiscreteScheduler, one image decoded.

Every row has an exact pipeline equivalent, so both paths compute the same images (the largest
latent difference is printed): "Euler" on "Automatic" is the pipeline's default; "Euler" on
"Simple" is the pipeline run with sigmas = linspace(1, 1/N, N) (step counts divide 1000, where
Simple on the shifted table is exactly that). SD3 runs with CFG 7 (its pipeline's default, two
rows a call); Flux with CFG 1 and its distilled guidance 3.5 (one row a call).

Models are built in memory with seeded random weights (never saved): on the CPU a small SD3- or
Flux-layout transformer at 64 px (256 image tokens) with tiny text encoders; on CUDA the
SD3-Medium (2.0 B) or FLUX.1-dev (11.9 B) transformer with SD3's VAE and tiny text encoders
(text encoding is a one-off per prompt, not what a grid's speed depends on).

    .venv/bin/python bench/grid_bench.py --flow sd3 --json out/flow_sd3.json
    python bench/grid_bench.py --flow flux --device cuda --json out/flow_flux.json     # bf16
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.models import FLOW_CONFIGS, _seeded_on
from grids.cells import CellSpec
from pipeline.engine import RunOptions
from pipeline.flow_denoiser import unpack
from pipeline.models import LoadedModel, from_pipeline
from pipeline.render import render

ROWS = [("Euler", "Automatic"), ("Euler", "Simple")]
STEPS = [10, 20, 25, 40]  # divisors of 1000: Simple is then exactly linspace(1, 1/N, N), shifted
PROMPT, NEGATIVE, SEED = "a photo of a cat", "blurry", 1234
CFG = {"sd3": 7.0, "flux": 1.0}
# CPU stand-ins with each family's layout: 128-wide, a few blocks (about 1-2 M parameters).
FLOW_CONFIGS.setdefault("sd3-small", {**FLOW_CONFIGS["sd3"], "sample_size": 32, "num_layers": 4,
                                      "attention_head_dim": 32, "num_attention_heads": 4,
                                      "joint_attention_dim": 128, "caption_projection_dim": 128,
                                      "pooled_projection_dim": 64, "pos_embed_max_size": 64})
FLOW_CONFIGS.setdefault("flux-small", {**FLOW_CONFIGS["flux"], "num_layers": 2, "num_single_layers": 2,
                                       "attention_head_dim": 32, "num_attention_heads": 4,
                                       "joint_attention_dim": 128, "pooled_projection_dim": 32,
                                       "axes_dims_rope": (8, 12, 12)})
# stabilityai/stable-diffusion-3-medium-diffusers vae/config.json (also FLUX.1's VAE layout)
SD3_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": False,
    "use_post_quant_conv": False}


class TransformerCounter:
    """Counts a transformer's forward calls, rows and time (the grid_bench UNetCounter's interface)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.reset()
        inner = net.forward

        @functools.wraps(inner)
        def counted(*args, **kwargs):
            x = kwargs.get("hidden_states", args[0] if args else None)
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.rows += int(x.shape[0])
            return out

        net.forward = counted

    def reset(self) -> None:
        self.calls = self.rows = 0
        self.seconds = 0.0

    def remove(self) -> None:
        del self.net.forward


def build_flow_pipeline(family: str, device: torch.device, tokenizer_dir: Path) -> Any:
    """An SD3 or Flux pipeline: the benchmark's transformer, tiny CLIP/T5 encoders of matching
    widths, a 16-channel VAE (SD3's own layout on CUDA, a 2-level one on the CPU), the family's
    scheduler config. Seeded float32 weights made on `device`."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from tests.tiny_flow_models import _t5, _vae, flux_scheduler, t5_tokenizer
    from tests.tiny_models import _text_config, _tokenizer

    kind = family if device.type == "cuda" else f"{family}-small"
    with _seeded_on(device):
        net = (FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel)(**FLOW_CONFIGS[kind])
    cfg = net.config
    tok, tok_t5 = _tokenizer(tokenizer_dir), t5_tokenizer()
    with _seeded_on(device):
        t5 = _t5(tok_t5, d_model=cfg.joint_attention_dim)
        latent_norm = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
        vae = AutoencoderKL(**SD3_VAE, **latent_norm) if device.type == "cuda" else _vae(latent_norm)
        if family == "sd3":
            clip = lambda t: CLIPTextModelWithProjection(  # noqa: E731
                _text_config(t, projection_dim=cfg.pooled_projection_dim // 2))
            tok_2 = _tokenizer(tokenizer_dir, pad_token="!")
            return StableDiffusion3Pipeline(
                transformer=net, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                text_encoder=clip(tok), tokenizer=tok, text_encoder_2=clip(tok_2), tokenizer_2=tok_2,
                text_encoder_3=t5, tokenizer_3=tok_t5)
        text = _text_config(tok)
        text.hidden_size = cfg.pooled_projection_dim
        return FluxPipeline(scheduler=flux_scheduler(), vae=vae, text_encoder=CLIPTextModel(text),
                            tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok_t5, transformer=net)


def flow_grid(family: str, model: str, size: int, steps: list[int]) -> list[CellSpec]:
    return [CellSpec(model=model, prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size,
                     seed=SEED, sampler=sampler, sampler_options=(), schedule=schedule, steps=n,
                     cfg=CFG[family])
            for sampler, schedule in ROWS for n in steps]


def pipeline_cell(model: LoadedModel, spec: CellSpec) -> tuple[torch.Tensor, Any]:
    """One cell through the family's own pipeline: (final unpacked latents, image)."""
    pipe, final = model.pipe, {}

    def keep(_pipe, _i, _t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    kw: dict[str, Any] = {}
    if spec.schedule == "Simple":
        kw["sigmas"] = list(np.linspace(1.0, 1 / spec.steps, spec.steps))
    if model.family == "sd3":
        kw |= {"guidance_scale": spec.cfg, "negative_prompt": spec.negative_prompt}
    elif spec.cfg > 1:
        kw |= {"true_cfg_scale": spec.cfg, "negative_prompt": spec.negative_prompt}
    out = pipe(spec.prompt, num_inference_steps=spec.steps, height=spec.height, width=spec.width,
               generator=torch.Generator("cpu").manual_seed(spec.seed), callback_on_step_end=keep,
               callback_on_step_end_tensor_inputs=["latents"], **kw)
    z = final["latents"].float().cpu()
    if model.family == "flux":
        side = spec.height // model.vae_scale_factor
        z = unpack(z, side, spec.width // model.vae_scale_factor)
    return z, out.images[0]


def run_flow(args) -> dict[str, Any]:
    """The --flow benchmark: build, warm up, both paths, the comparison; print and return figures."""
    from bench import grid_bench as gb

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = args.size or (1024 if device.type == "cuda" else 64)
    pipe = build_flow_pipeline(args.flow, device, Path(tempfile.gettempdir()) / "flow-bench-tokenizer")
    model = from_pipeline(f"{args.flow}-bench", pipe, device=device, dtype=dtype)
    loader = lambda _name: model  # noqa: E731
    specs = flow_grid(args.flow, model.name, size, list(args.steps))
    engine_run = lambda cells: [(r.latents, r.image) for r in _engine(cells, loader, args.max_batch)]  # noqa: E731
    engine_run(specs[:2])  # warm-up
    pipeline_cell(model, specs[0])
    counter = TransformerCounter(model.unet)
    measure = functools.partial(gb.measure, counter=counter, device=model.device)
    try:
        print(f"{len(specs)} {args.flow} cells at {size}px on {model.device}", flush=True)
        engine, ours = measure(lambda: engine_run(specs))
        gb.print_path("engine", engine)
        cells, theirs = measure(lambda: [pipeline_cell(model, s) for s in specs])
        gb.print_path("per cell", cells)
    finally:
        counter.remove()
    params = sum(p.numel() for p in model.unet.parameters())
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": gb.machine(model.device),
        "flow": args.flow, "model": {"transformer_parameters": params, "dtype": str(dtype), "size_px": size},
        "grid": {"rows": [f"{s} / {t}" for s, t in ROWS], "steps": list(args.steps), "cells": len(specs),
                 "cfg": CFG[args.flow], "seed": SEED},
        "engine": engine.as_dict(), "per_cell": cells.as_dict(), "speedup": cells.wall_s / engine.wall_s,
        "target_speedup": gb.TARGETS[model.device.type],
        "same_images": gb.same_images(ours, theirs, 5e-2 if device.type == "cuda" else 1e-3)}
    same = report["same_images"]
    print(f"\nspeed-up (per-cell wall / engine wall): {report['speedup']:.2f}x (target >= "
          f"{report['target_speedup']}x); same images: max latent diff {same['max_latent_diff']:.2e}, "
          f"max pixel diff {same['max_pixel_diff']} -> {'OK' if same['ok'] else 'DIFFERENT'}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report


def _engine(cells: list[CellSpec], loader, max_batch: int | None):
    results = render(cells, RunOptions(max_batch=max_batch), loader=loader)
    failed = [(r.spec.sampler, r.spec.steps, r.error) for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"engine cells failed: {failed}")
    return results
