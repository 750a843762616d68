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


# Activations an SD-family UNet keeps live per batch row at inference, in bytes per latent pixel,
# at float16 (2-byte) precision; see auto_max_batch for where the figure comes from.
ACTIVATION_BYTES_PER_LATENT_PIXEL = 48 << 10
FREE_SHARE = 0.7  # of free memory the UNet's activations may use (the rest: VAE decode, fragmentation)
MAX_AUTO_ROWS = 256


def auto_max_batch(device: torch.device, latent_pixels: int, dtype: torch.dtype = torch.float16) -> int:
    """Rows per model call: a fixed number on the CPU, from free memory on CUDA.

    The per-row figure, reasoned for SD 1.5's UNet at 64x64 latents (512x512 px) in float16 with
    PyTorch SDPA at inference (no autograd graph, so each block's activations are freed as the next
    runs); the peak is in the 64x64 level, 4096 tokens of 320 channels (2.6 MB a tensor):
      - the 12 skip tensors the down path keeps for the up path: ~14 MB
        (3 x 2.6 MB at 64x64, 3 x 1.3 MB at 32x32, 3 x 0.66 MB at 16x16, 3 x 0.16 MB at 8x8);
      - a transformer block's GEGLU feed-forward: its projection to 2 x 1280 channels is
        4096 x 2560 x 2 B = 21 MB, live with its GELU output and the gated product (10.5 MB each):
        ~42 MB; SDPA's flash / memory-efficient kernels never form the 8 x 4096 x 4096 attention
        matrix (that would be 268 MB a row, the reason the engine sets AttnProcessor2_0);
      - the up path's resnets on the concatenated 960-channel input: GroupNorm, SiLU and conv
        temporaries of ~8 MB each, a few live at once;
    so ~70-80 MB of tensors are live at the peak. PyTorch's caching allocator rounds and fragments
    blocks as batch sizes change, GroupNorm works in float32 on half inputs and cuDNN picks
    workspaces that grow with the batch: budgeting 2.5x that gives ~190 MiB a row, 48 KiB per latent
    pixel. It agrees with what users see: batch 8 with CFG (16 rows) at 512x512 fits an 8 GB card.
    SDXL has no attention at its highest resolution and 640 channels at the next, so its cost per
    latent pixel is below SD 1.5's; the SD 1.5 figure is the conservative one. float32 doubles it.
    Free memory counts what PyTorch's cache holds unused (mem_get_info calls it used). An OOM halves
    the batch anyway, so the estimate needs to be near, not exact.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return CPU_MAX_ROWS
    free, _total = torch.cuda.mem_get_info(device)
    free += max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_row = latent_pixels * ACTIVATION_BYTES_PER_LATENT_PIXEL * itemsize / 2
    return max(1, min(MAX_AUTO_ROWS, int(FREE_SHARE * free / per_row)))


def free_cached_memory() -> None:
    """Give the blocks PyTorch's CUDA cache holds back before a retry after an OOM, so the smaller
    batch is not refused for fragmentation."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TickLoop:
    """Drives a set of cell states on one model until all finish, fail or the run stops."""

    def __init__(self, denoiser: ModelDenoiser, decoder: Decoder, options: RunOptions,
                 progress: Progress) -> None:
        self.denoiser = denoiser
        self.decoder = decoder
        self.options = options
        self.progress = progress
        self.model_calls = 0  # batched UNet calls made, for the benchmark
        self.stopped: list[CellState] = []  # cells a stop cut short (not delivered through on_cell)

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
            limit = max_rows or auto_max_batch(self.denoiser.device, shape[-1] * shape[-2],
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
                free_cached_memory()
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
            self.progress.cells_done += 1
            self.progress.settle(s.spec, s.calls)
            if self.options.on_cell:
                self.options.on_cell(s.index, s.result())


def latent_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor, torch.Generator]:
    """A cell's initial noise, drawn on the CPU exactly as diffusers pipelines draw it
    with generator=torch.Generator("cpu").manual_seed(seed); the generator goes on
    to supply the cell's ancestral noise, as in diffusers and A1111."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=dtype), g
