"""How soon `python app.py` serves a usable page, and how soon it renders a first grid.

Starts the app as a user does (a fresh process, built-in model, CPU), polls the
page every 50 ms until it answers, then asks the `render` API for a one-cell
grid, which waits for the model that loads in the background. Repeats, and
prints each run and the median as JSON.

    .venv/bin/python bench/app_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.served_app import free_port  # noqa: E402

ONE_CELL = {"model": "builtin", "prompt": "grinning face", "sampler": "Euler", "steps": 4, "seed": 1,
            "x": {"axis": "steps", "values": [4]}}


def page_up(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and b"<html" in r.read(4096).lower():
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no page at {url} within {timeout_s} s")


def one_run(timeout_s: float) -> dict[str, float]:
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    with tempfile.TemporaryDirectory() as tmp:
        env["SAMPLER_GRID_OUT"] = tmp
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            page_up(url, proc, timeout_s)
            page_s = time.perf_counter() - start
            Client(url, verbose=False).predict(json.dumps(ONE_CELL), api_name="/render")
            grid_s = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(20)
    return {"page_s": round(page_s, 2), "first_grid_s": round(grid_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.timeout))
        r = runs[-1]
        print(f"run {i + 1}: page {r['page_s']:.2f} s, first grid {r['first_grid_s']:.2f} s", flush=True)
    summary = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(json.dumps({"runs": runs, "median": summary, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
