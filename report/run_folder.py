"""A grid run's output folder: every file a finished (or stopped) grid leaves on disk.

This module owns the folder layout the CLI writes, and the app and sweeps reuse:

    spec.json                  the resolved spec (random seeds fixed), written by prepare()
    cells/<NNN>-<slug>.png     each cell that rendered, written the moment it arrives (on_cell)
    cells/<NNN>-<slug>.safetensors   its final latents, only when asked (FolderOptions.latents)
    cells/<NNN>-<slug>.json    its record, only when asked (FolderOptions.journal): what lets a
                               stopped run resume (prepare(resume=True), see report.journal)
    grid.png                   the labelled grid, A1111 text of cell 0 + the X/Y/Z plot part
                               (unless FolderOptions(grid=False): big sweeps)
    grid.jpg, grid.webp        the same grid, only in the formats asked for (text in EXIF)
    animation.gif              only when asked: one frame per steps value (X or Y axis), else per X
    <extra files>              whatever the caller passes to finish() (e.g. metrics.csv)
    bundle.zip                 only when asked: all of the above with manifest.json
    manifest.json              written last: settings, labels, model calls, seconds, files, sha256,
                               each cell's diffusers script ("diffusers_snippet", null when none),
                               each cell's ComfyUI API-format prompt ("comfyui_workflow", null
                               when ComfyUI has no equivalent; report/comfyui.py),
                               totals, and the caller's metrics

Every file is written under a temporary name and renamed, so none is ever half-written, and a
manifest.json in the folder always belongs to a run that finished. Nothing here prints or parses
arguments: callers report progress and errors their own way.

finish() takes the results in memory (the app's) or read back from the folder
(`stored_results()`, the CLI's): the grid and the animation fetch one cell image at a time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from core.cells import Cell, CellOutcome, CellSpec, ModelLabel
from grids.spec import GridSpec, expand
from report import exports, infotext, journal
from report.animation import animate, axis_frames
from report.comfyui import comfyui_workflow
from report.layout import GridLabels, LayoutOptions, draw_grid
from report.snippet import diffusers_snippet
from report.stored import CellImages, StoredResults
from version import __version__

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

MANIFEST_FORMAT = "sampler-grid manifest 1"
ANIMATION_FILE = "animation.gif"
BUNDLE_FILE = "bundle.zip"
# Files a run may leave; a new run removes the previous run's before it starts.
_RUN_FILES = ("manifest.json", "grid.png", "grid.jpg", "grid.webp", ANIMATION_FILE, BUNDLE_FILE)
_RESERVED = {*_RUN_FILES, "spec.json"}


class OutputFolderError(ValueError):
    """A folder that cannot be written, or extra files/metrics that cannot go into it."""


@dataclass(frozen=True)
class FolderOptions:
    """What to write besides the PNGs: grid formats (grid.png always, unless `grid` is off), the
    animation, the zip, each cell's sidecar record (`journal`, for resuming) and final latents
    (`latents`, .safetensors, for latent RMSE from disk).

    `animation_max_side` keeps the GIF's frames to a size a browser shows comfortably.
    """

    formats: tuple[str, ...] = ("png",)
    animation: bool = False
    zip: bool = False
    ms_per_frame: int = 500
    animation_max_side: int = 1024
    quality: int = 95
    journal: bool = False
    latents: bool = False
    grid: bool = True

    def __post_init__(self) -> None:
        names = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        canonical = ["png", *(exports.image_format(f) for f in names)]
        object.__setattr__(self, "formats", tuple(dict.fromkeys(canonical)))


def parse_formats(text: str) -> tuple[str, ...]:
    """Grid formats from "png,jpeg,webp" (any case; "jpg" is JPEG); raises ExportError naming the choices."""
    names = [part for part in (p.strip() for p in str(text).split(",")) if part]
    if not names:
        raise exports.ExportError("--formats needs at least one of png, jpeg, webp")
    return FolderOptions(formats=tuple(names)).formats


def slug(labels: Sequence[str | None]) -> str:
    """A file-name part from a cell's labels: ("Euler a", "Steps: 20") -> "euler-a-steps-20"."""
    text = "-".join(label for label in labels if label).lower().replace("+", "p")
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60].rstrip("-")
    return text or "cell"


def cell_files(cells: Sequence[Cell]) -> list[str]:
    """Each cell's file, relative to the output folder: cells/003-euler-a-steps-20.png."""
    digits = max(3, len(str(len(cells) - 1)))
    return [f"cells/{i:0{digits}d}-{slug(c.labels)}.png" for i, c in enumerate(cells)]


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def write_json(path: Path, data: Any) -> None:
    infotext.write_atomic(path, json_bytes(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cost_caption(result: CellOutcome) -> str | None:
    """A cell's cost as its overlay caption ("1.2 s · 40 calls"); None for a failed cell."""
    if not result.ok:
        return None
    return f"{result.seconds:.1f} s · {result.denoiser_calls} calls"


class GridFolder:
    """One grid run into one folder: prepare(), then on_cell() as cells arrive, then finish().

    `model` is the model the grid is named after (name, model_hash, family, default_size);
    `models(name)` finds the model a cell of a model axis ran on (its hash and family go into that
    cell's text and script), or None when it is not known (the caller passes what the engine has
    loaded: pipeline.models.loaded_model_named); without it only the grid's model is known.
    """

    def __init__(self, out: Path, spec: GridSpec, resolved: GridSpec, model: ModelLabel,
                 options: FolderOptions = FolderOptions(),
                 models: Callable[[str], ModelLabel | None] | None = None) -> None:
        self.out, self.spec, self.resolved, self.model = Path(out), spec, resolved, model
        self.options = options
        self.models = models or (lambda name: None)
        self.cells = expand(resolved)
        self.files = cell_files(self.cells)
        self.records: list[dict[str, Any] | None] = [None] * len(self.cells)

    def prepare(self, resume: bool = False) -> list[int]:
        """Create the folder, drop a previous run's grid files, manifest and half-written files,
        write spec.json; returns the indices of the cells already done.

        resume=False: no cell counts as done; the previous run's sidecars go (its cell images
        stay until finish() replaces or removes them). resume=True (needs FolderOptions(journal=True)):
        every cell whose sidecar and files verify (report.journal.read_verified) is kept, its
        record loaded, and its index returned; the rest are to render.
        """
        if resume and not self.options.journal:
            raise OutputFolderError("resuming needs the cells' sidecar records: FolderOptions(journal=True)")
        try:
            (self.out / "cells").mkdir(parents=True, exist_ok=True)
            for name in _RUN_FILES:
                (self.out / name).unlink(missing_ok=True)
            journal.remove_temporaries(self.out)
            if not resume:
                journal.remove_sidecars(self.out)
            write_json(self.out / "spec.json", self.resolved.to_json())
        except OSError as err:
            raise OutputFolderError(f"cannot write the output folder {str(self.out)!r}: "
                                    f"{err.strerror or err}") from err
        return self._verified_cells() if resume else []

    def _verified_cells(self) -> list[int]:
        done = []
        for i, cell in enumerate(self.cells):
            model = self._model_for(cell.spec)
            record = journal.read_verified(self.out, self.files[i], i, cell.spec.key(),
                                           model.model_hash if model is self.model else None,
                                           latents=self.options.latents)
            if record is not None:
                self.records[i] = record
                done.append(i)
        return done

    def add_records(self, records: Mapping[int, dict[str, Any]]) -> None:
        """Take cells another process wrote into this folder ({index: its record}); refuses a
        record whose file is missing or differs (a folder the processes do not share)."""
        for index, record in records.items():
            name = record.get("file")
            if name is not None and not journal.file_matches(self.out, name, record.get("sha256")):
                raise OutputFolderError(
                    f"cell {index}'s image {name} is missing or differs in {str(self.out)!r}: with "
                    "several machines, the output folder must be one they all share")
            self.records[index] = record

    def stored_results(self) -> StoredResults:
        """Every cell as its record and files in the folder say (images read when used)."""
        return StoredResults(self.out, self.cells, self.records)

    # ------------------------------------------------------------ cells

    def _model_for(self, cell_spec: CellSpec) -> ModelLabel | None:
        return self.model if cell_spec.model == self.model.name else self.models(cell_spec.model)

    def params(self, cell_spec: CellSpec) -> str:
        """A cell's A1111 text, naming the model that rendered it (a model axis loads several)."""
        model = self._model_for(cell_spec)
        return infotext.parameters(cell_spec, cell_spec.model, model.model_hash if model is not None else "")

    def on_cell(self, index: int, result: CellOutcome) -> None:
        """Write a finished cell's PNG at once, so a crash later keeps the cells done so far."""
        cell, spec = self.cells[index], result.spec
        params = self.params(spec)
        model = self._model_for(spec)
        record = {"index": index, "ix": cell.ix, "iy": cell.iy, "iz": cell.iz,
                  "labels": dict(zip("xyz", cell.labels, strict=True)),
                  "settings": {**spec.fields(), "sampler_options": dict(spec.sampler_options)},
                  "model_calls": result.denoiser_calls, "seconds": round(result.seconds, 4),
                  "cached": result.cached, "parameters": params, "file": None, "sha256": None,
                  "error": result.error,
                  "diffusers_snippet": diffusers_snippet(spec, spec.model, getattr(model, "family", None)),
                  "comfyui_workflow": comfyui_workflow(spec, getattr(model, "family", None))}
        if result.ok:
            data = infotext.save_png(result.image, self.out / self.files[index], params)
            record.update(file=self.files[index], sha256=_sha(data))
            if self.options.latents and result.latents is not None:
                record["latents"] = self._save_latents(index, result.latents)
            if self.options.journal:
                journal.write_sidecar(self.out, record, self.cells[index].spec.key(),
                                      getattr(model, "model_hash", None))
        self.records[index] = record

    def _save_latents(self, index: int, latents: Tensor) -> dict[str, str]:
        from safetensors.torch import save

        name = journal.latents_file(self.files[index])
        data = save({"latents": latents.detach().float().cpu().contiguous()})
        infotext.write_atomic(self.out / name, data)
        return {"file": name, "sha256": _sha(data)}

    # ------------------------------------------------------------ the end

    def finish(self, results: Sequence[CellOutcome], layout_options: LayoutOptions, seconds: dict[str, float],
               extra_files: Mapping[str, bytes] | None = None, metrics: dict | None = None) -> dict[str, Any]:
        """Write the cells not yet written, the grid (and its other formats), the animation,
        `extra_files` ({relative name: bytes}), the zip, and last the manifest; returns the manifest.

        `metrics` (JSON data) goes into the manifest under "metrics".
        """
        extras = _checked_extra_files(extra_files)
        _check_metrics(metrics)
        for i, result in enumerate(results):
            if self.records[i] is None:  # cells the engine never delivered (stopped)
                self.on_cell(i, result)
        labels = GridLabels.from_spec(self.resolved)
        text = infotext.grid_parameters(results[0].spec, self.resolved, self.model.name,
                                        self.model.model_hash)
        grid_entry = self._grid(results, labels, layout_options, text) if self.options.grid else None
        animation = self._animation(results, labels, layout_options) if self.options.animation else None
        self._remove_stale()
        for name, data in extras.items():
            (self.out / name).parent.mkdir(parents=True, exist_ok=True)
            infotext.write_atomic(self.out / name, data)
        manifest = self.manifest(None, b"", text, seconds)
        manifest["grid"] = grid_entry
        manifest.update(animation=animation, bundle=BUNDLE_FILE if self.options.zip else None,
                        extra_files=[{"file": n, "sha256": _sha(d)} for n, d in extras.items()],
                        metrics=metrics)
        data = json_bytes(manifest)
        if self.options.zip:
            exports.write_zip(self.out / BUNDLE_FILE, self._bundle(manifest, data, extras))
        infotext.write_atomic(self.out / "manifest.json", data)
        return manifest

    def _grid(self, results: Sequence[CellOutcome], labels: GridLabels, layout_options: LayoutOptions,
              text: str) -> dict[str, Any]:
        """grid.png (and its other formats), drawn one cell image at a time; its manifest entry."""
        grid = draw_grid(CellImages(results), labels, self.resolved.shape, layout_options,
                         captions=[cost_caption(r) for r in results] if layout_options.overlay else None)
        grid_png = infotext.save_png(grid, self.out / "grid.png", text)
        entry = _grid_entry(grid.size, grid_png, text)
        entry["formats"] = self._grid_formats(grid, text)
        return entry

    def _grid_formats(self, grid: Image.Image, text: str) -> dict[str, dict[str, str]]:
        """grid.jpg / grid.webp for the formats asked for: {format: {"file", "sha256"}}."""
        out = {}
        for fmt in self.options.formats:
            if fmt == "png":
                continue
            name = f"grid{exports.EXTENSIONS[fmt]}"
            data = exports.encode_image(grid, fmt, text, quality=self.options.quality)
            infotext.write_atomic(self.out / name, data)
            out[fmt] = {"file": name, "sha256": _sha(data)}
        return out

    def animation_axis(self) -> str:
        """The axis the animation steps through: steps on X or Y, else the first axis there is."""
        present = [pos for pos, _ in self.resolved.axes()]
        steps = [pos for pos, axis in self.resolved.axes() if axis.axis == "steps" and pos in "xy"]
        return (steps or present or ["x"])[0]

    def _animation(self, results: Sequence[CellOutcome], labels: GridLabels,
                   layout_options: LayoutOptions) -> dict[str, Any]:
        axis = self.animation_axis()
        frames, captions = axis_frames(self.cells, results, axis, labels=labels, options=layout_options)
        data = animate(frames, captions, "gif", self.options.ms_per_frame,
                       max_side=self.options.animation_max_side)
        infotext.write_atomic(self.out / ANIMATION_FILE, data)
        return {"file": ANIMATION_FILE, "axis": axis, "frames": len(frames),
                "ms_per_frame": self.options.ms_per_frame, "sha256": _sha(data)}

    def _remove_stale(self) -> None:
        """Drop cell files a previous run left here, so cells/ matches the manifest."""
        keep = {r["file"] for r in self.records if r and r["file"]}
        if self.options.journal:
            keep |= {journal.sidecar_path(Path(), f).as_posix() for f in keep}
        keep |= {r["latents"]["file"] for r in self.records if r and r.get("latents")}
        for path in (self.out / "cells").iterdir():
            if journal.CELL_FILE.fullmatch(path.name) and f"cells/{path.name}" not in keep:
                path.unlink()

    def _bundle(self, manifest: dict[str, Any], manifest_bytes: bytes,
                extras: Mapping[str, bytes]) -> dict[str, bytes | Path]:
        members: dict[str, bytes | Path] = {}
        for r in self.records:
            for name in (r["file"], (r.get("latents") or {}).get("file")) if r else ():
                if name:
                    members[name] = self.out / name
        if manifest["grid"]:
            members["grid.png"] = self.out / "grid.png"
            for entry in manifest["grid"]["formats"].values():
                members[entry["file"]] = self.out / entry["file"]
        if manifest["animation"]:
            members[ANIMATION_FILE] = self.out / ANIMATION_FILE
        members.update(extras)
        members["spec.json"] = self.out / "spec.json"
        members["manifest.json"] = manifest_bytes
        return members

    def manifest(self, size: tuple[int, int] | None, grid_png: bytes, text: str,
                 seconds: dict[str, float]) -> dict:
        """The manifest's run, model, grid, cells and totals (finish() adds the files and metrics).

        `size` None: no grid image (the "grid" entry is None)."""
        records = [r for r in self.records if r is not None]
        nx, ny, nz = self.resolved.shape
        return {
            "format": MANIFEST_FORMAT, "version": __version__,
            "spec": self.spec.to_json(), "seed": self.resolved.seed,
            "model": {"name": self.model.name, "hash": self.model.model_hash, "family": self.model.family,
                      "default_size": list(self.model.default_size)},
            "shape": {"columns": nx, "rows": ny, "subgrids": nz},
            "grid": None if size is None else _grid_entry(size, grid_png, text),
            "cells": records,
            "totals": {"cells": len(records), "failed": sum(r["error"] is not None for r in records),
                       "model_calls": sum(r["model_calls"] for r in records),
                       **{k: round(v, 3) for k, v in seconds.items()}},
        }


def _grid_entry(size: tuple[int, int], grid_png: bytes, text: str) -> dict[str, Any]:
    return {"file": "grid.png", "width": size[0], "height": size[1], "sha256": _sha(grid_png),
            "parameters": text}


def _checked_extra_files(extra_files: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """Extra files as {safe relative name: bytes}; names of the run's own files are refused."""
    out: dict[str, bytes] = {}
    for name, data in (extra_files or {}).items():
        text = str(name).replace("\\", "/")
        parts = PurePosixPath(text).parts
        if not parts or text.startswith("/") or ":" in parts[0] or any(p in ("..", ".") for p in parts):
            raise OutputFolderError(f"extra file name {name!r} must be a relative path inside the folder, "
                                    f"like 'metrics.csv'")
        clean = "/".join(parts)
        if clean in _RESERVED or parts[0] == "cells":
            raise OutputFolderError(f"extra file {name!r} would overwrite the run's own {clean!r}; "
                                    "pick another name")
        if not isinstance(data, (bytes, bytearray)):
            raise OutputFolderError(f"extra file {name!r} must be bytes, got {type(data).__name__}")
        out[clean] = bytes(data)
    return out


def _check_metrics(metrics: Any) -> None:
    """Metrics must be plain JSON (finite numbers): the manifest is read by browsers and scripts,
    and JSON has no NaN or infinity."""
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        raise OutputFolderError(f"metrics must be a dict, got {type(metrics).__name__}")
    try:
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise OutputFolderError("metrics must be JSON data (dicts, lists, text, finite numbers; use None "
                                f"for a missing value): {err}") from err

