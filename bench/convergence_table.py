"""Convergence table: a sampler x steps grid's distances and verdicts, against both references.

Renders the grid and the accurate reference (DPM++ 2M Karras, 200 steps, by default) in one
batched run, measures it twice with report.metrics (reference = each sampler at its highest
step count; reference = the accurate cell) and prints, per cell, pixel RMSE, SSIM and latent
RMSE under both, then the verdicts. The defaults are the grid tests/test_metrics.py checks
on the built-in model; docs/METRICS.md quotes its output.

    .venv/bin/python bench/convergence_table.py
    .venv/bin/python bench/convergence_table.py --samplers "Euler,UniPC,Euler a" --steps 4 8 16 32 \\
        --cfg 5 --csv out/convergence.csv
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.cells import Cell, CellSpec  # noqa: E402
from pipeline.render import render  # noqa: E402
from report import metrics  # noqa: E402

SAMPLERS = "Euler,DPM++ 2M,Euler a,DPM2 a,DPM++ 2M SDE,DPM++ SDE"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin", help="model name or path (default: builtin)")
    p.add_argument("--samplers", default=SAMPLERS, help="comma-separated sampler names")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40])
    p.add_argument("--schedule", default="Karras")
    p.add_argument("--prompt", default="grinning face")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--size", type=int, default=None, help="square size in pixels (default: the model's)")
    p.add_argument("--reference-steps", type=int, default=metrics.REFERENCE_STEPS)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--csv", type=Path, help="also write the per-cell rows (highest-steps reference) here")
    return p.parse_args(argv)


def grid_cells(args: argparse.Namespace) -> list[Cell]:
    names = [s.strip() for s in args.samplers.split(",") if s.strip()]
    return [Cell(ix, iy, 0, CellSpec(args.model, args.prompt, "", args.size, args.size, args.seed, name, (),
                                     args.schedule, steps, args.cfg), (f"Steps: {steps}", name, None))
            for iy, name in enumerate(names) for ix, steps in enumerate(args.steps)]


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(default: metrics.Convergence, accurate: metrics.Convergence) -> str:
    """Per cell: distances to the series' highest step count | to the accurate reference; then verdicts."""
    head = (f"{'series':16} {'steps':>5} {'calls':>5} | {'pixel':>7} {'SSIM':>7} {'latent':>7} | "
            f"{'pixel':>7} {'SSIM':>7} {'latent':>7}")
    lines = [f"{'':29} | {'vs highest steps':^23} | {'vs accurate reference':^23}", head, "-" * len(head)]
    for a, b in zip(default.cells, accurate.cells, strict=True):
        note = f"  ({a.note})" if a.note else ""
        note = "  <- the highest-steps reference" if a.note == "reference" else note
        to_top, to_accurate = (" ".join(f"{_num(v):>7}" for v in (r.pixel_rmse, r.ssim, r.latent_rmse))
                               for r in (a, b))
        lines.append(f"{a.series[:16]:16} {a.steps:5d} {a.model_calls:5d} | {to_top} | {to_accurate}{note}")
    for title, conv in (("highest steps", default), ("accurate reference", accurate)):
        lines += ["", f"Verdicts vs {title}:"]
        lines += [f"  {label}: {verdict}" for label, verdict in conv.verdicts.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = grid_cells(args)
    refs = metrics.reference_specs([c.spec for c in cells], steps=args.reference_steps)
    todo = metrics.references_to_render(refs)
    started = time.perf_counter()
    out = render([c.spec for c in cells] + todo)
    seconds = time.perf_counter() - started
    results, rendered = out[:len(cells)], out[len(cells):]
    default = metrics.measure(cells, results)
    accurate = metrics.measure(cells, results, metrics.references_from(refs, rendered))
    command = shlex.join(["bench/convergence_table.py", *(sys.argv[1:] if argv is None else argv)])
    text = (f"$ {command}\n{len(cells)} cells + {len(todo)} reference(s) rendered in {seconds:.1f} s; "
            f"reference: {todo[0].sampler} {todo[0].schedule}, {todo[0].steps} steps\n\n"
            f"{format_table(default, accurate)}")
    print(text)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        args.csv.write_text(default.to_csv())
    return text


if __name__ == "__main__":
    main()
