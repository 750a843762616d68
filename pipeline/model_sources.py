"""Model sources: where a model's weights are, and reading them into a pipeline on the CPU.

This module owns resolving a model name (a local diffusers folder, a single
original-format checkpoint, a Hugging Face hub id, "builtin"), the hub cache
and offline rules, and every check that refuses what we cannot or must not
load: pickle weights (unless allowed), custom code, corrupt files, pipelines
that are not Stable Diffusion 1.x / 2.x / XL / 3 or Flux (pipeline.flow_models tells
the flow families apart), a config folder of another pipeline class. SD-family single files load
through diffusers' from_single_file, SD3 / Flux ones through pipeline.flow_single_file. It never
touches devices or the model cache (pipeline.models does).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from torch import Tensor

from core.cells import BUILTIN_MODELS
from pipeline.flow_checkpoints import FlowCheckpointError
from pipeline.flow_models import FLOW_PIPELINES, WORKS, FlowFamilyError, checkpoint_family
from pipeline.flow_single_file import load_flow_single_file

ASSETS = Path(__file__).resolve().parents[1] / "assets"
BUILTIN_DIR = ASSETS / "builtin"
BUILTIN_FLOW_DIR = ASSETS / "builtin-flow"
PIPELINES: dict[str, type] = {
    "StableDiffusionPipeline": StableDiffusionPipeline,
    "StableDiffusionXLPipeline": StableDiffusionXLPipeline,
    "StableDiffusion3Pipeline": StableDiffusion3Pipeline,
    "FluxPipeline": FluxPipeline,
}
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
# Component libraries a diffusers folder may name; anything else would need custom code.
_LIBRARIES = {"diffusers", "transformers"}
# Optional components the app never uses: neither loaded nor checked nor downloaded.
UNUSED_COMPONENTS = {"safety_checker": None, "feature_extractor": None, "image_encoder": None}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message says what to do about it."""


class UnsupportedModelError(ModelLoadError):
    """A model that is not a Stable Diffusion 1.x / 2.x / XL / 3 or Flux text-to-image model."""


@dataclass(frozen=True)
class Source:
    """Where a model's weights are: kind "folder" | "file" | "hub", a path or repo id, a config folder."""

    kind: str
    location: str
    config: str | None = None



def resolve(name: str, config: str | Path | None) -> Source:
    """Which kind of source `name` is; a path that does not exist and is not a hub id is an error."""
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    cfg = None if config is None else str(Path(config).expanduser().resolve())
    if name in BUILTIN_MODELS:
        path = ASSETS / name
        if not path.exists():
            raise ModelLoadError(
                f"the built-in model {name!r} is not installed (expected at {path}); "
                "pick a model folder, a .safetensors file or a hub id instead")
    else:
        path = Path(name).expanduser()
    if path.is_dir():
        return Source("folder", str(path.resolve()))
    if path.is_file():
        return Source("file", str(path.resolve()), cfg)
    if _HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return Source("hub", name)
    raise ModelLoadError(
        f"model {name!r} not found: no such file or folder, and not a hub id like 'org/name'")


def _hub_cache_dir() -> str | None:
    # Read at call time: huggingface_hub reads HF_HOME/HF_HUB_CACHE only once, at import.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _not_cached(repo: str) -> ModelLoadError:
    why = "HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached"
    return ModelLoadError(
        f"model {repo!r} is not in the local Hugging Face cache ({_hub_cache_dir() or 'default HF_HOME'}) "
        f"and cannot be downloaded now ({why}). On a machine with network run "
        f"`hf download {repo}` and copy the cache here, or set HF_HOME to a cache that has it")


def _hub_folder(repo: str) -> Path:
    """The local snapshot folder of a diffusers repo, downloading only what loading needs."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    kw = {"cache_dir": _hub_cache_dir(), "local_files_only": _offline()}
    try:
        index = Path(hf_hub_download(repo, "model_index.json", **kw))
    except LocalEntryNotFoundError as err:
        raise _not_cached(repo) from err
    except EntryNotFoundError as err:
        raise ModelLoadError(f"hub repo {repo!r} has no model_index.json, so it is not a diffusers "
                             "pipeline; download its .safetensors checkpoint and give that path") from err
    except RepositoryNotFoundError as err:
        raise ModelLoadError(f"hub repo {repo!r} does not exist or is gated (log in with "
                             "`hf auth login` if it is gated)") from err
    cls = _pipeline_class(_read_index(index.parent), repo)
    try:
        # diffusers picks the files the pipeline needs (and falls back to the cache when offline).
        return Path(cls.download(repo, use_safetensors=True, **UNUSED_COMPONENTS, **kw))
    except (OSError, ValueError) as err:
        if _offline():
            raise _not_cached(repo) from err
        raise ModelLoadError(f"could not get {repo!r} from the hub or the local cache: {err}") from err


# ------------------------------------------------------------------ loading


def load_pipeline(src: Source, name: str, dtype: torch.dtype,
                  allow_pickle: bool) -> tuple[Any, Path, tuple[Path, ...]]:
    """The pipeline on the CPU, where it came from, and the files its hash covers."""
    if src.kind == "file":
        path = Path(src.location)
        return _load_single_file(path, name, dtype, allow_pickle, src.config), path, (path,)
    folder = _hub_folder(src.location) if src.kind == "hub" else Path(src.location)
    return _load_folder(folder, name, dtype, allow_pickle), folder, _network_weights(folder)


def _read_index(folder: Path) -> dict[str, Any]:
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(
            f"{folder} has no model_index.json, so it is not a diffusers model folder; give the folder "
            "that contains model_index.json, or a single .safetensors checkpoint file")
    try:
        return json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{index} is not valid JSON ({err}); download the model again") from err


def _pipeline_class(index: dict[str, Any], where: str) -> type:
    """The supported pipeline class a model_index.json names, refusing custom code."""
    cls_name = index.get("_class_name")
    if cls_name not in PIPELINES:
        raise UnsupportedModelError(
            f"{where} is a {cls_name or 'unknown'} model; this app renders {WORKS} "
            f"({', '.join(PIPELINES)})")
    for comp, spec in index.items():
        if not comp.startswith("_") and isinstance(spec, list) and spec[0] not in (None, *_LIBRARIES):
            raise UnsupportedModelError(
                f"{where}: component {comp!r} comes from {spec[0]!r}, which would need custom code; "
                "custom code is never run")
    return PIPELINES[cls_name]


def _check_weights(folder: Path, index: dict[str, Any], allow_pickle: bool) -> None:
    """Refuse pickle-only components and safetensors files whose header does not parse."""
    from safetensors import safe_open

    for comp, spec in index.items():
        sub = folder / comp
        if comp.startswith("_") or comp in UNUSED_COMPONENTS or not isinstance(spec, list) \
                or spec[0] is None or not sub.is_dir():
            continue
        safe = sorted(sub.glob("*.safetensors"))
        if not safe and any(p.suffix in PICKLE_SUFFIXES for p in sub.iterdir()) and not allow_pickle:
            raise ModelLoadError(
                f"{sub} has only pickle weights (.bin), which can run code when loaded; convert them "
                "to .safetensors (or load with allow_pickle=True if you trust the source)")
        for file in safe:
            try:
                with safe_open(str(file), framework="pt") as f:
                    f.keys()
            except Exception as err:  # safetensors raises its own error types
                raise ModelLoadError(f"{file} is not a valid .safetensors file (corrupt or truncated "
                                     f"download?): {err}; download it again") from err


def _load_folder(folder: Path, name: str, dtype: torch.dtype, allow_pickle: bool) -> Any:
    index = _read_index(folder)
    cls = _pipeline_class(index, str(folder))
    _check_weights(folder, index, allow_pickle)
    try:
        return cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True,
                                   use_safetensors=None if allow_pickle else True,
                                   **_extra(cls, index, folder))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise ModelLoadError(f"could not load {name!r} from {folder}: {err} (the folder may be "
                             "incomplete or damaged; download it again)") from err


def _extra(cls: type, index: dict[str, Any] | None = None, folder: Path | None = None) -> dict[str, Any]:
    """Loading arguments that leave out the components the app never uses, and SD3's T5 when the
    folder has none (SD3 runs without it: diffusers then feeds zeros in T5's place)."""
    if cls is StableDiffusionPipeline:
        return {**UNUSED_COMPONENTS, "requires_safety_checker": False}
    extra: dict[str, Any] = {"image_encoder": None, "feature_extractor": None}
    if cls is StableDiffusion3Pipeline and index is not None and folder is not None:
        spec = index.get("text_encoder_3")
        if not isinstance(spec, list) or spec[0] is None or not (folder / "text_encoder_3").is_dir():
            extra |= {"text_encoder_3": None, "tokenizer_3": None}
    return extra


def _network_weights(folder: Path) -> tuple[Path, ...]:
    """The denoising network's weights file(s) a folder's hash covers (the UNet, or an SD3 / Flux
    transformer): the plain (non-variant) safetensors if any."""
    unet = folder / "transformer" if (folder / "transformer").is_dir() else folder / "unet"
    for pattern in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model-*.safetensors",
                    "diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin"):
        files = sorted(unet.glob(pattern))
        if files:
            return tuple(p.resolve() for p in files)
    return ()


def _checkpoint_shapes(path: Path, allow_pickle: bool) -> dict[str, Tensor]:
    """A checkpoint's keys with shape-only (meta) tensors: enough to tell which model it is."""
    from safetensors import safe_open

    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(
                f"{path.name} is a pickle checkpoint ({path.suffix}), which can run code when loaded; use "
                "a .safetensors version (or load with allow_pickle=True if you trust the source)")
        from diffusers.loaders.single_file_utils import load_single_file_checkpoint
        return load_single_file_checkpoint(str(path))
    if path.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{path} is not a model: expected a diffusers folder, a .safetensors "
                             "checkpoint or a hub id")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ModelLoadError(f"{path} is not a valid .safetensors file (corrupt or truncated "
                             f"download?): {err}; download it again") from err


def _single_file_class(path: Path, shapes: dict[str, Tensor]) -> tuple[type, str]:
    """The pipeline class for an original-format checkpoint and diffusers' guess of its model type."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        flow = checkpoint_family(shapes, path.name)
    except FlowFamilyError as err:
        raise UnsupportedModelError(str(err)) from err
    if flow is not None:
        return (StableDiffusion3Pipeline if flow[0] == "sd3" else FluxPipeline), flow[1]
    if "model.diffusion_model.input_blocks.0.0.weight" not in shapes:
        raise ModelLoadError(f"{path.name} has no Stable Diffusion UNet weights (model.diffusion_model.*): "
                             "LoRA, VAE and embedding files are not models")
    kind = infer_diffusers_model_type(shapes)
    if kind in ("v1", "v2"):
        return StableDiffusionPipeline, kind
    if kind == "xl_base":
        return StableDiffusionXLPipeline, kind
    raise UnsupportedModelError(f"{path.name} looks like a {kind!r} checkpoint; this app renders {WORKS}")


def _single_file_config(kind: str) -> str:
    """The local folder of the diffusers configs diffusers uses for this kind of checkpoint."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS
    from huggingface_hub import snapshot_download

    repo = DIFFUSERS_DEFAULT_PIPELINE_PATHS[kind]["pretrained_model_name_or_path"]
    # An SD3 / Flux checkpoint often holds only the transformer: the text encoders, tokenizers
    # and VAE come from the config repo, weights included (never its own transformer weights).
    flow = kind.startswith(("sd3", "sd35", "flux"))
    patterns = ["*.json", "*/*.json", "*/*.txt"]
    if flow:
        patterns += ["text_encoder*/*.safetensors", "vae/*.safetensors", "tokenizer*/*"]
    try:
        return snapshot_download(repo, allow_patterns=patterns, cache_dir=_hub_cache_dir(),
                                 local_files_only=_offline())
    except (OSError, ValueError) as err:
        what = "configs, text encoders and VAE" if flow else "configs"
        raise ModelLoadError(
            f"a single-file checkpoint needs the {what} of {repo!r}, which are not in the local "
            f"Hugging Face cache; run `hf download {repo}` with network, or pass "
            "config=<a diffusers folder of the same architecture>") from err


def _config_folder(config: str, cls: type, path: Path) -> Path:
    """A config folder given for a single file: a diffusers folder of the file's pipeline class."""
    folder = Path(config)
    index = _read_index(folder)  # a clear error for a config that is not a diffusers folder
    if index.get("_class_name") != cls.__name__:
        raise ModelLoadError(f"{path.name} is a {cls.__name__} checkpoint, but the config folder {folder} "
                             f"is a {index.get('_class_name') or 'unknown'} model; give config= a "
                             f"{cls.__name__} folder of the same model")
    return folder


def _load_single_file(path: Path, name: str, dtype: torch.dtype, allow_pickle: bool,
                      config: str | None) -> Any:
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    cls, kind = _single_file_class(path, _checkpoint_shapes(path, allow_pickle))
    if config is not None:
        _config_folder(config, cls, path)
    cfg = config or _single_file_config(kind)
    family = FLOW_PIPELINES.get(cls.__name__)
    try:
        if family is not None:
            return load_flow_single_file(path, family, Path(cfg), dtype, allow_pickle)
        return cls.from_single_file(str(path), config=cfg, local_files_only=True, dtype=dtype, **_extra(cls))
    except FlowCheckpointError as err:
        raise ModelLoadError(f"could not load {name!r} as a {kind} checkpoint: {err}") from err
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SingleFileComponentError) as err:
        # SingleFileComponentError (a component neither in the file nor loadable) is no ValueError
        why = err.message.splitlines()[0] if isinstance(err, SingleFileComponentError) else err
        raise ModelLoadError(f"could not load {name!r} as a {kind} checkpoint: {why}") from err
