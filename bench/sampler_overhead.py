"""Per-step bookkeeping of every sampler, next to the cost of one model call.

Runs each sampler on a 1x4x64x64 latent (SD's latent at 512x512) with a
denoiser that costs next to nothing (a multiply), so the time measured is the
sampler's own arithmetic, noise draws and generator hand-offs, plus the
driver's per-call NaN check. For scale it also times one 3x3 convolution
4->320 channels at 64x64 on a batch of 2 (CFG's two halves): the first layer
of an SD UNet alone, a small fraction of one real model call.

Everything runs on the CPU on one torch thread. Each figure is the best of
--repeats runs (default 3), divided by the step count. The "noise" column is
the part of that time spent inside the cell's noise source (`CellNoise`:
Gaussian draws and Brownian-tree queries); diffusers schedulers draw their own
noise, which it does not see ("n/a"). The allocator is warmed first (see
`warm_allocator`), as in a process that has loaded a model. Other processes
on the machine inflate every figure: the load average is printed before and
after; rerun if it was high.

    .venv/bin/python bench/sampler_overhead.py [--steps 30] [--repeats 3]
        [--only NAME ...] [--markdown] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import samplers  # noqa: E402
from samplers.noise import CellNoise, sigma_range  # noqa: E402
from samplers.protocol import drive  # noqa: E402

SHAPE = (1, 4, 64, 64)


def free_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * (1.0 / (1.0 + sigma.reshape(-1, 1, 1, 1) ** 2))


class TimedNoise(CellNoise):
    """A CellNoise that adds up the time spent drawing noise."""

    seconds = 0.0

    def gaussian(self, like: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            return super().gaussian(like)
        finally:
            self.seconds += time.perf_counter() - t0

    def brownian(self, sigma, sigma_next, like: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            # CellNoise.brownian may fall back to self.gaussian: count that time once.
            inner, self.seconds = self.seconds, 0.0
            return super().brownian(sigma, sigma_next, like)
        finally:
            self.seconds = inner + (time.perf_counter() - t0)


def time_sampler(name: str, steps: int, repeats: int) -> dict[str, float]:
    """What `samplers.sample` does, with a timed noise source: best ms/step over `repeats` runs."""
    train = samplers.train_sigmas()
    sig = samplers.sigmas("Automatic", steps, train, sampler=name).float()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * sig[0]
    best, best_noise, calls = float("inf"), 0.0, 0
    for _ in range(repeats):
        noise = TimedNoise(0, *sigma_range(sig))
        t0 = time.perf_counter()
        gen = samplers.start_generator(name, x, sig, noise)
        _, calls = drive(gen, free_denoiser, sig)
        elapsed = time.perf_counter() - t0
        if elapsed < best:
            best, best_noise = elapsed, noise.seconds
    # diffusers schedulers draw their own noise, which TimedNoise does not see.
    seen = samplers.info(name).family != "diffusers"
    return {"ms_per_step": 1000 * best / steps,
            "noise_ms_per_step": 1000 * best_noise / steps if seen else None,
            "model_calls": calls}


def warm_allocator() -> None:
    """Free one large buffer first, as any process that has loaded a model has done.

    glibc serves allocations above its mmap threshold (128 KiB at start) with
    fresh mmap'd pages, which are page-faulted in on first touch at every
    allocation; freeing an mmap'd chunk raises the threshold to its size (up
    to 32 MiB). Without this, the reference conv's 10 MiB output costs ~15 ms
    of page faults per call instead of ~3 ms of arithmetic on this kind of
    machine, and float64 noise tensors (128 KiB for this latent) fault too.
    """
    buf = torch.empty(24 * 2**20 // 4)
    buf.fill_(0.0)
    del buf


def time_conv(blocks: int = 3, per_block: int = 10) -> float:
    """Best-of-blocks mean time of one 3x3 conv 4->320 on 2x4x64x64, in ms."""
    conv = torch.nn.Conv2d(4, 320, 3, padding=1)
    x = torch.randn(2, *SHAPE[1:])  # cond + uncond halves, as with CFG
    best = float("inf")
    with torch.no_grad():
        conv(x)
        for _ in range(blocks):
            t0 = time.perf_counter()
            for _ in range(per_block):
                conv(x)
            best = min(best, (time.perf_counter() - t0) / per_block)
    return 1000 * best


def load() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="time only this sampler (repeatable); default: every registered one")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    # diffusers' own Brownian noise sampler (DPM++ SDE (diffusers)) warns about
    # torchsde's rounding of its interval ends; it does not affect timing.
    warnings.filterwarnings("ignore", message="Should have ta>=t0", category=UserWarning)
    load_before = load()
    warm_allocator()
    conv_ms = time_conv()
    names = args.only or samplers.names()
    if args.markdown:
        print("| sampler | kind | model calls | ms / step | of which noise | % of the conv |")
        print("|---|---|---:|---:|---:|---:|")
    rows = {}
    for name in names:
        r = rows[name] = time_sampler(name, args.steps, args.repeats)
        share = 100 * r["ms_per_step"] / conv_ms
        noise_ms = "n/a" if r["noise_ms_per_step"] is None else f"{r['noise_ms_per_step']:.3f}"
        if args.markdown:
            print(f"| {name} | {samplers.info(name).kind} | {r['model_calls']} | "
                  f"{r['ms_per_step']:.3f} | {noise_ms} | {share:.1f} |")
        else:
            print(f"{name:28s} {r['ms_per_step']:8.3f} ms/step  (noise {noise_ms:>7s}; "
                  f"{r['model_calls']:3d} calls; {share:6.1f}% of one UNet first conv)")
    conv_after = time_conv()  # re-timed at the end: the machine's load may have changed
    print(f"\nreference: one 3x3 conv 4->320 on 2x4x64x64: {conv_ms:.2f} ms before, "
          f"{conv_after:.2f} ms after the samplers (torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, 1 thread)")
    print(f"load average (1/5/15 min): {load_before} before, {load()} after; "
          f"{args.steps} steps, best of {args.repeats}")
    print(f"command: {' '.join(sys.argv)}")
    if args.json:
        args.json.write_text(json.dumps(
            {"steps": args.steps, "repeats": args.repeats, "conv_ms": conv_ms,
             "conv_ms_after": conv_after, "load_before": load_before, "load_after": load(),
             "samplers": rows}, indent=2))


if __name__ == "__main__":
    main()
