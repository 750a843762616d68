"""Finished cells kept between runs, keyed by everything that determines them (LRU)."""

from __future__ import annotations

from collections import OrderedDict

from pipeline.cells import CellResult

DEFAULT_CELLS = 512


class CellCache:
    """At most `max_cells` finished cells; the least recently used go first.

    Only successful cells are kept: a failed or stopped cell is rendered again.
    """

    def __init__(self, max_cells: int = DEFAULT_CELLS) -> None:
        if max_cells < 0:
            raise ValueError("max_cells must be >= 0")
        self.max_cells = max_cells
        self._items: OrderedDict[str, CellResult] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CellResult | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: str, result: CellResult) -> None:
        if not result.ok or self.max_cells == 0:
            return
        self._items[key] = result
        self._items.move_to_end(key)
        while len(self._items) > self.max_cells:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
