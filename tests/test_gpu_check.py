"""bench/gpu_check.py: the --smoke run (the GPU run's code on tiny models, on the CPU) and the item
runner's budget and error handling. No timing assertions: figures are reported, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_capacity, gpu_check

ROOT = Path(__file__).resolve().parents[1]
ITEMS = [f"{s}.{f}" for f in ("sd15", "sdxl") for s in ("grid", "memory", "throughput")] + \
        ["precision.sd15", "precision.sdxl", "flow.sd3", "flow.flux"]


@pytest.mark.slow
def test_smoke_run_has_every_section_with_numbers_and_the_same_images(tmp_path):
    out = tmp_path / "gpu"
    # A generous budget: on a loaded CI machine the default 170 s could skip items, and this test checks
    # what the items measure, not how fast (the smoke run takes 45-110 s on this 2-core machine).
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(out),
                           "--threads", "1", "--budget", "540"], capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert [i["item"] for i in report["items"]] == ITEMS
    assert report["profile"] == "smoke" and report["elapsed_s"] < report["budget_s"]

    for family in ("sd15", "sdxl"):
        grid = report["grid"][family]
        assert grid["status"] == "ok", grid
        same = grid["same_images"]
        assert same["ok"] and 0 <= same["relative_diff"] <= same["tolerance"] == 1e-3
        assert same["max_latent_value"] > 1 and same["max_pixel_diff"] <= 2
        assert len(same["per_cell_max_latent_diff"]) == grid["grid"]["cells"] == 12
        assert grid["speedup"] > 0 and grid["engine"]["model_rows"] == grid["per_cell"]["model_rows"]
        assert grid["engine"]["unet_calls"] < grid["per_cell"]["unet_calls"]  # batched across cells

        precision = report["precision"][family]
        assert precision["status"] == "ok", precision
        for dtype in ("float16", "bfloat16"):  # both run on this CPU; a failure would carry "error"
            d = precision[dtype]
            assert d["finite"] and 0 < d["mean_latent_diff"] <= d["max_latent_diff"], d
            assert d["max_pixel_diff"] >= 0 and d["mean_pixel_diff"] >= 0
        # float16 keeps 10 mantissa bits, bfloat16 7
        assert precision["float16"]["mean_latent_diff"] < precision["bfloat16"]["mean_latent_diff"]
        assert precision["float16"]["vae_dtype"] == ("float32" if family == "sdxl" else "float16")

        memory = report["memory"][family]
        assert memory["status"] == "ok" and memory["estimate_per_row_mib"] > 0
        assert memory["auto_max_batch"] == 16  # the engine's fixed CPU batch
        peaks = [b["peak_mib"] for b in memory["batches"]]
        assert [b["rows"] for b in memory["batches"]] == [1, 4, 16] and 0 < peaks[0] < peaks[1] < peaks[2]
        assert memory["fit"]["per_row_mib"] > 0

        throughput = report["throughput"][family]
        assert [b["rows"] for b in throughput["batches"]] == [1, 2, 8, 16, 32]
        assert all(b["ms_per_row"] > 0 for b in throughput["batches"])

    support = gpu_capacity.flow_support()
    for family in ("sd3", "flux"):
        flow = report["flow"][family]
        if support["supported"]:
            assert flow["status"] == "ok", flow
            grid = flow["grid"]  # the engine's flow path against the family's own pipeline
            assert grid["status"] == "ok" and grid["speedup"] > 0, grid
            assert grid["same_images"]["ok"] and grid["same_images"]["tolerance"] == 2 / 255
            assert grid["engine"]["model_rows"] == grid["per_cell"]["model_rows"]
            assert grid["engine"]["unet_calls"] < grid["per_cell"]["unet_calls"]
            peaks = [b["peak_mib"] for b in flow["memory"]["batches"]]
            assert 0 < peaks[0] < peaks[1] < peaks[2] and flow["memory"]["fit"]["per_row_mib"] > 0
            assert [b["rows"] for b in flow["throughput"]["batches"]] == [1, 2, 8]
        else:
            assert flow["status"] == "skipped" and flow["reason"] == gpu_check.FLOW_UNSUPPORTED
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert all(f"| {item} |" in summary for item in ITEMS) and "images same" in summary


def _run(tmp_path: Path, total_s: float = 60.0) -> gpu_check.Run:
    profile = gpu_check.Profile(**{**gpu_check.SMOKE.__dict__, "total_s": total_s})
    run = gpu_check.Run(profile, tmp_path, torch.device("cpu"), "test")
    run.deadline = time.monotonic() + total_s
    return run


def test_an_error_or_an_overrun_is_recorded_and_the_next_item_still_runs(tmp_path):
    run = _run(tmp_path)

    def broken(clock, out):
        out["started"] = True
        raise RuntimeError("no kernel for this dtype")

    def overruns(clock, out):
        out["rows"] = [1]
        clock.check(clock.left() + 5, "the next batch")

    run.item("grid", "sd15", broken)
    run.item("memory", "sd15", overruns)
    run.item("throughput", "sd15", lambda clock, out: out.update(ms=1.0))
    g, m, t = (run.report[s]["sd15"] for s in ("grid", "memory", "throughput"))
    assert g["status"] == "error" and "no kernel for this dtype" in g["error"] and g["started"]
    assert m["status"] == "partial" and m["rows"] == [1] and "the next batch" in m["reason"]
    assert t["status"] == "ok" and t["ms"] == 1.0
    written = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert [i["status"] for i in written["items"]] == ["error", "partial", "ok"]


def test_an_item_gets_at_most_what_is_left_of_the_run_and_none_when_it_is_spent(tmp_path):
    run = _run(tmp_path, total_s=3.0)
    budgets = []
    run.item("grid", "sd15", lambda clock, out: budgets.append(clock.left()))
    assert budgets and budgets[0] <= 3.0 < run.profile.budgets["grid.sd15"]
    run.deadline = time.monotonic()  # the run's time is spent
    called = []
    run.item("grid", "sdxl", lambda clock, out: called.append(1))
    assert not called and run.report["grid"]["sdxl"]["status"] == "skipped"
    assert "not started" in run.report["grid"]["sdxl"]["reason"]
