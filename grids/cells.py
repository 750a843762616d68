"""What one grid cell is: CellSpec (everything that determines its image, the
engine's input and cache key) and Cell (a CellSpec at its place in the grid, with
its axis labels). Also the model-call estimate the grid limits use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import samplers

# DPM adaptive picks its own step sizes and ignores `steps`. It took ~40 calls on
# the analytic Gaussian test model; real models need several times more, so
# the limits assume this many denoiser calls per cell.
ADAPTIVE_CALLS_ESTIMATE = 200
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

    def denoiser_calls(self) -> int:
        """Denoiser calls the sampler makes: steps x calls per step, except that a multi-call
        sampler's last step (to sigma 0) is one call (Heun, DPM2, DPM++ SDE, SEEDS-3, SA-Solver
        PECE, ...). Exact for every sampler that takes its step count as given; DPM adaptive
        chooses its own steps (an estimate), PLMS makes one more, heunpp2 one fewer (its
        next-to-last step takes two), Restart adds some at >= 20 steps (the engine settles the
        count when a cell finishes)."""
        info = samplers.info(self.sampler)
        if not info.uses_steps:
            return ADAPTIVE_CALLS_ESTIMATE
        if info.calls_per_step >= 2 and self.steps > 0:
            return (self.steps - 1) * info.calls_per_step + 1
        return self.steps * info.calls_per_step

    def model_calls(self) -> int:
        """Model rows evaluated: denoiser calls, twice when CFG > 1 (the engine then runs
        the unconditional half too, as diffusers does; at cfg <= 1 it runs only one) and
        always twice for a CFG++ sampler, which needs the unconditional estimate at any cfg."""
        return self.denoiser_calls() * samplers.info(self.sampler).rows_per_call(self.cfg)


@dataclass(frozen=True)
class Cell:
    """One cell of an expanded grid: its position, its spec and its X/Y/Z labels
    (None where the grid has no such axis)."""

    ix: int
    iy: int
    iz: int
    spec: CellSpec
    labels: tuple[str | None, str | None, str | None]
