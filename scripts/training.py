"""What the two built-in models' training scripts share: the EMA update, the loss log, and
writing the pipeline folder so that --out is never half-written."""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """EMA of the weights with warm-up: the decay is min(decay, (1 + step) / (10 + step))."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - d)


def append_loss(path: Path, phase: str, step: int, loss: float, seconds: float) -> None:
    """One row of loss.csv (phase, step, loss, seconds of training, wall-clock time)."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["phase", "step", "loss", "seconds", "time"])
        w.writerow([phase, step, f"{loss:.5f}", f"{seconds:.0f}", time.strftime("%H:%M:%S")])


def swap_in(out: Path, write: Callable[[Path], None]) -> None:
    """write(folder) into a sibling of `out`, then put it in out's place (the old one removed)."""
    new, old = out.with_name(out.name + ".new"), out.with_name(out.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    write(new)
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)
