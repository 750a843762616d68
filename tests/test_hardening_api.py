"""The served public app under bad input and load, through gradio_client (its public API).

A sample of scripts/fuzz_api.py's malformed requests must each get a clear error; four users at
once on a queue of two must each get their grid (identical to it rendered alone) or "queue full";
Gradio's file route must not hand out files outside the app's own folders. The full runs (600
requests, 16 users) are the scripts themselves; their figures are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from scripts import fuzz_api, load_test
from scripts.served_app import ServedApp, serve_in_process
from ui.config import AppConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedApp, AppConfig]]:
    config = AppConfig(public=True, queue_size=2, out_root=tmp_path_factory.mktemp("hardening-out"))
    app = serve_in_process(config)
    try:
        yield app, config
    finally:
        app.close()


def test_a_sample_of_malformed_requests_each_get_a_clear_error(served) -> None:
    app, config = served
    sample = fuzz_api.cases(len(fuzz_api.MAKERS) * 2 + 6, seed=1)  # every kind twice, and more
    figures = fuzz_api.run(Client(app.url, verbose=False), sample, extra_paths=(str(config.out_root),))
    assert figures["failures"] == [] and figures["passed"] == len(sample) == 40
    assert len(figures["by_kind"]) == len(fuzz_api.MAKERS)  # every kind of malformed request
    assert figures["valid_after"] == "ok"


def test_the_fuzz_judge_rejects_unclear_answers() -> None:
    from gradio_client.exceptions import AppError

    case = fuzz_api.Case("zero", "{}", ("between",))
    assert fuzz_api.judge(case, None) == "the request was accepted"
    assert "without a reason" in fuzz_api.judge(case, AppError("Error"))
    assert "generic" in fuzz_api.judge(case, AppError("The upstream Gradio app has raised an exception but "
                                                      "has not enabled verbose error reporting."))
    tb = 'Traceback (most recent call last):\n  File "/x.py", line 3, in f\nValueError: steps between'
    assert "traceback" in fuzz_api.judge(case, AppError(tb))
    assert "server path" in fuzz_api.judge(case, AppError(f"steps between 1 and 2 in {ROOT}/grids"))
    assert "does not name the problem" in fuzz_api.judge(case, AppError("something else went wrong"))
    assert fuzz_api.judge(case, AppError("steps must be between 1 and 1000, got 0")) is None


def test_users_at_once_complete_identically_or_hear_the_queue_is_full(served) -> None:
    app, _config = served
    small = load_test.grid(seed=11, steps=(2, 3))
    alone = {small: load_test.render_alone(app.url, small)}
    # concurrency 1 and a queue of 2: one renders, two wait, the others are refused at once
    outcomes = load_test.run_users(app.url, [small] * 5)
    verdict = load_test.check(outcomes, alone)
    assert verdict.problems == []
    assert verdict.completed >= 1 and verdict.queue_full >= 1
    assert verdict.completed + verdict.queue_full == 5 and verdict.identical == verdict.completed
    assert all("Queue is full" in o.error for o in outcomes if o.queue_full)
    assert load_test.render_alone(app.url, small) == alone[small]  # and it serves the next one


@pytest.mark.parametrize("path", ["/etc/passwd", str(ROOT / "app.py"), "../../../../etc/passwd",
                                  str(ROOT / "assets/builtin/model_index.json"), f"{Path.home()}/.bashrc"])
def test_the_file_route_does_not_serve_files_outside_the_apps_folders(served, path: str) -> None:
    app, _config = served
    try:
        with urllib.request.urlopen(f"{app.url}gradio_api/file={path}", timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, b""
    assert status in (403, 404), (status, body[:80])


def test_the_api_returns_only_files_from_the_apps_own_folders(served) -> None:
    app, config = served
    image, manifest = Client(app.url, verbose=False).predict(json.dumps(fuzz_api.VALID), api_name="/render")
    # gradio_client downloads the grid into its own temporary folder; the server named a file in
    # its cache (cleaned by delete_cache) or in the app's out_root, and the manifest names files
    # relative to the run folder, never a server path
    assert Path(image).is_file()
    for record in manifest["cells"]:
        assert not Path(record["file"]).is_absolute() and ".." not in record["file"]
    assert str(config.out_root) not in json.dumps(manifest)
