"""Per-step bookkeeping of every sampler, next to the cost of one model call.

Runs each sampler on a 1x4x64x64 latent (SD's latent at 512x512) with a
denoiser that costs nothing (a multiply), so the time measured is the
sampler's own arithmetic, noise draws and generator hand-offs. For scale it
also times one 3x3 convolution 4->320 channels at 64x64: the first layer of an
SD UNet alone, a small fraction of one real model call.

    .venv/bin/python bench/sampler_overhead.py [--steps 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import samplers  # noqa: E402


def free_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * (1.0 / (1.0 + sigma.reshape(-1, 1, 1, 1) ** 2))


def time_sampler(name: str, steps: int, repeats: int) -> dict[str, float]:
    train = samplers.train_sigmas()
    sig = samplers.sigmas("Automatic", steps, train, sampler=name).float()
    x = torch.randn(1, 4, 64, 64) * sig[0]
    calls = 0

    def counted(x, s):
        nonlocal calls
        calls += 1
        return free_denoiser(x, s)

    best = float("inf")
    for _ in range(repeats):
        calls = 0
        t0 = time.perf_counter()
        samplers.sample(name, counted, x, sig, seed=0)
        best = min(best, time.perf_counter() - t0)
    return {"ms_per_step": 1000 * best / steps, "model_calls": calls}


def time_conv(repeats: int = 20) -> float:
    conv = torch.nn.Conv2d(4, 320, 3, padding=1)
    x = torch.randn(2, 4, 64, 64)  # cond + uncond halves, as with CFG
    with torch.no_grad():
        conv(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            conv(x)
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    conv_ms = time_conv()
    rows = {}
    for name in samplers.names():
        rows[name] = time_sampler(name, args.steps, args.repeats)
        r = rows[name]
        print(f"{name:28s} {r['ms_per_step']:7.3f} ms/step  ({r['model_calls']} calls, "
              f"{r['ms_per_step'] / conv_ms:5.2f}x one UNet first conv)")
    print(f"\nreference: one 3x3 conv 4->320 at 2x4x64x64: {conv_ms:.2f} ms "
          f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread)")
    print(f"command: {' '.join(sys.argv)}")
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "conv_ms": conv_ms, "samplers": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
