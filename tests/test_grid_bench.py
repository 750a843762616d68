"""The grid benchmark's comparison logic on a tiny model (no timing assertions).

Both paths (the batched engine and one diffusers pipeline call per cell) must
give the same images and evaluate the same UNet rows, and the JSON report must
carry every figure docs/PERFORMANCE.md quotes.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from bench import grid_bench

PATH_FIELDS = {"wall_s", "unet_calls", "model_rows", "unet_s", "calls_per_s", "rows_per_s", "start_rss_mb",
               "peak_rss_mb", "peak_rss_is_per_path", "peak_cuda_mb"}


def _expected_calls(steps: list[int]) -> int:
    """UNet calls one pipeline call per cell makes: Heun takes 2n - 1 calls, the others n."""
    per_sampler = [sum(2 * n - 1 if "Heun" in cls else n for n in steps)
                   for cls, _ in grid_bench.DIFFUSERS_SAMPLERS]
    return sum(per_sampler)


def test_both_paths_give_the_same_images_and_the_report_has_its_fields(sd_path, tmp_path):
    out = tmp_path / "bench.json"
    grid_bench.main(["--model", str(sd_path), "--size", "32", "--steps", "2", "3", "--threads", "1",
                     "--probe-seconds", "0.01", "--native", "--json", str(out)])
    report = json.loads(out.read_text(encoding="utf-8"))

    same = report["same_images"]
    assert same["ok"] and same["max_latent_diff"] < 1e-3 and same["max_pixel_diff"] <= 1
    for path in ("engine", "per_cell", "native"):
        assert PATH_FIELDS <= set(report[path]), path
    calls = _expected_calls([2, 3])
    assert report["per_cell"]["unet_calls"] == calls  # one CFG pair per call
    assert report["per_cell"]["model_rows"] == report["engine"]["model_rows"] == 2 * calls
    assert report["engine"]["unet_calls"] < report["per_cell"]["unet_calls"]  # batched
    assert report["speedup"] > 0 and report["target_speedup"] == 1.3
    assert report["grid"]["cells"] == 12 and report["grid"]["steps"] == [2, 3]
    col = report["add_column"]
    assert col["added_steps"] == 3 and col["ratio"] > 0
    assert col["extend"]["model_rows"] == col["column_alone"]["model_rows"]  # only the new column ran
    assert [t["rows"] for t in report["unet_throughput"]] == list(grid_bench.THROUGHPUT_ROWS)
    assert report["machine"]["torch_threads"] == 1 and report["model"]["latent_shape"] == [4, 16, 16]


def test_same_images_flags_a_different_latent():
    img = Image.new("RGB", (4, 4))
    a = [(torch.zeros(1, 4, 2, 2), img)]
    b = [(torch.full((1, 4, 2, 2), 0.5), img)]
    assert grid_bench.same_images(a, a, 1e-3)["ok"]
    flagged = grid_bench.same_images(a, b, 1e-3)
    assert not flagged["ok"] and flagged["max_latent_diff"] == 0.5


def test_unet_counter_counts_calls_and_rows_then_unwraps():
    unet = torch.nn.Linear(3, 3)
    counter = grid_bench.UNetCounter(unet)
    unet(torch.zeros(2, 3))
    unet(torch.zeros(5, 3))
    assert (counter.calls, counter.rows) == (2, 7)
    counter.remove()
    unet(torch.zeros(1, 3))
    assert counter.calls == 2 and "forward" not in unet.__dict__


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_bench_paths_give_the_same_images(family, tmp_path):
    """--flow: the engine's Euler cells and one SD3 / Flux pipeline call per cell compute the same
    images with the same transformer rows, the engine in fewer calls."""
    out = tmp_path / "flow.json"
    report = grid_bench.main(["--flow", family, "--steps", "2", "4", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text(encoding="utf-8"))["speedup"] == report["speedup"] > 0
    same = report["same_images"]
    assert same["ok"] and same["max_latent_diff"] < 1e-3 and same["max_pixel_diff"] <= 1
    rows_per_call = 2 if family == "sd3" else 1  # SD3 at CFG 7 runs the unconditional half; Flux at CFG 1 not
    assert report["per_cell"]["unet_calls"] == 2 * (2 + 4)  # two rows (Automatic, Simple) x steps
    assert report["per_cell"]["model_rows"] == report["engine"]["model_rows"] == rows_per_call * 12
    assert report["engine"]["unet_calls"] < report["per_cell"]["unet_calls"]
    assert report["grid"]["cells"] == 4 and report["target_speedup"] == 1.3
