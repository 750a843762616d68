"""Resuming: a sweep killed midway and run again keeps the cells it verified and ends with what
an uninterrupted run writes; tampered or foreign cells render again; --fresh renders all;
random seeds survive the restart; a sweep keeps no cell images in memory."""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import time
import weakref
from pathlib import Path

import pytest

import cli
from grids import GridSpec
from report.run_folder import FolderOptions
from sweeps import seeds
from sweeps.run import Sweep, SweepOptions
from tests.sweep_helpers import (
    cell_bytes,
    child_env,
    cli_command,
    grid_args,
    manifest,
    without_timings,
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep-whole") / "grid"
    assert cli.main(grid_args(out, "--quiet")) == 0
    return out


def sidecars(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "cells").glob("*.json"))}


def mtimes(out: Path) -> list[int]:
    """When each cell's PNG was last written, in cell order."""
    return [(out / c["file"]).stat().st_mtime_ns for c in manifest(out)["cells"]]


def kill_after_first_cells(out: Path) -> dict[str, bytes]:
    """Start the sweep in a child process, SIGKILL it as soon as a cell's sidecar lands; returns
    the sidecars on disk then."""
    child = subprocess.Popen(cli_command(*grid_args(out, "--quiet")), env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "cells").is_dir() and sidecars(out)):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no cell landed in 120 s"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    return sidecars(out)


def test_killed_sweep_resumes_to_the_uninterrupted_result(uninterrupted: Path, tmp_path: Path):
    out = tmp_path / "grid"
    before = kill_after_first_cells(out)
    assert not (out / "manifest.json").exists()
    assert 1 <= len(before) < 16
    times = {name: (out / "cells" / name).with_suffix(".png").stat().st_mtime_ns for name in before}

    assert cli.main(grid_args(out, "--quiet")) == 0
    assert without_timings(manifest(out)) == without_timings(manifest(uninterrupted))
    assert cell_bytes(out) == cell_bytes(uninterrupted)
    for name in ("grid.png", "metrics.csv", "spec.json"):
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert not list(out.rglob("*.tmp"))
    # The cells done before the kill were kept as they were, not written again.
    for name, data in before.items():
        assert (out / "cells" / name).read_bytes() == data
        assert (out / "cells" / name).with_suffix(".png").stat().st_mtime_ns == times[name]
    kept = {json.loads(data)["record"]["index"] for data in before.values()}
    seconds = {c["index"]: c["seconds"] for c in manifest(out)["cells"]}
    assert all(seconds[i] == json.loads(d)["record"]["seconds"] for i, d in zip(kept, before.values(),
                                                                                strict=True))


def test_only_missing_or_unverified_cells_render_again(tmp_path: Path, capsys):
    out = tmp_path / "grid"
    assert cli.main(grid_args(out, "--quiet", "--chunk", "1")) == 0
    first, images = manifest(out), cell_bytes(out)
    written = mtimes(out)
    (out / first["cells"][3]["file"]).write_bytes(b"not the image")  # tampered: sha256 differs
    (out / first["cells"][5]["file"]).unlink()  # lost
    sidecar = out / first["cells"][7]["file"].replace(".png", ".json")
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "key": "0" * 64}))  # another cell's settings
    assert cli.main(grid_args(out, "--chunk", "1")) == 0
    assert "resuming: 13 of 16 cells already done and verified; 3 work units" in capsys.readouterr().err
    again = manifest(out)
    resumed = mtimes(out)
    assert [i for i, (a, b) in enumerate(zip(written, resumed, strict=True)) if a != b] == [3, 5, 7]
    assert [c["seconds"] for i, c in enumerate(again["cells"]) if i not in (3, 5, 7)] == \
        [c["seconds"] for i, c in enumerate(first["cells"]) if i not in (3, 5, 7)]
    assert without_timings(again) == without_timings(first)
    assert cell_bytes(out) == images

    assert cli.main(grid_args(out, "--quiet", "--chunk", "1", "--fresh")) == 0
    assert all(a != b for a, b in zip(resumed, mtimes(out), strict=True))  # every cell written again
    assert cell_bytes(out) == images


def test_random_seeds_are_kept_when_resuming(tmp_path: Path):
    out = tmp_path / "grid"
    args = ["grid", "--out", str(out), "--model", "builtin", "--width", "32", "--height", "32",
            "--seed", "-1", "--steps", "2", "--x", "seed=-1, 5, -1", "--y", "none", "--quiet"]
    assert cli.main(args) == 0
    first = manifest(out)
    assert first["spec"]["seed"] == -1 and first["seed"] >= 0
    assert cli.main(args) == 0
    again = manifest(out)
    assert [c["settings"]["seed"] for c in again["cells"]] == [c["settings"]["seed"] for c in first["cells"]]
    assert [c["seconds"] for c in again["cells"]] == [c["seconds"] for c in first["cells"]]  # all kept
    assert cli.main([*args, "--fresh"]) == 0
    assert manifest(out)["seed"] != first["seed"]


def test_fill_seeds_only_for_the_same_grid():
    given = GridSpec.from_json({"seed": -1, "steps": 3, "x": {"axis": "seed", "values": "-1, 5"}})
    previous = given.resolved()
    assert seeds.fill_seeds(given, previous) == previous
    assert seeds.resolve(given, previous) == previous
    other = GridSpec.from_json({"seed": -1, "steps": 4, "x": {"axis": "seed", "values": "-1, 5"}})
    assert seeds.fill_seeds(other, previous) is None
    fewer = GridSpec.from_json({"seed": -1, "steps": 3, "x": {"axis": "seed", "values": "-1"}})
    assert seeds.fill_seeds(fewer, previous) is None
    fixed = GridSpec.from_json({"seed": 4, "steps": 3})
    assert seeds.resolve(fixed, None) == fixed


def test_a_sweep_keeps_no_cell_images_in_memory(tmp_path: Path):
    spec = cli.build_spec(cli.build_parser().parse_args(grid_args(tmp_path / "g")))
    sweep = Sweep(spec, SweepOptions(out=tmp_path / "g", chunk=4, folder=FolderOptions(latents=True)))
    sweep.plan()
    images = []
    write = sweep.folder.on_cell

    def watch(index, result):
        images.append(weakref.ref(result.image))
        write(index, result)

    sweep.folder.on_cell = watch
    sweep.render()
    gc.collect()
    assert len(images) == 16 and [ref() for ref in images] == [None] * 16
    outcome = sweep.finish()
    assert (outcome.cells, outcome.failed, outcome.kept, outcome.processes) == (16, 0, 0, 1)
    assert all(c["latents"]["file"].endswith(".safetensors") for c in outcome.manifest["cells"])
