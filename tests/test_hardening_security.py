"""A public page strangers use: each way in is tried and refused.

No local paths, URLs or hub ids as models; no pickle checkpoints (they run code when loaded), even
when the operator passed --allow-pickle; no remote code; files written only inside the app's own
temporary folder, under names made of [a-z0-9-], and pruned; no user text near a shell.
"""

from __future__ import annotations

import pickle
import re
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import app
from grids.spec import Axis, GridSpec
from pipeline import models as models_module
from pipeline.models import BUILTIN_DIR, ModelLoadError, load_model
from report.run_folder import cell_files, slug
from ui import handlers
from ui.config import AppConfig, ModelNotAllowedError
from ui.models import ModelHolder
from ui.runner import KEEP_RUNS, GridJob, run_folder
from ui.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "app.py", ROOT / "cli.py", *(p for d in ("ui", "grids", "pipeline", "samplers")
                                              for p in sorted((ROOT / d).rglob("*.py")))]
HOSTILE_MODELS = ["/etc/passwd", "../../assets/builtin", str(BUILTIN_DIR), "~/.cache/huggingface",
                  "https://huggingface.co/org/model", "file:///etc/passwd", "org/model", "model.ckpt",
                  "C:\\models\\m.safetensors", "builtin/../../etc"]


# ---------------------------------------------------------------- models: only the listed ones


@pytest.mark.parametrize("name", HOSTILE_MODELS)
def test_public_mode_refuses_paths_urls_and_hub_ids_before_loading_anything(name, tmp_path,
                                                                            monkeypatch) -> None:
    import pipeline.models

    loads = []
    monkeypatch.setattr(pipeline.models, "load_model", lambda n, **kw: loads.append(n))
    models = ModelHolder(AppConfig(public=True, out_root=tmp_path))
    for spec in (GridSpec(model=name, seed=1), GridSpec(seed=1, x=Axis("model", ["builtin", name]))):
        with pytest.raises(ModelNotAllowedError, match="this public page only runs its own models"):
            GridJob(spec, models.config, models).check()
    with pytest.raises(gr.Error, match="only runs its own models"):  # the page's model box
        handlers.start_job(Settings(model=name), models.config, models)
    assert loads == []


class _Payload:
    """A pickle that, if it were ever unpickled, would leave a file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth", ".pkl"])
def test_public_mode_never_unpickles_a_checkpoint_even_with_allow_pickle(suffix, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / f"model{suffix}"
    checkpoint.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    config = AppConfig(public=True, allow_pickle=True, models=("builtin", str(checkpoint)), out_root=tmp_path)
    with pytest.raises(ValueError, match="pickle checkpoint .* can run code when loaded"):
        ModelHolder(config).load(str(checkpoint))
    assert not marker.exists()
    args = app.build_parser().parse_args(["--public", "--allow-pickle"])
    assert app.config_from(args).allow_pickle is False


def test_a_folder_with_only_pickle_weights_is_refused_in_public_mode(tmp_path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(BUILTIN_DIR, folder)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet.rename(unet.with_suffix(".bin"))
    config = AppConfig(public=True, allow_pickle=True, models=(str(folder),), out_root=tmp_path)
    with pytest.raises(ValueError, match="has only pickle weights"):
        ModelHolder(config).load(str(folder))


def test_loading_never_runs_remote_code(sd_path, monkeypatch) -> None:
    from diffusers import DiffusionPipeline
    from diffusers.pipelines import pipeline_loading_utils, pipeline_utils

    top, parts, dynamic = [], [], []
    real_from_pretrained = DiffusionPipeline.from_pretrained.__func__
    real_sub_model = pipeline_utils.load_sub_model

    def from_pretrained(cls, *args, **kwargs):
        top.append(kwargs)
        return real_from_pretrained(cls, *args, **kwargs)

    def sub_model(*args, **kwargs):
        parts.append(kwargs)
        return real_sub_model(*args, **kwargs)

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(pipeline_utils, "load_sub_model", sub_model)
    monkeypatch.setattr(pipeline_loading_utils, "get_class_from_dynamic_module",
                        lambda *a, **k: dynamic.append(a) or pytest.fail("remote code was loaded"))
    models_module._CACHE.clear()  # a model another test left loaded would be returned unread
    load_model(str(sd_path))
    assert len(top) == 1 and len(parts) >= 4 and dynamic == []
    assert not top[0].get("trust_remote_code") and "custom_pipeline" not in top[0]
    assert top[0]["use_safetensors"] is True
    assert all(p.get("trust_remote_code", False) is False for p in parts)


def test_no_source_file_turns_on_remote_code_pickle_loading_or_a_shell() -> None:
    # Python's eval()/exec(), not a module's .eval() (torch's inference mode)
    forbidden = re.compile(r"trust_remote_code\s*=\s*True|custom_pipeline\s*=|torch\.load\(|pickle\.loads?\("
                           r"|subprocess|os\.system|os\.popen|shell\s*=\s*True|(?<![.\w])eval\(|(?<![.\w])exec\(")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in SOURCES
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if forbidden.search(line)]
    assert len(SOURCES) > 40 and hits == []


# ---------------------------------------------------------------- files: inside the app's folder


def test_user_text_never_shapes_a_path_outside_the_run_folder(tmp_path) -> None:
    escape = tmp_path / "escaped"
    config = AppConfig(public=True, out_root=tmp_path / "app-out")
    models = ModelHolder(config)
    hostile = ["face", f"../../../../{escape}", "$(touch /tmp/x); rm -rf ~", "a/b\\c:d*?<>|", "..", "CON"]
    spec = GridSpec(prompt="grinning face", seed=2, steps=1, x=Axis("prompt_sr", hostile))
    job = GridJob(spec, config, models)
    job.check()
    outputs = list(handlers.run_job(job, "files"))[-1].outputs
    assert job.folder.parent == config.out_root and not escape.exists()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{16}", job.folder.name)  # 64 random bits: not guessable
    for path in job.folder.rglob("*"):
        assert path.resolve().is_relative_to(config.out_root.resolve())
    cells = [c["file"] for c in outputs.manifest["cells"]]
    assert all(re.fullmatch(r"cells/\d{3}-[a-z0-9-]{1,60}\.png", f) for f in cells), cells
    assert all(p.resolve().is_relative_to(job.folder.resolve()) for p in outputs.files)


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(st.none() | st.text(), min_size=1, max_size=3))
def test_cell_file_names_are_slugs_whatever_the_labels(labels: list) -> None:
    name = slug(labels)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) and len(name) <= 60


def test_cell_files_stay_in_the_cells_folder() -> None:
    from core.cells import Cell, CellSpec

    spec = CellSpec("builtin", "p", "", 64, 64, 1, "Euler", (), "Automatic", 2, 5.0)
    labels = ["../../x", "/etc/passwd", ""]
    cells = [Cell(i, 0, 0, spec, (label, None, None)) for i, label in enumerate(labels)]
    assert cell_files(cells) == ["cells/000-x.png", "cells/001-etc-passwd.png", "cells/002-cell.png"]


def test_the_app_keeps_its_files_in_a_temporary_folder_and_prunes_old_runs(tmp_path) -> None:
    assert AppConfig().out_root.is_relative_to(tempfile.gettempdir())
    config = AppConfig(out_root=tmp_path)
    for _ in range(KEEP_RUNS + 5):
        run_folder(config)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == KEEP_RUNS
    assert handlers.MAX_RUNS <= KEEP_RUNS  # runs the page still shows keep their files


def test_gradio_deletes_its_cached_copies_of_exported_files(tmp_path) -> None:
    from ui.page import build_demo

    config = AppConfig(public=True, out_root=tmp_path)
    demo = build_demo(config, ModelHolder(config))
    frequency, age = demo.delete_cache
    assert 0 < frequency <= 3600 and 0 < age <= 24 * 3600
    assert demo.config["dependencies"] and config.queue_size > 0  # a bounded queue in public mode


def test_load_failures_for_unlisted_names_never_reach_the_file_system(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="model name must be a non-empty string"):
        load_model("   ")
    models = ModelHolder(AppConfig(public=True, out_root=tmp_path))
    with pytest.raises(ModelNotAllowedError):
        models.load("../" * 20 + "etc/shadow")
    assert "load failed" not in models.status()  # refused before any load was attempted
