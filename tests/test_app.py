"""The app, served for real on a free port, driven through gradio_client (its public API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client
from PIL import Image

from scripts.served_app import serve_in_process
from ui.config import AppConfig

SPEC = {"model": "builtin", "prompt": "grinning face", "seed": 7, "cfg": 5, "steps": 4,
        "x": {"axis": "steps", "values": [2, 4]},
        "y": {"axis": "sampler", "values": ["Euler", "Euler a"]}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = serve_in_process(AppConfig(public=True, out_root=tmp_path_factory.mktemp("app-out")))
    try:
        yield app.url
    finally:
        app.close()


def test_render_endpoint_returns_the_grid_and_its_manifest(served: str) -> None:
    client = Client(served, verbose=False)
    image_path, manifest = client.predict(json.dumps(SPEC), api_name="/render")
    grid = Image.open(image_path)
    cells = manifest["cells"]
    assert len(cells) == 4 and manifest["shape"] == {"columns": 2, "rows": 2, "subgrids": 1}
    assert [c["settings"]["sampler"] for c in cells] == ["Euler", "Euler", "Euler a", "Euler a"]
    assert [c["settings"]["steps"] for c in cells] == [2, 4, 2, 4]
    assert all(c["error"] is None and c["settings"]["seed"] == 7 for c in cells)
    # four 64x64 cells plus label margins
    assert grid.size == (manifest["grid"]["width"], manifest["grid"]["height"])
    assert grid.width > 128 and grid.height > 128
    assert "Script: X/Y/Z plot" in grid.info["parameters"]
    assert manifest["totals"]["model_calls"] == sum(c["model_calls"] for c in cells) > 0


def test_render_endpoint_refuses_bad_specs_with_a_clear_message(served: str) -> None:
    client = Client(served, verbose=False)
    bad = [("{not json", "not valid JSON"),
           (json.dumps({**SPEC, "model": "/etc/passwd"}), "only runs its own models"),
           (json.dumps({**SPEC, "y": {"axis": "sampler", "values": ["Eulr"]}}), "did you mean"),
           (json.dumps({**SPEC, "x": {"axis": "steps", "values": "1-200 [100]"},
                        "y": {"axis": "seed", "values": "1-20 [20]"}}), "the limit is")]
    for spec, message in bad:
        with pytest.raises(Exception, match=message):
            client.predict(spec, api_name="/render")
    # and it still serves a good request afterwards
    _path, manifest = client.predict(json.dumps(SPEC), api_name="/render")
    assert len(manifest["cells"]) == 4


def test_same_spec_gives_the_same_cells(served: str) -> None:
    client = Client(served, verbose=False)
    _a, first = client.predict(json.dumps(SPEC), api_name="/render")
    _b, second = client.predict(json.dumps(SPEC), api_name="/render")
    assert [c["sha256"] for c in first["cells"]] == [c["sha256"] for c in second["cells"]]
    assert Path(_a).read_bytes() == Path(_b).read_bytes()
