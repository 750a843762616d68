"""A cell's own noise: seeded Gaussian draws and a seeded Brownian path.

Ancestral samplers draw fresh standard normal noise each step from a
torch.Generator seeded by the cell's seed, on the CPU, so the image does not
depend on the device, the batch or the cell's position in a grid.

SDE samplers read increments of one Brownian motion W(sigma), built by
torchsde's BrownianTree from the cell's seed over a fixed sigma interval. Any
query of the same interval returns the same path, so an SDE sampler at 10 steps
and at 40 steps sees one noise path sampled more or less finely (Li et al.
2020, "Scalable Gradients for Stochastic Differential Equations", for the
Brownian tree; Karras et al. 2022 for sigma as the SDE's time).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    import torchsde

# Brownian increments kept per cell (latent-sized tensors): a few query paths' worth.
BROWNIAN_CACHE = 128


class CellNoise:
    """Noise source for one cell (or one batch that shares one seed).

    `sigma_min`/`sigma_max` fix the Brownian tree's interval; queries outside
    it are clamped to its ends. The tree is built lazily on the first query.
    `generator`, when given, is the CPU generator to draw Gaussian noise from.
    """

    def __init__(self, seed: int, sigma_min: float, sigma_max: float,
                 generator: torch.Generator | None = None) -> None:
        if not sigma_max > sigma_min > 0:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.seed = int(seed)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        # A caller that drew the initial noise from a generator seeded by the
        # same seed passes it on, so step noise continues that stream (as
        # diffusers pipelines and A1111 do) instead of repeating its first draw.
        self._generator = generator or torch.Generator("cpu").manual_seed(self.seed)
        self._tree: torchsde.BrownianInterval | None = None
        self._tree_shape: torch.Size | None = None

    @property
    def generator(self) -> torch.Generator:
        """The cell's CPU generator (for code that draws its own noise, e.g. diffusers)."""
        return self._generator

    def gaussian(self, like: Tensor) -> Tensor:
        """Fresh N(0, I) noise shaped like `like`, drawn on the CPU."""
        z = torch.randn(like.shape, generator=self._generator, dtype=torch.float32)
        return z.to(device=like.device, dtype=like.dtype)

    def brownian(self, sigma: float | Tensor, sigma_next: float | Tensor, like: Tensor) -> Tensor:
        """(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|): N(0, I) per step.

        Built on one seeded Brownian path in sigma, so it is consistent across
        step counts.
        """
        a, b = self._clamp(float(sigma)), self._clamp(float(sigma_next))
        if a == b:
            # Both ends clamped together (outside the tree's interval): no path
            # to read, fall back to an independent draw.
            return self.gaussian(like)
        tree = self._tree_for(like)
        lo, hi = min(a, b), max(a, b)
        w = tree(lo, hi) / math.sqrt(hi - lo)
        return w.to(device=like.device, dtype=like.dtype)

    def _clamp(self, s: float) -> float:
        return min(max(s, self.sigma_min), self.sigma_max)

    def _tree_for(self, like: Tensor) -> torchsde.BrownianInterval:
        import torchsde  # here: it pulls in scipy.stats, a second of start-up the app need not pay

        if self._tree is None or self._tree_shape != like.shape:
            # torchsde rounds its interval ends to ~1e-6; a little slack keeps
            # queries at the exact ends inside it (no "ta>=t0" warnings).
            slack = min(2e-6, self.sigma_min / 2)
            # A halfway tree (Li et al. 2020's Brownian tree) in float32 on the
            # CPU: float32 draws cost a quarter of float64's, and a cache larger
            # than one query's bisection path (~24 levels at tol 1e-6) keeps the
            # next query from re-deriving the nodes it shares with this one.
            self._tree = torchsde.BrownianInterval(
                t0=self.sigma_min - slack, t1=self.sigma_max + 2e-6, size=tuple(like.shape),
                dtype=torch.float32, device="cpu", entropy=self.seed, tol=1e-6, pool_size=24,
                cache_size=BROWNIAN_CACHE, halfway_tree=True,
            )
            self._tree_shape = like.shape
        return self._tree


class ClampedQueries:
    """A Brownian tree (torchsde's, or diffusers' batch of them) whose queries are clamped into
    the interval the tree really holds.

    torchsde rounds a BrownianInterval's ends to its tolerance's decimal digits (tol 1e-6: six),
    so an end can move inwards past the exact sigma a sampler then asks for (t0 = 0.0291675 is
    kept as 0.029168): torchsde warns "Should have ta>=t0" and clamps the query itself. Clamping
    it here first gives the same increments, bit for bit, without the warning; a query inside the
    interval is untouched. (Our own CellNoise widens its tree's interval instead; diffusers'
    DPMSolverSDEScheduler builds its tree on the exact schedule ends, so its queries are clamped.)
    """

    def __init__(self, tree: object, t0: float, t1: float, tol: float = 1e-6) -> None:
        digits = -int(math.log10(tol))
        self.tree = tree
        self.lo, self.hi = sorted((round(float(t0), digits), round(float(t1), digits)))

    def __call__(self, ta: float | Tensor, tb: float | Tensor) -> Tensor:
        return self.tree(self._inside(ta), self._inside(tb))

    def _inside(self, t: float | Tensor) -> float:
        return min(max(float(t), self.lo), self.hi)


def sigma_range(sigmas: Tensor) -> tuple[float, float]:
    """The (smallest positive, largest) sigma of a schedule: the Brownian interval."""
    positive = sigmas[sigmas > 0]
    if len(positive) == 0:
        raise ValueError("the schedule has no positive sigma")
    lo, hi = float(positive.min()), float(positive.max())
    if hi <= lo:
        hi = lo * (1 + 1e-6) + 1e-9
    return lo, hi
