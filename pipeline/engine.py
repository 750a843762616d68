"""The grid engine: every cell of a grid sampled together, batched across cells.

Each cell runs its sampler as a generator (samplers.protocol). Every tick the
engine gathers the pending denoiser request of every live cell, runs them
through the model in as few batched calls as the batch limit allows (per-row
sigma and timestep, each row with its own prompt and guidance scale), and
hands each cell its own result. A cell owns its initial noise and its noise
source, so its image never depends on its neighbours, the batch size or its
position. Finished cells are decoded together and delivered at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pipeline.cells import CellResult, CellState, Progress
from pipeline.decode import Decoder
from pipeline.denoiser import ModelDenoiser

CPU_MAX_ROWS = 16


@dataclass
class RunOptions:
    """How to run a grid: batch limit (model rows per call; None = automatic),
    callbacks for finished cells and progress, a stop check between ticks,
    and preview cadence (every k steps; 0 = none)."""

    max_batch: int | None = None
    on_cell: Callable[[int, CellResult], None] | None = None
    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    preview_every: int = 0
    inject_fault: Callable[[int], None] | None = field(default=None, repr=False)


def auto_max_batch(device: torch.device, latent_pixels: int) -> int:
    """Rows per model call: a fixed number on CPU, from free memory on CUDA."""
    if device.type != "cuda":
        return CPU_MAX_ROWS
    free, _total = torch.cuda.mem_get_info(device)
    # ~0.6 MB of activations per latent pixel-row at fp16 for an SD1.5 UNet,
    # measured loosely; an OOM halves the batch anyway.
    per_row = latent_pixels * 0.6e3
    return max(1, min(256, int(0.7 * free / per_row)))


class TickLoop:
    """Drives a set of cell states on one model until all finish, fail or the run stops."""

    def __init__(self, denoiser: ModelDenoiser, decoder: Decoder, options: RunOptions,
                 progress: Progress) -> None:
        self.denoiser = denoiser
        self.decoder = decoder
        self.options = options
        self.progress = progress
        self.model_calls = 0  # batched UNet calls made, for the benchmark

    def run(self, states: list[CellState]) -> None:
        live = [s for s in states if s.alive]
        max_rows = self.options.max_batch
        while live:
            if self.options.should_stop and self.options.should_stop():
                for s in live:
                    s.stop("stopped by the user")
                return
            max_rows = self._tick(live, max_rows)
            done = [s for s in live if not s.alive]
            self._finish(done)
            if self.options.on_progress:
                self.options.on_progress(self.progress)
            live = [s for s in live if s.alive]

    def _tick(self, live: list[CellState], max_rows: int | None) -> int | None:
        groups: dict[tuple, list[CellState]] = {}
        for s in live:
            groups.setdefault(tuple(s.request_x.shape), []).append(s)
        for shape, group in groups.items():
            limit = max_rows or auto_max_batch(self.denoiser.device, shape[-1] * shape[-2])
            max_rows = self._run_group(group, limit)
        return max_rows

    def _run_group(self, group: list[CellState], limit: int) -> int:
        i = 0
        while i < len(group):
            chunk, rows = [], 0
            while i < len(group) and (not chunk or rows + group[i].row().model_rows <= limit):
                chunk.append(group[i])
                rows += group[i].row().model_rows
                i += 1
            try:
                self._call(chunk)
            except torch.OutOfMemoryError:
                if limit <= 1:
                    raise
                limit = max(1, limit // 2)
                i -= len(chunk)  # retry the same cells with a smaller batch
        return limit

    def _call(self, chunk: list[CellState]) -> None:
        if self.options.inject_fault:
            self.options.inject_fault(sum(s.row().model_rows for s in chunk))
        t0 = time.perf_counter()
        denoised = self.denoiser([s.row() for s in chunk])
        spent = time.perf_counter() - t0
        self.model_calls += 1
        self.progress.calls_done += len(chunk)
        total_rows = sum(s.row().model_rows for s in chunk)
        for s, d in zip(chunk, denoised, strict=True):
            s.receive(d, spent * s.row().model_rows / total_rows, self.options.preview_every,
                      self.decoder)

    def _finish(self, done: list[CellState]) -> None:
        finished = [s for s in done if s.final is not None]
        if finished:
            images = self.decoder.decode([s.final for s in finished])
            for s, img in zip(finished, images, strict=True):
                s.image = img
        for s in done:
            self.progress.cells_done += 1
            if self.options.on_cell:
                self.options.on_cell(s.index, s.result())


def latent_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor, torch.Generator]:
    """A cell's initial noise, drawn on the CPU exactly as diffusers pipelines draw it
    with generator=torch.Generator("cpu").manual_seed(seed); the generator goes on
    to supply the cell's ancestral noise, as in diffusers and A1111."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=dtype), g
