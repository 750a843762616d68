"""Round trips with ComfyUI: a cell as an API-format prompt (or null, saying why), ComfyUI PNGs
(their "prompt" and "workflow" chunks) and A1111 PNGs read back into settings, hostile chunks
refused with a clear message, and the CLI's --from-png grid around an image."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from PIL import Image, PngImagePlugin

import cli
import samplers
from core.cells import CellSpec
from report import infotext
from report.comfyui import comfyui_workflow, read_comfyui, unavailable_reason
from report.infotext_reader import InfotextError, settings_from_image
from samplers import comfyui as comfy_names

CELL = CellSpec(model="/models/v1-5-pruned-emaonly.safetensors", prompt="a red fox, snow",
                negative_prompt="blurry", width=512, height=768, seed=1234, sampler="DPM++ 2M",
                sampler_options=(), schedule="Karras", steps=20, cfg=6.5)


def png(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_a_cell_is_comfyuis_default_workflow():
    w = comfyui_workflow(CELL)
    classes = {k: v["class_type"] for k, v in w.items()}
    assert classes == {"3": "KSampler", "4": "CheckpointLoaderSimple", "5": "EmptyLatentImage",
                       "6": "CLIPTextEncode", "7": "CLIPTextEncode", "8": "VAEDecode", "9": "SaveImage"}
    ks = w["3"]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"], ks["denoise"]) == \
        (1234, 20, 6.5, "dpmpp_2m", "karras", 1.0)
    links = (ks["model"], ks["positive"], ks["negative"], ks["latent_image"])
    assert links == (["4", 0], ["6", 0], ["7", 0], ["5", 0])
    assert w["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    assert (w["6"]["inputs"]["text"], w["7"]["inputs"]["text"]) == ("a red fox, snow", "blurry")
    assert (w["5"]["inputs"]["width"], w["5"]["inputs"]["height"]) == (512, 768)
    assert w["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    json.dumps(w)  # plain JSON


@pytest.mark.parametrize("sampler,schedule,comfy", [
    ("Euler", "Automatic", ("euler", "normal")),  # Euler's Uniform is ComfyUI's normal
    ("DDIM", "Automatic", ("ddim", "ddim_uniform")),  # 20 steps: our DDIM = the walk
    ("DPM2", "Karras", ("dpm_2", "karras")),  # both drop the next-to-last sigma
    ("lms", "SGM Uniform", ("lms", "sgm_uniform")),
    ("Euler CFG++", "beta", ("euler_cfg_pp", "beta")),
    ("uni_pc_bh2", "Simple", ("uni_pc_bh2", "simple")),
    ("DPM++ 2M SDE", "Exponential", ("dpmpp_2m_sde", "exponential")),
])
def test_sampler_and_scheduler_names_and_they_resolve_back(sampler, schedule, comfy):
    cell = dataclasses.replace(CELL, sampler=sampler, schedule=schedule)
    ks = comfyui_workflow(cell)["3"]["inputs"]
    assert (ks["sampler_name"], ks["scheduler"]) == comfy
    assert samplers.info(ks["sampler_name"]).name == sampler


@pytest.mark.parametrize("changes,why", [
    ({"sampler": "Restart"}, "no sampler that runs as Restart"),
    ({"sampler": "DPM++ 3M SDE"}, "no sampler that runs as DPM++ 3M SDE"),  # A1111's drops a sigma
    ({"sampler": "Euler (diffusers)"}, "no sampler that runs as"),
    ({"schedule": "KL Optimal"}, "computes the 'KL Optimal' schedule"),  # A1111's: no final 0
    ({"schedule": "Align Your Steps"}, "computes the 'Align Your Steps' schedule"),
    ({"schedule": "Beta"}, "computes the 'Beta' schedule"),  # A1111's Beta, not ComfyUI's beta
    ({"sampler": "Euler a", "sampler_options": (("eta", 0.5),)}, "no setting for Euler a's eta"),
])
def test_no_equivalent_is_null_with_a_reason(changes, why):
    cell = dataclasses.replace(CELL, **changes)
    assert comfyui_workflow(cell) is None
    assert why in unavailable_reason(cell)


def test_flow_models_have_no_checkpoint_loader_workflow():
    assert comfyui_workflow(CELL, "flux") is None and "flux" in unavailable_reason(CELL, "flux")


def test_every_sampler_with_a_comfyui_name_round_trips():
    for name in samplers.names():
        comfy = comfy_names.comfyui_name(name)
        cell = dataclasses.replace(CELL, sampler=name, schedule="Karras")
        w = comfyui_workflow(cell)
        if comfy is None or w is None:
            continue
        assert samplers.info(w["3"]["inputs"]["sampler_name"]).name == name


# ---------------------------------------------------------------- reading


def test_comfyui_png_prompt_chunk_gives_the_cell_back():
    data = png(prompt=json.dumps(comfyui_workflow(CELL)))
    kind, found = settings_from_image(data)
    assert kind == "comfyui"
    assert found == {"prompt": CELL.prompt, "negative_prompt": "blurry", "seed": 1234, "steps": 20,
                     "cfg": 6.5,
                     "sampler": "DPM++ 2M", "schedule": "Karras", "width": 512, "height": 768,
                     "model": "v1-5-pruned-emaonly"}


def ui_graph() -> dict:
    """The editor graph ComfyUI stores in the "workflow" chunk (its default workflow's shape)."""
    return {"last_node_id": 9, "last_link_id": 9, "nodes": [
        {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["sd_xl_base_1.0.safetensors"],
         "outputs": [{"name": "MODEL", "links": [1]}, {"name": "CLIP", "links": [3, 5]}]},
        {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a lighthouse at dusk"],
         "inputs": [{"name": "clip", "link": 3}]},
        {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["text, watermark"],
         "inputs": [{"name": "clip", "link": 5}]},
        {"id": 5, "type": "EmptyLatentImage", "widgets_values": [1024, 1024, 1]},
        {"id": 3, "type": "KSampler",
         "widgets_values": [156680208700286, "randomize", 25, 8, "euler_ancestral", "beta", 1],
         "inputs": [{"name": "model", "link": 1}, {"name": "positive", "link": 4},
                    {"name": "negative", "link": 6}, {"name": "latent_image", "link": 2}]},
    ], "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"],
                 [4, 6, 0, 3, 1, "CONDITIONING"], [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"]]}


def test_comfyui_png_with_only_the_editor_graph():
    kind, found = settings_from_image(png(workflow=json.dumps(ui_graph())))
    assert kind == "comfyui"
    assert found == {"prompt": "a lighthouse at dusk", "negative_prompt": "text, watermark",
                     "seed": 156680208700286, "steps": 25, "cfg": 8.0, "sampler": "Euler a",
                     "schedule": "beta",
                     "width": 1024, "height": 1024, "model": "sd_xl_base_1.0"}


def test_a1111_png_goes_through_the_a1111_reader():
    params = infotext.parameters(CELL, CELL.model, "")
    kind, found = settings_from_image(png(parameters=params))
    assert kind == "a1111" and found["sampler"] == "DPM++ 2M" and found["seed"] == 1234


@pytest.mark.parametrize("chunks,message", [
    ({"prompt": "{not json"}, "not valid JSON"),
    ({"prompt": "[1, 2, 3]"}, "not a ComfyUI API graph"),
    ({"prompt": json.dumps({"1": {"class_type": "SaveImage", "inputs": {}}})}, "no KSampler node"),
    ({"prompt": "[" * 100_000 + "]" * 100_000}, "not valid JSON|more than a ComfyUI graph needs"),
    ({"prompt": " " * 2_000_001 + "{}"}, "more than a ComfyUI graph needs"),
    ({"workflow": json.dumps({"nodes": "x"})}, "not a ComfyUI editor graph"),
    ({}, "carries no generation settings"),
])
def test_malformed_or_hostile_chunks_get_a_clear_message(chunks, message):
    with pytest.raises(InfotextError, match=message):
        settings_from_image(png(**chunks))


@pytest.mark.parametrize("change,message", [
    (("steps", "twenty"), "steps must be a number"),
    (("sampler_name", "dpmpp_2n"), "did you mean 'dpmpp_2m'"),
    (("scheduler", "karas"), "did you mean"),
    (("positive", ["99", 0]), "positive input does not link"),
])
def test_bad_ksampler_values_are_named(change, message):
    w = comfyui_workflow(CELL)
    w["3"]["inputs"][change[0]] = change[1]
    with pytest.raises(InfotextError, match=message):
        settings_from_image(png(prompt=json.dumps(w)))


def test_no_chunks_reads_as_none():
    assert read_comfyui({"parameters": "x"}) is None


# ---------------------------------------------------------------- CLI


def test_cli_from_png_builds_a_grid_around_the_image(tmp_path):
    path = tmp_path / "comfy.png"
    path.write_bytes(png(prompt=json.dumps(comfyui_workflow(CELL))))
    args = cli.build_parser().parse_args(["grid", "--out", str(tmp_path / "o"), "--from-png", str(path),
                                          "--cfg", "5"])
    spec = cli.build_spec(args)
    assert (spec.prompt, spec.negative_prompt, spec.seed, spec.width, spec.height) == \
        (CELL.prompt, "blurry", 1234, 512, 768)
    assert spec.cfg == 5.0  # an explicit flag wins over the image
    assert spec.x.axis == "sampler" and spec.x.values[0].sampler == "DPM++ 2M"
    assert spec.y.axis == "steps" and list(spec.y.values) == [10, 20, 40]
    assert spec.schedule == "Karras" and spec.model == "v1-5-pruned-emaonly"


def test_cli_from_png_unreadable_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.png"
    path.write_bytes(png(prompt="{oops"))
    assert cli.main(["grid", "--out", str(tmp_path / "o"), "--from-png", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --from-png") and "not valid JSON" in err and err.count("\n") == 1


def test_app_drop_fills_in_the_controls():
    import tempfile

    from ui import catalogue, handlers
    from ui.settings import Settings

    groups = catalogue.grouped()
    values = handlers.values_from(Settings(samplers=("Euler",)), groups)
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
        f.write(png(workflow=json.dumps(ui_graph())))
    back = handlers.settings_from_png(f.name, values, groups)
    s = handlers.settings_from(back)
    assert (s.prompt, s.seed, s.width, s.cfg, s.schedule) == \
        ("a lighthouse at dusk", 156680208700286, 1024, 8.0, "beta")
    assert s.samplers == ("Euler", "Euler a")  # the image's sampler beside the one already checked
    assert s.steps == "12, 25, 50" and s.model == "sd_xl_base_1.0"
    # public mode offers only its own models: the image's is left out
    public = handlers.settings_from(handlers.settings_from_png(f.name, values, groups, ("builtin",)))
    assert public.model == "builtin" and public.prompt == "a lighthouse at dusk"


