"""How the app is configured: local or public mode, the model list, grid limits, where files go.

Public mode (--public, and the default on a Hugging Face Space) is for pages
strangers use: only the configured models can be picked (no local paths, no
arbitrary hub ids), only safetensors weights load, grids are smaller, and the
request queue is bounded. Local mode trusts the person at the keyboard: any hub
id, folder or checkpoint path can be typed in.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.cells import BUILTIN_MODELS
from core.limits import GridTooLargeError, Limits, SpecError

LOCAL_LIMITS = Limits(max_cells=400, max_model_calls=200_000, max_megapixels=200.0)
PUBLIC_LIMITS = Limits(max_cells=64, max_model_calls=8_000, max_megapixels=40.0)
MAX_PROMPT_CHARS = 2000  # what the page's prompt boxes take; CLIP reads only the first 77 tokens
# Public mode: a cell has at most this many times the pixels of the model's default size, so one
# request cannot ask for a 4096x4096 image that holds the server for many minutes.
PUBLIC_CELL_AREA = 4
# Public mode: the axis labels of a grid add up to at most this many characters. Fitting label
# text is the slow part of drawing a grid (about 0.25 ms a character, every time the grid is
# drawn); 64 labels of 2,000 characters held the server for 13 minutes.
PUBLIC_LABEL_CHARS = 3000


class ModelNotAllowedError(ValueError):
    """A model name this app refuses to load (public mode, or a malformed name)."""


def on_space() -> bool:
    """True when running on a Hugging Face Space (it sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


@dataclass(frozen=True)
class AppConfig:
    """Everything the page and the runner need to know about this deployment."""

    public: bool = False
    models: tuple[str, ...] = BUILTIN_MODELS
    device: str | None = None
    dtype: str | None = None
    config_folder: Path | None = None  # a single-file model's diffusers folder (load_model's config)
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

    def check_prompts(self, prompt: str, negative_prompt: str) -> None:
        """Refuse prompts longer than the page's prompt boxes take (SpecError saying by how much)."""
        for what, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
            if len(text) > MAX_PROMPT_CHARS:
                raise SpecError(f"the {what} is {len(text):,} characters long; this page takes at most "
                                f"{MAX_PROMPT_CHARS:,} (the model reads only its first 75 tokens)")

    def check_cell_size(self, width: int, height: int, default_size: tuple[int, int]) -> None:
        """Public mode: refuse a cell over PUBLIC_CELL_AREA times the model's default pixel count."""
        if not self.public:
            return
        dw, dh = default_size
        if width * height > PUBLIC_CELL_AREA * dw * dh:
            side = int((PUBLIC_CELL_AREA * dw * dh) ** 0.5) // 8 * 8
            raise GridTooLargeError(
                f"a {width}x{height} cell is larger than this public page renders (at most "
                f"{PUBLIC_CELL_AREA}x the model's default {dw}x{dh} pixels, e.g. {side}x{side}) — use a "
                f"smaller size, or run the app on your own machine")

    def check_labels(self, labels: list[str]) -> None:
        """Public mode: refuse axis labels (Prompt S/R, negative prompts) too long to draw quickly."""
        total = sum(len(label) for label in labels)
        if self.public and total > PUBLIC_LABEL_CHARS:
            raise GridTooLargeError(
                f"the axis labels add up to {total:,} characters; this public page draws at most "
                f"{PUBLIC_LABEL_CHARS:,} — use shorter or fewer Prompt S/R or negative prompt values")
