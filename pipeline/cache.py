"""Finished cells kept between runs, keyed by everything that determines them (LRU).

A cell's image is determined by its spec (CellSpec.key(): model name, prompts, size, seed, sampler
and options, schedule, steps, CFG) and by the model actually loaded under that name — its files,
device and dtype (LoadedModel.identity, carried by each result as `model_id`). Entries are kept
per (key, model_id), so a hit never crosses models or dtypes, and the same cell rendered in two
dtypes can be kept twice.
"""

from __future__ import annotations

from collections import OrderedDict

from core.cells import CellResult

DEFAULT_CELLS = 512


def result_bytes(result: CellResult) -> int:
    """Roughly the memory a kept cell holds: its image, final latents and previews."""
    size = 0
    if result.image is not None:
        w, h = result.image.size
        size += w * h * len(result.image.getbands())
    if result.latents is not None:
        size += result.latents.nelement() * result.latents.element_size()
    for preview in result.previews.values():
        size += preview.nelement() * preview.element_size()
    return size


class CellCache:
    """At most `max_cells` finished cells and (when given) `max_bytes` of them (result_bytes);
    the least recently used go first.

    Only successful cells are kept: a failed or stopped cell is rendered again.
    """

    def __init__(self, max_cells: int = DEFAULT_CELLS, max_bytes: int | None = None) -> None:
        if max_cells < 0:
            raise ValueError("max_cells must be >= 0")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_cells = max_cells
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str | None], tuple[CellResult, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str, model_id: str | None = None) -> CellResult | None:
        """The cell kept for spec key `key` rendered by the model `model_id`, if any."""
        item = self._items.get((key, model_id))
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end((key, model_id))
        self.hits += 1
        return item[0]

    def put(self, key: str, result: CellResult) -> None:
        """Keep a successful `result` under its spec key and the model that rendered it."""
        if not result.ok or self.max_cells == 0:
            return
        size = result_bytes(result)
        if self.max_bytes is not None and size > self.max_bytes:
            return
        slot = (key, result.model_id)
        old = self._items.pop(slot, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[slot] = (result, size)
        self.bytes += size
        while len(self._items) > self.max_cells or (self.max_bytes is not None
                                                    and self.bytes > self.max_bytes):
            _slot, (_result, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
