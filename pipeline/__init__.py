"""The model side of the app and the batched grid engine.

models / model_sources load a Stable Diffusion-family model once; prompts
turns prompt text into conditioning; denoiser, cells, engine, decode, render
and cache run every cell of a grid together, batched across cells.

The names below are re-exported lazily, so importing one engine module does
not pay for importing diffusers until a model is needed.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# transformers warns at import about torchvision-backed image processors that
# SD pipelines never use; keep the console for messages that matter.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

_EXPORTS = {
    "LoadedModel": "pipeline.models",
    "load_model": "pipeline.models",
    "loaded_model": "pipeline.models",
    "unload_model": "pipeline.models",
    "ModelLoadError": "pipeline.models",
    "UnsupportedModelError": "pipeline.models",
    "PromptCache": "pipeline.prompts",
    "encode": "pipeline.prompts",
    "encode_pair": "pipeline.prompts",
    "sdxl_time_ids": "pipeline.prompts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
