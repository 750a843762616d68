"""How big a grid may be, and the error a spec that cannot run raises.

Kept free of torch (like the rest of what the app's page imports before the
model loads): `grids.spec` re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SEED = 2**64 - 1  # seeds are unsigned 64-bit, as torch.Generator takes them
MAX_SIDE = 16384  # pixels, either side


class SpecError(ValueError):
    """A grid spec that cannot run: the message says which setting and how to fix it."""


class GridTooLargeError(SpecError):
    """A grid over one of the Limits; the message says what to reduce."""


@dataclass(frozen=True)
class Limits:
    """How big a grid may be: cells, model rows (see CellSpec.model_calls), output megapixels."""

    max_cells: int = 400
    max_model_calls: int = 200_000
    max_megapixels: float = 200.0
