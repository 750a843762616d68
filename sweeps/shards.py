"""Which cells render together, and which process renders them.

Work units. A unit is the list of cells one engine call renders batched together. Units are
a function of the grid and the chunk size only, never of the number of processes, because
the engine's floating-point results depend (in the last bits) on which cells share a batch:
the same unit gives the same bytes whichever process renders it, so a sweep on N processes,
or a resumed one, writes the same PNGs as one uninterrupted process (at the same torch
thread count). Cells are grouped by model (first seen first, so each process loads each
model once), then ordered by cost (model calls; cells that finish on the same tick keep the
batches full) and grid order, and cut into consecutive units of `chunk` cells.

Shares. Units are dealt to processes by the greedy longest-processing-time rule (Graham,
"Bounds on multiprocessing timing anomalies", SIAM J. Appl. Math. 17(2), 1969): the costliest
unit first, each to the process with the least work so far. The busiest process then has at
most 4/3 - 1/(3N) times the optimal makespan, and with many small units it is close to the
mean. Cost is model calls (samplers.plan.model_rows: steps x calls per step, doubled under CFG),
the measure of work the engine does, not the number of cells.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from core.cells import CellSpec
from samplers.plan import model_rows

DEFAULT_CHUNK = 64


class ShardError(ValueError):
    """A chunk size or process count that cannot split a grid."""


def work_units(specs: Sequence[CellSpec], chunk: int = DEFAULT_CHUNK) -> list[list[int]]:
    """The grid's cells (indices into `specs`) cut into units of at most `chunk` cells."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ShardError(f"the chunk size must be a whole number of cells >= 1, got {chunk!r}")
    models = {name: n for n, name in enumerate(dict.fromkeys(s.model for s in specs))}
    order = sorted(range(len(specs)), key=lambda i: (models[specs[i].model], model_rows(specs[i]), i))
    return [order[k:k + chunk] for k in range(0, len(order), chunk)]


def unit_cost(specs: Sequence[CellSpec], unit: Sequence[int]) -> int:
    """A unit's work: the model calls of its cells."""
    return sum(model_rows(specs[i]) for i in unit)


def partition(costs: Sequence[int], parts: int) -> list[list[int]]:
    """Items (indices into `costs`) dealt to `parts` shares by longest processing time first;
    each share lists its items in ascending order. Ties go to the lower index, so every
    process computes the same shares."""
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ShardError(f"the number of processes must be >= 1, got {parts!r}")
    shares: list[list[int]] = [[] for _ in range(parts)]
    load = [(0, p) for p in range(parts)]  # (work so far, process), a min-heap
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        work, p = heapq.heappop(load)
        shares[p].append(item)
        heapq.heappush(load, (work + costs[item], p))
    return [sorted(share) for share in shares]


def share_of(specs: Sequence[CellSpec], units: Sequence[Sequence[int]], process: int,
             processes: int) -> list[list[int]]:
    """The units process `process` of `processes` renders, in unit order."""
    shares = partition([unit_cost(specs, u) for u in units], processes)
    return [list(units[k]) for k in shares[process]]
