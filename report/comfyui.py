"""Round trips with ComfyUI: a cell as a ComfyUI API-format prompt, and settings from a ComfyUI PNG.

    comfyui_workflow(cell, family=None) -> dict | None    the API-format prompt that renders the
                                                           cell in ComfyUI, None where it has none
    unavailable_reason(cell, family=None) -> str | None    why there is none
    read_comfyui(image) -> dict | None                     CellSpec fields from a PNG's "prompt"
                                                           (API format) or "workflow" (UI graph)
                                                           text chunk, None without either

The API format is what ComfyUI's /prompt endpoint takes and what it stores in the "prompt" text
chunk of every PNG it saves: {node id: {"class_type": ..., "inputs": {...}}}, an input being a
value or a link [node id, output index]. The graph written here is ComfyUI's default text-to-image
workflow: CheckpointLoaderSimple, two CLIPTextEncode (prompt, negative), EmptyLatentImage, KSampler
(seed, steps, cfg, sampler_name, scheduler, denoise 1), VAEDecode, SaveImage, with that workflow's
node ids. The "workflow" chunk is the editor's graph (nodes with "widgets_values", links); it is
read when a PNG has no "prompt" chunk.

A cell has a ComfyUI equivalent when its sampler has a ComfyUI name (samplers/comfyui.py), its
schedule computes the same sigmas as one of ComfyUI's scheduler names (checked numerically on the
SD training sigmas), its sampler options are the defaults (KSampler has no fields for them) and
its model is of the SD family (flow models load through other ComfyUI nodes). The checkpoint is
named by its file name; ComfyUI finds it in its models/checkpoints folder.
"""

from __future__ import annotations

import json
from typing import Any

import torch

import samplers
from core.cells import CellSpec
from report import infotext
from samplers import comfyui as comfy_names
from samplers import schedules
from samplers.plan import cell_schedule

# ComfyUI's default workflow's node ids, kept so that the graph reads as ComfyUI users know it.
CKPT, POSITIVE, NEGATIVE, LATENT, SAMPLER, DECODE, SAVE = "4", "6", "7", "5", "3", "8", "9"
SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
MAX_CHUNK = 2_000_000  # characters: a larger "prompt"/"workflow" chunk is refused, not parsed


class ComfyUIError(ValueError):
    """A ComfyUI chunk that cannot become settings; the message says what is wrong with it."""


# ---------------------------------------------------------------- cell -> ComfyUI


def _scheduler(cell: CellSpec, info: samplers.SamplerInfo) -> str | None:
    """ComfyUI's scheduler name that computes this cell's sigmas, or None."""
    ran = cell_schedule(cell)
    if ran is None:
        return None
    train = schedules.train_sigmas()
    try:
        ours = samplers.sigmas(ran, cell.steps, train, sampler=info.name)
    except ValueError:
        return None
    for name in schedules.COMFYUI_SCHEDULERS:
        theirs = schedules.compute(name, cell.steps, train,
                                   discard_penultimate=info.name in _COMFY_DISCARDS)
        if len(theirs) == len(ours) and torch.allclose(theirs, ours, rtol=1e-6, atol=0):
            return name
    return None


# Samplers for which ComfyUI's KSampler drops the next-to-last sigma (its
# DISCARD_PENULTIMATE_SIGMA_SAMPLERS), under our names.
_COMFY_DISCARDS = {"DPM2", "DPM2 a", "UniPC", "uni_pc_bh2"}


def unavailable_reason(cell: CellSpec, family: str | None = None) -> str | None:
    """Why `cell` has no ComfyUI workflow, or None when it has one."""
    try:
        info = samplers.info(cell.sampler)
    except ValueError as err:
        return str(err)
    if family in ("sd3", "flux"):
        return f"ComfyUI loads {family} models with other nodes than the checkpoint loader"
    name = comfy_names.comfyui_name(info.name)
    if name is None:
        return f"ComfyUI's KSampler has no sampler that runs as {info.name}"
    changed = [k for k, v in cell.sampler_options if v != info.options.get(k, object())]
    if changed:
        return f"ComfyUI's KSampler has no setting for {info.name}'s {', '.join(changed)}"
    if info.discard_penultimate != (info.name in _COMFY_DISCARDS):
        return f"ComfyUI runs {name} on another set of sigmas (next-to-last sigma kept or dropped)"
    if _scheduler(cell, info) is None:
        return (f"none of ComfyUI's schedulers computes the {cell.schedule!r} schedule "
                f"({', '.join(schedules.COMFYUI_SCHEDULERS)})")
    return None


def comfyui_workflow(cell: CellSpec, family: str | None = None) -> dict[str, Any] | None:
    """The ComfyUI API-format prompt that renders `cell` (None: see unavailable_reason)."""
    if unavailable_reason(cell, family) is not None:
        return None
    info = samplers.info(cell.sampler)
    ckpt = infotext.model_label(cell.model)
    return {
        SAMPLER: {"class_type": "KSampler", "inputs": {
            "seed": cell.seed, "steps": cell.steps, "cfg": cell.cfg,
            "sampler_name": comfy_names.comfyui_name(info.name), "scheduler": _scheduler(cell, info),
            "denoise": 1.0, "model": [CKPT, 0], "positive": [POSITIVE, 0], "negative": [NEGATIVE, 0],
            "latent_image": [LATENT, 0]}},
        CKPT: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{ckpt}.safetensors"}},
        LATENT: {"class_type": "EmptyLatentImage",
                 "inputs": {"width": cell.width, "height": cell.height, "batch_size": 1}},
        POSITIVE: {"class_type": "CLIPTextEncode", "inputs": {"text": cell.prompt, "clip": [CKPT, 1]}},
        NEGATIVE: {"class_type": "CLIPTextEncode",
                   "inputs": {"text": cell.negative_prompt, "clip": [CKPT, 1]}},
        DECODE: {"class_type": "VAEDecode", "inputs": {"samples": [SAMPLER, 0], "vae": [CKPT, 2]}},
        SAVE: {"class_type": "SaveImage",
               "inputs": {"filename_prefix": "sampler-grid", "images": [DECODE, 0]}},
    }


# ---------------------------------------------------------------- ComfyUI -> settings


def read_comfyui(texts: dict[str, Any]) -> dict[str, Any] | None:
    """CellSpec fields from a PNG's text chunks ("prompt", else "workflow"); None without either.

    Gives prompt, negative_prompt, seed, steps, cfg, sampler, schedule, width, height and model
    (the checkpoint's name without extension) as far as the graph has them. Raises ComfyUIError
    for a chunk that is not JSON, not a ComfyUI graph, or has no KSampler.
    """
    for key, reader in (("prompt", _from_api), ("workflow", _from_ui_graph)):
        raw = texts.get(key)
        if isinstance(raw, str) and raw.strip():
            return reader(_json(key, raw))
    return None


def _json(key: str, raw: str) -> Any:
    if len(raw) > MAX_CHUNK:
        raise ComfyUIError(f"the {key!r} chunk is {len(raw)} characters, more than a ComfyUI graph "
                           f"needs (at most {MAX_CHUNK}); not read")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ComfyUIError(f"the {key!r} chunk is not valid JSON ({err}); is this a ComfyUI image?") from None


def _node(nodes: dict[str, Any], ref: Any, what: str) -> dict[str, Any]:
    """The node a link [id, output] points to."""
    if not (isinstance(ref, list) and ref and str(ref[0]) in nodes and isinstance(nodes[str(ref[0])], dict)):
        raise ComfyUIError(f"the KSampler's {what} input does not link to a node of the graph")
    return nodes[str(ref[0])]


def _text_of(nodes: dict[str, Any], ref: Any, what: str, depth: int = 0) -> str:
    """The prompt text behind a conditioning link (through a few pass-through nodes)."""
    node = _node(nodes, ref, what)
    inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
    if isinstance(inputs.get("text"), str):
        return inputs["text"]
    link = next((v for k, v in inputs.items()
                 if k in ("conditioning", "conditioning_1") and isinstance(v, list)), None)
    if link is None or depth > 8:
        raise ComfyUIError(f"cannot find the {what} prompt text: the KSampler's {what} input comes from "
                           f"a {node.get('class_type')!r} node")
    return _text_of(nodes, link, what, depth + 1)


def _from_api(graph: Any) -> dict[str, Any]:
    if not isinstance(graph, dict) or not all(isinstance(v, dict) for v in graph.values()):
        raise ComfyUIError("the 'prompt' chunk is not a ComfyUI API graph (an object of nodes)")
    graph = {str(k): v for k, v in graph.items()}
    ks = [n for n in graph.values() if n.get("class_type") in SAMPLER_NODES]
    if not ks:
        raise ComfyUIError("the ComfyUI graph has no KSampler node; its settings cannot be read")
    inputs = ks[0].get("inputs") or {}
    out: dict[str, Any] = {
        "prompt": _text_of(graph, inputs.get("positive"), "positive"),
        "negative_prompt": _text_of(graph, inputs.get("negative"), "negative"),
    }
    seed = inputs.get("seed", inputs.get("noise_seed"))
    out.update(_ksampler_values(seed, inputs.get("steps"), inputs.get("cfg"), inputs.get("sampler_name"),
                                inputs.get("scheduler")))
    latent = _node(graph, inputs.get("latent_image"), "latent_image").get("inputs") or {}
    out.update(_size(latent.get("width"), latent.get("height")))
    model = _find_ckpt(graph, inputs.get("model"))
    if model:
        out["model"] = model
    return out


def _find_ckpt(graph: dict[str, Any], ref: Any, depth: int = 0) -> str | None:
    """The checkpoint name behind the KSampler's model link (through LoRA-style pass-throughs)."""
    if not isinstance(ref, list) or not ref or str(ref[0]) not in graph or depth > 8:
        return None
    inputs = graph[str(ref[0])].get("inputs") or {}
    name = inputs.get("ckpt_name") or inputs.get("unet_name")
    if isinstance(name, str):
        return infotext.model_label(name)
    return _find_ckpt(graph, inputs.get("model"), depth + 1)


def _ksampler_values(seed: Any, steps: Any, cfg: Any, sampler: Any, scheduler: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value, kind in (("seed", seed, int), ("steps", steps, int), ("cfg", cfg, float)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind is int and not float(value).is_integer()):
            raise ComfyUIError(f"the KSampler's {key} must be a number, got {value!r}")
        out[key] = kind(value)
    try:
        if sampler is not None:
            out["sampler"] = samplers.info(str(sampler)).name
        if scheduler is not None:
            out["schedule"] = schedules.canonical(str(scheduler))
    except ValueError as err:
        raise ComfyUIError(f"cannot read the KSampler's settings: {err}") from None
    return out


def _size(width: Any, height: Any) -> dict[str, int]:
    sides = {"width": width, "height": height}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in sides.values()):
        return dict(sides)
    return {}


# The editor graph ("workflow" chunk): nodes carry their widget values in a list, in the node's
# input order; links are [id, from node, from slot, to node, to slot, type].
_KSAMPLER_WIDGETS = ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise")


def _from_ui_graph(graph: Any) -> dict[str, Any]:
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    links = graph.get("links") if isinstance(graph, dict) else None
    if not isinstance(nodes, list) or not isinstance(links, list):
        raise ComfyUIError("the 'workflow' chunk is not a ComfyUI editor graph (nodes and links)")
    by_id = {n.get("id"): n for n in nodes if isinstance(n, dict)}
    source = {lk[0]: lk[1] for lk in links if isinstance(lk, list) and len(lk) >= 2}
    ks = next((n for n in by_id.values() if n.get("type") in SAMPLER_NODES), None)
    if ks is None:
        raise ComfyUIError("the ComfyUI graph has no KSampler node; its settings cannot be read")

    def upstream(node: dict[str, Any], name: str) -> dict[str, Any]:
        for inp in node.get("inputs") or []:
            if isinstance(inp, dict) and inp.get("name") == name and inp.get("link") in source:
                found = by_id.get(source[inp["link"]])
                if isinstance(found, dict):
                    return found
        raise ComfyUIError(f"the KSampler's {name} input is not linked to a node of the graph")

    values = ks.get("widgets_values") or []
    w = dict(zip(_KSAMPLER_WIDGETS, values if isinstance(values, list) else [], strict=False))
    if ks.get("type") == "KSamplerAdvanced":  # add_noise, seed, control, steps, cfg, sampler, ...
        w = dict(zip(("add_noise", *_KSAMPLER_WIDGETS[:6]), values, strict=False))
    out = {"prompt": _widget_text(upstream(ks, "positive"), "positive"),
           "negative_prompt": _widget_text(upstream(ks, "negative"), "negative")}
    out.update(_ksampler_values(w.get("seed"), w.get("steps"), w.get("cfg"), w.get("sampler_name"),
                                w.get("scheduler")))
    latent = upstream(ks, "latent_image").get("widgets_values") or []
    if isinstance(latent, list) and len(latent) >= 2:
        out.update(_size(latent[0], latent[1]))
    try:
        ckpt = upstream(ks, "model").get("widgets_values") or []
    except ComfyUIError:
        ckpt = []
    if isinstance(ckpt, list) and ckpt and isinstance(ckpt[0], str):
        out["model"] = infotext.model_label(ckpt[0])
    return out


def _widget_text(node: dict[str, Any], what: str) -> str:
    values = node.get("widgets_values")
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    raise ComfyUIError(f"cannot find the {what} prompt text in the {node.get('type')!r} node")


def workflow_json(workflow: dict[str, Any] | None) -> str:
    """The prompt as ComfyUI's "Save (API format)" writes it (indented JSON), or "" for None."""
    return "" if workflow is None else json.dumps(workflow, indent=2, ensure_ascii=False)


