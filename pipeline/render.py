"""Render a list of cells: cache look-up, per-model set-up, the batched tick loop.

This is the engine's front door for the CLI, the app and the benchmark:
`render(cells, options)` returns one CellResult per cell, in order, and
streams each through `options.on_cell` as soon as it is ready.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

import samplers
from pipeline import prompts
from pipeline.cache import CellCache
from pipeline.cells import STOPPED, CellResult, CellState, Progress, RowConditioning
from pipeline.decode import Decoder
from pipeline.denoiser import ModelDenoiser
from pipeline.engine import RunOptions, TickLoop, latent_noise
from pipeline.flow_denoiser import FlowDenoiser
from pipeline.flow_plan import cell_shift, check_flow_options, flow_sigmas
from pipeline.models import LoadedModel, load_model
from samplers import diffusers_adapter
from samplers.noise import CellNoise, sigma_range


class CellSetupError(ValueError):
    """A cell that cannot start (bad size, sampler option, schedule for this sampler)."""


def cell_sigmas(spec: Any, model: LoadedModel) -> tuple[Tensor, dict[str, Any]]:
    """The sigmas a cell runs and the options its sampler gets.

    A diffusers sampler gets the config flags of the cell's schedule type for its class
    (refused, naming what works, when the class cannot follow the type). Align Your Steps
    uses the SDXL list on SDXL models and the SD1.5 list otherwise.
    """
    info, implied = samplers.resolve(spec.sampler)
    options = dict(spec.sampler_options)
    if model.is_flow:
        return _flow_cell_sigmas(spec, model, info, implied, options)
    if info.family == "diffusers":
        schedule = implied if spec.schedule == "Automatic" and implied is not None else spec.schedule
        options = {**diffusers_adapter.schedule_overrides(schedule, info.name), **options,
                   "scheduler_config": dict(model.scheduler_config)}
        sig = samplers.sigmas("Automatic", spec.steps, model.train_sigmas, sampler=info.name,
                              sampler_options=options)
    else:
        # every schedule type takes `family`; only Align Your Steps reads it
        sig = samplers.sigmas(spec.schedule, spec.steps, model.train_sigmas, sampler=spec.sampler,
                              family="SDXL" if model.family == "sdxl" else "SD1.5")
    return sig.double(), options


def _flow_cell_sigmas(spec: Any, model: LoadedModel, info: Any, implied: str | None,
                      options: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """A flow cell's sigmas: the native samplers' and FlowMatchEulerDiscreteScheduler's from
    pipeline.flow_plan (Automatic = the model's own pipeline; the scheduler follows them as the
    pipelines make it); the other diffusers flow schedulers' own spacing at the cell's shift."""
    lh, lw = spec.height // model.vae_scale_factor, spec.width // model.vae_scale_factor
    if info.family != "diffusers":
        return flow_sigmas(spec, model, lh, lw), options
    options = {**options, "scheduler_config": dict(model.scheduler_config)}
    if info.fn.keywords.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
        return flow_sigmas(spec, model, lh, lw), options
    schedule = implied if spec.schedule == "Automatic" and implied is not None else spec.schedule
    options = {**diffusers_adapter.schedule_overrides(schedule, info.name), **options}
    table = samplers.flow_train_sigmas(cell_shift(spec, model, lh, lw))
    sig = samplers.sigmas("Automatic", spec.steps, table, sampler=info.name, sampler_options=options)
    return sig.double(), options


def latent_shape(spec: Any, model: LoadedModel) -> tuple[int, int, int, int]:
    f = model.vae_scale_factor
    pixels = f * model.flow.patch if model.is_flow else f  # a transformer token is patch x patch latents
    if spec.width % pixels or spec.height % pixels or spec.width <= 0 or spec.height <= 0:
        raise CellSetupError(
            f"size {spec.width}x{spec.height} is not a multiple of {pixels} for this model — "
            f"try {max(pixels, spec.width // pixels * pixels)}x{max(pixels, spec.height // pixels * pixels)}")
    return (1, model.latent_channels, spec.height // f, spec.width // f)


def start_cell(index: int, spec: Any, model: LoadedModel, cond: RowConditioning) -> CellState:
    """A cell's noise, sigmas and sampler generator, ready for the tick loop."""
    check_flow_options(spec, model)
    shape = latent_shape(spec, model)
    sig, options = cell_sigmas(spec, model)
    # The noise is drawn in the model's dtype, as diffusers draws it (so a seed
    # gives diffusers' image on a GPU too); the sampler's own state stays
    # float32 and only the UNet input is cast down.
    noise0, generator = latent_noise(spec.seed, shape, model.dtype)
    x = noise0.to(model.device, torch.float32) * float(sig[0])
    noise = CellNoise(spec.seed, *sigma_range(sig), generator=generator)
    # the parametrisation decides how the sampler puts noise back (samplers.parametrisation)
    param = samplers.FLOW.with_shift(cell_shift(spec, model, *shape[2:])) if model.is_flow else samplers.VE
    gen = samplers.start_generator(spec.sampler, x, sig.to(model.device), noise, param=param, **options)
    return CellState(index, spec, gen, sig, cond)


class ConditioningCache:
    """Each distinct prompt text encoded once per grid; rows' conditioning per (prompts, size)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.prompts = prompts.PromptCache(model)
        self._items: dict[tuple, RowConditioning] = {}

    def get(self, spec: Any) -> RowConditioning:
        key = (spec.prompt, spec.negative_prompt, spec.width, spec.height)
        if key not in self._items:
            cond, uncond = self.prompts.pair(spec.prompt, spec.negative_prompt)
            time_ids = None
            if self.model.family == "sdxl":
                time_ids = prompts.sdxl_time_ids(spec.width, spec.height)
            self._items[key] = RowConditioning(
                cond=cond.embeds, uncond=uncond.embeds, pooled=cond.pooled,
                uncond_pooled=uncond.pooled, time_ids=time_ids)
        return self._items[key]


def render(cells: Sequence[Any], options: RunOptions | None = None, *,
           cache: CellCache | None = None,
           loader: Callable[[str], LoadedModel] = load_model) -> list[CellResult]:
    """Render cells (grids.CellSpec) batched across cells; one result per cell, in order.

    Cells without a width/height get the model's default size; each result
    carries the sized spec and the identity of the model that rendered it. Models are loaded
    one after another (the model cache keeps one in memory). With a `cache`, a cell is looked
    up by its spec's key and the loaded model's identity (files, device, dtype), so a hit never
    crosses models; cached cells are delivered first, at once, and new ones are kept.
    """
    options = options or RunOptions()
    results: list[CellResult | None] = [None] * len(cells)
    progress = Progress(cells_total=len(cells), calls_total=sum(c.denoiser_calls() for c in cells))
    by_model: dict[str, list[int]] = {}
    for i, spec in enumerate(cells):
        by_model.setdefault(spec.model, []).append(i)
    for model_name, indices in by_model.items():
        if options.should_stop and options.should_stop():
            break
        model = loader(model_name)
        model_id = getattr(model, "identity", None)
        use_cache = cache is not None and model_id is not None
        sized = {i: cells[i].sized(model.default_size) for i in indices}
        todo, stopped = [], {}
        for i in indices:
            hit = cache.get(sized[i].key(), model_id) if use_cache else None
            if hit is None:
                todo.append(i)
            else:
                cached = CellResult(**{**hit.__dict__, "spec": sized[i], "cached": True})
                results[i] = _deliver(i, cached, options, progress, calls_made=0)
        if todo:
            stopped = _render_model(model, model_id, sized, todo, options, progress, results)
        if use_cache:
            for i in todo:
                if results[i] is not None:
                    cache.put(sized[i].key(), results[i])
        for i, result in stopped.items():  # never cached: a stop is not the cell's image
            results[i] = result
    for i, spec in enumerate(cells):
        if results[i] is None:
            results[i] = CellResult(spec=spec, image=None, latents=None, model_calls=0, seconds=0.0,
                                    error=f"{STOPPED} before it started")
    return results


def _render_model(model: LoadedModel, model_id: str | None, cells, indices, options, progress,
                  results) -> dict[int, CellResult]:
    """Run `indices` on `model`, filling `results`; returns the cells a stop cut short (with the
    previews they reached), which the caller adds after caching the finished ones."""
    conds = ConditioningCache(model)
    states = []
    for i in indices:
        try:
            states.append(start_cell(i, cells[i], model, conds.get(cells[i])))
        except ValueError as err:
            results[i] = _deliver(i, CellResult(spec=cells[i], image=None, latents=None, model_calls=0,
                                                seconds=0.0, error=str(err), model_id=model_id),
                                  options, progress, calls_made=0)
    user_on_cell = options.on_cell

    def collect(index: int, result: CellResult) -> None:
        result.model_id = model_id
        results[index] = result
        if user_on_cell:
            user_on_cell(index, result)

    loop_options = RunOptions(**{**options.__dict__, "on_cell": collect})
    loop = TickLoop(make_denoiser(model), Decoder(model.pipe), loop_options, progress)
    loop.run(states)
    stopped = {}
    for state in loop.stopped:
        stopped[state.index] = state.result()
        stopped[state.index].model_id = model_id
    return stopped


def make_denoiser(model: LoadedModel) -> ModelDenoiser:
    """The model as a batched denoiser: its transformer for SD3 / Flux, its UNet otherwise."""
    if model.is_flow:
        return FlowDenoiser(model.unet, model.family)
    return ModelDenoiser(model.unet, model.train_sigmas, model.prediction_type)


def _deliver(i: int, result: CellResult, options: RunOptions, progress: Progress, *,
             calls_made: int) -> CellResult:
    progress.cells_done += 1
    progress.settle(result.spec, calls_made)
    if options.on_cell:
        options.on_cell(i, result)
    return result
