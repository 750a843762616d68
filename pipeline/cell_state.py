"""A cell in flight: CellState drives one cell's sampler generator through the tick loop and
turns its outcome into a core.cells.CellResult; RowConditioning is the prompt conditioning its
model rows carry."""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from core.cells import CellResult, CellSpec
from pipeline.denoiser import Row
from samplers.plan import SamplingPlan
from samplers.protocol import step_of

STOPPED = "stopped by the user"  # the start of a stopped cell's error (render.py, the app read it)


@dataclass
class RowConditioning:
    """The prompt conditioning one cell's rows carry (shared between cells with the same prompts)."""

    cond: Tensor
    uncond: Tensor
    pooled: Tensor | None = None
    uncond_pooled: Tensor | None = None
    time_ids: Tensor | None = None


class CellState:
    """One cell's sampler generator, its pending request and its bookkeeping."""

    def __init__(self, index: int, spec: CellSpec, plan: SamplingPlan, gen: Generator[Any, Tensor, Tensor],
                 cond: RowConditioning) -> None:
        self.index = index
        self.spec = spec
        self.plan = plan
        self.gen = gen
        self.sigmas = plan.sigmas
        self.cond = cond
        self.calls = 0
        self.seconds = 0.0
        self.previews: dict[int, Tensor] = {}
        self.final: Tensor | None = None
        self.image: Image.Image | None = None
        self.error: str | None = None
        self._row: Row | None = None
        self.pair = plan.sampler.cfg_pp  # CFG++: answered with (guided, uncond)
        self._started = time.perf_counter()
        self.request: tuple | None = None
        self._advance(lambda: next(gen))

    @property
    def alive(self) -> bool:
        return self.request is not None and self.error is None

    @property
    def request_x(self) -> Tensor:
        return self.request[0]

    def row(self) -> Row:
        """This tick's request as a model row (built once per request)."""
        if self._row is None:
            x, sigma = self.request[0], float(self.request[1])
            timestep = float(self.request[2]) if len(self.request) > 2 else None
            c = self.cond
            self._row = Row(x=x, sigma=sigma, timestep=timestep, cond=c.cond, uncond=c.uncond,
                            cfg=float(self.spec.cfg), pooled=c.pooled, uncond_pooled=c.uncond_pooled,
                            time_ids=c.time_ids, guidance=getattr(self.spec, "guidance", None),
                            pair=self.pair)
        return self._row

    def receive(self, denoised: Tensor | tuple[Tensor, Tensor], seconds: float, preview_every: int,
                decoder) -> None:
        """Hand the denoised estimate (a CFG++ sampler's: the pair) to the sampler; record a
        preview of the guided estimate; catch NaN/inf."""
        self.calls += 1
        self.seconds += seconds
        sigma = self.row().sigma
        parts = denoised if isinstance(denoised, tuple) else (denoised,)
        if not all(torch.isfinite(p).all() for p in parts):
            self.stop(f"the model returned NaN or inf at step {step_of(sigma, self.sigmas)} of "
                      f"{len(self.sigmas) - 1} (sigma={sigma:.4g})")
            return
        if preview_every:
            self._maybe_preview(sigma, parts[0], preview_every, decoder)
        self._advance(lambda: self.gen.send(denoised))

    def _maybe_preview(self, sigma: float, denoised: Tensor, every: int, decoder) -> None:
        hits = (self.sigmas - sigma).abs() <= 1e-6 * max(sigma, 1e-3)
        if hits.any():
            step = int(hits.nonzero()[0])
            if step % every == 0 or step == len(self.sigmas) - 2:
                self.previews[step] = decoder.preview(denoised)

    def _advance(self, step) -> None:
        self._row = None
        try:
            self.request = step()
        except StopIteration as stop:
            self.request = None
            self.final = stop.value
            if not torch.isfinite(self.final).all():
                self.stop("the sampler's result is NaN or inf")
        except (ValueError, FloatingPointError, RuntimeError) as err:
            self.stop(f"the sampler failed: {err}")

    def stop_by_user(self) -> None:
        """Stopped from outside (Stop, Ctrl-C): the reason says how far the cell got; its previews
        stay, so the app can show the cell's last denoised estimate, marked unfinished."""
        steps = len(self.sigmas) - 1
        done = step_of(float(self.request[1]), self.sigmas) - 1 if self.request is not None else 0
        self.stop(f"{STOPPED} at step {min(done, steps)} of {steps}")

    def stop(self, reason: str) -> None:
        self.error = self.error or reason
        self.request = None
        self.gen.close()

    def result(self) -> CellResult:
        latents = None if self.final is None else self.final.detach().float().cpu()
        return CellResult(spec=self.spec, image=self.image, latents=latents, denoiser_calls=self.calls,
                          seconds=self.seconds, previews=self.previews, error=self.error)
