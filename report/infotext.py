"""A1111-compatible generation parameters ("infotext") and the PNGs that carry them.

This module owns the `parameters` text that A1111's PNG Info tab (and tools that read it,
such as civitai) understand: one cell's text, the "Script: X/Y/Z plot" part a grid image
adds, and writing the text into a PNG text chunk (files written atomically). Reading
infotext back is not here.

Format, as A1111 v1.10.1 writes it:

    <prompt>
    Negative prompt: <negative prompt>            (only when there is one)
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x512,
    Model hash: <10 hex>, Model: <name>[, Eta: 0.5, ...][, Shift: 3][, Distilled CFG Scale: 3.5]
    [, Script: X/Y/Z plot, X Type: ...,
    X Values: ...], Version: 0.1.0                (one line)

Flow models: "Shift" (the timestep shift) and "Distilled CFG Scale" (Flux's distilled guidance,
Forge's field name) are written when the cell sets them; unset, the model's own is used.
Each "key: value" value containing a comma, colon or newline is JSON-quoted (non-ASCII kept);
the prompt lines are written as they are. Numbers print as A1111 prints them: 7 not 7.0.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.cells import CellSpec
from grids import axes
from grids.spec import ETA_DDIM_SAMPLERS, GridSpec
from samplers.plan import cell_schedule
from version import __version__

PNG_KEY = "parameters"

# A1111's infotext keys for sampler options; others are written under their own name.
OPTION_KEYS = {"eta": "Eta", "s_noise": "Sigma noise", "s_churn": "Sigma churn",
                "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "rho": "Schedule rho"}
# Flow-model settings: Forge's infotext names.
FLOW_KEYS = {"shift": "Shift", "guidance": "Distilled CFG Scale"}
# A1111 keeps DDIM's eta apart from the ancestral samplers' eta.
DDIM_ETA = {name: "Eta DDIM" for name in ETA_DDIM_SAMPLERS}
_CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


def quote(value: Any) -> str:
    """A value as A1111 writes it: JSON-quoted (non-ASCII kept) if it has a comma, colon or newline."""
    text = format_number(value) if isinstance(value, float) else str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def format_number(value: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5": integral floats print without ".0", as in A1111's infotext."""
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 8))


def model_label(name: str) -> str:
    """A model's name as A1111 shows it: the file or folder name, without a checkpoint extension
    ("/models/v1-5-pruned.safetensors" -> "v1-5-pruned"; "org/model" -> "model")."""
    text = name.rstrip("/\\")
    base = re.split(r"[/\\]", text)[-1] or text or name
    for ext in _CHECKPOINT_EXTENSIONS:
        if base.lower().endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)]
    return base


def _option_key(sampler: str, option: str) -> str:
    if option == "eta" and sampler in DDIM_ETA:
        return DDIM_ETA[sampler]
    return OPTION_KEYS.get(option, option)


def cell_fields(cell: CellSpec, model_name: str, model_hash: str = "") -> dict[str, Any]:
    """The "key: value" fields of a cell's parameters line, in A1111's order, without Version.

    `cell` should be sized (width/height filled in); a missing side is left out of Size.
    """
    size = f"{cell.width}x{cell.height}" if cell.width and cell.height else None
    out: dict[str, Any] = {
        "Steps": cell.steps,
        "Sampler": cell.sampler,
        "Schedule type": cell_schedule(cell),
        "CFG scale": float(cell.cfg),
        "Seed": cell.seed,
        "Size": size,
        "Model hash": model_hash or None,
        "Model": model_label(model_name) if model_name else None,
    }
    for option, value in cell.sampler_options:
        out[_option_key(cell.sampler, option)] = value
    for key, value in ((FLOW_KEYS["shift"], cell.shift), (FLOW_KEYS["guidance"], cell.guidance)):
        if value is not None:
            out[key] = float(value)
    return out


def grid_fields(spec: GridSpec) -> dict[str, str]:
    """The X/Y/Z plot fields a grid image adds: Script, then each axis's Type and Values."""
    out = {"Script": "X/Y/Z plot"}
    for pos, axis in spec.axes():
        out[f"{pos.upper()} Type"] = axis.label
        out[f"{pos.upper()} Values"] = axes.format_values(axis.axis, axis.values)
    return out


def parameters(cell: CellSpec, model_name: str, model_hash: str = "", *,
               extra: dict[str, Any] | None = None, version: str = __version__) -> str:
    """A cell's full `parameters` text; `extra` fields go before Version, as A1111's do."""
    fields = {**cell_fields(cell, model_name, model_hash), **(extra or {}), "Version": version}
    line = ", ".join(f"{key}: {quote(value)}" for key, value in fields.items() if value is not None)
    negative = f"\nNegative prompt: {cell.negative_prompt}" if cell.negative_prompt else ""
    # A1111 strips the whole text, so an empty prompt leaves the settings line first.
    return f"{cell.prompt}{negative}\n{line}".strip()


def grid_parameters(first_cell: CellSpec, spec: GridSpec, model_name: str, model_hash: str = "", *,
                    version: str = __version__) -> str:
    """A grid image's text: its first cell's parameters plus the X/Y/Z plot fields."""
    return parameters(first_cell, model_name, model_hash, extra=grid_fields(spec), version=version)


def png_bytes(image: Image.Image, params: str) -> bytes:
    """The image encoded as PNG with `params` in a "parameters" text chunk.

    Pillow writes a tEXt chunk when the text is Latin-1 and an iTXt (UTF-8) chunk otherwise;
    A1111 reads either.
    """
    info = PngInfo()
    info.add_text(PNG_KEY, params)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike[str], params: str) -> bytes:
    """Write the image as a PNG carrying `params` (atomically, see write_atomic); returns its bytes."""
    data = png_bytes(image, params)
    write_atomic(path, data)
    return data


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file next to `path` that replaces it when the block ends without an error.

    Why: a crash or a full disk mid-write must never leave a truncated file under the
    final name that looks complete; the temporary name is in the same folder so the
    rename is atomic, and it is removed if anything fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so that the file appears whole or not at all (see atomic_file)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
