"""Render a list of cells: cache look-up, per-model set-up, the batched tick loop.

This is the engine's front door for the CLI, the app and the benchmark:
`render(cells, options)` returns one CellResult per cell, in order, and
streams each through `options.on_cell` as soon as it is ready (pipeline.engine.Delivery).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

import samplers
from core.cells import CellResult, CellSpec
from core.progress import Progress
from pipeline import prompts
from pipeline.cache import CellCache
from pipeline.cell_state import STOPPED, CellState, RowConditioning
from pipeline.decode import Decoder
from pipeline.denoiser import ModelDenoiser
from pipeline.engine import Delivery, RunOptions, TickLoop, latent_noise
from pipeline.flow_denoiser import FlowDenoiser
from pipeline.flow_plan import check_flow_options, size_multiple
from pipeline.models import LoadedModel, load_model
from samplers.noise import CellNoise, sigma_range
from samplers.plan import denoiser_calls, plan_cell


class CellSetupError(ValueError):
    """A cell that cannot start (bad size, sampler option, schedule for this sampler)."""


def latent_shape(spec: CellSpec, model: LoadedModel) -> tuple[int, int, int, int]:
    f = model.vae_scale_factor
    pixels = size_multiple(model)  # a transformer token is patch x patch latents
    if spec.width % pixels or spec.height % pixels or spec.width <= 0 or spec.height <= 0:
        raise CellSetupError(
            f"size {spec.width}x{spec.height} is not a multiple of {pixels} for this model — "
            f"try {max(pixels, spec.width // pixels * pixels)}x{max(pixels, spec.height // pixels * pixels)}")
    return (1, model.latent_channels, spec.height // f, spec.width // f)


def start_cell(index: int, spec: CellSpec, model: LoadedModel, cond: RowConditioning) -> CellState:
    """A cell's plan, noise and sampler generator, ready for the tick loop."""
    check_flow_options(spec, model)
    shape = latent_shape(spec, model)
    plan = plan_cell(spec, model.facts)
    sig = plan.sigmas
    # The noise is drawn in the model's dtype, as diffusers draws it (so a seed
    # gives diffusers' image on a GPU too); the sampler's own state stays
    # float32 and only the UNet input is cast down.
    noise0, generator = latent_noise(spec.seed, shape, model.dtype)
    x = noise0.to(model.device, torch.float32) * float(sig[0])
    noise = CellNoise(spec.seed, *sigma_range(sig), generator=generator)
    # the plan's parametrisation decides how the sampler puts noise back (samplers.parametrisation)
    gen = samplers.start_generator(spec.sampler, x, sig.to(model.device), noise, param=plan.param,
                                   **plan.options)
    return CellState(index, spec, plan, gen, cond)


class ConditioningCache:
    """Each distinct prompt text encoded once per grid; rows' conditioning per (prompts, size)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.prompts = prompts.PromptCache(model)
        self._items: dict[tuple, RowConditioning] = {}

    def get(self, spec: CellSpec) -> RowConditioning:
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


def render(cells: Sequence[CellSpec], options: RunOptions | None = None, *,
           cache: CellCache | None = None,
           loader: Callable[[str], LoadedModel] = load_model) -> list[CellResult]:
    """Render cells batched across cells; one result per cell, in order.

    Cells without a width/height get the model's default size; each result
    carries the sized spec and the identity of the model that rendered it. Models are loaded
    one after another (the model cache keeps one in memory). With a `cache`, a cell is looked
    up by its spec's key and the loaded model's identity (files, device, dtype), so a hit never
    crosses models; cached cells are delivered first, at once, and new ones are kept.
    """
    options = options or RunOptions()
    results: list[CellResult | None] = [None] * len(cells)
    planned = [denoiser_calls(c) for c in cells]
    progress = Progress(cells_total=len(cells), calls_total=sum(planned))
    deliver = Delivery(options, progress, results)
    by_model: dict[str, list[int]] = {}
    for i, spec in enumerate(cells):
        by_model.setdefault(spec.model, []).append(i)
    for model_name, indices in by_model.items():
        if options.should_stop and options.should_stop():
            break
        model = loader(model_name)
        deliver.model_id = getattr(model, "identity", None)
        use_cache = cache is not None and deliver.model_id is not None
        sized = {i: cells[i].sized(model.default_size) for i in indices}
        todo, stopped = [], {}
        for i in indices:
            hit = cache.get(sized[i].key(), deliver.model_id) if use_cache else None
            if hit is None:
                todo.append(i)
            else:
                deliver(i, CellResult(**{**hit.__dict__, "spec": sized[i], "cached": True}),
                        planned=planned[i], made=0)
        if todo:
            stopped = _render_model(model, sized, todo, options, progress, deliver, planned)
        if use_cache:
            for i in todo:
                if results[i] is not None:
                    cache.put(sized[i].key(), results[i])
        for i, result in stopped.items():  # never cached: a stop is not the cell's image
            results[i] = result
    for i, spec in enumerate(cells):
        if results[i] is None:
            results[i] = CellResult.failed(spec, f"{STOPPED} before it started")
    return results


def _render_model(model: LoadedModel, cells: dict[int, CellSpec], indices: list[int], options: RunOptions,
                  progress: Progress, deliver: Delivery, planned: list[int]) -> dict[int, CellResult]:
    """Run `indices` on `model`, delivering each finished or failed cell; returns the cells a stop
    cut short (with the previews they reached), which the caller adds after caching the finished
    ones (a stop is not the cell's image, so they are never cached)."""
    conds = ConditioningCache(model)
    states = []
    for i in indices:
        try:
            states.append(start_cell(i, cells[i], model, conds.get(cells[i])))
        except ValueError as err:
            deliver(i, CellResult.failed(cells[i], str(err)), planned=planned[i], made=0)
    loop = TickLoop(make_denoiser(model), Decoder(model.pipe), options, progress, deliver)
    loop.run(states)
    stopped = {}
    for state in loop.stopped:
        stopped[state.index] = state.result()
        stopped[state.index].model_id = deliver.model_id
    return stopped


def make_denoiser(model: LoadedModel) -> ModelDenoiser:
    """The model as a batched denoiser: its transformer for SD3 / Flux, its UNet otherwise."""
    if model.is_flow:
        return FlowDenoiser(model.unet, model.family)
    return ModelDenoiser(model.unet, model.train_sigmas, model.prediction_type)
