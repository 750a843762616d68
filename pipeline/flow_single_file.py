"""Building an SD3 / SD3.5 or Flux pipeline from a single-file checkpoint and a config folder.

Each component comes from the file when the file holds it (pipeline.flow_checkpoints says which
keys are whose), else from the config folder's own weights; tokenizers and the scheduler always
come from the config folder. SD3 without T5 in either runs without it (diffusers feeds zeros in
its place, as for a folder). Why this is not diffusers' pipeline `from_single_file`: see
pipeline.flow_checkpoints. Every failure is a FlowCheckpointError whose message says what is
missing or wrong; pipeline.model_sources turns it into a ModelLoadError.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel, SD3Transformer2DModel, StableDiffusion3Pipeline
from torch import Tensor

from pipeline.flow_checkpoints import (
    PARTS,
    FlowCheckpointError,
    Part,
    flux_to_diffusers,
    part_keys,
    transformer_keys,
)

PIPELINE_OF = {"sd3": StableDiffusion3Pipeline, "flux": FluxPipeline}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def load_flow_single_file(path: Path, family: str, config: Path, dtype: torch.dtype,
                          allow_pickle: bool) -> Any:
    """The SD3 ("sd3") or Flux ("flux") pipeline of a single-file checkpoint, on the CPU, in dtype."""
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    checkpoint = load_single_file_checkpoint(str(path))
    built: dict[str, Any] = {"transformer": _transformer(checkpoint, family, config, dtype)}
    for part in PARTS[family]:
        tensors = part_keys(checkpoint, part)
        if tensors:
            built[part.name] = _from_file(part, tensors, index, config, dtype)
        elif not _has_weights(config / part.name):
            if family == "sd3" and part.name == "text_encoder_3":
                built |= {"text_encoder_3": None, "tokenizer_3": None}
                continue
            raise FlowCheckpointError(
                f"{path.name} holds no {part.what} and the config folder {config} has no {part.name} "
                f"weights either; give config= a diffusers folder of the same model that has them")
    for name, module in built.items():
        _check_loaded(path, name, module)
        if module is not None:
            module.train(False)  # diffusers' T5 converter leaves T5 in training mode: dropout on
    del checkpoint
    try:
        return PIPELINE_OF[family].from_pretrained(
            str(config), dtype=dtype, local_files_only=True, use_safetensors=None if allow_pickle else True,
            image_encoder=None, feature_extractor=None, **built)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise FlowCheckpointError(f"the config folder {config} could not supply the rest of the "
                                  f"pipeline: {err}") from err


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir())


def _transformer(checkpoint: dict[str, Tensor], family: str, config: Path, dtype: torch.dtype) -> Any:
    """The file's transformer, with the config folder's transformer config."""
    bare = transformer_keys(checkpoint)
    try:
        if family == "sd3":  # diffusers' converter reads every width from the checkpoint
            return SD3Transformer2DModel.from_single_file(
                dict(bare), config=str(config), subfolder="transformer", torch_dtype=dtype,
                local_files_only=True)
        return _flux_transformer(bare, config, dtype)
    except KeyError as err:
        raise FlowCheckpointError(f"it has no tensor {err.args[0]!r}: the file is incomplete, or not "
                                  "an SD3 / SD3.5 checkpoint") from err
    except (ValueError, RuntimeError) as err:
        if isinstance(err, FlowCheckpointError):
            raise
        raise _mismatch("transformer", config, err) from err


def _flux_transformer(bare: dict[str, Tensor], config: Path, dtype: torch.dtype) -> Any:
    """A FluxTransformer2DModel from BFL-layout tensors, built empty and filled from the file."""
    from accelerate import init_empty_weights

    state = flux_to_diffusers(bare)
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(str(config), subfolder="transformer"))
    want = set(model.state_dict())
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    if missing or unexpected:
        what = (f"lacks {len(missing)} tensor(s) the configured transformer has (e.g. {missing[0]!r})"
                if missing else f"has {len(unexpected)} tensor(s) it does not (e.g. {unexpected[0]!r})")
        hint = " (a schnell file with a dev config, or the reverse?)" if any("guidance" in k for k in
                                                                             missing + unexpected) else ""
        raise FlowCheckpointError(f"it {what}{hint}; the file is incomplete, or not the model in {config}")
    # cast before assigning: ModelMixin.to(dtype) would warn about float32 modules Flux does not have
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def _component_class(index: dict[str, Any], name: str) -> type:
    library, cls_name = index[name]
    return getattr(importlib.import_module(library), cls_name)


def _from_file(part: Part, tensors: dict[str, Tensor], index: dict[str, Any], config: Path,
               dtype: torch.dtype) -> Any:
    """One non-transformer component from the file's tensors, through diffusers' own converters."""
    from diffusers.loaders.single_file_utils import (
        create_diffusers_clip_model_from_ldm,
        create_diffusers_t5_model_from_checkpoint,
    )

    if not isinstance(index.get(part.name), list) or index[part.name][0] is None:
        raise FlowCheckpointError(f"it holds a {part.what}, but the config folder {config} has no "
                                  f"{part.name}; give config= a folder of the same model")
    cls = _component_class(index, part.name)
    kw = {"subfolder": part.name, "config": str(config), "torch_dtype": dtype, "local_files_only": True}
    try:
        if part.name == "vae":
            return cls.from_single_file(tensors, **kw)
        if "t5" in part.prefix:
            return create_diffusers_t5_model_from_checkpoint(cls, checkpoint=tensors, **kw)
        return create_diffusers_clip_model_from_ldm(cls, checkpoint=tensors, **kw)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise _mismatch(part.what, config, err) from err


def _mismatch(what: str, config: Path, err: Exception) -> FlowCheckpointError:
    """Why a component could not be read from the file: tensors missing (diffusers leaves those on
    the meta device and fails when it moves them), or a model other than the config folder's."""
    if "meta tensor" in str(err):
        return FlowCheckpointError(f"its {what} lacks tensors the one configured in {config} has: the "
                                   "file is incomplete, or not the model its config folder describes")
    return FlowCheckpointError(f"its {what} does not match the one configured in {config} ({err}); "
                               "give config= a folder of the same model")


def _check_loaded(path: Path, name: str, module: Any) -> None:
    """Refuse a component that a converter left partly unfilled (weights still on the meta device)."""
    if not isinstance(module, torch.nn.Module):
        return
    for key, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_meta:
            raise FlowCheckpointError(f"{path.name} has no weights for {name} tensor {key!r}: the file is "
                                      "incomplete, or not the model its config folder describes")
