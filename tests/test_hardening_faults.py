"""Faults during a grid, as the app meets them: Stop, out of memory, NaN, a model that will not
load, a full disk. Each keeps the finished work, says clearly what happened, and leaves nothing on
disk that claims to be complete when it is not (manifest.json is the mark of a complete run).

The engine's own tests (tests/test_engine.py) cover the same faults one level down:
test_stop_between_ticks_keeps_finished_cells, test_out_of_memory_halves_the_batch_and_gives_the_
same_images (injected through RunOptions.inject_fault), test_nan_in_one_cell_fails_that_cell_only
and, in tests/test_models.py, test_a_failed_load_keeps_the_previous_model.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

from grids.spec import Axis, GridSpec
from pipeline import denoiser
from pipeline.models import BUILTIN_DIR, loaded_model
from ui import handlers
from ui.config import AppConfig
from ui.models import ModelHolder
from ui.runner import RENDER_LOCK, GridJob


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> ModelHolder:
    return ModelHolder(AppConfig(public=True, out_root=tmp_path_factory.mktemp("fault-runs")))


@pytest.fixture(autouse=True)
def no_cell_cache(monkeypatch) -> None:
    """Every fault test renders its cells: the app's cell cache (ui.runner) keeps nothing here."""
    from pipeline.cache import CellCache
    from ui import runner

    monkeypatch.setattr(runner, "CELL_CACHE", CellCache(max_cells=0))


def small(**changes) -> GridSpec:
    fields = {"prompt": "grinning face", "seed": 5, "cfg": 5.0, "steps": 3,
              "x": Axis("sampler", ["Euler", "Heun"]), "y": Axis("seed", [5, 6]), **changes}
    return GridSpec(**fields)


def run(spec: GridSpec, holder: ModelHolder, session: str = "s") -> tuple[GridJob, list]:
    job = GridJob(spec, holder.config, holder)
    job.check()
    return job, list(handlers.run_job(job, session))


def shas(outputs) -> list[str | None]:
    return [c["sha256"] for c in outputs.manifest["cells"]]


# ---------------------------------------------------------------- Stop


def test_stop_releases_the_work_within_one_tick_and_keeps_finished_cells(holder, monkeypatch) -> None:
    job = GridJob(small(x=Axis("steps", [1, 1000]), y=None), holder.config, holder)
    started_after_stop = []
    real = denoiser.ModelDenoiser.__call__

    def counting(self, rows):
        started_after_stop.append(job.stopped)
        return real(self, rows)

    monkeypatch.setattr(denoiser.ModelDenoiser, "__call__", counting)
    job.check()
    snaps, stopped_at = [], None
    for snap in handlers.run_job(job, "stop-session"):
        snaps.append(snap)
        if snap.cells_done >= 1 and stopped_at is None:
            assert "Stopping" in handlers.stop("stop-session")
            stopped_at = time.perf_counter()
    released_s = time.perf_counter() - stopped_at
    assert started_after_stop.count(True) <= 1  # at most the tick already under way
    assert released_s < 10 and not RENDER_LOCK.locked() and "stop-session" not in handlers.JOBS
    last = snaps[-1]
    assert last.done and last.cells_done == 1
    assert last.status.startswith("stopped — 1 of 2 cells finished and saved; the others show how far")
    finished, stopped = last.outputs.manifest["cells"]
    assert finished["error"] is None and finished["model_calls"] == 1
    data = (job.folder / finished["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == finished["sha256"]
    assert stopped["model_calls"] < 1000 and stopped["file"] is None
    assert stopped["error"] == f"stopped by the user at step {stopped['model_calls']} of 1000"
    assert (job.folder / "manifest.json").is_file() and (job.folder / "grid.png").is_file()
    # the page's grid shows the unfinished cell's last preview where the file has a placeholder
    shown, written = np.asarray(last.grid), np.asarray(last.outputs.grid)
    assert shown.shape == written.shape and (shown != written).any()


def test_stop_while_the_first_grid_waits_for_the_model_stops_that_grid(tmp_path: Path) -> None:
    """The job is Stop-able from the moment Generate is pressed, not only once the model is in."""
    import threading

    from ui.settings import Settings

    release = threading.Event()

    class SlowHolder(ModelHolder):
        def load(self, name: str):
            release.wait(30)
            return super().load(name)

    slow = SlowHolder(AppConfig(out_root=tmp_path))
    started: list = []
    worker = threading.Thread(target=lambda: started.append(handlers.start_job(
        Settings(samplers=("Euler",), steps="5"), slow.config, slow, "waiting-session")))
    worker.start()
    deadline = time.monotonic() + 10
    while "waiting-session" not in handlers.JOBS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "Stopping" in handlers.stop("waiting-session")  # not "Nothing is running."
    release.set()
    worker.join(60)
    job, _settings = started[0]
    last = list(handlers.run_job(job, "waiting-session"))[-1]
    assert last.done and last.cells_done == 0 and last.status == "stopped; no cell had started"


# ---------------------------------------------------------------- out of memory


def test_out_of_memory_is_retried_one_image_at_a_time_with_identical_images(holder, monkeypatch) -> None:
    one_at_a_time = ModelHolder(replace(holder.config, max_batch=1))
    _job, clean = run(small(), one_at_a_time)
    _job, batched = run(small(), holder)
    batches = []
    real = denoiser.ModelDenoiser.__call__

    def small_gpu(self, rows):  # a GPU that fits one image per model call
        batches.append(len(rows))
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(self, rows)

    monkeypatch.setattr(denoiser.ModelDenoiser, "__call__", small_gpu)
    _job, retried = run(small(), holder)
    assert max(batches) == 4 and batches.count(1) > 0 and set(batches) <= {4, 2, 1}
    assert retried[-1].status == "done" and retried[-1].outputs.manifest["totals"]["failed"] == 0
    assert shas(retried[-1].outputs) == shas(clean[-1].outputs)  # byte-identical cell PNGs
    # and within a few levels of the grid rendered four at a time (CPU kernels round differently
    # for another batch size; tests/test_engine.py bounds the latents at 1e-4)
    for a, b in zip(retried[-1].outputs.results, batched[-1].outputs.results, strict=True):
        diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
        assert diff.max() <= 2, diff.max()  # measured: 1


def test_out_of_memory_even_one_at_a_time_is_a_clear_error(holder, monkeypatch) -> None:
    def no_memory(self, rows):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(denoiser.ModelDenoiser, "__call__", no_memory)
    job = GridJob(small(), holder.config, holder)
    job.check()
    with pytest.raises(gr.Error, match="ran out of memory even one image at a time — use a smaller size"):
        list(handlers.run_job(job, "oom"))
    assert not (job.folder / "manifest.json").exists() and not RENDER_LOCK.locked()


# ---------------------------------------------------------------- NaN


def test_nan_in_one_cell_marks_it_failed_and_delivers_the_rest(holder, monkeypatch) -> None:
    real = denoiser.ModelDenoiser._guide

    def poisoned(rows, out):
        res = real(rows, out)
        return [r * float("nan") if row.cfg == 7.5 else r for row, r in zip(rows, res, strict=True)]

    monkeypatch.setattr(denoiser.ModelDenoiser, "_guide", staticmethod(poisoned))
    job, snaps = run(small(y=Axis("cfg", [5.0, 7.5])), holder)
    manifest = snaps[-1].outputs.manifest
    assert snaps[-1].status == "done" and manifest["totals"]["failed"] == 2
    for cell in manifest["cells"]:
        if cell["settings"]["cfg"] == 7.5:
            assert cell["file"] is None and "returned NaN or inf at step 1 of 3" in cell["error"]
        else:
            assert cell["error"] is None and (job.folder / cell["file"]).is_file()


# ---------------------------------------------------------------- a model that will not load


@pytest.fixture
def broken_model(tmp_path: Path) -> Path:
    broken = tmp_path / "broken-model"
    shutil.copytree(BUILTIN_DIR, broken)
    unet = broken / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:1000])  # a download cut short
    return broken


def test_a_model_that_fails_to_load_leaves_the_previous_one_usable(tmp_path, broken_model) -> None:
    config = AppConfig(public=True, models=("builtin", str(broken_model)), out_root=tmp_path / "out")
    models = ModelHolder(config)
    before = models.load("builtin")
    job = GridJob(small(model=str(broken_model)), config, models)
    with pytest.raises(ValueError, match="not a valid .safetensors file"):
        job.check()
    assert models.status().startswith("Model: load failed — ") and loaded_model() is before
    _job, snaps = run(small(), models)  # the builtin model still renders, without a reload
    assert snaps[-1].status == "done" and snaps[-1].outputs.manifest["totals"]["failed"] == 0
    assert loaded_model() is before and models.status().startswith("Model: ready: builtin")


def test_an_unexpected_load_error_is_a_clear_message_not_a_stuck_status(tmp_path, monkeypatch) -> None:
    import pipeline.models

    def crashing(name, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'config'")

    models = ModelHolder(AppConfig(out_root=tmp_path))
    monkeypatch.setattr(pipeline.models, "load_model", crashing)
    with pytest.raises(ValueError, match="could not load 'builtin': 'NoneType' object has no attribute"):
        models.load("builtin")
    assert "loading" not in models.status() and "load failed" in models.status()


# ---------------------------------------------------------------- a full disk


@pytest.mark.parametrize("full_at", ["cells/", "grid.png", "bundle.zip", "manifest.json"])
def test_a_full_disk_is_a_clear_error_and_nothing_claims_to_be_complete(holder, monkeypatch,
                                                                        full_at: str) -> None:
    real = os.replace

    def full_disk(src, dst):  # every file is written under a temporary name, then renamed
        if full_at in str(dst):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    job = GridJob(small(), holder.config, holder)
    job.check()
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(gr.Error) as err:
        list(handlers.run_job(job, "disk"))
    message = err.value.message
    assert message.startswith("could not save the grid's files (No space left on device); the run is "
                              "incomplete and was not delivered")
    assert str(holder.config.out_root) not in message  # no server path
    left = {p.relative_to(job.folder).as_posix() for p in job.folder.rglob("*") if p.is_file()}
    assert "manifest.json" not in left and not any(".tmp" in name for name in left)
    assert not any(full_at in name for name in left)
    assert not RENDER_LOCK.locked()
