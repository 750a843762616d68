"""A1111 `parameters` text: exact strings, quoting, number formatting, the X/Y/Z plot part, PNG chunks."""

from __future__ import annotations

import pytest
from PIL import Image

from core.cells import CellSpec
from grids import GridSpec, expand
from report.infotext import (
    format_number,
    grid_parameters,
    model_label,
    parameters,
    png_bytes,
    quote,
    save_png,
    write_atomic,
)
from samplers.plan import cell_schedule
from version import __version__


def cell(sampler: str = "DPM++ 2M", schedule: str = "Automatic", cfg: float = 7.0, prompt: str = "a cat",
         negative: str = "", options: tuple = (), steps: int = 20) -> CellSpec:
    return CellSpec(model="m", prompt=prompt, negative_prompt=negative, width=512, height=768, seed=123,
                    sampler=sampler, sampler_options=options, schedule=schedule, steps=steps, cfg=cfg)


def test_version_is_the_apps():
    assert __version__ == "0.1.0"


def test_full_text_with_awkward_prompt_is_exact():
    prompt = 'a "quoted" cat, on: a mat\nsecond line ünïcødé 猫'
    text = parameters(cell(prompt=prompt, negative="blurry, low: quality"),
                      "/models/v1-5-pruned-emaonly.safetensors", "0123456789")
    assert text == (
        'a "quoted" cat, on: a mat\nsecond line ünïcødé 猫\n'
        "Negative prompt: blurry, low: quality\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x768, "
        "Model hash: 0123456789, Model: v1-5-pruned-emaonly, Version: 0.1.0")


def test_no_negative_line_no_hash_and_empty_prompt():
    text = parameters(cell(prompt="", sampler="Euler"), "builtin")
    assert text == ("Steps: 20, Sampler: Euler, Schedule type: Uniform, CFG scale: 7, Seed: 123, "
                    "Size: 512x768, Model: builtin, Version: 0.1.0")


@pytest.mark.parametrize("value,text", [(7.0, "7"), (7.5, "7.5"), (4.25, "4.25"), (0.0, "0"),
                                        (12.0, "12"), (1 / 3, "0.33333333"), (3, "3")])
def test_numbers_print_as_a1111_prints_them(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("cfg,shown", [(7.0, "CFG scale: 7,"), (7.5, "CFG scale: 7.5,"),
                                       (1.0, "CFG scale: 1,")])
def test_cfg_scale_integral_without_point(cfg, shown):
    assert shown in parameters(cell(cfg=cfg), "m")


@pytest.mark.parametrize("value,text", [
    ("plain", "plain"),
    ('say "hi"', 'say "hi"'),  # quotes alone do not trigger quoting, as in A1111
    ("a, b", '"a, b"'),
    ("key: value", '"key: value"'),
    ("two\nlines", '"two\\nlines"'),
    ('ü, "q"', '"ü, \\"q\\""'),  # non-ASCII kept, inner quotes escaped
    (2.0, "2"),
])
def test_quote(value, text):
    assert quote(value) == text


@pytest.mark.parametrize("sampler,schedule,shown", [
    ("Euler a", "Automatic", "Uniform"),
    ("DPM++ 2M SDE", "Automatic", "Exponential"),
    ("DPM++ 2M", "Exponential", "Exponential"),
    ("DPM fast", "Automatic", None),  # picks its own sigmas
    ("DPM adaptive", "Karras", None),
    ("Euler (diffusers)", "Automatic", None),  # the scheduler's own schedule
    ("Euler Exponential", "Automatic", "Exponential"),  # a combined name's schedule is the one that ran
    ("Euler (diffusers) Karras", "Automatic", "Karras"),
])
def test_schedule_type_is_the_one_that_ran(sampler, schedule, shown):
    assert cell_schedule(cell(sampler=sampler, schedule=schedule)) == shown
    text = parameters(cell(sampler=sampler, schedule=schedule), "m")
    assert (f"Schedule type: {shown}," in text) if shown else ("Schedule type" not in text)


def test_sampler_options_named_as_a1111_names_them():
    text = parameters(cell(sampler="Euler a", options=(("eta", 0.5), ("s_noise", 1.0))), "m", "abc")
    assert text.endswith("Model hash: abc, Model: m, Eta: 0.5, Sigma noise: 1, Version: 0.1.0")
    assert "Eta DDIM: 0.3, Version" in parameters(cell(sampler="DDIM", options=(("eta", 0.3),)), "m")


def test_grid_text_adds_xyz_plot_fields_before_version():
    spec = GridSpec.from_json({
        "prompt": "a cat", "seed": 5, "x": {"axis": "sampler", "values": "Euler, Euler a, DPM++ 2M Karras"},
        "y": {"axis": "steps", "values": "10, 20"}, "z": {"axis": "cfg", "values": "5, 7.5"}})
    first = expand(spec)[0].spec.sized((512, 512))
    assert grid_parameters(first, spec, "model.safetensors", "0123456789") == (
        "a cat\nSteps: 10, Sampler: Euler, Schedule type: Uniform, CFG scale: 5, Seed: 5, Size: 512x512, "
        "Model hash: 0123456789, Model: model, Script: X/Y/Z plot, X Type: Sampler, "
        'X Values: "Euler, Euler a, DPM++ 2M Karras", Y Type: Steps, Y Values: "10, 20", '
        'Z Type: CFG Scale, Z Values: "5.0, 7.5", Version: 0.1.0')


def test_grid_text_quotes_prompt_sr_values_twice_over():
    spec = GridSpec.from_json({"prompt": "a cat", "seed": 1,
                               "x": {"axis": "prompt_sr", "values": ["cat", "dog, fluffy"]}})
    text = grid_parameters(expand(spec)[0].spec.sized((64, 64)), spec, "m")
    # CSV-quoted item inside a JSON-quoted value: what A1111 writes for such an axis.
    assert 'X Type: Prompt S/R, X Values: "cat, \\"dog, fluffy\\"", Version' in text


@pytest.mark.parametrize("name,label", [
    ("/models/v1-5-pruned.safetensors", "v1-5-pruned"), ("C:\\models\\sd.ckpt", "sd"),
    ("runwayml/stable-diffusion-v1-5", "stable-diffusion-v1-5"), ("/tmp/tiny-sd/", "tiny-sd"),
    ("builtin", "builtin"), (".safetensors", ".safetensors")])
def test_model_label(name, label):
    assert model_label(name) == label


def test_png_carries_latin1_text_in_a_text_chunk(tmp_path):
    text = parameters(cell(prompt='a cat, "on": a mat'), "m")
    data = save_png(Image.new("RGB", (8, 8), (10, 20, 30)), tmp_path / "a.png", text)
    assert (tmp_path / "a.png").read_bytes() == data
    assert b"tEXtparameters\x00" in data
    assert Image.open(tmp_path / "a.png").info["parameters"] == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_png_carries_unicode_text_in_an_international_chunk(tmp_path):
    text = parameters(cell(prompt="猫 ünï\nline two"), "m")
    save_png(Image.new("RGB", (8, 8)), tmp_path / "u.png", text)
    assert b"iTXtparameters\x00" in (tmp_path / "u.png").read_bytes()
    assert Image.open(tmp_path / "u.png").info["parameters"] == text


def test_png_bytes_are_deterministic():
    image = Image.new("RGB", (16, 16), (1, 2, 3))
    assert png_bytes(image, "x") == png_bytes(image.copy(), "x")


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("report.infotext.os.replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"new and longer")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
