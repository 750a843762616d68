"""SD3 without T5: the engine's one-token form of the 256 zero text tokens (pipeline/zero_tokens.py)
against the full sequence, on `builtin-flow`'s default grid.

The same grid (the app's default samplers and step counts, CFG 5) is rendered twice in one run:
with the collapse (the engine's default) and with it turned off (every call sees 24 CLIP + 256
zero text tokens). Prints both wall times, their ratio and the largest pixel difference between
the two grids' images (the collapse is exact up to float rounding).

    .venv/bin/python bench/zero_tokens.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.cells import CellSpec  # noqa: E402
from grids.spec import expand  # noqa: E402
from pipeline import flow_denoiser  # noqa: E402
from pipeline.render import render  # noqa: E402
from ui.settings import Settings  # noqa: E402


def grid() -> list[CellSpec]:
    """The app's default grid (ui.settings.Settings, grids.defaults) on builtin-flow."""
    return [c.spec for c in expand(Settings(model="builtin-flow").to_spec())]


def timed(cells: list[CellSpec], collapse: bool) -> tuple[float, list]:
    off = mock.patch.object(flow_denoiser, "trailing_zero_tokens", lambda ctx: 0)
    with contextlib.nullcontext() if collapse else off:
        start = time.perf_counter()
        results = render(cells)
        return time.perf_counter() - start, results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2, help="runs of each; the best is reported")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = grid()
    render(cells[:1])  # load the model and warm up
    best: dict[bool, float] = {}
    images: dict[bool, list] = {}
    for _ in range(args.repeat):
        for collapse in (True, False):
            seconds, results = timed(cells, collapse)
            best[collapse] = min(seconds, best.get(collapse, float("inf")))
            images[collapse] = [np.asarray(r.image, dtype=np.float64) for r in results]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(images[True], images[False], strict=True))
    print(f"{len(cells)} cells on builtin-flow: one zero token {best[True]:.2f} s, 256 zero tokens "
          f"{best[False]:.2f} s, ratio {best[False] / best[True]:.2f}x; largest pixel difference "
          f"{diff:.0f}/255")


if __name__ == "__main__":
    main()
