"""Random seeds and resuming: a sweep started with seed -1 resumes with the seeds it drew.

A grid spec with seed -1 (fixed, or among a seed axis's values) gets random seeds when it is
resolved, so running it again would draw new ones and match none of the cells already done.
`resolve(spec, previous)` takes the seeds from the previous run's spec.json instead, when that
spec is this spec with only its -1 seeds filled in; otherwise it draws new ones.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from grids.spec import Axis, GridSpec, SpecError


def previous_spec(out: Path) -> GridSpec | None:
    """The resolved spec a previous run left in `out`/spec.json, or None."""
    try:
        return GridSpec.from_json(json.loads((Path(out) / "spec.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, SpecError):
        return None


def fill_seeds(spec: GridSpec, previous: GridSpec) -> GridSpec | None:
    """`spec` with its -1 seeds taken from `previous`, if `previous` is then the same grid; else None."""
    changes: dict[str, object] = {"seed": previous.seed if spec.seed == -1 else spec.seed}
    for pos, axis in spec.axes():
        if axis.axis != "seed" or -1 not in axis.values:
            continue
        before = getattr(previous, pos)
        if before is None or before.axis != "seed" or len(before.values) != len(axis.values):
            return None
        changes[pos] = Axis("seed", tuple(b if v == -1 else v for v, b in zip(axis.values, before.values,
                                                                             strict=True)))
    candidate = replace(spec, **changes)
    return candidate if candidate == previous else None


def resolve(spec: GridSpec, previous: GridSpec | None) -> GridSpec:
    """The seeds `previous` drew, if it is this grid; else fresh ones (GridSpec.resolved)."""
    if previous is not None:
        filled = fill_seeds(spec, previous)
        if filled is not None:
            return filled
    return spec.resolved()
