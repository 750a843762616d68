"""Faults injected through the model, never through production types: a wrapper around the
engine's batched model call (pipeline.denoiser.ModelDenoiser) that runs `fault(rows)` first."""

from __future__ import annotations

from collections.abc import Callable

from pipeline import denoiser


def inject_fault(monkeypatch, fault: Callable[[int], None]) -> None:
    """Before every batched UNet call, call `fault` with the batch's model rows (it may raise,
    e.g. torch.OutOfMemoryError, as a real GPU would); undone when the test ends."""
    real = denoiser.ModelDenoiser.__call__

    def faulty(self, rows):
        fault(sum(r.model_rows for r in rows))
        return real(self, rows)

    monkeypatch.setattr(denoiser.ModelDenoiser, "__call__", faulty)
