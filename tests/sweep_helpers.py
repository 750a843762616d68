"""Shared helpers for the sweep tests: a tiny grid on the built-in model, run in this process
or in a child process, and manifests compared apart from timings."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("load_seconds", "wall_seconds")


def grid_args(out: Path, *extra: str) -> list[str]:
    """A 2 x 8 grid (sampler x steps) of 32 px cells on the built-in model, in units of 4 cells."""
    return ["grid", "--out", str(out), "--model", "builtin", "--prompt", "sunflower", "--seed", "11",
            "--cfg", "5", "--width", "32", "--height", "32", "--x", "steps=2-9",
            "--y", "sampler=Euler, DPM++ 2M SDE", "--chunk", "4", *extra]


def child_env() -> dict[str, str]:
    """One torch thread per process, as in this test process (tests/conftest.py): the engine's
    last bits depend on the thread count, and these tests compare bytes."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TRANSFORMERS_VERBOSITY="error")
    env.pop("PYTHONPATH", None)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), *args]


def launch_command(processes: int, *args: str) -> list[str]:
    """`accelerate launch` of the CLI on `processes` CPU processes (a free port each time)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", "0", str(ROOT / "cli.py"), *args]


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def without_timings(data: dict) -> dict:
    """A manifest with its timings (each cell's seconds, the totals' seconds) taken out."""
    data = copy.deepcopy(data)
    for cell in data["cells"]:
        cell.pop("seconds")
    for key in TIMINGS:
        data["totals"].pop(key, None)
    return data


def cell_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "cells").glob("*.png"))}
