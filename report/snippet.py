"""A short diffusers script that renders one grid cell: the "take this cell elsewhere" export.

This module owns turning a CellSpec into runnable Python that uses diffusers' own pipeline and
scheduler: the scheduler class and config flags, steps, CFG scale, size, the seed through a CPU
torch.Generator (the noise diffusers and this app draw for a seed), and the prompts as Python
literals (repr), so any text is safe to paste.

    diffusers_scheduler(cell) -> SchedulerChoice     raises NoDiffusersEquivalent (with the reason)
    diffusers_snippet(cell, model_name, family=None) -> str | None
    snippet_unavailable_reason(cell) -> str | None

Which scheduler: "diffusers:<Class>" and "<name> (diffusers)" cells already run a diffusers
scheduler here, so the script gives the same image (up to float rounding). For this app's own
samplers the script uses diffusers' equivalent from samplers/diffusers_adapter.py (the table of
the diffusers scheduler overview) with the flags of the schedule type that ran
(SCHEDULE_FLAGS); that is diffusers' take on the sampler — a close image, not the same one.
Samplers with no diffusers scheduler (DPM++ 2S a, DPM fast, DPM adaptive, Restart, ...) and
settings diffusers cannot express get no script.

Flow models (family "sd3" / "flux"): StableDiffusion3Pipeline / FluxPipeline with the cell's shift
(a fixed shift replaces Flux's dynamic one), CFG (Flux: true_cfg_scale with the negative prompt,
only above 1) and Flux's distilled guidance. Their diffusers flow schedulers give the same image;
native Euler on Automatic is the pipeline's own default and on Simple the pipeline run with
sigmas = linspace(1, 1/N, N) (both the same image, tested); other native samplers have no
diffusers form on flow models.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import samplers
from core.cells import BUILTIN_MODELS, CellSpec
from report import infotext
from samplers import diffusers_adapter
from samplers.plan import cell_schedule, schedule_type, shown_schedule

# Schedule types diffusers has no flag for, and the flag set that lays out the same timesteps.
# A1111's Normal and Uniform both space timesteps evenly from 999 to 0, and Simple takes every
# (1000/n)-th training sigma from the top, which is diffusers' "trailing" spacing (REFERENCE.md).
NEAR_SCHEDULES = {"Normal": "Uniform", "Simple": "SGM Uniform"}
_SCHEDULE_KEYS = {key for flags in diffusers_adapter.SCHEDULE_FLAGS.values() for key in flags}
# Native options a diffusers pipeline call takes, per sampler: DDIM's eta is the pipeline's `eta`.
_CALL_OPTIONS = {("DDIM", "eta"): "eta"}
_SINGLE_FILE = (".safetensors", ".ckpt")
_PIPELINES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline",
              "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}
FLOW_FAMILIES = ("sd3", "flux")
_FLOW_CLASSES = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")


class NoDiffusersEquivalent(ValueError):
    """A cell diffusers cannot render as this app did; the message says why."""


@dataclass(frozen=True)
class SchedulerChoice:
    """The diffusers scheduler for a cell: class, from_config overrides, extra pipeline-call
    arguments, and whether it is the very scheduler the cell ran (same image) or an equivalent."""

    class_name: str
    config: dict[str, Any] = field(default_factory=dict)
    call_options: dict[str, Any] = field(default_factory=dict)
    same_image: bool = False


def diffusers_scheduler(cell: CellSpec) -> SchedulerChoice:
    """The diffusers scheduler that renders `cell`; raises NoDiffusersEquivalent saying why not."""
    try:
        info, implied = samplers.resolve(cell.sampler)
    except ValueError as err:
        raise NoDiffusersEquivalent(str(err)) from err
    if info.family == "diffusers":
        return _adapter_cell(info, schedule_type(info, cell.schedule, implied), cell)
    return _native_cell(info, shown_schedule(info, cell.schedule, implied) or "Automatic", cell)


def _adapter_cell(info: samplers.SamplerInfo, schedule: str, cell: CellSpec) -> SchedulerChoice:
    """A cell that ran a diffusers scheduler here: the same class, preset, schedule flags, options."""
    options = dict(cell.sampler_options)
    if options.get("scheduler_config") is not None:
        raise NoDiffusersEquivalent("a cell with its own scheduler_config cannot be written as a script; "
                                    "it starts from the model's scheduler config")
    options.pop("scheduler_config", None)
    try:
        flags = diffusers_adapter.schedule_overrides(schedule, info.name)
    except ValueError as err:
        raise NoDiffusersEquivalent(str(err)) from err
    class_name, preset = diffusers_adapter.scheduler_of(info.name)
    # every sigma flag is explicit in `flags`; the False ones the preset did not set are
    # diffusers' defaults anyway, so the script leaves them out
    flags = {k: v for k, v in flags.items() if v is not False or k in preset}
    config = {**preset, **flags, **options}
    if "noise_sampler_seed" in _init_keys(class_name):
        config["noise_sampler_seed"] = cell.seed  # the adapter seeds the Brownian tree so too
    return SchedulerChoice(class_name, config, {}, same_image=True)


def _native_cell(info: samplers.SamplerInfo, ran: str, cell: CellSpec) -> SchedulerChoice:
    """A cell of this app's own sampler: diffusers' equivalent on the schedule type that ran
    (`ran`; "Automatic" for a sampler that picks its own sigmas)."""
    entry = next((e for e in diffusers_adapter.EQUIVALENTS if e[0] == info.name), None)
    if entry is None:
        raise NoDiffusersEquivalent(f"diffusers has no scheduler for {info.name}")
    _, class_name, preset, _ = entry
    flags = diffusers_adapter.SCHEDULE_FLAGS.get(NEAR_SCHEDULES.get(ran, ran))
    if flags is None:
        raise NoDiffusersEquivalent(
            f"diffusers schedulers cannot follow the {ran!r} schedule; they can follow: "
            f"{', '.join(diffusers_adapter.SCHEDULE_FLAGS)}")
    ignored = sorted(set(flags) - _init_keys(class_name))
    if ignored:  # from_config would drop them without a word and run another schedule
        raise NoDiffusersEquivalent(f"diffusers' {class_name} has no setting for the {ran!r} schedule "
                                    f"({', '.join(ignored)})")
    config = {k: v for k, v in preset.items() if k not in _SCHEDULE_KEYS}
    config.update(flags)
    call_options = {}
    for option, value in cell.sampler_options:
        if value == info.options.get(option, object()):
            continue  # the default: diffusers' default too
        name = _CALL_OPTIONS.get((info.name, option))
        if name is None:
            raise NoDiffusersEquivalent(f"diffusers' {class_name} has no setting for {info.name}'s "
                                        f"{option}={value!r}")
        call_options[name] = value
    return SchedulerChoice(class_name, config, call_options, same_image=False)


def flow_scheduler(cell: CellSpec, family: str) -> SchedulerChoice:
    """The diffusers scheduler that renders a flow-model cell (see the module docstring)."""
    try:
        info, implied = samplers.resolve(cell.sampler)
    except ValueError as err:
        raise NoDiffusersEquivalent(str(err)) from err
    if info.family == "diffusers":
        schedule = implied if cell.schedule == "Automatic" and implied else cell.schedule
        choice = _adapter_cell(info, schedule, cell)
        if choice.class_name not in _FLOW_CLASSES and not choice.config.get("use_flow_sigmas"):
            raise NoDiffusersEquivalent(f"{cell.sampler} is an SD-family scheduler; it does not run on "
                                        f"{family} models")
        if family == "flux" and choice.class_name == "FlowMatchHeunDiscreteScheduler":
            raise NoDiffusersEquivalent("FluxPipeline hands its scheduler sigmas, which "
                                        "FlowMatchHeunDiscreteScheduler does not take")
        if choice.class_name != "FlowMatchEulerDiscreteScheduler" and cell.shift is None:
            # the engine gives them the model's own shift (Flux: exp(mu) for the cell's size), which a
            # pipeline's config does not carry under their flow_shift key
            raise NoDiffusersEquivalent(f"{cell.sampler} on a {family} model runs at the model's own "
                                        "shift, which a script cannot set from the pipeline's config; "
                                        "give the cell a shift to get a script")
    elif info.name == "Euler" and cell.schedule in ("Automatic", "Simple") and not cell.sampler_options:
        call = {}
        if cell.schedule == "Simple" and family == "sd3":  # Flux's default is Simple already
            call["sigmas"] = [1 - i / cell.steps for i in range(cell.steps)]
        choice = SchedulerChoice("FlowMatchEulerDiscreteScheduler", {}, call, same_image=True)
    else:
        raise NoDiffusersEquivalent(f"diffusers has no scheduler that runs {info.name} on {cell.schedule} "
                                    f"on {family} models (Euler on Automatic or Simple does)")
    if cell.shift is not None:
        fixed = {"shift": float(cell.shift)} if choice.class_name in _FLOW_CLASSES \
            else {"flow_shift": float(cell.shift)}
        if family == "flux":
            fixed["use_dynamic_shifting"] = False
        choice = SchedulerChoice(choice.class_name, {**choice.config, **fixed}, choice.call_options,
                                 choice.same_image)
    return choice


def _init_keys(class_name: str) -> set[str]:
    import diffusers

    return set(inspect.signature(getattr(diffusers, class_name).__init__).parameters)


def snippet_unavailable_reason(cell: CellSpec) -> str | None:
    """Why `cell` has no diffusers script, or None when it has one."""
    try:
        diffusers_scheduler(cell)
    except NoDiffusersEquivalent as err:
        return str(err)
    return None


def diffusers_snippet(cell: CellSpec, model_name: str, family: str | None = None) -> str | None:
    """A runnable Python script that renders `cell` with diffusers, or None (see
    snippet_unavailable_reason). `model_name` is what from_pretrained / from_single_file loads
    (a hub id, a folder, a .safetensors file; "builtin" is this app's assets/builtin folder);
    `family` ("sd1", "sd2", "sdxl", "sd3", "flux") picks the pipeline class, else
    AutoPipelineForText2Image.
    """
    try:
        choice = flow_scheduler(cell, family) if family in FLOW_FAMILIES else diffusers_scheduler(cell)
    except NoDiffusersEquivalent:
        return None
    pipeline, load = _loader(model_name, family)
    lines = [
        f"# Sampler Grid cell: {_summary(cell)}",
        "# " + (f"The same diffusers {choice.class_name} this cell ran: the same image, up to float rounding."
                if choice.same_image else
                f"diffusers' {choice.class_name} stands in for this app's own {cell.sampler}: "
                "a close image, not the same one."),
        "import torch",
        f"from diffusers import {choice.class_name}, {pipeline}",
        "",
        'device = "cuda" if torch.cuda.is_available() else "cpu"',
        "dtype = torch.float16 if device == \"cuda\" else torch.float32",
        *load,
        f"pipe.scheduler = {choice.class_name}.from_config({_arguments(choice.config)})",
        "image = pipe(",
        *[f"    {line}," for line in _call_arguments(cell, choice, family)],
        ").images[0]",
        'image.save("cell.png")',
    ]
    return "\n".join(lines) + "\n"


def _summary(cell: CellSpec) -> str:
    schedule = cell_schedule(cell)
    parts = [cell.sampler, f"Schedule type: {schedule}" if schedule else None, f"Steps: {cell.steps}",
             f"CFG scale: {infotext.format_number(cell.cfg)}", f"Seed: {cell.seed}",
             f"Size: {cell.width}x{cell.height}" if cell.width and cell.height else None]
    return ", ".join(p for p in parts if p)


def _loader(model_name: str, family: str | None) -> tuple[str, list[str]]:
    """The pipeline class to import and the lines that load the model into `pipe`."""
    note = []
    if model_name in BUILTIN_MODELS:
        model_name = f"assets/{model_name}"
        note = [f"# The built-in model: the {model_name} folder of the Sampler Grid repository."]
    single = model_name.lower().endswith(_SINGLE_FILE)
    fallback = "StableDiffusionPipeline" if single else "AutoPipelineForText2Image"
    pipeline = _PIPELINES.get(family or "", fallback)
    kwargs = {"dtype": "dtype"}  # older diffusers releases call it torch_dtype
    if pipeline == "StableDiffusionPipeline":
        # This app never runs a safety checker; with one, diffusers may black out the image.
        kwargs.update(safety_checker="None", requires_safety_checker="False")
    method = "from_single_file" if single else "from_pretrained"
    args = ", ".join([repr(model_name), *(f"{k}={v}" for k, v in kwargs.items())])
    return pipeline, [*note, f"pipe = {pipeline}.{method}(", f"    {args}", ").to(device)"]


def _arguments(config: dict[str, Any]) -> str:
    """from_config's arguments: the model's own scheduler config, then the overrides."""
    return ", ".join(["pipe.scheduler.config", *(f"{k}={v!r}" for k, v in config.items())])


def _call_arguments(cell: CellSpec, choice: SchedulerChoice, family: str | None = None) -> list[str]:
    if family == "flux":  # CFG is true CFG (only above 1); guidance_scale is the distilled guidance
        args = [f"prompt={cell.prompt!r}", f"num_inference_steps={cell.steps}",
                f"guidance_scale={3.5 if cell.guidance is None else float(cell.guidance)!r}"]
        if cell.cfg > 1:
            args += [f"negative_prompt={cell.negative_prompt!r}", f"true_cfg_scale={float(cell.cfg)!r}"]
    else:  # SD3 encodes "" for no negative prompt, as the SD family does
        args = [f"prompt={cell.prompt!r}",
                f"negative_prompt={cell.negative_prompt or None!r}",
                f"num_inference_steps={cell.steps}",
                f"guidance_scale={float(cell.cfg)!r}"]
    if cell.width and cell.height:
        args += [f"width={cell.width}", f"height={cell.height}"]
    args += [f"{k}={v!r}" for k, v in choice.call_options.items()]
    # Noise drawn on the CPU is the same on every GPU: the noise this app drew for this seed.
    args.append(f'generator=torch.Generator("cpu").manual_seed({cell.seed})')
    return args
