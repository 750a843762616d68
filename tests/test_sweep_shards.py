"""Work units and shares: units depend on the grid and chunk size only; shares balance model
calls by longest processing time first, every unit exactly once, the same on every process."""

from __future__ import annotations

import random

import pytest

from core.cells import CellSpec
from sweeps.shards import ShardError, partition, share_of, unit_cost, work_units


def spec(steps: int, sampler: str = "Euler", model: str = "builtin", cfg: float = 5.0) -> CellSpec:
    return CellSpec(model, "p", "", 32, 32, 1, sampler, (), "Automatic", steps, cfg)


def test_units_group_models_then_cost_then_grid_order():
    specs = [spec(9), spec(2, model="other"), spec(3, "Heun"), spec(3), spec(2), spec(5, model="other")]
    # builtin: 9 steps (18 rows), Heun 3 (10: 2 calls a step, 1 on the last), Euler 3 (6), Euler 2 (4);
    # then the other model's cells.
    assert work_units(specs, chunk=3) == [[4, 3, 2], [0, 1, 5]]
    assert work_units(specs, chunk=64) == [[4, 3, 2, 0, 1, 5]]
    assert work_units(specs, chunk=1) == [[4], [3], [2], [0], [1], [5]]
    assert work_units([], chunk=4) == []
    assert unit_cost(specs, [4, 3, 2]) == 4 + 6 + 10


def test_partition_is_longest_processing_time_first():
    # 7 -> A; 5 -> B; 4 -> B (9); 3 -> A (10); 3 -> B (12); 2 -> A (12)
    assert partition([7, 5, 4, 3, 3, 2], 2) == [[0, 3, 5], [1, 2, 4]]
    assert partition([1, 1, 1], 1) == [[0, 1, 2]]
    assert partition([5], 3) == [[0], [], []]
    # Balanced by model calls, not by count: one costly unit alone against six cheap ones.
    assert partition([60, 10, 10, 10, 10, 10, 10], 2) == [[0], [1, 2, 3, 4, 5, 6]]


@pytest.mark.parametrize("seed", range(20))
def test_partition_covers_every_item_once_within_the_greedy_bound(seed):
    rng = random.Random(seed)
    costs = [rng.randint(1, 400) for _ in range(rng.randint(1, 60))]
    parts = rng.randint(1, 8)
    shares = partition(costs, parts)
    assert sorted(i for share in shares for i in share) == list(range(len(costs)))
    loads = [sum(costs[i] for i in share) for share in shares]
    # Any greedy list schedule: makespan <= mean load + (1 - 1/m) x largest item (Graham 1966).
    assert max(loads) <= sum(costs) / parts + (1 - 1 / parts) * max(costs) + 1e-9
    assert shares == partition(costs, parts)  # the same on every process


def test_shares_of_all_processes_are_the_units():
    specs = [spec(s, sampler) for s in range(1, 13) for sampler in ("Euler", "Heun", "DPM++ 2M")]
    units = work_units(specs, chunk=5)
    shares = [share_of(specs, units, p, 3) for p in range(3)]
    assert sorted(map(tuple, (u for share in shares for u in share))) == sorted(map(tuple, units))
    loads = [sum(unit_cost(specs, u) for u in share) for share in shares]
    assert max(loads) - min(loads) <= max(unit_cost(specs, u) for u in units)


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True])
def test_bad_chunk_is_refused(chunk):
    with pytest.raises(ShardError, match="chunk size must be a whole number of cells >= 1"):
        work_units([spec(2)], chunk)


def test_bad_process_count_is_refused():
    with pytest.raises(ShardError, match="number of processes must be >= 1"):
        partition([1, 2], 0)
