"""GridFolder, the output folder a run writes (the CLI's, the app's): cells as they arrive, grid in
several formats, animation, extra files, metrics, zip bundle, manifest last; refusals up front."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from types import SimpleNamespace

import pytest
from PIL import Image

from core.cells import CellResult
from grids import GridSpec
from report.exports import ExportError
from report.infotext_reader import parse_parameters, read_parameters
from report.layout import LayoutOptions
from report.run_folder import FolderOptions, GridFolder, OutputFolderError, cell_files, parse_formats, slug

MODEL = SimpleNamespace(name="/models/tiny", model_hash="0123456789", family="sd1", default_size=(32, 32))
COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 210), (230, 200, 40)]
LAYOUT = LayoutOptions(cell_size=(32, 32))


def spec(x="sampler=Euler, DPM++ 2S a", y="steps=2, 3") -> GridSpec:
    data = {"model": MODEL.name, "prompt": "a cat", "seed": 5, "width": 32, "height": 32}
    for pos, text in (("x", x), ("y", y)):
        if text:
            axis, values = text.split("=")
            data[pos] = {"axis": axis, "values": values}
    return GridSpec.from_json(data)


def folder(out, options=None, **kw) -> GridFolder:
    s = spec(**kw)
    return GridFolder(out, s, s.resolved(), MODEL, options or FolderOptions(), models=lambda name: None)


def results(run: GridFolder, failed=()) -> list[CellResult]:
    return [CellResult(spec=c.spec, image=None if i in failed else Image.new("RGB", (32, 32), COLOURS[i % 4]),
                       latents=None, denoiser_calls=c.spec.steps, seconds=0.25,
                       error="the sampler failed" if i in failed else None)
            for i, c in enumerate(run.cells)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_everything_asked_for_is_written_and_listed(tmp_path):
    run = folder(tmp_path, FolderOptions(formats=("webp", "JPG"), animation=True, zip=True))
    run.prepare()
    res = results(run, failed={3})
    run.on_cell(0, res[0])
    assert (tmp_path / run.files[0]).is_file() and not (tmp_path / "manifest.json").exists()
    manifest = run.finish(res, LAYOUT, {"wall_seconds": 1.23456},
                          extra_files={"metrics.csv": b"cell,rms\n0,1\n"},
                          metrics={"converged": ["Euler"], "rms": [0.5, None]})
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["animation.gif", "bundle.zip", "cells/000-euler-steps-2.png",
                     "cells/001-dpmpp-2s-a-steps-2.png", "cells/002-euler-steps-3.png", "grid.jpg",
                     "grid.png", "grid.webp", "manifest.json", "metrics.csv", "spec.json"]
    on_disk = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(manifest))
    grid = manifest["grid"]
    assert grid["sha256"] == sha((tmp_path / "grid.png").read_bytes())
    assert grid["formats"] == {fmt: {"file": name, "sha256": sha((tmp_path / name).read_bytes())}
                               for fmt, name in (("webp", "grid.webp"), ("jpeg", "grid.jpg"))}
    for name in ("grid.png", "grid.jpg", "grid.webp"):
        assert read_parameters(tmp_path / name) == grid["parameters"]
    assert parse_parameters(grid["parameters"])["X Values"] == "Euler, DPM++ 2S a"
    assert manifest["animation"] == {"file": "animation.gif", "axis": "y", "frames": 2, "ms_per_frame": 500,
                                     "sha256": sha((tmp_path / "animation.gif").read_bytes())}
    assert manifest["bundle"] == "bundle.zip" and manifest["metrics"]["rms"] == [0.5, None]
    assert manifest["extra_files"] == [{"file": "metrics.csv", "sha256": sha(b"cell,rms\n0,1\n")}]
    assert manifest["totals"] == {"cells": 4, "failed": 1, "model_calls": 10, "wall_seconds": 1.235}


def test_cells_carry_their_text_and_diffusers_script(tmp_path):
    run = folder(tmp_path)
    run.prepare()
    manifest = run.finish(results(run, failed={3}), LAYOUT, {})
    cells = manifest["cells"]
    assert [c["labels"] for c in cells[:2]] == [{"x": "Euler", "y": "Steps: 2", "z": None},
                                                {"x": "DPM++ 2S a", "y": "Steps: 2", "z": None}]
    euler, ancestral = cells[0], cells[1]
    script = euler["diffusers_snippet"]
    assert "EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing='linspace')" in script
    assert "StableDiffusionPipeline.from_pretrained(" in script
    assert ancestral["diffusers_snippet"] is None  # no diffusers scheduler for DPM++ 2S a
    assert euler["parameters"] == read_parameters(tmp_path / euler["file"])
    assert "Model hash: 0123456789, Model: tiny," in euler["parameters"]
    assert cells[3]["file"] is None and cells[3]["error"] == "the sampler failed"
    assert manifest["animation"] is None and manifest["bundle"] is None and manifest["metrics"] is None
    assert manifest["grid"]["formats"] == {} and manifest["extra_files"] == []


def test_bundle_holds_the_run_with_images_stored(tmp_path):
    run = folder(tmp_path, FolderOptions(zip=True, formats=("jpeg",)))
    run.prepare()
    run.finish(results(run), LAYOUT, {}, extra_files={"metrics/metrics.csv": b"a,b\n" * 40})
    with zipfile.ZipFile(tmp_path / "bundle.zip") as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
        assert sorted(kinds) == sorted([*(f"cells/{p.name}" for p in (tmp_path / "cells").iterdir()),
                                        "grid.png", "grid.jpg", "metrics/metrics.csv", "spec.json",
                                        "manifest.json"])
        assert all(kinds[n] == zipfile.ZIP_STORED for n in kinds if n.endswith((".png", ".jpg")))
        assert kinds["manifest.json"] == kinds["metrics/metrics.csv"] == zipfile.ZIP_DEFLATED
        assert zf.read("manifest.json") == (tmp_path / "manifest.json").read_bytes()
        assert zf.read("grid.png") == (tmp_path / "grid.png").read_bytes()
    assert (tmp_path / "metrics" / "metrics.csv").read_bytes() == b"a,b\n" * 40


def test_animation_steps_through_steps_or_else_x(tmp_path):
    assert folder(tmp_path, x="steps=2, 3", y="sampler=Euler, Euler a").animation_axis() == "x"
    assert folder(tmp_path).animation_axis() == "y"
    assert folder(tmp_path, y="cfg=3, 5").animation_axis() == "x"
    assert folder(tmp_path, x=None, y="cfg=3, 5").animation_axis() == "y"
    run = folder(tmp_path, FolderOptions(animation=True, ms_per_frame=300), y="cfg=3, 5")
    run.prepare()
    manifest = run.finish(results(run), LAYOUT, {})
    with Image.open(io.BytesIO((tmp_path / "animation.gif").read_bytes())) as gif:
        assert gif.n_frames == 2 == manifest["animation"]["frames"] and gif.info["duration"] == 300


def test_a_new_run_removes_the_previous_runs_outputs(tmp_path):
    first = folder(tmp_path, FolderOptions(formats=("webp",), animation=True, zip=True))
    first.prepare()
    first.finish(results(first), LAYOUT, {})
    second = folder(tmp_path, x="sampler=Euler", y=None)
    second.prepare()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "spec.json"]
    second.finish(results(second), LAYOUT, {})
    assert [p.name for p in (tmp_path / "cells").iterdir()] == ["000-euler.png"]


@pytest.mark.parametrize("kwargs,message", [
    ({"metrics": {"rms": float("nan")}}, "metrics must be JSON data .* Out of range float values"),
    ({"metrics": {"when": object()}}, "metrics must be JSON data"),
    ({"metrics": [1, 2]}, "metrics must be a dict"),
    ({"extra_files": {"manifest.json": b"{}"}}, "would overwrite the run's own 'manifest.json'"),
    ({"extra_files": {"cells/x.png": b""}}, "would overwrite the run's own 'cells/x.png'"),
    ({"extra_files": {"../up.csv": b""}}, "must be a relative path inside the folder"),
    ({"extra_files": {"m.csv": "text"}}, "must be bytes, got str"),
])
def test_bad_extras_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    run = folder(tmp_path)
    run.prepare()
    with pytest.raises(OutputFolderError, match=message):
        run.finish(results(run), LAYOUT, {}, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells", "spec.json"]
    assert not list((tmp_path / "cells").iterdir())


def test_unwritable_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputFolderError, match="cannot write the output folder .*file/out"):
        folder(tmp_path / "file" / "out").prepare()


def test_format_options():
    assert FolderOptions().formats == ("png",)
    assert FolderOptions(formats=("WEBP", "jpg", "png", "jpeg")).formats == ("png", "webp", "jpeg")
    assert parse_formats(" png , JPEG,webp ") == ("png", "jpeg", "webp")
    with pytest.raises(ExportError, match="unknown image format 'gif'; choose from png, jpeg, webp"):
        parse_formats("png,gif")
    with pytest.raises(ExportError, match="at least one of png, jpeg, webp"):
        parse_formats(" , ")


def test_slugs_and_cell_files():
    assert slug(("DPM++ 2M Karras", "Steps: 20", None)) == "dpmpp-2m-karras-steps-20"
    assert slug((None, None, None)) == "cell"
    assert slug(("CFG Scale: 7.5", "Prompt S/R: a cat, ünï")) == "cfg-scale-7-5-prompt-s-r-a-cat-n"
    cells = folder(".").cells
    assert cell_files(cells) == ["cells/000-euler-steps-2.png", "cells/001-dpmpp-2s-a-steps-2.png",
                                 "cells/002-euler-steps-3.png", "cells/003-dpmpp-2s-a-steps-3.png"]
    assert cell_files(cells * 300)[-1].startswith("cells/1199-")
