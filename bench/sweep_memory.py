"""Peak memory of a sweep as it grows: `cli.py grid` at 1, 100 and 1,000 cells on the built-in model.

Each size runs in its own child process (peak RSS is per process: getrusage's ru_maxrss),
through cli.main exactly as `python cli.py grid` runs it: cells stream to disk in work units
of --chunk cells, the grid is drawn from the PNGs, metrics are measured from the files. The
grid is cells/20 seeds x steps 1, 2 x 10 samplers (one cell for the baseline), so that sizes
differ only in the number of seeds.

--engine-too adds, per size, the way the CLI ran before sweeps: every cell in one engine
call (all cell states live at once) with every result (image, latents) kept in memory.
--no-grid-too adds the CLI with --no-grid (no grid canvas: what is left grows with the records).

    .venv/bin/python bench/sweep_memory.py                         # 1, 100, 1000, 2000 cells
    .venv/bin/python bench/sweep_memory.py --cells 100 1000 --engine-too --no-grid-too --json out/mem.json

Figures and what they mean: docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 3M SDE", "LMS", "DDIM", "UniPC", "DEIS",
            "iPNDM"]


def grid_flags(cells: int) -> list[str]:
    """Flags for a grid of `cells` cells: 1, or a multiple of 20 (cells / 20 seeds x steps 1, 2 x
    10 samplers), so that every size has the same mix of samplers and step counts."""
    common = ["--model", "builtin", "--prompt", "sunflower", "--seed", "1", "--cfg", "5"]
    if cells == 1:
        return [*common, "--steps", "2", "--x", "none", "--y", "none"]
    seeds, rest = divmod(cells, 2 * len(SAMPLERS))
    if rest or seeds < 1:
        raise SystemExit(f"cells must be 1 or a multiple of {2 * len(SAMPLERS)}, got {cells}")
    return [*common, "--x", f"seed=1-{seeds}", "--y", "steps=1, 2", "--z", "sampler=" + ", ".join(SAMPLERS),
            "--max-cells", str(cells)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_cli(cells: int, out: Path, chunk: int, no_grid: bool) -> dict:
    import cli

    t0 = time.perf_counter()
    flags = ["--out", str(out), "--quiet", "--fresh", "--chunk", str(chunk), *grid_flags(cells)]
    rc = cli.main(["grid", *flags, *(["--no-grid"] if no_grid else [])])
    wall = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    grid = manifest["grid"]
    return {"path": "cli --no-grid" if no_grid else "cli", "cells": cells, "exit_code": rc,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "wall_s": round(wall, 2), "render_s": manifest["totals"]["wall_seconds"],
            "failed": manifest["totals"]["failed"],
            "model_calls": manifest["totals"]["model_calls"],
            "grid_px": [grid["width"], grid["height"]] if grid else None}


def child_engine(cells: int) -> dict:
    """The pre-sweep path: one engine call for every cell, every result kept, metrics in memory."""
    import cli
    from grids import expand
    from pipeline.render import render
    from report.metrics import measure

    spec = cli.build_spec(cli.build_parser().parse_args(["grid", "--out", "-", *grid_flags(cells)]))
    cell_list = expand(spec.resolved())
    t0 = time.perf_counter()
    results = render([c.spec for c in cell_list])
    measure(cell_list, results)
    return {"path": "engine, all in memory", "cells": cells, "peak_rss_mb": round(peak_rss_mb(), 1),
            "render_s": round(time.perf_counter() - t0, 2), "failed": sum(not r.ok for r in results)}


def run_child(args: list[str]) -> dict:
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1, 100, 1000, 2000])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--engine-too", action="store_true", help="also measure the all-in-memory path")
    parser.add_argument("--no-grid-too", action="store_true", help="also measure the CLI with --no-grid")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--child", choices=["cli", "cli-no-grid", "engine"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        n = args.cells[0]
        row = child_engine(n) if args.child == "engine" else child_cli(n, args.out, args.chunk,
                                                                         args.child == "cli-no-grid")
        print(json.dumps(row))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.cells:
            for child in ["cli", *(["cli-no-grid"] if args.no_grid_too else [])]:
                rows.append(run_child(["--child", child, "--cells", str(n), "--chunk", str(args.chunk),
                                       "--out", str(Path(tmp) / f"g{n}-{child}")]))
                print(json.dumps(rows[-1]), flush=True)
            if args.engine_too:
                rows.append(run_child(["--child", "engine", "--cells", str(n)]))
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"chunk": args.chunk, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
