"""Sweep throughput on 1 and N processes: the same grid through `cli.py grid`, plainly and
under `accelerate launch --multi_gpu --num_processes N` (on a machine without CUDA that is N
CPU processes in one gloo group; on GPUs, one process per GPU).

For each configuration it reports the command's wall time (process start, imports and model
load included), the render time the manifest records (totals.wall_seconds: from the first
unit to the last record gathered, on the main process), cells/s and denoiser calls/s over
the render time, and checks that every configuration wrote the same cell PNGs as the first.

    .venv/bin/python bench/sweep_throughput.py                          # CPU: 1 and 2 processes
    .venv/bin/python bench/sweep_throughput.py --processes 1 2 4 8 --device cuda --cells 1000

CPU runs pin each process to --threads torch threads (OMP_NUM_THREADS); the one-process run
is also measured with --threads x N so that both sides use the same cores. Figures:
docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE"]


def grid_flags(cells: int, steps: str) -> list[str]:
    """`cells` cells: seeds x the step counts x up to 4 samplers."""
    n_steps = len(steps.split(","))
    per_seed = n_steps * len(SAMPLERS)
    if cells % per_seed:
        raise SystemExit(f"cells must be a multiple of {per_seed} (step counts x {len(SAMPLERS)} samplers)")
    return ["--model", "builtin", "--prompt", "sunflower", "--seed", "1", "--cfg", "5",
            "--x", f"seed=1-{cells // per_seed}", "--y", f"steps={steps}",
            "--z", "sampler=" + ", ".join(SAMPLERS), "--max-cells", str(cells)]


def command(processes: int, flags: list[str]) -> list[str]:
    cli = [str(ROOT / "cli.py"), "grid", *flags]
    if processes == 1:
        return [sys.executable, *cli]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", "0", *cli]


def measure(processes: int, threads: int, flags: list[str], out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error")
    t0 = time.perf_counter()
    done = subprocess.run(command(processes, [*flags, "--out", str(out), "--fresh", "--quiet"]), cwd=ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    totals = json.loads((out / "manifest.json").read_text())["totals"]
    render = totals["wall_seconds"]
    return {"processes": processes, "threads_per_process": threads, "command_s": round(wall, 2),
            "load_s": totals["load_seconds"], "render_s": render, "cells": totals["cells"],
            "denoiser_calls": totals["model_calls"], "cells_per_s": round(totals["cells"] / render, 2),
            "calls_per_s": round(totals["model_calls"] / render, 1)}


def cell_hashes(out: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "cells").glob("*.png"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--steps", default="2, 6", help="step counts on the Y axis (default: %(default)s)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--device", default=None, help="passed to the CLI (cuda on GPU machines)")
    parser.add_argument("--no-threads-run", action="store_true",
                        help="skip the one-process run with threads x N (slow on a busy CPU)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    flags = [*grid_flags(args.cells, args.steps), "--chunk", str(args.chunk)]
    if args.device:
        flags += ["--device", args.device]
    configs = [(n, args.threads) for n in args.processes]
    if not args.no_threads_run and args.device in (None, "cpu"):
        configs += [(1, args.threads * n) for n in args.processes if n > 1]
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for k, (n, threads) in enumerate(configs):
            out = Path(tmp) / f"run{k}"
            row = measure(n, threads, flags, out)
            hashes = cell_hashes(out)
            first = first or hashes
            row["same_pngs_as_first"] = hashes == first
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        report = {"machine": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                  "chunk": args.chunk, "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
