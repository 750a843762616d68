"""A grid job as the page runs it: streaming snapshots, files on disk, convergence verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grids.spec import Axis, GridSpec
from ui.config import AppConfig
from ui.models import ModelHolder
from ui.runner import GridJob


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> ModelHolder:
    return ModelHolder(AppConfig(out_root=tmp_path_factory.mktemp("runs")))


def spec() -> GridSpec:
    return GridSpec(prompt="grinning face", seed=3, cfg=1.0, x=Axis("steps", [8, 16]),
                    y=Axis("sampler", ["Euler", "Euler a", "DPM++ 2M SDE"]))


def test_a_job_streams_then_writes_every_file(holder: ModelHolder) -> None:
    job = GridJob(spec(), holder.config, holder)
    job.check()
    snaps = list(job.snapshots())
    assert snaps[0].progress.cells_done == 0 and not snaps[0].done
    last = snaps[-1]
    assert last.done and last.progress.cells_done == last.progress.cells_total == 6 and last.status == "done"
    out = last.outputs
    names = {p.name for p in out.files}
    assert {"grid.png", "bundle.zip", "animation.gif", "metrics.csv", "manifest.json", "spec.json"} <= names
    assert len(out.gallery()) == 6 and all(Path(path).exists() for path in out.gallery())
    image, caption, params, snippet, workflow, workflow_file = out.cell_view(0)
    assert caption == "Euler · Steps: 8"  # the row, then the column
    assert Path(image).exists() and "Sampler: Euler" in params and "Steps: 8" in params
    assert "EulerDiscreteScheduler" in snippet
    # beside them, the cell as a ComfyUI API-format prompt, to copy or to download
    assert json.loads(workflow)["3"]["inputs"]["sampler_name"] == "euler"
    assert json.loads(Path(workflow_file).read_text(encoding="utf-8")) == json.loads(workflow)
    assert set(out.chart("steps")["series"]) == {"Euler", "Euler a", "DPM++ 2M SDE"}
    assert out.convergence.reference_mode == "highest steps"
    assert out.trajectory(0.5).size == out.grid.size


def test_accurate_reference_judges_noisy_samplers_non_converging(holder: ModelHolder) -> None:
    job = GridJob(spec(), holder.config, holder, accurate_reference=True)
    job.check()
    out = list(job.snapshots())[-1].outputs
    assert len(job.reference_results) == 1 and job.reference_results[0].ok  # one seed, one prompt
    assert out.convergence.reference_mode == "accurate"
    verdicts = out.convergence.verdicts
    assert verdicts["Euler a"].startswith("does not converge")
    assert verdicts["DPM++ 2M SDE"].startswith("does not converge")
    assert "high-accuracy reference" in out.verdicts_markdown()
    assert len(out.manifest["cells"]) == 6  # the reference is measured against, not drawn


def test_overlay_writes_cost_on_the_final_grid(holder: ModelHolder) -> None:
    one = GridSpec(prompt="grinning face", seed=3, cfg=1.0, x=Axis("steps", [4]))
    grids_drawn = []
    for overlay in (False, True):
        job = GridJob(one, holder.config, holder, overlay=overlay)
        job.check()
        grids_drawn.append(list(job.snapshots())[-1].outputs.grid)
    plain, costed = grids_drawn
    assert plain.size == costed.size
    w, h = plain.size
    foot = [(x, h - 2) for x in range(w // 2, w)]
    darker = sum(sum(costed.getpixel(p)) < sum(plain.getpixel(p)) for p in foot)
    assert darker > len(foot) // 2  # the cell's foot carries the dark caption band


def test_a_new_step_column_renders_only_its_own_cells(holder: ModelHolder, monkeypatch) -> None:
    import json

    from pipeline import denoiser
    from ui import runner

    runner.cell_cache().clear()
    job = GridJob(spec(), holder.config, holder)
    job.check()
    list(job.snapshots())
    calls = []
    real = denoiser.ModelDenoiser.__call__

    def counting(self, rows):
        calls.append(len(rows))
        return real(self, rows)

    monkeypatch.setattr(denoiser.ModelDenoiser, "__call__", counting)
    wider = GridSpec(prompt="grinning face", seed=3, cfg=1.0, x=Axis("steps", [8, 16, 24]),
                     y=Axis("sampler", ["Euler", "Euler a", "DPM++ 2M SDE"]))
    job = GridJob(wider, holder.config, holder)
    job.check()
    snaps = list(job.snapshots())
    assert sum(calls) == 3 * 24  # the three 24-step cells; the six others come from the cache
    last = snaps[-1]
    assert last.done and last.progress.cells_done == 9 and last.status == "done"
    cells = json.loads((job.folder / "manifest.json").read_text(encoding="utf-8"))["cells"]
    assert [c["cached"] for c in cells] == [True, True, False] * 3
    assert all(c["error"] is None and (job.folder / c["file"]).is_file() for c in cells)  # cached ones too
    assert len(last.outputs.gallery()) == 9
