"""One sweep, start to end, on each of the processes Accelerate launched (or on one).

    sweep = Sweep(spec, SweepOptions(out=...))
    sweep.plan()        every process: the same resolved spec (the main process draws random
                        seeds, or keeps a resumed run's), the model, the limits; the main process
                        prepares the folder and finds the cells already done; each process
                        takes its share of the rest (sweeps.shards)
    sweep.render(...)   each process renders its share unit by unit through the engine, writing
                        every cell's PNG and sidecar into the shared folder as it lands and
                        keeping only its small record: memory stays flat however big the sweep
    sweep.finish()      the records are gathered (accelerate gather_object); the main process
                        reads the cells back from disk for the grid, the animation and the
                        metrics (metrics.csv, and "metrics" in the manifest) and writes the
                        manifest last; returns the counts every process needs for its exit code

Output equals a one-process, uninterrupted run's: the same units render whichever process
takes them (see sweeps.shards), verified cells of a resumed run are kept as written, and a
unit that was cut short is rendered whole again (only its missing cells are written).
Metrics come from the files: pixel RMSE and SSIM from the PNGs; latent RMSE only when the
run saves latents (FolderOptions(latents=True)), since keeping every cell's latents in memory
is what a big sweep cannot afford.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grids
from core.cells import CellResult
from core.progress import Progress
from report.layout import GridLabels, LayoutOptions, plan_layout
from report.metrics import measure
from report.run_folder import FolderOptions, GridFolder
from samplers.plan import denoiser_calls
from sweeps import seeds, shards
from sweeps.processes import Processes

if TYPE_CHECKING:
    from pipeline.models import LoadedModel


@dataclass(frozen=True)
class SweepOptions:
    """Where and how: the folder and what goes in it, grid drawing, limits, batching, chunk size
    (cells per engine call), resume (keep verified cells; False renders every cell again), and
    the device/dtype for a one-process run (launched processes take Accelerate's device)."""

    out: Path
    folder: FolderOptions = FolderOptions(journal=True)
    layout: LayoutOptions = LayoutOptions()
    limits: grids.Limits = grids.Limits()
    max_batch: int | None = None
    chunk: int = shards.DEFAULT_CHUNK
    resume: bool = True
    device: str | None = None
    dtype: str | None = None
    config: Path | None = None  # a single-file checkpoint's diffusers config folder (load_model's config)


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished sweep reports on every process; `manifest` on the main process only."""

    cells: int
    failed: int
    kept: int
    processes: int
    manifest: dict[str, Any] | None


class Sweep:
    """One sweep on this process: plan(), render(), finish()."""

    def __init__(self, spec: grids.GridSpec, options: SweepOptions,
                 processes: Processes | None = None) -> None:
        if not options.folder.journal:
            options = replace(options, folder=replace(options.folder, journal=True))
        self.spec, self.options = spec, options
        self.processes = processes or Processes(options.device)
        self.kept: set[int] = set()
        self.share: list[list[int]] = []
        self.rendered: list[int] = []
        self.started: float | None = None

    # ------------------------------------------------------------ plan

    def load(self, name: str) -> LoadedModel:
        """The model `name` on this process's device (the engine loads a model axis's others)."""
        from pipeline.models import load_model  # the engine's imports take seconds: not for --help

        return load_model(name, device=self.processes.device, dtype=self.options.dtype,
                          config=self.options.config)

    def plan(self) -> None:
        """Resolve, load, check (bad input raises here, before anything is written), prepare."""
        procs, opts = self.processes, self.options
        t0 = time.perf_counter()
        previous = seeds.previous_spec(opts.out) if opts.resume and procs.is_main else None
        self.resolved = procs.broadcast(seeds.resolve(self.spec, previous) if procs.is_main else None)
        self.model = self.load(self.resolved.model)
        self.load_seconds = time.perf_counter() - t0
        from pipeline.models import loaded_model_named

        self.folder = GridFolder(opts.out, self.spec, self.resolved, self.model, opts.folder,
                                 models=loaded_model_named)
        cells = self.folder.cells
        from pipeline.flow_plan import check_cells, size_multiple

        grids.validate(cells, opts.limits, self.model.default_size, size_multiple(self.model))
        check_cells([c.spec for c in cells], self.model)
        sized = [c.spec.sized(self.model.default_size) for c in cells]
        box = (max(s.width for s in sized), max(s.height for s in sized))
        self.layout = replace(opts.layout, cell_size=box)
        if opts.folder.grid:  # refuse a grid image over the limit before rendering anything
            plan_layout([None] * len(cells), GridLabels.from_spec(self.resolved), self.resolved.shape,
                        self.layout)
        done = self.folder.prepare(resume=opts.resume) if procs.is_main else None
        self.kept = set(procs.broadcast(done))
        specs = [c.spec for c in cells]
        todo = [u for u in shards.work_units(specs, opts.chunk) if not self.kept.issuperset(u)]
        self.units = len(todo)
        self.share = shards.share_of(specs, todo, procs.index, procs.count)

    @property
    def share_cells(self) -> int:
        return sum(len(u) for u in self.share)

    @property
    def share_calls(self) -> int:
        """Denoiser calls of this process's share (what the engine's progress counts)."""
        cells = self.folder.cells
        return sum(denoiser_calls(cells[i].spec) for u in self.share for i in u)

    # ------------------------------------------------------------ render

    def render(self, on_progress: Callable[[Progress], None] | None = None,
               on_cell: Callable[[int], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> None:
        """Render this process's share unit by unit; each new cell is on disk as it lands."""
        progress = Progress(self.share_cells, self.share_calls)
        self.started = time.perf_counter()
        with _collected_per_unit() as unit_done:
            for unit in self.share:
                if should_stop and should_stop():
                    break
                self._render_unit(unit, progress, on_progress, on_cell, should_stop)
                unit_done()

    def _render_unit(self, unit: list[int], progress: Progress,
                     on_progress: Callable[[Progress], None] | None,
                     on_cell: Callable[[int], None] | None, should_stop: Callable[[], bool] | None) -> None:
        from pipeline.engine import RunOptions
        from pipeline.render import render

        before = progress.calls_done

        def landed(k: int, result: CellResult) -> None:
            index = unit[k]
            progress.cells_done += 1
            if index not in self.kept:  # a kept cell is already on disk, verified
                self.folder.on_cell(index, result)
                self.rendered.append(index)
            if on_cell:
                on_cell(index)

        def ticked(p: Progress) -> None:
            progress.calls_done = before + p.calls_done
            if on_progress:
                on_progress(progress)

        render([self.folder.cells[i].spec for i in unit],
               RunOptions(max_batch=self.options.max_batch, on_cell=landed, on_progress=ticked,
                          should_stop=should_stop), loader=self.load)

    # ------------------------------------------------------------ finish

    def finish(self) -> SweepOutcome:
        """Gather the records; on the main process write grid, metrics and manifest."""
        procs = self.processes
        gathered = procs.gather([(procs.index, i, self.folder.records[i]) for i in self.rendered])
        wall = time.perf_counter() - (self.started or time.perf_counter())
        failed = sum(r["error"] is not None for _, _, r in gathered)
        not_rendered = len(self.folder.cells) - len(self.kept) - len(gathered)
        manifest = None
        if procs.is_main:
            self.folder.add_records({i: r for p, i, r in gathered if p != procs.index})
            manifest = self._write(wall)
        procs.wait()
        procs.close()
        return SweepOutcome(cells=len(self.folder.cells), failed=failed + not_rendered, kept=len(self.kept),
                            processes=procs.count, manifest=manifest)

    def _write(self, wall_seconds: float) -> dict[str, Any]:
        stored = self.folder.stored_results()
        convergence = measure(self.folder.cells, stored)
        return self.folder.finish(stored, self.layout,
                                  {"load_seconds": self.load_seconds, "wall_seconds": wall_seconds},
                                  extra_files={"metrics.csv": convergence.to_csv().encode()},
                                  metrics=convergence.to_json())


@contextlib.contextmanager
def _collected_per_unit() -> Iterator[Callable[[], None]]:
    """Free each unit's garbage before the next unit starts.

    Why: finished cells leave reference cycles behind (among them torchsde's Brownian intervals,
    which link children and parents), and the tensors they hold wait for Python's cyclic
    collector, which runs rarely: without this, memory crept up ~40 KB a cell on the built-in
    model (docs/SCALING.md). A full
    collection scans every object (the loaded libraries are ~300 ms of it), so the objects alive
    before rendering are frozen (gc.freeze) and each collection scans only what a unit made
    (~3 ms); they are unfrozen afterwards.
    """
    gc.collect()
    gc.freeze()
    try:
        yield gc.collect
    finally:
        gc.unfreeze()
