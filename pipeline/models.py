"""Models: a name in, a loaded Stable Diffusion-family or flow (SD3, Flux) pipeline out, once.

This module owns `load_model` and `LoadedModel` (what the engine needs to know
about a model: family, prediction type, training sigmas, latent geometry,
hash), device and dtype placement (SDPA attention, SDXL's float32 VAE), the
support checks made on a loaded pipeline, and the one-model cache, which is
the project's only global mutable state. Where weights come from and the
checks made before loading live in pipeline.model_sources.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import Tensor

from pipeline.flow_models import FLOW_PIPELINES, FlowFacts, FlowFamilyError, check_flow_supported, flow_facts
from pipeline.model_sources import (  # noqa: F401  (the errors are this module's API too)
    BUILTIN_DIR,
    ModelLoadError,
    UnsupportedModelError,
    load_pipeline,
    resolve,
)
from samplers.flow_schedule import train_sigmas as flow_train_sigmas
from samplers.plan import ModelFacts
from samplers.schedules import train_sigmas_from_alphas_cumprod

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16}


@dataclass(eq=False)
class LoadedModel:
    """A loaded pipeline and what the engine needs to know about it.

    train_sigmas: ascending float32 training sigmas sqrt((1 - a) / a) from the
    scheduler's alphas_cumprod (a flow model: its shifted flow table at the scheduler's own shift).
    default_size: (width, height) in pixels, the network's sample_size times the VAE scale factor
    (Flux: FluxPipeline's 1024 px default). flow: the flow facts of an SD3 / Flux model
    (None for the SD family). model_hash: A1111's short hash, the first 10 hex
    digits of a sha256 — of the checkpoint file for a single file, of the UNet
    weights file(s) for a diffusers folder or hub snapshot; computed on first use. identity: what
    tells this loaded model from any other for the cell cache (see `identity`).
    """

    name: str
    family: str  # "sd1" | "sd2" | "sdxl" | "sd3" | "flux"
    pipe: Any
    prediction_type: str  # "epsilon" | "v_prediction" | "flow" (velocity, rectified flow)
    train_sigmas: Tensor
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    latent_channels: int
    vae_scale_factor: int
    default_size: tuple[int, int]
    path: Path
    hash_files: tuple[Path, ...] = ()
    flow: FlowFacts | None = None
    _hash: str | None = field(default=None, repr=False)
    _identity: str | None = field(default=None, repr=False)

    @property
    def unet(self) -> torch.nn.Module:
        """The denoising network: the UNet, or an SD3 / Flux transformer."""
        return self.pipe.transformer if self.flow is not None else self.pipe.unet

    @property
    def is_flow(self) -> bool:
        return self.flow is not None

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def facts(self) -> ModelFacts:
        """What the sampling plan needs to know about this model (samplers.plan.plan_cell)."""
        return ModelFacts(family=self.family, prediction_type=self.prediction_type,
                          train_sigmas=self.train_sigmas, scheduler_config=self.scheduler_config,
                          flow=self.flow.shift if self.flow is not None else None,
                          vae_scale_factor=self.vae_scale_factor)

    @property
    def model_hash(self) -> str:
        if self._hash is None:
            digest = hashlib.sha256()
            for file in self.hash_files:
                with open(file, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            self._hash = digest.hexdigest()[:10] if self.hash_files else ""
        return self._hash

    @property
    def identity(self) -> str:
        """A digest of everything besides a cell's spec that decides its image: every file the
        model was loaded from (path, size, modification time — a stat each, no hashing of
        gigabytes), its UNet and scheduler configs, device, dtype and the VAE's dtype. Fixed when the
        model is loaded, so files changed on disk afterwards do not vouch for the model in memory.
        A model with no files on disk gets an identity of its own that matches nothing else."""
        if self._identity is None:
            files = _file_fingerprint(self.path)
            parts = {
                "path": str(self.path), "files": files if files else f"unique-{uuid.uuid4()}",
                "unet": dict(self.unet.config), "scheduler": self.scheduler_config,
                "device": str(self.device), "dtype": str(self.dtype),
                "vae_dtype": str(next(self.vae.parameters()).dtype), "prediction": self.prediction_type,
            }
            text = json.dumps(parts, sort_keys=True, default=repr)
            self._identity = hashlib.sha256(text.encode()).hexdigest()
        return self._identity


def _file_fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """(relative name, size, mtime_ns) of a model file, or of every file under a model folder."""
    try:
        if path.is_file():
            st = path.stat()
            return [(path.name, st.st_size, st.st_mtime_ns)]
        if path.is_dir():
            out = []
            for root, _dirs, names in os.walk(path, followlinks=True):
                for name in names:
                    file = Path(root, name)
                    st = file.stat()  # follows a hub snapshot's links to its blobs
                    out.append((file.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
            return sorted(out)
    except OSError:
        pass
    return []


class ModelCache:
    """One model in memory at a time, keyed by (source, device, dtype)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._model: LoadedModel | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._model

    def get(self, key: tuple) -> LoadedModel | None:
        return self._model if key == self._key else None

    def put(self, key: tuple, model: LoadedModel) -> None:
        self._key, self._model = key, model

    def clear(self) -> None:
        """Drop the model and give its memory back (collect cycles, release the CUDA cache)."""
        self._key = self._model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_CACHE = ModelCache()


def load_model(name: str, *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, allow_pickle: bool = False,
               config: str | Path | None = None) -> LoadedModel:
    """The model `name`, loaded once and kept until another model is loaded.

    name: a diffusers folder (with model_index.json), a single-file checkpoint
    (.safetensors; .ckpt/.bin/.pt only with allow_pickle=True), a hub id
    "org/name" (from the local cache when offline), or "builtin". config: the
    diffusers config folder for a single-file checkpoint (default: the configs
    diffusers infers, from the hub cache). device defaults to CUDA when present;
    dtype to float16 on CUDA, float32 on CPU. If loading fails the previously
    loaded model stays loaded.
    """
    dev = _device(device)
    dt = _dtype(dtype, dev)
    source = resolve(name, config)
    key = (source, str(dev), dt)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    pipe, path, hash_files = load_pipeline(source, name, dt, allow_pickle)
    model = _describe(name, pipe, dev, dt, path, hash_files)
    _CACHE.clear()  # only now: a failed load above leaves the previous model usable
    try:
        _place(model)
    except (RuntimeError, torch.OutOfMemoryError) as err:
        raise ModelLoadError(f"could not move {name!r} to {dev} as {dt}: {err}") from err
    _ = model.identity  # taken now, from the files as they were loaded
    _CACHE.put(key, model)
    return model


def from_pipeline(name: str, pipe: Any, *, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None) -> LoadedModel:
    """A LoadedModel over a pipeline built in memory (benchmarks, tests): the same checks,
    description and placement as load_model, no files, not put in the model cache (pass a loader
    returning it to pipeline.render.render)."""
    dev = _device(device)
    dt = _dtype(dtype, dev)
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.train(False)  # eval mode, as from_pretrained leaves it (a fresh T5 would apply dropout)
    if pipe.dtype != dt:
        pipe = pipe.to(dtype=dt)
    model = _describe(name, pipe, dev, dt, Path(f"<in memory: {name}>"), ())
    _place(model)
    return model


def loaded_model() -> LoadedModel | None:
    """The model in memory, if any."""
    return _CACHE.current


def loaded_model_named(name: str) -> LoadedModel | None:
    """The model in memory if it is `name` (a model axis loads several, one after another), else None."""
    model = _CACHE.current
    return model if model is not None and model.name == name else None


def unload_model() -> None:
    """Free the model in memory."""
    _CACHE.clear()


# ------------------------------------------------------------------ devices and dtypes


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError("CUDA is not available on this machine; use device='cpu'")
        return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    return dev


def _dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.float16
    dt = _DTYPES.get(dtype.lower()) if isinstance(dtype, str) else dtype
    if dt not in (torch.float32, torch.float16, torch.bfloat16):
        raise ModelLoadError(f"unsupported dtype {dtype!r}; use float32, float16 or bfloat16")
    if dt == torch.float16 and device.type == "cpu":
        raise ModelLoadError("float16 is not supported on the CPU; use float32 (or bfloat16)")
    return dt


# ------------------------------------------------------------------ describing and placing


def _family(pipe: Any, prediction_type: str) -> str:
    cfg = pipe.unet.config
    if isinstance(pipe, StableDiffusionXLPipeline) or cfg.get("addition_embed_type") == "text_time":
        return "sdxl"
    if cfg.get("cross_attention_dim") == 1024 or prediction_type == "v_prediction":
        return "sd2"
    return "sd1"


def _check_supported(name: str, pipe: Any, prediction_type: str) -> None:
    """Refuse models whose UNet or scheduler this engine cannot drive."""
    cfg = pipe.unet.config
    if cfg.in_channels != cfg.out_channels:
        raise UnsupportedModelError(f"{name!r} is an inpainting-style model ({cfg.in_channels} input "
                                    "channels); use a text-to-image checkpoint")
    if cfg.get("time_cond_proj_dim") is not None:
        raise UnsupportedModelError(f"{name!r} is a guidance-distilled (LCM-style) UNet, not supported")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise UnsupportedModelError(f"{name!r} predicts {prediction_type!r}; only epsilon and "
                                    "v-prediction models are supported")
    if getattr(pipe.scheduler, "alphas_cumprod", None) is None:
        raise UnsupportedModelError(f"{name!r} has a {type(pipe.scheduler).__name__} without a DDPM "
                                    "noise schedule (alphas_cumprod); not an SD-family model")
    if isinstance(pipe, StableDiffusionXLPipeline):
        te2 = pipe.text_encoder_2
        want = 6 * cfg.addition_time_embed_dim + (te2.config.projection_dim if te2 is not None else -1)
        if pipe.text_encoder is None or want != cfg.projection_class_embeddings_input_dim:
            raise UnsupportedModelError(f"{name!r} looks like an SDXL refiner (no first text encoder "
                                        "or aesthetic-score time ids); use an SDXL base model")


def _describe_flow(name: str, family: str, pipe: Any, device: torch.device, dtype: torch.dtype,
                   path: Path, hash_files: tuple[Path, ...]) -> LoadedModel:
    try:
        check_flow_supported(name, pipe, family)
    except FlowFamilyError as err:
        raise UnsupportedModelError(str(err)) from err
    facts = flow_facts(pipe, family)
    scale = int(pipe.vae_scale_factor)
    side = 1024 if family == "flux" else int(pipe.transformer.config.sample_size) * scale
    return LoadedModel(
        name=name, family=family, pipe=pipe, prediction_type="flow",
        train_sigmas=flow_train_sigmas(facts.shift.shift), scheduler_config=dict(pipe.scheduler.config),
        device=device, dtype=dtype, latent_channels=int(pipe.vae.config.latent_channels),
        vae_scale_factor=scale, default_size=(side, side), path=path, hash_files=hash_files, flow=facts)


def _describe(name: str, pipe: Any, device: torch.device, dtype: torch.dtype, path: Path,
              hash_files: tuple[Path, ...]) -> LoadedModel:
    family = FLOW_PIPELINES.get(type(pipe).__name__)
    if family is not None:
        return _describe_flow(name, family, pipe, device, dtype, path, hash_files)
    prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    _check_supported(name, pipe, prediction_type)
    scale = int(pipe.vae_scale_factor)
    sigmas = train_sigmas_from_alphas_cumprod(torch.as_tensor(pipe.scheduler.alphas_cumprod)).float()
    return LoadedModel(
        name=name, family=_family(pipe, prediction_type), pipe=pipe, prediction_type=prediction_type,
        train_sigmas=sigmas, scheduler_config=dict(pipe.scheduler.config), device=device, dtype=dtype,
        latent_channels=int(pipe.unet.config.in_channels), vae_scale_factor=scale,
        default_size=(int(pipe.unet.config.sample_size) * scale,) * 2, path=path, hash_files=hash_files)


def _place(model: LoadedModel) -> None:
    """Move to the device; keep SDXL's VAE in float32 where fp16 overflows; use PyTorch SDPA."""
    pipe = model.pipe
    pipe.to(model.device)
    # SDXL's VAE overflows in float16 unless it was fine-tuned not to (force_upcast False),
    # the same rule diffusers' SDXL pipelines apply before decoding.
    if model.family == "sdxl" and model.dtype == torch.float16 and pipe.vae.config.get("force_upcast", True):
        pipe.vae.to(torch.float32)
    if not model.is_flow:  # SD3 / Flux transformers come with their own SDPA processors
        pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
