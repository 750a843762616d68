"""Where a run stands: the one progress record the engine, sweeps, the CLI and the app share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace


@dataclass
class Progress:
    """Cells and denoiser calls done of total, since `started` (time.perf_counter).

    calls_total starts as the plan's estimate (samplers.plan.denoiser_calls per cell) and is
    settled cell by cell to what each really took, so calls_done meets calls_total at the end.
    `ended` freezes the clock: a copy taken with `at_now()` reports the time it was taken.
    """

    cells_total: int
    calls_total: int
    cells_done: int = 0
    calls_done: int = 0
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    def settle(self, planned_calls: int, calls_made: int) -> None:
        """A cell is done (finished, failed or served from the cache) after `calls_made` denoiser
        calls in this run, planned as `planned_calls`: its share of the total becomes what it
        really took, so the estimate of time left counts only work still to do."""
        self.calls_total += calls_made - planned_calls

    @property
    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far; None before the first call."""
        if self.calls_done == 0:
            return None
        rate = self.elapsed / self.calls_done
        return max(0.0, (self.calls_total - self.calls_done) * rate)

    def at_now(self) -> Progress:
        """A copy whose clock stops now (for a snapshot shown later)."""
        return replace(self, ended=time.perf_counter() if self.ended is None else self.ended)
