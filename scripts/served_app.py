"""The app, served for a script or a test: in this process (fast, for tests) or as its own
process (`python app.py ...`, so its memory can be measured and a crash in it is seen as one).

    served = serve_in_process(AppConfig(public=True))   # tests
    served = serve_process(["--public", "--queue-size", "16"])  # scripts
    ... Client(served.url) ...
    served.close()
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServedApp:
    """A running app: its URL, the server's process id (None: this process) and how to stop it."""

    url: str
    pid: int | None
    close: Callable[[], None]
    process: Any = None  # the subprocess.Popen of a separate server

    def alive(self) -> bool:
        """The server process is still running (always True in this process)."""
        return self.process is None or self.process.poll() is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_process(config: Any, wait_model_s: float = 120, page_assets: bool = False) -> ServedApp:
    """Launch the app for `config` (ui.config.AppConfig) in this process on a free port;
    page_assets: with the page's theme, CSS and script (what a browser sees), not just the API."""
    import app
    from ui.page import launch_kwargs

    demo, models = app.create(config)
    models.preload()
    models.wait(wait_model_s)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(config.out_root)], **(launch_kwargs() if page_assets else {}))
    return ServedApp(f"http://127.0.0.1:{port}/", None, demo.close)


def serve_process(args: list[str], timeout_s: float = 300, log: Path | None = None) -> ServedApp:
    """Start `python app.py --host 127.0.0.1 --port <free> *args` and wait until it answers."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port",
                             str(port), *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"

    def close() -> None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            close()
            raise RuntimeError(f"the app exited with code {proc.returncode} while starting"
                               + (f"; see {log}" if log else ""))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return ServedApp(url, proc.pid, close, proc)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    close()
    raise RuntimeError(f"the app did not answer at {url} within {timeout_s:.0f} s")


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process from /proc (Linux): now ("rss") and its peak so far ("peak")."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
    return fields
