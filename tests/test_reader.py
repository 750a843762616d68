"""Reading infotext back: write -> parse -> cell settings round trips (fixed and property-based),
A1111's own texts, PNG / JPEG / WebP sources, EXIF UserComment encodings, clear errors."""

from __future__ import annotations

import io
import math
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import samplers
from core.cells import CellSpec
from grids import GridSpec, expand
from report.exports import encode_image
from report.infotext import grid_parameters, model_label, parameters
from report.infotext_reader import (
    InfotextError,
    decode_user_comment,
    parse_parameters,
    read_parameters,
    to_cell_settings,
)
from samplers.plan import cell_schedule

TRICKY = [
    "a cat, on: a mat",
    'say "hello", then \\ leave \\"quoted\\"',
    "line one\nline two: with colon\n\nafter a blank line",
    "ünïcødé 猫 🐱🚀 — emoji and CJK",
    "a dog. Negative prompt: inside the prompt text is fine",
    "trailing spaces   ",
    "Steps: 20, Sampler: Euler, CFG scale: 7",  # looks like a fields line, but is the prompt
    "(masterpiece:1.2), [flowers|leaves], <lora:x:0.5>",
    "",
]


def cell(prompt: str = "a cat", negative: str = "", sampler: str = "DPM++ 2M", schedule: str = "Automatic",
         options: tuple = (), steps: int = 20, cfg: float = 7.0, seed: int = 123,
         size: tuple[int, int] = (512, 768), model: str = "v1-5-pruned") -> CellSpec:
    return CellSpec(model=model, prompt=prompt, negative_prompt=negative, width=size[0], height=size[1],
                    seed=seed, sampler=sampler, sampler_options=options, schedule=schedule, steps=steps,
                    cfg=cfg)


def expected(spec: CellSpec) -> dict:
    """The settings a text written from `spec` must give back: the schedule that ran, the model's label."""
    return {"prompt": spec.prompt, "negative_prompt": spec.negative_prompt, "steps": spec.steps,
            "cfg": float(spec.cfg), "seed": spec.seed, "width": spec.width, "height": spec.height,
            "model": model_label(spec.model), "sampler": spec.sampler,
            "schedule": cell_schedule(spec) or "Automatic",
            "sampler_options": spec.sampler_options}


def round_trip(spec: CellSpec, model_hash: str = "0123456789") -> dict:
    return to_cell_settings(parse_parameters(parameters(spec, spec.model, model_hash)))


# ---------------------------------------------------------------- fixed round trips


@pytest.mark.parametrize("prompt", TRICKY)
@pytest.mark.parametrize("negative", ["", "blurry, low: quality", 'multi\nline "negative"\n🐱',
                                      "  two spaces"])
def test_tricky_prompts_round_trip(prompt, negative):
    spec = cell(prompt=prompt, negative=negative)
    assert round_trip(spec) == expected(spec)


@pytest.mark.parametrize("sampler,schedule,options,ran", [
    ("DPM++ 2M", "Automatic", (), "Karras"),
    ("Euler a", "Exponential", (("eta", 0.5), ("s_noise", 1.1)), "Exponential"),
    ("DDIM", "Automatic", (("eta", 0.3),), "DDIM"),  # written as "Eta DDIM"
    ("Euler", "Karras", (("s_churn", 0.25), ("s_tmax", 10.0), ("s_tmin", 0.05)), "Karras"),
    ("LMS", "Uniform", (("order", 3),), "Uniform"),
    ("UniPC", "Automatic", (("lower_order_final", False), ("variant", "bh2")), "Normal"),
    ("Restart", "Automatic", (("restart_list", {0.1: [3, 2, 0.06, 0.3]}),), "Karras"),
    ("DPM adaptive", "Karras", (("rtol", 0.01),), "Automatic"),  # picks its own sigmas: no schedule
    ("Euler (diffusers)", "Automatic", (("timestep_spacing", "trailing"),), "Automatic"),
    ("DPM++ 2M (diffusers)", "Karras", (("solver_order", 3), ("use_karras_sigmas", True)), "Karras"),
    ("diffusers:DEISMultistepScheduler", "Automatic", (("solver_order", 2),), "Automatic"),
])
def test_samplers_schedules_and_options_round_trip(sampler, schedule, options, ran):
    got = round_trip(cell(sampler=sampler, schedule=schedule, options=options))
    assert (got["sampler"], got["schedule"], got["sampler_options"]) == (sampler, ran, options)
    assert all(type(a) is type(b) for (_, a), (_, b) in zip(got["sampler_options"], options, strict=True))


def test_grid_text_round_trips_its_first_cell_and_keeps_the_xyz_fields():
    spec = GridSpec.from_json({"prompt": "a cat, on: a mat", "seed": 5,
                               "x": {"axis": "sampler", "values": "Euler, Euler a, DPM++ 2M Karras"},
                               "y": {"axis": "prompt_sr", "values": ["cat", "dog, fluffy"]}})
    first = expand(spec)[0].spec.sized((512, 512))
    parsed = parse_parameters(grid_parameters(first, spec, "model.safetensors", "0123456789"))
    assert parsed["Script"] == "X/Y/Z plot" and parsed["X Type"] == "Sampler"
    assert parsed["X Values"] == "Euler, Euler a, DPM++ 2M Karras"
    assert parsed["Y Type"] == "Prompt S/R" and parsed["Y Values"] == 'cat, "dog, fluffy"'
    assert to_cell_settings(parsed) == {**expected(first), "model": "model"}


def test_empty_prompt_with_a_negative():
    spec = cell(prompt="", negative="blurry")
    assert parameters(spec, "m").startswith("Negative prompt: blurry\nSteps: 20")
    assert round_trip(spec)["prompt"] == "" and round_trip(spec)["negative_prompt"] == "blurry"


# ---------------------------------------------------------------- property


MODELS = ["builtin", "/m/v1-5.safetensors", "org/sd-xl", "C:\\a, b: c.ckpt"]
_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)
_FLOATS = st.floats(0.0, 30.0, allow_nan=False).map(lambda v: round(v, 4))


@st.composite
def cell_specs(draw) -> CellSpec:
    sampler = draw(st.sampled_from(samplers.names()))
    names = sorted(set(samplers.info(sampler).options) & {"eta", "s_noise", "s_churn"})
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    return cell(prompt=draw(_TEXT), negative=draw(_TEXT), sampler=sampler,
                schedule=draw(st.sampled_from(samplers.schedule_names())),
                options=tuple(sorted((n, draw(_FLOATS)) for n in chosen)),
                steps=draw(st.integers(1, 150)), cfg=draw(_FLOATS), seed=draw(st.integers(0, 2**32)),
                size=(draw(st.integers(1, 256)) * 8, draw(st.integers(1, 256)) * 8),
                model=draw(st.sampled_from(MODELS)))


@settings(max_examples=150, deadline=None)
@given(spec=cell_specs())
def test_any_cell_round_trips(spec):
    # What the format cannot carry: the writer strips the text's leading whitespace (as A1111
    # does), and a prompt line starting "Negative prompt:" starts the negative prompt.
    assume(spec.prompt == spec.prompt.lstrip())
    assume(not any(line.startswith("Negative prompt:") for line in spec.prompt.split("\n")))
    assert round_trip(spec) == expected(spec)


# ---------------------------------------------------------------- A1111's own texts


A1111_TEXT = """masterpiece, best quality, a lighthouse on a cliff at dusk, (dramatic lighting:1.2)
<lora:add_detail:0.6>
Negative prompt: lowres, bad anatomy, text, watermark
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3053285413, Size: 512x768, \
Model hash: 0123456789, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, \
Hires upscale: 2, Hires steps: 15, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", \
Template: "a \\"quoted\\", multi\\nline template", Emphasis: Original, Version: v1.10.1"""


def test_a1111_text_parses_to_its_fields():
    parsed = parse_parameters(A1111_TEXT)
    assert parsed == {
        "prompt": "masterpiece, best quality, a lighthouse on a cliff at dusk, (dramatic lighting:1.2)\n"
                  "<lora:add_detail:0.6>",
        "negative_prompt": "lowres, bad anatomy, text, watermark",
        "Steps": 28, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 6.5, "Seed": 3053285413,
        "width": 512, "height": 768, "Model hash": "0123456789", "Model": "v1-5-pruned-emaonly",
        "Denoising strength": 0.45, "Clip skip": 2, "Hires upscale": 2.0, "Hires steps": 15,
        "Hires upscaler": "Latent", "Lora hashes": "add_detail: 7c6bad76eb54",
        "Template": 'a "quoted", multi\nline template', "Emphasis": "Original", "Version": "v1.10.1"}
    assert to_cell_settings(parsed) == {
        "prompt": parsed["prompt"], "negative_prompt": parsed["negative_prompt"], "steps": 28, "cfg": 6.5,
        "seed": 3053285413, "width": 512, "height": 768, "model": "v1-5-pruned-emaonly",
        "sampler": "DPM++ 2M", "schedule": "Karras", "sampler_options": ()}


@pytest.mark.parametrize("name,sampler,schedule", [
    ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
    ("DPM++ 2M SDE Exponential", "DPM++ 2M SDE", "Exponential"),
    ("dpm2 a karras", "DPM2 a", "Karras"),
    ("Euler a", "Euler a", "Automatic"),
])
def test_old_combined_sampler_names(name, sampler, schedule):
    parsed = parse_parameters(f"a cat\nSteps: 20, Sampler: {name}, CFG scale: 7, Seed: 1, Eta: 0.5")
    got = to_cell_settings(parsed)
    assert (got["sampler"], got["schedule"]) == (sampler, schedule)
    # Eta is kept only for samplers that take it.
    assert got["sampler_options"] == ((("eta", 0.5),) if "eta" in samplers.info(sampler).options else ())


def test_text_without_a_fields_line_is_all_prompt():
    assert parse_parameters("just a prompt\nNegative prompt: ugly\nsecond: line") == {
        "prompt": "just a prompt", "negative_prompt": "ugly\nsecond: line"}
    assert to_cell_settings(parse_parameters("a cat")) == {"prompt": "a cat", "negative_prompt": ""}


@pytest.mark.parametrize("text,message", [
    ("a\nSteps: 20, Sampler: Eulr a, CFG scale: 7", "unknown sampler 'Eulr a' — did you mean"),
    ("a\nSteps: 20, Sampler: Euler, Schedule type: Karas, CFG scale: 7", "unknown schedule type 'Karas'"),
    ("a\nSteps: many, Sampler: Euler, CFG scale: 7", "Steps must be a whole number, got 'many'"),
    ("a\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1.5", "Seed must be a whole number, got '1.5'"),
    ("a\nSteps: 20, Sampler: Euler, CFG scale: high", "CFG scale must be a number, got 'high'"),
])
def test_bad_settings_are_clear_errors(text, message):
    with pytest.raises(InfotextError, match=message):
        to_cell_settings(parse_parameters(text))


# ---------------------------------------------------------------- image sources


TEXT = parameters(cell(prompt="猫, a \"cat\"\nline two 🐱", negative="blurry"), "m", "0123456789")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_reads_every_format_from_bytes_path_and_image(fmt, tmp_path):
    data = encode_image(Image.new("RGB", (16, 16), (40, 80, 120)), fmt, TEXT)
    path = tmp_path / f"a.{fmt}"
    path.write_bytes(data)
    assert read_parameters(data) == read_parameters(path) == read_parameters(str(path)) == TEXT
    with Image.open(path) as im:
        assert read_parameters(im) == TEXT


def test_png_text_chunk_after_the_image_data_is_found():
    image = Image.new("RGB", (8, 8))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    chunk = b"tEXt" + b"parameters\0late text"
    late = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", __import__("zlib").crc32(chunk))
    iend = data.rindex(b"IEND") - 4
    assert read_parameters(data[:iend] + late + data[iend:]) == "late text"


def test_image_without_parameters_gives_none():
    assert read_parameters(encode_image(Image.new("RGB", (8, 8)), "png", None)) is None
    assert read_parameters(encode_image(Image.new("RGB", (8, 8)), "jpeg", None)) is None
    info = PngInfo()
    info.add_text("Comment", "not ours")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    assert read_parameters(buf.getvalue()) is None


def test_jpeg_comment_is_the_last_resort():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG", comment="Steps: 5, Sampler: Euler, CFG scale: 3")
    assert read_parameters(buf.getvalue()) == "Steps: 5, Sampler: Euler, CFG scale: 3"


def test_little_endian_user_comment_from_other_tools():
    # Pillow's own Exif writer: little-endian TIFF, the comment stored as BYTE, UTF-16LE text.
    exif = Image.Exif()
    exif.endian = "<"
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + TEXT.encode("utf-16-le")
    assert exif.tobytes().startswith(b"Exif\0\0II")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG", exif=exif)
    assert read_parameters(buf.getvalue()) == TEXT


@pytest.mark.parametrize("data,text", [
    (b"UNICODE\0" + "Steps: 20, ü".encode("utf-16-be"), "Steps: 20, ü"),
    (b"UNICODE\0" + "Steps: 20, ü".encode("utf-16-le"), "Steps: 20, ü"),
    (b"UNICODE\0" + "Steps: 20".encode("utf-16"), "Steps: 20"),  # with a byte-order mark
    (b"UNICODE\0" + "猫🐱".encode("utf-16-be"), "猫🐱"),  # no ASCII to tell the order by: big-endian
    (b"UNICODE\0" + "abc".encode("utf-16-be") + b"\0\0", "abc"),  # NUL padding dropped
    (b"ASCII\0\0\0Steps: 20\0", "Steps: 20"),
    (b"\0" * 8 + "ünï".encode(), "ünï"),
    (b"no prefix at all", "no prefix at all"),
])
def test_user_comment_encodings(data, text):
    assert decode_user_comment(data) == text


@pytest.mark.parametrize("source,message", [
    (b"not an image", "not an image Pillow can read"),
    ("/no/such/file.png", "no such file"),
    (12, "takes a path, bytes or a PIL image"),
])
def test_unreadable_sources_are_clear_errors(source, message):
    with pytest.raises(InfotextError, match=message):
        read_parameters(source)


def test_numbers_are_typed_but_hashes_keep_their_zeros():
    parsed = parse_parameters("Steps: 7, CFG scale: 4, Seed: -1, Model hash: 0012345678, Size: 64x32, Eta: x")
    assert parsed["Steps"] == 7 and parsed["CFG scale"] == 4.0 and isinstance(parsed["CFG scale"], float)
    assert parsed["Seed"] == -1 and parsed["Model hash"] == "0012345678"
    assert (parsed["width"], parsed["height"]) == (64, 32) and "Size" not in parsed
    assert parsed["Eta"] == "x"  # not a number: left as text
    assert math.isclose(parse_parameters("Ab: 1, Cd: 2, Eta: 0.33333333")["Eta"], 1 / 3, rel_tol=1e-7)
