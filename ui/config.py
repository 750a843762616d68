"""How the app is configured: local or public mode, the model list, grid limits, where files go.

Public mode (--public, and the default on a Hugging Face Space) is for pages
strangers use: only the configured models can be picked (no local paths, no
arbitrary hub ids), only safetensors weights load, grids are smaller, and the
request queue is bounded. Local mode trusts the person at the keyboard: any hub
id, folder or checkpoint path can be typed in.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from grids.spec import Limits

BUILTIN = "builtin"
LOCAL_LIMITS = Limits(max_cells=400, max_model_calls=200_000, max_megapixels=200.0)
PUBLIC_LIMITS = Limits(max_cells=64, max_model_calls=8_000, max_megapixels=40.0)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotAllowedError(ValueError):
    """A model name this app refuses to load (public mode, or a malformed name)."""


def on_space() -> bool:
    """True when running on a Hugging Face Space (it sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


@dataclass(frozen=True)
class AppConfig:
    """Everything the page and the runner need to know about this deployment."""

    public: bool = False
    models: tuple[str, ...] = (BUILTIN,)
    device: str | None = None
    dtype: str | None = None
    allow_pickle: bool = False
    max_batch: int | None = None
    queue_size: int = 16
    concurrency: int = 1
    out_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "sampler-grid-app")

    @property
    def limits(self) -> Limits:
        return PUBLIC_LIMITS if self.public else LOCAL_LIMITS

    @property
    def default_model(self) -> str:
        return self.models[0]

    def check_model(self, name: str) -> str:
        """The model name to load, or ModelNotAllowedError saying what may be used instead."""
        name = (name or "").strip()
        if not name:
            raise ModelNotAllowedError("pick a model")
        if name in self.models:
            return name
        if self.public:
            raise ModelNotAllowedError(
                f"this public page only runs its own models ({', '.join(self.models)}); "
                f"{name!r} is not one of them — run the app on your own machine to use any model")
        if "\x00" in name or len(name) > 1024:
            raise ModelNotAllowedError("that model name is not a valid path or hub id")
        return name

    def looks_like_hub_id(self, name: str) -> bool:
        return bool(_HUB_ID.match(name))
