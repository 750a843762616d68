"""`cli.py grid` end to end on the tiny SD model: files, grid geometry, manifest, PNG metadata,
determinism of spec.json, exit codes and messages, failed cells, atomic writes."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import cli
import grids
from grids import GridSpec
from pipeline.models import load_model
from report.infotext_reader import read_parameters
from report.layout import PLACEHOLDER, GridLabels, LayoutOptions, plan_layout

SAMPLERS = ["Euler", "Euler a", "DPM++ 2M SDE"]
STEPS = [2, 3]
FILES = ["000-euler-steps-2.png", "001-euler-a-steps-2.png", "002-dpmpp-2m-sde-steps-2.png",
         "003-euler-steps-3.png", "004-euler-a-steps-3.png", "005-dpmpp-2m-sde-steps-3.png"]


def grid_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["grid", "--model", str(model), "--out", str(out), "--width", "32", "--height", "32",
            "--quiet", *extra]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def first(sd_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """A 3x2 sampler x steps grid with a random seed (-1), rendered once for these tests."""
    out = tmp_path_factory.mktemp("cli") / "grid"
    rc = cli.main(grid_args(sd_path, out, "--prompt", "a cat, on: a mat", "--negative-prompt", "blurry",
                            "--seed", "-1", "--cfg", "5", "--x", "sampler=" + ", ".join(SAMPLERS),
                            "--y", "steps=2-3"))
    return rc, out


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_writes_every_file_and_nothing_half_written(first):
    rc, out = first
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells", "grid.png", "manifest.json", "metrics.csv",
                                                     "spec.json"]
    sidecars = [name.replace(".png", ".json") for name in FILES]
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(FILES + sidecars)
    assert not list(out.rglob("*.tmp"))


def test_manifest_has_every_cell_with_its_settings_and_hash(first, sd_path):
    _, out = first
    m = manifest(out)
    assert m["spec"]["seed"] == -1 and isinstance(m["seed"], int) and m["seed"] >= 0
    assert m["shape"] == {"columns": 3, "rows": 2, "subgrids": 1}
    assert len(m["cells"]) == 6
    for i, c in enumerate(m["cells"]):
        ix, iy = i % 3, i // 3
        assert (c["index"], c["ix"], c["iy"], c["iz"]) == (i, ix, iy, 0)
        assert c["labels"] == {"x": SAMPLERS[ix], "y": f"Steps: {STEPS[iy]}", "z": None}
        assert c["settings"] == {
            "model": str(sd_path), "prompt": "a cat, on: a mat", "negative_prompt": "blurry", "width": 32,
            "height": 32, "seed": m["seed"], "sampler": SAMPLERS[ix], "sampler_options": {},
            "schedule": "Automatic", "steps": STEPS[iy], "cfg": 5.0}
        assert c["model_calls"] == STEPS[iy]  # one denoiser call a step for these three samplers
        assert c["error"] is None and c["seconds"] > 0
        assert c["file"] == f"cells/{FILES[i]}" and c["sha256"] == sha(out / c["file"])
    assert m["totals"]["cells"] == 6 and m["totals"]["failed"] == 0
    assert m["totals"]["model_calls"] == 3 * (2 + 3)
    assert m["grid"]["sha256"] == sha(out / "grid.png")


def test_pngs_carry_a1111_parameters(first, sd_path):
    _, out = first
    m = manifest(out)
    seed, model_hash = m["seed"], m["model"]["hash"]
    assert len(model_hash) == 10
    cell = Image.open(out / "cells" / FILES[4]).info["parameters"]
    assert cell == ("a cat, on: a mat\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, Schedule type: "
                    f"Uniform, CFG scale: 5, Seed: {seed}, Size: 32x32, Model hash: {model_hash}, "
                    f"Model: {sd_path.name}, Version: 0.1.0")
    assert m["cells"][4]["parameters"] == cell
    grid = Image.open(out / "grid.png").info["parameters"]
    assert grid == ("a cat, on: a mat\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, Schedule type: "
                    f"Uniform, CFG scale: 5, Seed: {seed}, Size: 32x32, Model hash: {model_hash}, "
                    f"Model: {sd_path.name}, Script: X/Y/Z plot, X Type: Sampler, "
                    'X Values: "Euler, Euler a, DPM++ 2M SDE", Y Type: Steps, Y Values: "2, 3", '
                    "Version: 0.1.0")


def test_grid_png_is_the_layout_with_each_cell_in_place(first):
    _, out = first
    spec = GridSpec.from_json((out / "spec.json").read_text())
    cells = [Image.open(out / "cells" / name).convert("RGB") for name in FILES]
    layout = plan_layout(cells, GridLabels.from_spec(spec), (3, 2, 1), LayoutOptions())
    grid = Image.open(out / "grid.png").convert("RGB")
    assert grid.size == (layout.width, layout.height) == (layout.left + 3 * 32, layout.top + 2 * 32)
    for i, cell in enumerate(cells):
        x0, y0 = layout.cell_origin(i % 3, i // 3, 0)
        assert grid.crop((x0, y0, x0 + 32, y0 + 32)).tobytes() == cell.tobytes()


def test_spec_json_reruns_to_identical_cells(first, sd_path, tmp_path):
    _, out = first
    spec = json.loads((out / "spec.json").read_text())
    assert spec["seed"] == manifest(out)["seed"]
    again = tmp_path / "again"
    assert cli.main(["grid", "--spec", str(out / "spec.json"), "--out", str(again), "--quiet"]) == 0
    assert [c["sha256"] for c in manifest(again)["cells"]] == [c["sha256"] for c in manifest(out)["cells"]]
    assert sha(again / "grid.png") == sha(out / "grid.png")
    # A smaller grid into the same folder leaves only its own cell files behind.
    assert cli.main(grid_args(sd_path, again, "--x", "none", "--y", "none", "--steps", "2")) == 0
    assert sorted(p.name for p in (again / "cells").iterdir()) == ["000-cell.json", "000-cell.png"]
    assert len(manifest(again)["cells"]) == 1


def test_failed_cells_exit_1_with_placeholders(sd_path, tmp_path, capsys):
    out = tmp_path / "failing"
    rc = cli.main(grid_args(sd_path, out, "--schedule", "Align Your Steps", "--seed", "3",
                            "--x", "sampler=Euler, Euler (diffusers)", "--y", "steps=2"))
    assert rc == 1
    m = manifest(out)
    ok, bad = m["cells"]
    assert ok["error"] is None and ok["file"] == "cells/000-euler-steps-2.png"
    assert "cannot follow the 'Align Your Steps' schedule" in bad["error"]
    assert bad["file"] is None and bad["sha256"] is None and m["totals"]["failed"] == 1
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["000-euler-steps-2.json",
                                                                  "000-euler-steps-2.png"]
    spec = GridSpec.from_json((out / "spec.json").read_text())
    layout = plan_layout([None, None], GridLabels.from_spec(spec), (2, 1, 1),
                         LayoutOptions(cell_size=(32, 32)))
    x0, y0 = layout.cell_origin(1, 0, 0)
    box = Image.open(out / "grid.png").convert("RGB").crop((x0, y0, x0 + 32, y0 + 32))
    assert dict((c, n) for n, c in box.getcolors(4096))[PLACEHOLDER] > 32 * 32 // 3
    assert "1 of 2 cells failed" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--x", "sampler=Euler, Eulr"], "error: X axis: unknown sampler 'Eulr' — did you mean"),
    (["--y", "steps"], "error: --y must look like AXIS=VALUES"),
    (["--width", "33"], "error: width 33 is not a multiple of 2 — try 32 or 34"),
    (["--x", "seed=1-500"], "error: this grid has 2000 cells; the limit is 400"),  # x 4 default steps
])
def test_bad_input_exits_2_with_one_line(sd_path, tmp_path, capsys, extra, message):
    assert cli.main(grid_args(sd_path, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_bad_spec_file_and_unknown_model_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"sampler": "Euler", "stepz": 20}')
    assert cli.main(["grid", "--spec", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown setting(s) 'stepz' in the grid spec")
    bad.write_text("{not json")
    assert cli.main(["grid", "--spec", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: the grid spec is not valid JSON")
    assert cli.main(["grid", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_argparse_errors_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["grid", "--out", "x", "--steps", "many"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == \
        "error: argument --steps: invalid int value: 'many' (see cli.py grid --help)\n"


def test_flags_over_defaults_and_spec(tmp_path):
    parse = cli.build_parser().parse_args
    spec = cli.build_spec(parse(["grid", "--out", "o"]))
    assert (spec.x.axis, spec.y.axis, spec.z) == ("steps", "sampler", None)  # as the app's page
    spec = cli.build_spec(parse(["grid", "--out", "o", "--sampler", "Euler a", "--cfg", "4"]))
    assert spec.x.axis == "steps" and spec.y is None and spec.sampler == "Euler a" and spec.cfg == 4.0
    spec = cli.build_spec(parse(["grid", "--out", "o", "--x", "sampler=Euler, Heun"]))
    assert (spec.x.axis, spec.y.axis) == ("sampler", "steps")  # the default steps move to Y
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"steps": 8, "x": {"axis": "cfg", "values": "3, 5"}}))
    spec = cli.build_spec(parse(["grid", "--spec", str(path), "--out", "o",
                                 "--y", "Schedule type=Karras, Beta", "--x", "none", "--steps", "9"]))
    assert spec.x is None and spec.y.values == ("Karras", "Beta") and spec.steps == 9


def test_formats_animation_and_zip_flags(sd_path, tmp_path):
    out = tmp_path / "extras"
    rc = cli.main(grid_args(sd_path, out, "--seed", "2", "--x", "sampler=Euler, DPM++ 2S a",
                            "--y", "steps=2, 3", "--formats", "jpg,WEBP", "--animation", "--zip"))
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["animation.gif", "bundle.zip", "cells", "grid.jpg",
                                                     "grid.png", "grid.webp", "manifest.json", "metrics.csv",
                                                     "spec.json"]
    m = manifest(out)
    assert sorted(m["grid"]["formats"]) == ["jpeg", "webp"] and m["animation"]["axis"] == "y"
    assert read_parameters(out / "grid.webp") == m["grid"]["parameters"]
    assert [c["diffusers_snippet"] is None for c in m["cells"]] == [False, True, False, True]
    # Euler and DPM++ 2S a both have ComfyUI names; the cells run on "Automatic" = Uniform/Karras
    assert [c["comfyui_workflow"]["3"]["inputs"]["sampler_name"] for c in m["cells"]] == \
        ["euler", "dpmpp_2s_ancestral", "euler", "dpmpp_2s_ancestral"]
    with zipfile.ZipFile(out / "bundle.zip") as zf:
        assert zf.read("manifest.json") == (out / "manifest.json").read_bytes() and len(zf.namelist()) == 11
        assert zf.read("metrics.csv") == (out / "metrics.csv").read_bytes()


def test_unknown_format_flag_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["grid", "--out", str(tmp_path / "o"), "--formats", "png,gif"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: argument --formats: unknown image format 'gif'; choose from "
                                       "png, jpeg, webp (see cli.py grid --help)\n")


def test_model_axis_names_each_cells_own_model(sd_path, sdxl_path, tmp_path):
    out = tmp_path / "models"
    rc = cli.main(grid_args(sd_path, out, "--seed", "1", "--steps", "2", "--sampler", "Euler",
                            "--x", f"model={sd_path}, {sdxl_path}", "--y", "none"))
    assert rc == 0
    texts = [c["parameters"] for c in manifest(out)["cells"]]
    hashes = [t.split("Model hash: ")[1][:10] for t in texts]
    assert f"Model: {sd_path.name}, " in texts[0] and f"Model: {sdxl_path.name}, " in texts[1]
    # The second model is still the one in memory; its hash is what its cell must carry.
    assert hashes == [manifest(out)["model"]["hash"], load_model(str(sdxl_path)).model_hash]
    assert hashes[0] != hashes[1] and all(len(h) == 10 for h in hashes)


def test_the_apps_spec_json_runs_unchanged(tmp_path):
    from ui.settings import Settings

    # The app's default controls: its spec.json is exactly what --spec reads.
    default = Settings().to_spec().resolved().to_json()
    path = tmp_path / "app-default.json"
    path.write_text(json.dumps(default))
    args = cli.build_parser().parse_args(["grid", "--spec", str(path), "--out", str(tmp_path / "o")])
    assert cli.build_spec(args).to_json() == default
    # A smaller grid from the app's controls (Z axis, prompt S/R, vary seeds), rendered from its file.
    settings = Settings(prompt="grinning face", samplers=("Euler", "DPM++ 2M SDE"), steps="2, 3", width=32,
                        height=32, seed=9, z_axis="Prompt S/R", z_values="grinning, sad", vary_seeds=True)
    app_json = settings.to_spec().resolved().to_json()
    path.write_text(json.dumps(app_json, indent=2))
    out = tmp_path / "app"
    assert cli.main(["grid", "--spec", str(path), "--out", str(out), "--quiet"]) == 0
    m = manifest(out)
    assert m["spec"] == app_json and json.loads((out / "spec.json").read_text()) == app_json
    assert m["shape"] == {"columns": 2, "rows": 2, "subgrids": 2} and m["totals"]["failed"] == 0
    assert [c["settings"]["prompt"] for c in m["cells"]] == ["grinning face"] * 4 + ["sad face"] * 4
    assert len({c["settings"]["seed"] for c in m["cells"]}) == 8


def test_metrics_from_disk_equal_metrics_from_memory(sd_path, tmp_path):
    from pipeline.render import render
    from report.metrics import measure
    from sweeps.shards import work_units

    out = tmp_path / "m"
    assert cli.main(grid_args(sd_path, out, "--seed", "4", "--latents", "--x", "sampler=Euler, Heun",
                              "--y", "steps=2, 3, 4")) == 0
    m = manifest(out)
    cells = grids.expand(GridSpec.from_json((out / "spec.json").read_text()))
    specs = [c.spec for c in cells]
    (unit,) = work_units(specs)  # one engine call, in the order the CLI renders them
    results = [None] * len(cells)
    for i, result in zip(unit, render([specs[i] for i in unit]), strict=True):
        results[i] = result
    expected = measure(cells, results)
    assert (out / "metrics.csv").read_text() == expected.to_csv()
    assert m["metrics"] == json.loads(json.dumps(expected.to_json()))
    assert all(row.latent_rmse is not None for row in expected.cells)
    assert [c["latents"]["file"] for c in m["cells"]] == [f"cells/{n}.safetensors" for n in (
        "000-euler-steps-2", "001-heun-steps-2", "002-euler-steps-3", "003-heun-steps-3",
        "004-euler-steps-4", "005-heun-steps-4")]
    assert [c["sha256"] for c in m["cells"]] == [sha(out / c["file"]) for c in m["cells"]]


def test_no_grid_writes_cells_metrics_and_manifest(sd_path, tmp_path):
    out = tmp_path / "nogrid"
    assert cli.main(grid_args(sd_path, out, "--seed", "4", "--no-grid", "--zip", "--x", "sampler=Euler",
                              "--y", "steps=2, 3", "--max-megapixels", "0.001")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bundle.zip", "cells", "manifest.json", "metrics.csv",
                                                     "spec.json"]
    m = manifest(out)
    assert m["grid"] is None and len(m["cells"]) == 2 and m["metrics"]["series"][0]["points"]
    with zipfile.ZipFile(out / "bundle.zip") as zf:
        assert sorted(zf.namelist()) == ["cells/000-euler-steps-2.png", "cells/001-euler-steps-3.png",
                                         "manifest.json", "metrics.csv", "spec.json"]


@pytest.mark.parametrize("extra,message", [
    (["--chunk", "0"], "error: --chunk must be at least 1 cell, got 0"),
    (["--no-grid", "--animation"], "error: --animation draws grids; drop --no-grid or --animation"),
    (["--max-cells", "3"], "error: this grid has 24 cells; the limit is 3"),  # the default grid
])
def test_sweep_flags_refuse_bad_values(sd_path, tmp_path, capsys, extra, message):
    assert cli.main(grid_args(sd_path, tmp_path / "o", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_progress_bar_on_stderr_without_quiet(sd_path, tmp_path, capsys):
    args = [a for a in grid_args(sd_path, tmp_path / "bar", "--seed", "2", "--cfg", "5",
                                 "--x", "sampler=Euler", "--y", "steps=2, 3") if a != "--quiet"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "100%" in err and "cells 2/2, model calls 5/5" in err  # Euler: 2 + 3 denoiser calls
    assert "Traceback" not in err


def test_out_of_memory_even_one_image_at_a_time_is_one_line_not_a_traceback(sd_path, tmp_path, capsys,
                                                                           monkeypatch):
    import torch

    from pipeline import denoiser

    def no_memory(self, rows):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    monkeypatch.setattr(denoiser.ModelDenoiser, "__call__", no_memory)
    out = tmp_path / "oom"
    assert cli.main(grid_args(sd_path, out, "--x", "sampler=Euler", "--y", "steps=2")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ran out of memory even one image at a time — use a smaller size")
    assert "--dtype float16" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "manifest.json").exists()  # nothing claims to be complete


def test_the_readme_and_help_show_commands_a_fresh_shell_can_run():
    """`python cli.py` fails in a fresh shell (no venv on PATH): the README and --help say
    `.venv/bin/python cli.py`, and name the same hub id."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    bare = [line for line in readme.splitlines()
            if "python cli.py" in line and ".venv/bin/python" not in line]
    assert not bare, bare
    assert "python cli.py" not in cli.EXAMPLES.replace(".venv/bin/python cli.py", "")
    hub_ids = set(__import__("re").findall(r"--model (\S+/\S+)", cli.EXAMPLES))
    assert hub_ids and all(h in readme for h in hub_ids), hub_ids
