"""A cell in flight and a cell delivered: CellState drives one sampler, CellResult is its outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import Tensor

import samplers
from pipeline.denoiser import Row
from samplers.protocol import step_of

STOPPED = "stopped by the user"  # the start of a stopped cell's error (render.py, the app read it)


@dataclass
class CellResult:
    """What a finished (or failed, or stopped) cell delivers.

    image: the decoded image (None if the cell failed); latents: the final
    latent on the CPU; model_calls: denoiser calls the sampler made; seconds:
    the cell's share of the batched model time plus its own decode share;
    previews: {step: small RGB uint8 tensor (h, w, 3)} of the denoised
    estimate; error: why the cell has no image; cached: served from the cache;
    model_id: the identity of the loaded model that rendered it (LoadedModel.identity: its
    files, device and dtype), which the cell cache matches besides the spec's key.
    """

    spec: Any
    image: Image.Image | None
    latents: Tensor | None
    model_calls: int
    seconds: float
    previews: dict[int, Tensor] = field(default_factory=dict)
    error: str | None = None
    cached: bool = False
    model_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.image is not None


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

    def __init__(self, index: int, spec: Any, gen, sigmas: Tensor, cond: RowConditioning) -> None:
        self.index = index
        self.spec = spec
        self.gen = gen
        self.sigmas = sigmas
        self.cond = cond
        self.calls = 0
        self.seconds = 0.0
        self.previews: dict[int, Tensor] = {}
        self.final: Tensor | None = None
        self.image: Image.Image | None = None
        self.error: str | None = None
        self._row: Row | None = None
        self.pair = samplers.info(spec.sampler).cfg_pp  # CFG++: answered with (guided, uncond)
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
        return CellResult(spec=self.spec, image=self.image, latents=latents, model_calls=self.calls,
                          seconds=self.seconds, previews=self.previews, error=self.error)


@dataclass
class Progress:
    """Where a grid run stands: cells and model calls done of total, and an estimate of time left."""

    cells_total: int
    calls_total: int
    cells_done: int = 0
    calls_done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def settle(self, spec: Any, calls_made: int) -> None:
        """A cell is done (finished, failed or served from the cache) after `calls_made` denoiser
        calls in this run: its share of the total (its estimate, spec.denoiser_calls(), exact except
        for samplers that choose or add steps) becomes what it really took, so calls_done meets
        calls_total when the run ends and the estimate of time left counts only work still to do."""
        self.calls_total += calls_made - spec.denoiser_calls()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def eta_seconds(self) -> float | None:
        if self.calls_done == 0:
            return None
        rate = self.elapsed / self.calls_done
        return max(0.0, (self.calls_total - self.calls_done) * rate)
