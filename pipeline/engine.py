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
from dataclasses import dataclass

import torch
from torch import Tensor

from core.cells import CellResult
from core.progress import Progress
from pipeline import memory
from pipeline.cell_state import CellState
from pipeline.decode import Decoder
from pipeline.denoiser import ModelDenoiser


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


class Delivery:
    """The one way a cell leaves the engine, whether it rendered, failed, could not start or came
    from the cache: counted in the progress (its planned calls settled to the calls it made in
    this run), tagged with the model that rendered it, kept in `results` and handed to on_cell."""

    def __init__(self, options: RunOptions, progress: Progress, results: list[CellResult | None]) -> None:
        self.options = options
        self.progress = progress
        self.results = results
        self.model_id: str | None = None  # the identity of the model rendering now

    def __call__(self, index: int, result: CellResult, *, planned: int, made: int) -> None:
        result.model_id = self.model_id
        self.progress.cells_done += 1
        self.progress.settle(planned, made)
        self.results[index] = result
        if self.options.on_cell:
            self.options.on_cell(index, result)


class TickLoop:
    """Drives a set of cell states on one model until all finish, fail or the run stops."""

    def __init__(self, denoiser: ModelDenoiser, decoder: Decoder, options: RunOptions,
                 progress: Progress, deliver: Delivery) -> None:
        self.denoiser = denoiser
        self.decoder = decoder
        self.options = options
        self.progress = progress
        self.deliver = deliver
        self.unet_calls = 0  # batched UNet calls made (each evaluates many model rows), for the benchmark
        self.stopped: list[CellState] = []  # cells a stop cut short (never delivered: not the cell's image)

    def run(self, states: list[CellState]) -> None:
        dead = [s for s in states if not s.alive]  # failed (or finished) on their very first step
        if dead:
            self._finish(dead)
            if self.options.on_progress:
                self.options.on_progress(self.progress)
        live = [s for s in states if s.alive]
        max_rows = self.options.max_batch
        while live:
            if self.options.should_stop and self.options.should_stop():
                for s in live:
                    s.stop_by_user()
                self.stopped = live
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
            limit = max_rows or memory.auto_max_batch(self.denoiser.device, shape[-1] * shape[-2],
                                               self.denoiser.dtype)
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
                memory.free_cached_memory()
        return limit

    def _call(self, chunk: list[CellState]) -> None:
        t0 = time.perf_counter()
        denoised = self.denoiser([s.row() for s in chunk])
        spent = time.perf_counter() - t0
        self.unet_calls += 1
        self.progress.calls_done += len(chunk)
        total_rows = sum(s.row().model_rows for s in chunk)
        for s, d in zip(chunk, denoised, strict=True):
            s.receive(d, spent * s.row().model_rows / total_rows, self.options.preview_every,
                      self.decoder)

    def _finish(self, done: list[CellState]) -> None:
        """Decode the cells that finished together (in batches) and deliver every done cell."""
        finished = [s for s in done if s.final is not None and s.error is None]
        if finished:
            images = self.decoder.decode([s.final for s in finished])
            for s, img in zip(finished, images, strict=True):
                if img is None:
                    s.stop(f"the VAE decoded NaN or inf (it overflowed in {self.decoder.dtype_name}; a "
                           "float32 VAE, or one fixed for float16, avoids it)")
                else:
                    s.image = img
        for s in done:
            self.deliver(s.index, s.result(), planned=s.plan.denoiser_calls, made=s.calls)


def latent_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor, torch.Generator]:
    """A cell's initial noise, drawn on the CPU exactly as diffusers pipelines draw it
    with generator=torch.Generator("cpu").manual_seed(seed); the generator goes on
    to supply the cell's ancestral noise, as in diffusers and A1111."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=dtype), g
