"""GridFolder's sweep side: cell sidecars, resuming from them, results read back from disk
(the same grid and manifest as results in memory), no grid image, half-written files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from core.cells import CellResult
from grids import GridSpec
from report.layout import LayoutOptions
from report.run_folder import FolderOptions, GridFolder, OutputFolderError
from report.stored import NOT_RENDERED, CellImages

MODEL = SimpleNamespace(name="/models/tiny", model_hash="0123456789", family="sd1", default_size=(32, 32))
LAYOUT = LayoutOptions(cell_size=(32, 32))


JOURNAL = FolderOptions(journal=True)


def folder(out, options=JOURNAL, steps="2, 3", model=MODEL) -> GridFolder:
    spec = GridSpec.from_json({"model": MODEL.name, "prompt": "a cat", "seed": 5, "width": 32, "height": 32,
                               "x": {"axis": "sampler", "values": "Euler, DPM++ 2M SDE"},
                               "y": {"axis": "steps", "values": steps}})
    return GridFolder(out, spec, spec.resolved(), model, options, models=lambda name: None)


def results(run: GridFolder, failed=()) -> list[CellResult]:
    return [CellResult(spec=c.spec, latents=torch.full((1, 4, 4, 4), float(i)),
                       image=None if i in failed else Image.new("RGB", (32, 32), (40 * i, 90, 200)),
                       denoiser_calls=c.spec.steps, seconds=0.25,
                       error="the sampler failed" if i in failed else None)
            for i, c in enumerate(run.cells)]


def test_resume_keeps_exactly_the_cells_whose_sidecars_verify(tmp_path):
    run = folder(tmp_path)
    assert run.prepare() == []
    res = results(run, failed={1})
    for i, r in enumerate(res):
        run.on_cell(i, r)
    # Failed cells leave no files; finished ones a PNG and its sidecar.
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == [
        "000-euler-steps-2.json", "000-euler-steps-2.png", "002-euler-steps-3.json", "002-euler-steps-3.png",
        "003-dpmpp-2m-sde-steps-3.json", "003-dpmpp-2m-sde-steps-3.png"]
    sidecar = json.loads((tmp_path / "cells/002-euler-steps-3.json").read_text())
    assert sidecar["record"] == run.records[2] and sidecar["key"] == run.cells[2].spec.key()
    assert sidecar["model_hash"] == MODEL.model_hash

    again = folder(tmp_path)
    assert again.prepare(resume=True) == [0, 2, 3]
    assert [again.records[i] for i in (0, 2, 3)] == [run.records[i] for i in (0, 2, 3)]
    (tmp_path / run.files[2]).write_bytes(b"changed")
    assert folder(tmp_path).prepare(resume=True) == [0, 3]
    other = SimpleNamespace(**{**MODEL.__dict__, "model_hash": "9876543210"})  # the model changed
    assert folder(tmp_path, model=other).prepare(resume=True) == []
    assert folder(tmp_path, steps="3, 2").prepare(resume=True) == []  # other settings at those places
    assert folder(tmp_path, FolderOptions(journal=True, latents=True)).prepare(resume=True) == []
    assert folder(tmp_path).prepare() == []  # not resuming: the sidecars go, the PNGs wait for finish()
    assert not list((tmp_path / "cells").glob("*.json"))
    assert len(list((tmp_path / "cells").glob("*.png"))) == 3


def test_resume_needs_the_journal(tmp_path):
    with pytest.raises(OutputFolderError, match="FolderOptions\\(journal=True\\)"):
        folder(tmp_path, FolderOptions()).prepare(resume=True)


def test_prepare_removes_half_written_files(tmp_path):
    (tmp_path / "cells").mkdir(parents=True)
    for name in ("cells/.000-euler-steps-2.png.4242.tmp", ".manifest.json.17.tmp"):
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / "cells/notes.tmp").write_bytes(b"the user's")
    folder(tmp_path).prepare(resume=True)
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["notes.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "spec.json"]


def test_finishing_from_disk_writes_what_finishing_from_memory_writes(tmp_path):
    options = FolderOptions(journal=True, latents=True, animation=True, formats=("png", "webp"))
    manifests, grids_ = [], []
    for name in ("memory", "disk"):
        run = folder(tmp_path / name, options)
        run.prepare()
        res = results(run, failed={1})
        for i, r in enumerate(res[:3]):  # cell 3 never delivered: finish() writes it
            run.on_cell(i, r)
        stored = run.stored_results()
        assert stored[3].error == NOT_RENDERED and not stored[3].ok
        source = res if name == "memory" else [*stored[:3], res[3]]
        manifests.append(run.finish(source, LAYOUT, {"wall_seconds": 1.0}))
        grids_.append((tmp_path / name / "grid.png").read_bytes())
    assert manifests[0] == manifests[1] and grids_[0] == grids_[1]
    assert manifests[0]["cells"][0]["latents"]["file"] == "cells/000-euler-steps-2.safetensors"
    stored = folder(tmp_path / "disk", options)
    stored.prepare(resume=True)
    back = stored.stored_results()
    assert torch.equal(back[2].latents, torch.full((1, 4, 4, 4), 2.0))
    assert back[0].image.tobytes() == Image.new("RGB", (32, 32), (0, 90, 200)).tobytes()
    assert back[-1].spec == back[3].spec and back[1].image is None
    assert CellImages(back)[1] == "stopped before this cell rendered"


def test_no_grid_image(tmp_path):
    run = folder(tmp_path, FolderOptions(journal=True, grid=False, zip=True))
    run.prepare()
    manifest = run.finish(results(run), LAYOUT, {})
    assert manifest["grid"] is None and not (tmp_path / "grid.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.zip", "cells", "manifest.json", "spec.json"]
