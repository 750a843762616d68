"""`accelerate launch` on 2 CPU processes writes what one process writes: the same cell PNGs
(byte for byte), grid, metrics and manifest apart from timings; and the main process refuses
cells it cannot see (processes that do not share the output folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli
from grids import GridSpec
from pipeline.models import load_model
from report.run_folder import FolderOptions, GridFolder, OutputFolderError
from tests.sweep_helpers import cell_bytes, grid_args, launch_command, manifest, run, without_timings


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep-1") / "grid"
    assert cli.main(grid_args(out, "--quiet")) == 0
    return out


def test_two_processes_write_what_one_writes(one_process: Path, tmp_path: Path):
    out = tmp_path / "grid"
    done = run(launch_command(2, *grid_args(out)))
    assert done.returncode == 0, done.stderr[-3000:]
    # 16 cells in 4 units of 4 costing 20, 36, 52 and 68 model rows: longest first gives the main
    # process 68 + 20 and the other 52 + 36, 44 denoiser calls each (its progress bar shows its share).
    assert "4 work units of up to 4 cells on 2 process(es)" in done.stderr
    assert "process 1 of 2: cells 8/8, model calls 44/44" in done.stderr
    one, two = manifest(one_process), manifest(out)
    assert without_timings(two) == without_timings(one)
    assert len(two["cells"]) == 16 and two["totals"]["failed"] == 0
    assert cell_bytes(out) == cell_bytes(one_process) and len(cell_bytes(out)) == 16
    for name in ("grid.png", "metrics.csv", "spec.json"):
        assert (out / name).read_bytes() == (one_process / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == ["cells", "grid.png", "manifest.json", "metrics.csv",
                                                     "spec.json"]


def test_main_process_refuses_cells_it_cannot_see(tmp_path: Path):
    spec = GridSpec.from_json({"model": "builtin", "prompt": "sunflower", "seed": 2, "steps": 2})
    folder = GridFolder(tmp_path, spec, spec.resolved(), load_model("builtin"), FolderOptions(journal=True))
    folder.prepare()
    record = {"index": 0, "file": folder.files[0], "sha256": "0" * 64, "error": None}
    with pytest.raises(OutputFolderError, match="must be one they all share"):
        folder.add_records({0: record})
    assert folder.records[0] is None
