"""How big a grid may be, the bounds of each setting, and the error a spec that cannot run raises.

Torch-free, like all of core/: the app's page imports these before the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SEED = 2**64 - 1  # seeds are unsigned 64-bit, as torch.Generator takes them
MAX_SIDE = 16384  # pixels, either side
MAX_STEPS = 1000  # sampling steps: the training schedule's length (samplers.schedules)


class SpecError(ValueError):
    """A grid spec that cannot run: the message says which setting and how to fix it."""


class GridTooLargeError(SpecError):
    """A grid over one of the Limits; the message says what to reduce."""


@dataclass(frozen=True)
class Limits:
    """How big a grid may be: cells, model rows (samplers.plan.model_rows: denoiser calls, twice
    under CFG), output megapixels."""

    max_cells: int = 400
    max_model_calls: int = 200_000
    max_megapixels: float = 200.0
