"""How many steps each common sampler needs to converge, on `builtin` and on `builtin-flow`.

For every model, sampler and prompt/seed pair this renders a ladder of step counts and the same
sampler at REFERENCE_STEPS (the app's default reference: the series' own image at the most steps).
A sampler has converged by N steps when the mean pixel RMSE (images in [0, 1]) to its reference is
under report.metrics.PIXEL_THRESHOLD (0.01, the grid's own verdict threshold) at N and at every
larger step count of the ladder; ancestral samplers, whose image keeps changing, never do. All on
the model's "Automatic" schedule, CFG 5, through the project's engine (pipeline.render).

    python scripts/steps_to_converge.py                # prints the markdown table
    python scripts/steps_to_converge.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from builtin_quality import cell, pixels, rmse  # noqa: E402

from pipeline.render import render  # noqa: E402
from report.metrics import PIXEL_THRESHOLD  # noqa: E402

MODELS = ("builtin", "builtin-flow")
SAMPLERS = ("Euler", "Heun", "DPM++ 2M", "UniPC", "DPM++ 2M SDE", "Euler a")
LADDER = (3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70, 100)
REFERENCE_STEPS = 200
PROMPTS = (("sunflower", 5), ("grinning face", 1), ("penguin", 2), ("hot beverage", 3))


def distances(model: str, sampler: str) -> dict[int, float]:
    """Mean pixel RMSE to the sampler's own REFERENCE_STEPS image, per ladder step count."""
    ladder = (*LADDER, REFERENCE_STEPS)
    cells = [cell(p, sampler, "Automatic", n, seed=s, model=model) for p, s in PROMPTS for n in ladder]
    images = pixels(render(cells))
    images = images.reshape(len(PROMPTS), len(ladder), *images.shape[1:])
    return {n: rmse(images[:, k], images[:, -1]) for k, n in enumerate(LADDER)}


def converged_at(dist: dict[int, float], threshold: float = PIXEL_THRESHOLD) -> int | None:
    """The smallest N of the ladder from which every distance is under the threshold, else None."""
    found = None
    for n in sorted(dist, reverse=True):
        if dist[n] >= threshold:
            break
        found = n
    return found


def table(results: dict[str, dict[str, dict[int, float]]]) -> str:
    lines = ["| sampler | " + " | ".join(f"`{m}`: converged by" for m in results) + " |",
             "|---|" + "---|" * len(results)]
    for sampler in SAMPLERS:
        row = []
        for model in results:
            dist = results[model][sampler]
            n = converged_at(dist)
            row.append(f"{n} steps" if n is not None else f"never ({dist[LADDER[-1]]:.3f} at {LADDER[-1]})")
        lines.append(f"| {sampler} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Steps each sampler needs to converge on the built-in models.")
    p.add_argument("--json", type=Path, help="also write every distance here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {m: {s: distances(m, s) for s in SAMPLERS} for m in args.models}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"pixel RMSE threshold {PIXEL_THRESHOLD}, reference: the same sampler at {REFERENCE_STEPS} steps, "
          f"{len(PROMPTS)} prompt/seed pairs")
    print(table(results))


if __name__ == "__main__":
    main()
