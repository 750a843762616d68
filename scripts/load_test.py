"""Many people at once: concurrent gradio_client users rendering grids on a public-mode app.

Starts `app.py --public --queue-size N` (or uses --url), renders each distinct grid alone first,
then lets every user submit at the same moment. Each user must either get its grid, identical
cell for cell (the sha256 of every cell PNG in the manifest) to the same grid rendered alone, or
a clear "queue full" refusal; the server must keep running and serve a grid afterwards. Reports
requests held and refused, queue waits (answer time minus the render's own wall time), answer
times, and the server's peak resident memory (VmHWM).

    python scripts/load_test.py                          # 16 users, queue size 16
    python scripts/load_test.py --users 16 --queue-size 4 --json load.json

tests/test_hardening_load.py runs a small version (4 users, queue size 2) on every CI run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

QUEUE_FULL = "queue is full"


def grid(seed: int, steps: tuple[int, ...] = (2, 4), samplers: tuple[str, ...] = ("Euler", "Euler a")) -> str:
    """A small grid's spec JSON (builtin model, 64x64 cells): steps across, one row per sampler."""
    return json.dumps({"model": "builtin", "prompt": "grinning face", "seed": seed, "cfg": 5,
                       "x": {"axis": "steps", "values": list(steps)},
                       "y": {"axis": "sampler", "values": list(samplers)}})


@dataclass
class Outcome:
    """What one user got: its grid (cell sha256s) or the error text, and when."""

    user: int
    spec: str
    submitted: float
    started: float | None = None  # when the server began processing it (left the queue)
    answered: float = 0.0
    cells: list[str] | None = None
    grid_sha: str | None = None
    render_s: float | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def seconds(self) -> float:
        return self.answered - self.submitted

    @property
    def queue_full(self) -> bool:
        return self.error is not None and QUEUE_FULL in self.error.lower()


def fingerprint(manifest: dict[str, Any]) -> tuple[list[str], str, float]:
    """(every cell's sha256, the grid's sha256, the render's wall seconds) from a manifest."""
    cells = [c["sha256"] for c in manifest["cells"]]
    return cells, manifest["grid"]["sha256"], manifest["totals"].get("wall_seconds", 0.0)


def render_alone(url: str, spec: str) -> tuple[list[str], str]:
    from gradio_client import Client

    _path, manifest = Client(url, verbose=False).predict(spec, api_name="/render")
    cells, grid_sha, _ = fingerprint(manifest)
    return cells, grid_sha


def run_users(url: str, specs: list[str], timeout_s: float = 600) -> list[Outcome]:
    """Every spec submitted by its own client at the same moment; returns what each got."""
    from gradio_client import Client
    from gradio_client.utils import Status

    clients = [Client(url, verbose=False) for _ in specs]  # connected before the start signal
    start = threading.Barrier(len(specs))
    outcomes = [Outcome(i, s, 0.0) for i, s in enumerate(specs)]

    def user(i: int) -> None:
        start.wait()
        out = outcomes[i]
        out.submitted = time.perf_counter()
        try:
            job = clients[i].submit(out.spec, api_name="/render")
            while not job.done():
                if out.started is None and job.status().code == Status.PROCESSING:
                    out.started = time.perf_counter()  # left the queue
                time.sleep(0.02)
            _path, manifest = job.result()
            out.cells, out.grid_sha, out.render_s = fingerprint(manifest)
        except Exception as err:  # recorded and judged by check()
            out.error, out.error_type = str(err), type(err).__name__
        out.answered = time.perf_counter()

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    return outcomes


@dataclass
class Verdict:
    completed: int = 0
    identical: int = 0
    queue_full: int = 0
    problems: list[str] = field(default_factory=list)


def check(outcomes: list[Outcome], alone: dict[str, tuple[list[str], str]]) -> Verdict:
    """Each user completed with the grid rendered alone, or was refused with "queue full"."""
    v = Verdict()
    for out in outcomes:
        if out.cells is not None:
            v.completed += 1
            if (out.cells, out.grid_sha) == alone[out.spec]:
                v.identical += 1
            else:
                v.problems.append(f"user {out.user}: the grid differs from the same grid rendered alone")
        elif out.queue_full:
            v.queue_full += 1
        else:
            v.problems.append(f"user {out.user}: {out.error_type}: {(out.error or 'no answer')[:200]}")
    return v


def figures(outcomes: list[Outcome], v: Verdict, memory: dict[str, float] | None) -> dict[str, Any]:
    done = [o for o in outcomes if o.cells is not None]
    waits = sorted(o.started - o.submitted for o in done if o.started is not None)
    answers = sorted(o.seconds for o in done)
    refused = sorted(o.seconds for o in outcomes if o.queue_full)
    return {
        "users": len(outcomes), "completed": v.completed, "identical_to_alone": v.identical,
        "queue_full": v.queue_full, "problems": v.problems,
        "render_s_median": statistics.median(o.render_s for o in done) if done else None,
        "queue_wait_s": {"median": round(statistics.median(waits), 2), "max": round(waits[-1], 2),
                         "observed": len(waits)} if waits else None,
        "answer_s": {"median": round(statistics.median(answers), 2), "max": round(answers[-1], 2)}
        if answers else None,
        "refusal_s_max": round(refused[-1], 3) if refused else None,
        "requests_held": sum(o.started is not None or o.cells is not None for o in outcomes),
        "server_memory_mb": memory,
    }


class MemoryWatch:
    """The server's resident memory sampled every 50 ms from now until stop()."""

    def __init__(self, pid: int) -> None:
        from scripts.served_app import memory_mb

        self.pid, self.read = pid, memory_mb
        self.before = memory_mb(pid)["rss"]
        self.samples: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.05):
            self.samples.append(self.read(self.pid)["rss"])

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        now = self.read(self.pid)
        return {"rss_before_users_mb": round(self.before, 1),
                "rss_peak_during_users_mb": round(max(self.samples, default=now["rss"]), 1),
                "rss_after_users_mb": round(now["rss"], 1), "process_peak_mb": round(now["peak"], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running public-mode app (default: start one)")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--queue-size", type=int, default=16, help="the --queue-size of the app started here")
    p.add_argument("--grids", type=int, default=4, help="distinct grids (seeds) among the users")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from scripts.served_app import serve_process

    served = None if args.url else serve_process(["--public", "--queue-size", str(args.queue_size)])
    url = args.url or served.url
    try:
        specs = [grid(seed) for seed in range(args.grids)]
        alone = {s: render_alone(url, s) for s in specs}
        watch = MemoryWatch(served.pid) if served else None
        started = time.perf_counter()
        outcomes = run_users(url, [specs[i % len(specs)] for i in range(args.users)])
        wall = time.perf_counter() - started
        memory = watch.stop() if watch else None
        v = check(outcomes, alone)
        after = render_alone(url, specs[0]) == alone[specs[0]]
        alive = served.alive() if served else None
    finally:
        if served:
            served.close()
    out = {**figures(outcomes, v, memory), "queue_size": args.queue_size, "wall_s": round(wall, 2),
           "served_after": after, "server_alive": alive}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if not v.problems and after and alive is not False else 1


if __name__ == "__main__":
    sys.exit(main())
