"""What runs for one cell: the sampling plan, and the rule behind it, written once.

    plan_cell(cell, model) -> SamplingPlan    sampler, schedule type, sigmas, options, call count
    sigmas(schedule, steps, train_sigmas, sampler=..., ...) -> descending sigmas (no model needed)
    schedule_type(sampler_info, schedule, implied) -> the schedule type whose sigmas run
    denoiser_calls(cell) / model_rows(cell)   the call estimates the limits and progress use

The rule for "Automatic": a combined name's schedule ("DPM++ 2M Karras" -> Karras) if it has
one, else the sampler's default schedule type (samplers.registry.SamplerInfo.default_schedule);
a diffusers sampler on "Automatic" runs its scheduler's own sigmas. The engine
(pipeline.render), the A1111 text (report.infotext), the diffusers scripts (report.snippet),
the grid limits and progress estimates, and `samplers.sigmas` all read it from here.

A model enters as ModelFacts: its family ("sd1", "sd2", "sdxl", or the rectified-flow families
"sd3", "flux"), prediction type, training sigmas, scheduler config and, for a flow model, its
timestep shift rule (`flow`: samplers.flow_schedule.FlowShift). On a flow model the plan also
decides the cell's shift (its "shift" setting, else the model's own at the cell's size), the
shifted training table the schedule types run on, "Automatic" = what the model's own diffusers
pipeline runs, and the parametrisation the sampler gets (samplers.FLOW at that shift).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from core.cells import CellSpec
from samplers import diffusers_adapter, schedules
from samplers.flow_schedule import FlowShift, check_shift, model_shift, pipeline_sigmas
from samplers.names import resolve
from samplers.parametrisation import FLOW, VE, Parametrisation, flow_train_sigmas
from samplers.registry import SamplerInfo

# Keyword options of a schedule type (schedules.compute), as samplers.sigmas takes them.
SCHEDULE_OPTIONS = ("sigma_min", "sigma_max", "rho", "alpha", "beta", "family", "coeff")
# DPM adaptive picks its own step sizes and ignores `steps`. It took ~40 calls on
# the analytic Gaussian test model; real models need several times more, so
# the limits assume this many denoiser calls per cell.
ADAPTIVE_CALLS_ESTIMATE = 200
FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux")


@dataclass(frozen=True)
class ModelFacts:
    """What the plan needs to know about the model a cell runs on (pipeline.models.LoadedModel.facts)."""

    family: str
    prediction_type: str
    train_sigmas: Tensor
    scheduler_config: Mapping[str, Any] = field(default_factory=dict)
    flow: FlowShift | None = None  # a rectified-flow model's shift rule; None for the SD family
    vae_scale_factor: int = 8  # pixels per latent pixel (a flow model's dynamic shift reads the latent size)

    @property
    def table_family(self) -> str:
        """Which published noise-level table fits (samplers.schedules_tables.FAMILIES): Align Your
        Steps' "SDXL" list on SDXL, its "SD1.5" list on SD 1.x/2.x, Optimal Steps' "FLUX" table
        on Flux; SD3 has none."""
        return {"sdxl": "SDXL", "sd3": "SD3", "flux": "FLUX"}.get(self.family, "SD1.5")


@dataclass(frozen=True)
class SamplingPlan:
    """What runs for one cell.

    sampler: the registry entry; schedule: the schedule type that runs, as A1111's text names
    it (None when the sampler picks its own sigmas: DPM fast/adaptive, a diffusers scheduler on
    "Automatic"); sigmas: the schedule, float64, descending; options: the sampler's keyword
    options (for a diffusers sampler also its schedule flags and the model's scheduler config);
    flow: the model is a rectified-flow model; param: the parametrisation the sampler runs with
    (samplers.VE, or samplers.FLOW at the cell's shift); shift: that shift (None on SD models);
    denoiser_calls: calls the sampler makes
    (an estimate for DPM adaptive, see denoiser_calls); model_rows: UNet rows, twice that
    under CFG > 1.
    """

    sampler: SamplerInfo
    schedule: str | None
    sigmas: Tensor
    options: dict[str, Any]
    flow: bool
    denoiser_calls: int
    model_rows: int
    param: Parametrisation = VE
    shift: float | None = None


def schedule_type(sampler_info: SamplerInfo, schedule: str, implied: str | None = None) -> str:
    """The schedule type whose sigmas a sampler runs on `schedule` (the rule for "Automatic").

    "Automatic" means the combined name's schedule (`implied`) if there is one, else the
    sampler's default type; a diffusers sampler keeps "Automatic": its scheduler's own sigmas.
    """
    schedule = schedules.canonical(schedule)
    if schedule == "Automatic" and implied is not None:
        schedule = implied
    if schedule == "Automatic" and sampler_info.family != "diffusers":
        # samplers that pick their own sigmas (DPM fast/adaptive) take their range from these
        schedule = sampler_info.default_schedule or "Karras"
    return schedule


def shown_schedule(sampler_info: SamplerInfo, schedule: str, implied: str | None = None) -> str | None:
    """The schedule type a cell's text names: the one that runs, or None when the sampler picks its
    own sigmas (DPM fast/adaptive, a diffusers scheduler on "Automatic")."""
    ran = schedule_type(sampler_info, schedule, implied)
    return ran if sampler_info.uses_schedule and ran != "Automatic" else None


def cell_schedule(cell: CellSpec) -> str | None:
    """The schedule type `cell` runs, as its A1111 text names it (see shown_schedule)."""
    info, implied = resolve(cell.sampler)
    return shown_schedule(info, cell.schedule, implied)


def calls_for(sampler_info: SamplerInfo, steps: int) -> int:
    """Denoiser calls `sampler_info` makes in `steps` steps: steps x calls per step, except that a
    multi-call sampler's last step (to sigma 0) is one call (Heun, DPM2, DPM++ SDE, SEEDS-3,
    SA-Solver PECE, ...). Exact for every sampler that takes its step count as given; DPM adaptive
    chooses its own steps (an estimate), PLMS makes one more, Restart adds some at >= 20 steps
    (the engine settles the count when a cell finishes)."""
    if not sampler_info.uses_steps:
        return ADAPTIVE_CALLS_ESTIMATE
    if sampler_info.calls_per_step >= 2 and steps > 0:
        return (steps - 1) * sampler_info.calls_per_step + 1
    return steps * sampler_info.calls_per_step


def denoiser_calls(cell: CellSpec) -> int:
    """Denoiser calls `cell`'s sampler makes (see calls_for)."""
    return calls_for(resolve(cell.sampler)[0], cell.steps)


def rows_for(sampler_info: SamplerInfo, calls: int, cfg: float) -> int:
    """Model rows `calls` denoiser calls evaluate (SamplerInfo.rows_per_call): twice as many when
    the unconditional half runs (CFG > 1, as diffusers does; a CFG++ sampler at any cfg)."""
    return calls * sampler_info.rows_per_call(cfg)


def model_rows(cell: CellSpec) -> int:
    """Model rows `cell` evaluates (what the grid limits count)."""
    info = resolve(cell.sampler)[0]
    return rows_for(info, calls_for(info, cell.steps), cell.cfg)


def plan_cell(cell: CellSpec, model: ModelFacts) -> SamplingPlan:
    """The sampling plan of `cell` on `model`.

    A diffusers sampler gets the config flags of the cell's schedule type for its class
    (refused, naming what works, when the class cannot follow the type) and the model's
    scheduler config. The published tables follow the model's family (ModelFacts.table_family):
    Align Your Steps' SDXL list on SDXL, its SD1.5 list on SD 1.x/2.x, Optimal Steps' FLUX
    table on Flux (refused elsewhere); GITS runs its SD 1.5 table on the SD family (GITS's
    coeff is ComfyUI's default 1.20 in a cell; `sigmas` takes another). Raises ValueError (a
    cell that cannot start) with a message a user can act on.
    """
    info, implied = resolve(cell.sampler)
    if model.flow is not None:
        return _plan_flow_cell(cell, model, info, implied)
    schedule = schedule_type(info, cell.schedule, implied)
    options = dict(cell.sampler_options)
    if info.family == "diffusers":
        options = {**diffusers_adapter.schedule_overrides(schedule, info.name), **options,
                   "scheduler_config": dict(model.scheduler_config)}
        sig = diffusers_adapter.scheduler_sigmas(info.name, cell.steps, model.train_sigmas, **options)
    else:
        # every schedule type takes `family`; only the published tables read it
        sig = schedules.compute(schedule, cell.steps, model.train_sigmas,
                                discard_penultimate=info.discard_penultimate, family=model.table_family)
    return _plan(cell, info, implied, sig, options, model)


def cell_shift(cell: CellSpec, model: ModelFacts) -> float:
    """The shift multiplier a flow cell samples with: its own "shift" setting, else the model's own
    at the cell's size (Flux's resolution-dependent shift reads the latent size)."""
    if cell.shift is not None:
        return check_shift(cell.shift)
    assert model.flow is not None and cell.width and cell.height
    f = model.vae_scale_factor
    return model_shift(model.flow, cell.height // f, cell.width // f)


def _plan_flow_cell(cell: CellSpec, model: ModelFacts, info: SamplerInfo,
                    implied: str | None) -> SamplingPlan:
    """A flow cell: "Automatic" (with no schedule implied by the name) is the model's own pipeline's
    sigmas, FlowMatchEulerDiscreteScheduler follows the native sigmas as the pipelines make it,
    other diffusers flow schedulers run their own spacing at the cell's shift, and every other
    schedule type is computed on the shifted flow table, as ComfyUI does on its flow models."""
    shift = cell_shift(cell, model)
    options = dict(cell.sampler_options)
    automatic = schedules.canonical(cell.schedule) == "Automatic" and implied is None
    if info.family == "diffusers":
        options["scheduler_config"] = dict(model.scheduler_config)
        if diffusers_adapter.scheduler_of(info.name)[0] != "FlowMatchEulerDiscreteScheduler":
            schedule = schedule_type(info, cell.schedule, implied)
            options = {**diffusers_adapter.schedule_overrides(schedule, info.name), **options}
            table = flow_train_sigmas(shift)
            sig = diffusers_adapter.scheduler_sigmas(info.name, cell.steps, table, **options)
            return _plan(cell, info, implied, sig, options, model, shift)
    if automatic:
        sig = pipeline_sigmas(model.family, cell.steps, shift)
    else:
        sig = schedules.compute(schedule_type(info, cell.schedule, implied), cell.steps,
                                flow_train_sigmas(shift), discard_penultimate=info.discard_penultimate,
                                family=model.table_family)
    return _plan(cell, info, implied, sig, options, model, shift)


def _plan(cell: CellSpec, info: SamplerInfo, implied: str | None, sig: Tensor, options: dict[str, Any],
          model: ModelFacts, shift: float | None = None) -> SamplingPlan:
    calls = calls_for(info, cell.steps)
    return SamplingPlan(sampler=info, schedule=shown_schedule(info, cell.schedule, implied),
                        sigmas=sig.double(), options=options, flow=model.flow is not None,
                        denoiser_calls=calls, model_rows=rows_for(info, calls, cell.cfg),
                        param=FLOW.with_shift(shift) if shift is not None else VE, shift=shift)


def sigmas(
    schedule: str,
    steps: int,
    train_sigmas: Tensor,
    *,
    sampler: str | None = None,
    sampler_options: dict[str, Any] | None = None,
    discard_penultimate: bool | None = None,
    **opts: Any,
) -> Tensor:
    """The sigma schedule a run of `steps` steps uses, descending, usually ending in 0.

    "Automatic" means the sampler's default schedule (schedule_type); samplers that discard
    the penultimate sigma (DPM2, DPM2 a, DPM++ 3M SDE) do so on every schedule
    type, as in A1111, unless `discard_penultimate` says otherwise. A combined
    sampler name ("DPM++ 2M Karras") picks its schedule. diffusers samplers on "Automatic" use their
    scheduler's own sigmas. `opts` are schedule options: sigma_min,
    sigma_max, rho, alpha, beta, family ("SD1.5"/"SDXL" for Align Your Steps, "FLUX"/"Wan"/"Chroma"
    for Optimal Steps), coeff (GITS, 0.80 .. 1.50, default 1.20).
    """
    unknown = sorted(set(opts) - set(SCHEDULE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown schedule option(s) {', '.join(unknown)}; the options are: "
                         f"{', '.join(SCHEDULE_OPTIONS)}, discard_penultimate, sampler, sampler_options")
    schedule = schedules.canonical(schedule)
    if sampler is None:
        if schedule == "Automatic":
            raise ValueError("schedule 'Automatic' needs the sampler it belongs to")
        return schedules.compute(schedule, steps, train_sigmas, discard_penultimate=bool(discard_penultimate),
                                 **opts)
    sampler_info, implied = resolve(sampler)
    schedule = schedule_type(sampler_info, schedule, implied)
    if sampler_info.family == "diffusers":
        if opts or discard_penultimate:
            given = ", ".join([*opts, *(["discard_penultimate"] if discard_penultimate else [])])
            raise ValueError(f"{sampler_info.name} runs its diffusers scheduler's own sigmas; the schedule "
                             f"option(s) {given} do not apply (use the scheduler's config options)")
        flags = {**diffusers_adapter.schedule_overrides(schedule, sampler_info.name),
                 **(sampler_options or {})}
        return diffusers_adapter.scheduler_sigmas(sampler_info.name, steps, train_sigmas, **flags)
    if discard_penultimate is None:
        # A1111 drops the next-to-last sigma for these samplers whatever the
        # schedule type ("DPM2 Karras" included), not only on Automatic.
        discard_penultimate = sampler_info.discard_penultimate
    return schedules.compute(
        schedule, steps, train_sigmas, discard_penultimate=bool(discard_penultimate), **opts)
