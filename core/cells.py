"""What one grid cell is, before and after rendering.

    CellSpec      everything that determines one cell's image: the engine's input and cache key
    Cell          a CellSpec at its place in the grid, with its axis labels
    CellResult    what the engine delivers for a cell (image, final latents, calls, seconds, ...)
    CellOutcome   the shape every reader of results relies on: CellResult in memory, or a cell
                  read back from a run folder (report.stored.StoredCell)

Torch-free: tensors and images are named only for type checkers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image
    from torch import Tensor

_FLOW_FIELDS = ("shift", "guidance")

@dataclass(frozen=True)
class CellSpec:
    """Everything that determines one cell's image.

    sampler: canonical registry name; schedule: canonical schedule type (may be
    "Automatic"); sampler_options: sorted (name, value) pairs, hashable. shift and
    guidance are flow-model settings (SD3 / Flux timestep shift, Flux's distilled
    guidance); None leaves them to the model.
    """

    model: str
    prompt: str
    negative_prompt: str
    width: int | None
    height: int | None
    seed: int
    sampler: str
    sampler_options: tuple[tuple[str, Any], ...]
    schedule: str
    steps: int
    cfg: float
    shift: float | None = None
    guidance: float | None = None

    def fields(self) -> dict[str, Any]:
        """Every field by name, leaving out the flow settings when unset (so an SD cell's record
        and cache key are what they were before flow models existed)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in _FLOW_FIELDS}

    def key(self) -> str:
        """A stable hash of every field: equal keys mean the same image (for caches)."""
        text = json.dumps(["cellspec-v1", self.fields()], sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def sized(self, default_size: tuple[int, int]) -> CellSpec:
        """This cell with a missing width/height taken from the model's default."""
        return replace(self, width=self.width or default_size[0], height=self.height or default_size[1])


@dataclass(frozen=True)
class Cell:
    """One cell of an expanded grid: its position, its spec and its X/Y/Z labels
    (None where the grid has no such axis)."""

    ix: int
    iy: int
    iz: int
    spec: CellSpec
    labels: tuple[str | None, str | None, str | None]


# The models that ship with the app, by the name the user types; each is the folder assets/<name>
# (docs/builtin-model.md): Stable Diffusion 1.x-style, then SD3-style rectified flow.
BUILTIN_MODELS: tuple[str, ...] = ("builtin", "builtin-flow")


class ModelLabel(Protocol):
    """The model a grid or a cell ran on, as the output side names it (pipeline.models.LoadedModel
    has these): its name, A1111's short hash, its family ("sd1", "sd2", "sdxl", ...) and size."""

    @property
    def name(self) -> str: ...
    @property
    def model_hash(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def default_size(self) -> tuple[int, int]: ...


class CellOutcome(Protocol):
    """What a finished, failed or never-rendered cell offers the output side (grid, metrics,
    animation, run folder): CellResult has it in memory, report.stored.StoredCell reads it
    from disk on first use."""

    @property
    def spec(self) -> CellSpec: ...
    @property
    def image(self) -> Image | None: ...
    @property
    def latents(self) -> Tensor | None: ...
    @property
    def denoiser_calls(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def error(self) -> str | None: ...
    @property
    def cached(self) -> bool: ...
    @property
    def previews(self) -> dict[int, Tensor]: ...
    @property
    def ok(self) -> bool: ...


@dataclass
class CellResult:
    """What a finished (or failed, or stopped) cell delivers.

    image: the decoded image (None if the cell failed); latents: the final
    latent on the CPU; denoiser_calls: denoiser calls the sampler made; seconds:
    the cell's share of the batched model time plus its own decode share;
    previews: {step: small RGB uint8 tensor (h, w, 3)} of the denoised
    estimate; error: why the cell has no image; cached: served from the cache;
    model_id: the identity of the loaded model that rendered it (LoadedModel.identity: its
    files, device and dtype), which the cell cache matches besides the spec's key.
    """

    spec: CellSpec
    image: Image | None
    latents: Tensor | None
    denoiser_calls: int
    seconds: float
    previews: dict[int, Tensor] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False
    model_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None

    @classmethod
    def failed(cls, spec: CellSpec, error: str, model_id: str | None = None) -> CellResult:
        """A cell that has no image: it could not start, failed, or the run stopped first."""
        return cls(spec=spec, image=None, latents=None, denoiser_calls=0, seconds=0.0, error=error,
                   model_id=model_id)
