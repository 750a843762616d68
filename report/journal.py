"""Cell sidecars: each finished cell's record next to its PNG, so a stopped run can resume.

    cells/<NNN>-<slug>.png            the cell image (written first)
    cells/<NNN>-<slug>.safetensors    its final latents, only when asked (written second)
    cells/<NNN>-<slug>.json           its record (written last: the mark that the cell is done)

A sidecar holds the cell's manifest record plus what ties the files to one grid cell: the key
of the cell's settings (grids.CellSpec.key of the cell as the grid spec expands it), the hash
of the model it ran on and the sampler-grid version. `read_verified` accepts a sidecar only
when all of those match and the sha256 of every file it names equals the recorded one; any
other cell is rendered again. Every file is written atomically (temporary name, fsync,
rename: infotext.write_atomic), so a process killed at any moment leaves either a whole,
verifiable cell or one to redo.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from report import infotext
from version import __version__

SIDECAR_FORMAT = "sampler-grid cell 1"
# What a run may leave in cells/: <index>-<slug> with one of these endings.
CELL_FILE = re.compile(r"\d{3,}-[a-z0-9-]+\.(png|json|safetensors)")
TEMPORARY = re.compile(r"\..+\.\d+\.tmp")  # infotext.write_atomic's name while a file is written


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar_path(out: Path, cell_file: str) -> Path:
    """cells/003-euler-a.png -> <out>/cells/003-euler-a.json"""
    return (Path(out) / cell_file).with_suffix(".json")


def latents_file(cell_file: str) -> str:
    """cells/003-euler-a.png -> cells/003-euler-a.safetensors"""
    return str(Path(cell_file).with_suffix(".safetensors").as_posix())


def write_sidecar(out: Path, record: dict[str, Any], key: str, model_hash: str | None) -> None:
    """Write a finished cell's sidecar (after its PNG and latents are on disk)."""
    data = {"format": SIDECAR_FORMAT, "version": __version__, "key": key, "model_hash": model_hash,
            "record": record}
    text = json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"
    infotext.write_atomic(sidecar_path(out, record["file"]), text.encode("utf-8"))


def read_verified(out: Path, cell_file: str, index: int, key: str, model_hash: str | None,
                  latents: bool) -> dict[str, Any] | None:
    """The record of cell `index` if its sidecar and files prove it finished for these settings,
    else None. `model_hash` None: the model is not checked (a model axis's other models);
    `latents`: the cell must also have its latents file."""
    try:
        data = json.loads(sidecar_path(out, cell_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("record"), dict):
        return None
    record = data["record"]
    expected = {"format": SIDECAR_FORMAT, "version": __version__, "key": key}
    if any(data.get(k) != v for k, v in expected.items()):
        return None
    if model_hash is not None and data.get("model_hash") != model_hash:
        return None
    if record.get("index") != index or record.get("error") is not None or record.get("file") != cell_file:
        return None
    if not file_matches(out, cell_file, record.get("sha256")):
        return None
    if latents:
        entry = record.get("latents")
        if not isinstance(entry, dict) or not file_matches(out, entry.get("file"), entry.get("sha256")):
            return None
    return record


def file_matches(out: Path, name: Any, digest: Any) -> bool:
    """Whether `out`/`name` exists and its sha256 is `digest`."""
    if not isinstance(name, str) or not isinstance(digest, str):
        return False
    try:
        return sha256((Path(out) / name).read_bytes()) == digest
    except OSError:
        return False


def remove_sidecars(out: Path) -> None:
    """Drop every sidecar in cells/ (a fresh run must not trust a previous run's cells)."""
    for path in (Path(out) / "cells").glob("*.json"):
        if CELL_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)


def remove_temporaries(out: Path) -> None:
    """Drop half-written files a killed run left under their temporary names."""
    for folder in (Path(out), Path(out) / "cells"):
        for path in folder.glob(".*.tmp"):
            if TEMPORARY.fullmatch(path.name):
                path.unlink(missing_ok=True)
