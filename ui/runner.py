"""One press of Generate: render a grid in a worker thread and stream what is done so far.

`GridJob.snapshots()` is a generator the page iterates: it yields a `Snapshot`
(the grid with every finished cell drawn and the rest as pending tiles, plus
progress) whenever a cell finishes, at most a few times a second, and a last
one with the written files and the convergence measurements. `stop()` asks the
engine to stop between ticks (the engine renders every cell in lockstep, so a Stop cannot wait
for "the cells closest to done" without running on): cells already finished are kept and written,
and the page's grid shows each unfinished cell's last preview, marked unfinished
(ui.results.RunOutputs.shown_grid); the files keep placeholders for them.

One grid renders at a time per process (RENDER_LOCK): the engine keeps one model
in memory and the page's queue already runs grids one after another.

Finished cells are kept in one process-wide cell cache (CELL_CACHE, LRU, bounded in cells and
bytes): running a grid again with one new axis value renders only the new cells. The cache
matches a cell's spec and the loaded model's identity (files, device, dtype; pipeline.cache), so
a hit never crosses models. Cached cells are delivered and written to the run's folder like the
others (their manifest records say "cached": true).
"""

from __future__ import annotations

import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

import grids
from core.cells import CellResult, CellSpec
from core.progress import Progress
from report.layout import GridLabels, LayoutOptions, draw_grid, plan_layout
from report.metrics import measure, reference_specs, references_from, references_to_render
from report.run_folder import FolderOptions, GridFolder
from samplers.plan import denoiser_calls
from ui.config import AppConfig
from ui.gpu import on_gpu
from ui.models import ModelHolder
from ui.results import RunOutputs

if TYPE_CHECKING:  # the engine loads when a grid first runs (torch-free page start-up)
    from pipeline.cache import CellCache
    from pipeline.engine import RunOptions
    from pipeline.models import LoadedModel

RENDER_LOCK = threading.Lock()
CACHE_CELLS = 1024
CACHE_BYTES = 512 << 20  # images, latents and previews: ~1 MB a 512x512 cell, ~4.5 MB an SDXL one
CELL_CACHE: CellCache | None = None  # made with the first grid (torch-free start-up)
SNAPSHOT_EVERY_S = 0.35
DRAW_SHARE = 0.25  # drawing partial grids takes at most about this share of a run's time
KEEP_RUNS = 20
PENDING = (236, 236, 236)


@dataclass
class Snapshot:
    """What the page shows at one moment of a run."""

    grid: Image.Image | None
    progress: Progress  # the grid's cells (references not counted) and every denoiser call, clock stopped
    status: str
    done: bool = False
    outputs: RunOutputs | None = None  # on the last snapshot


@dataclass
class _Events:
    """What the worker thread tells the streaming loop."""

    q: queue.Queue = field(default_factory=queue.Queue)
    progress: Progress | None = None


class GridJob:
    """A grid run: spec in, snapshots out. Not reusable."""

    def __init__(self, spec: grids.GridSpec, config: AppConfig, models: ModelHolder,
                 accurate_reference: bool = False, overlay: bool = False) -> None:
        """accurate_reference: also render each series' high-accuracy reference (report.metrics:
        a deterministic 2nd-order sampler at 200 steps) and measure convergence against it."""
        self.spec = spec
        self.resolved = spec.resolved()
        self.cells = grids.expand(self.resolved)
        self.labels = GridLabels.from_spec(self.resolved)
        self.config = config
        self.models = models
        self._stop = threading.Event()
        self.results: list[CellResult | None] = [None] * len(self.cells)
        self.delivered = 0  # cells finished or failed (not the ones a Stop left unrendered)
        self._draw_s = 0.0  # how long the last partial grid took to draw
        self.overlay = overlay  # seconds and model calls written on each cell of the final grid
        self.reference_specs = reference_specs([c.spec for c in self.cells]) if accurate_reference else {}
        self.reference_cells = references_to_render(self.reference_specs)  # rendered after the grid's
        self.reference_results: list[CellResult] = []
        self.error: BaseException | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def check(self) -> LoadedModel:
        """Load the model and check the grid against the limits; raises ValueError with the reason."""
        self.config.check_model(self.resolved.model)
        for cell in self.cells:
            self.config.check_model(cell.spec.model)
            self.config.check_prompts(cell.spec.prompt, cell.spec.negative_prompt)
        self.config.check_labels([label for _, axis in self.resolved.axes() for label in axis.labels()])
        model = self.models.load(self.resolved.model)
        from pipeline.flow_plan import check_cells, size_multiple  # torch-side; the model is loaded now

        grids.validate(self.cells, self.config.limits, model.default_size, size_multiple(model))
        check_cells([c.spec for c in self.cells], model)
        for size in {(s.width, s.height) for s in (c.spec.sized(model.default_size) for c in self.cells)}:
            self.config.check_cell_size(*size, model.default_size)
        self.layout = LayoutOptions(max_megapixels=self.config.limits.max_megapixels, overlay=self.overlay,
                                    cell_size=self._cell_box(model))
        plan_layout([None] * len(self.cells), self.labels, self.resolved.shape, self.layout)
        self.model = model
        try:
            self.folder = run_folder(self.config)
        except OSError as err:
            raise output_error(err) from err
        from pipeline.models import loaded_model_named

        self.writer = GridFolder(self.folder, self.spec, self.resolved, model,
                                 FolderOptions(animation=True, zip=True), models=loaded_model_named)
        self.writer.prepare()
        return model

    def _cell_box(self, model: LoadedModel) -> tuple[int, int]:
        sized = [c.spec.sized(model.default_size) for c in self.cells]
        return max(s.width for s in sized), max(s.height for s in sized)

    def snapshots(self) -> Iterator[Snapshot]:
        """Render, yielding progress; the last snapshot has done=True and the outputs."""
        events = _Events()
        specs = [c.spec for c in self.cells] + self.reference_cells
        total_calls = sum(denoiser_calls(spec) for spec in specs)
        started = time.perf_counter()
        yield self._snapshot(0, total_calls, started, "starting…")
        worker = threading.Thread(target=self._work, args=(events,), name="grid-render", daemon=True)
        worker.start()
        last = 0.0
        while worker.is_alive() or not events.q.empty():
            try:
                events.q.get(timeout=0.1)
                changed = True
            except queue.Empty:
                changed = False
            now = time.perf_counter()
            gap = max(SNAPSHOT_EVERY_S, self._draw_s / DRAW_SHARE)  # a slow grid to draw: fewer previews
            if (changed or now - last > 1.0) and now - last >= gap:
                last = now
                yield self._snapshot(self._calls(events), total_calls, started, "")
        worker.join()
        if self.error is not None:
            raise failure(self.error)
        try:
            outputs = self.write_outputs(time.perf_counter() - started)
        except OSError as err:  # no manifest.json is written: nothing claims to be complete
            raise output_error(err) from err
        cut = self.stopped and outputs.unfinished > 0
        snap = self._snapshot(self._calls(events) if cut else total_calls, total_calls, started,
                              stopped_status(self.delivered, len(self.cells), outputs) if cut else "done",
                              draw=False)
        snap.grid, snap.done, snap.outputs = outputs.shown_grid(), True, outputs
        yield snap

    def _work(self, events: _Events) -> None:
        from pipeline.engine import RunOptions

        n = len(self.cells)

        def on_cell(index: int, result: CellResult) -> None:
            if index >= n:  # a reference cell: measured against, not drawn
                return
            self.results[index] = result
            self.writer.on_cell(index, result)  # on disk at once: a crash later keeps it
            self.delivered += 1
            events.q.put(index)

        def on_progress(p: Progress) -> None:
            events.progress = p

        try:
            with RENDER_LOCK:
                final = _render([c.spec for c in self.cells] + self.reference_cells,
                               RunOptions(
                    max_batch=self.config.max_batch, on_cell=on_cell, on_progress=on_progress,
                    should_stop=self._stop.is_set, preview_every=self._preview_every()),
                    self.models.load)
            self.results, self.reference_results = list(final[:n]), list(final[n:])
        except BaseException as err:  # delivered to the page by snapshots(), never lost in a thread
            self.error = err

    def write_outputs(self, seconds: float) -> RunOutputs:
        """Measure the run and finish its folder (cells are already on disk); returns what the page needs."""
        references = (references_from(self.reference_specs, self.reference_results)
                      if self.reference_specs else None)
        convergence = measure(self.cells, self.results, references=references)
        manifest = self.writer.finish(self.results, self.layout, {"wall_seconds": seconds},
                                      extra_files={"metrics.csv": convergence.to_csv().encode()},
                                      metrics=convergence.to_json())
        with Image.open(self.folder / "grid.png") as grid:
            grid.load()
        return RunOutputs(run_id=self.folder.name, folder=self.folder, grid=grid, manifest=manifest,
                          cells=self.cells, results=self.results, labels=self.labels,
                          shape=self.resolved.shape, layout=self.layout, convergence=convergence)

    def _preview_every(self) -> int:
        """About 20 previews per cell for the trajectory slider, whatever the step count."""
        return max(1, max(c.spec.steps for c in self.cells) // 20)

    @staticmethod
    def _calls(events: _Events) -> int:
        return events.progress.calls_done if events.progress is not None else 0

    def _snapshot(self, calls: int, total_calls: int, started: float, status: str,
                  draw: bool = True) -> Snapshot:
        drawing = time.perf_counter()
        grid = self.partial_grid() if draw else None  # the last snapshot shows the finished grid
        self._draw_s = time.perf_counter() - drawing
        progress = Progress(cells_total=len(self.cells), calls_total=total_calls, cells_done=self.delivered,
                            calls_done=calls, started=started)
        return Snapshot(grid=grid, progress=progress.at_now(), status=status)

    def partial_grid(self) -> Image.Image:
        """The grid so far: finished cells, failed cells' reasons, pending cells as blank tiles."""
        pending = Image.new("RGB", self.layout.cell_size, PENDING)
        images = []
        for result in self.results:
            if result is None:
                images.append(pending)
            elif result.ok:
                images.append(result.image)
            else:
                images.append(result.error or "no image")
        return draw_grid(images, self.labels, self.resolved.shape, self.layout)


def stopped_status(finished: int, total: int, outputs: RunOutputs) -> str:
    """What a Stop left: how many cells finished (kept and saved) and what the others show."""
    shown = any(r.previews for r in outputs.results if not r.ok)
    rest = "the others show how far they got (their last preview, marked unfinished)" if shown else \
        "the others had not started"
    if finished == 0:
        return ("stopped; no cell had finished — each shows how far it got (its last preview, "
                "marked unfinished)") if shown else "stopped; no cell had started"
    return f"stopped — {finished} of {total} cells finished and saved; {rest}"


def cell_cache() -> CellCache:
    """The app's process-wide cache of finished cells (pipeline.cache.CellCache)."""
    global CELL_CACHE
    if CELL_CACHE is None:
        from pipeline.cache import CellCache

        CELL_CACHE = CellCache(max_cells=CACHE_CELLS, max_bytes=CACHE_BYTES)
    return CELL_CACHE


@on_gpu  # on a ZeroGPU Space the GPU is attached for this call only
def _render(cell_specs: list[CellSpec], options: RunOptions, loader: Callable[[str], LoadedModel]
            ) -> list[CellResult]:
    from pipeline.render import render  # torch-heavy: imported when a grid first runs

    return render(cell_specs, options, cache=cell_cache(), loader=loader)


class OutputWriteError(ValueError):
    """The run's files could not be written (a full disk, a read-only folder)."""


class RenderFailedError(ValueError):
    """The engine could not finish the grid (out of memory even one image at a time)."""


def output_error(err: OSError) -> OutputWriteError:
    """A clear message for a failed write; the server's paths stay out of it."""
    reason = err.strerror or type(err).__name__
    return OutputWriteError(f"could not save the grid's files ({reason}); the run is incomplete and was "
                            "not delivered — the server's disk may be full, try again later")


def failure(err: BaseException) -> BaseException:
    """What the worker's error becomes for the page: a ValueError with a clear message where one is known."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return RenderFailedError("the grid ran out of memory even one image at a time — use a smaller "
                                 "size or fewer cells")
    if isinstance(err, OSError):
        return output_error(err)
    return err


def run_folder(config: AppConfig) -> Path:
    """A new folder for one run's files under the app's output root; old runs beyond KEEP_RUNS go.

    The name is a timestamp and 64 random bits, so a run's files cannot be guessed by another user.
    """
    root = config.out_root
    root.mkdir(parents=True, exist_ok=True)
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - (KEEP_RUNS - 1))]:  # with the new one, KEEP_RUNS in all
        shutil.rmtree(old, ignore_errors=True)
    folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(8)}"
    folder.mkdir()
    return folder
