"""Sampler names as users type them: the registry's names in A1111's order, combined names
("DPM++ 2M Karras" = a sampler plus the schedule type it implies), lookup with suggestions.

    names() / schedule_names() / resolve(name) / info(name)
"""

from __future__ import annotations

from samplers import comfyui, diffusers_adapter, schedules
from samplers.registry import SamplerInfo, UnknownSamplerError, registered, suggest

# A1111 v1.10.1's order, which users know from its dropdown; others follow.
A1111_ORDER = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "PLMS", "UniPC", "LCM",
]


def names() -> list[str]:
    """Every registered sampler name: A1111's in its order, then the rest."""
    known = registered()
    first = [n for n in A1111_ORDER if n in known]
    return first + [n for n in known if n not in first]


def schedule_names() -> list[str]:
    """Schedule types, "Automatic" first, as A1111 lists them."""
    return list(schedules.SCHEDULES)


def resolve(name: str) -> tuple[SamplerInfo, str | None]:
    """Sampler info and the schedule a combined name implies.

    "DPM++ 2M Karras" -> (DPM++ 2M, "Karras"); "Euler" -> (Euler, None).
    "diffusers:<SchedulerClass>" names any diffusers scheduler. ComfyUI's sampler names
    ("dpmpp_2m", "euler_ancestral", ...) are matched exactly (samplers/comfyui.py).
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownSamplerError(f"sampler name must be a non-empty string, got {name!r}")
    name = name.strip()
    known = registered()
    if name in known:
        return known[name], None
    if name.startswith(diffusers_adapter.PREFIX):
        return diffusers_adapter.info_for(name), None
    comfy = comfyui.runs_as(name)  # ComfyUI's lowercase names, matched exactly
    if comfy is not None and comfy in known:
        return known[comfy], None
    by_lower: dict[str, SamplerInfo] = {}
    for k, v in known.items():  # the first registered wins: "Lms" is A1111's LMS, not ComfyUI's lms
        by_lower.setdefault(k.lower(), v)
    if name.lower() in by_lower:
        return by_lower[name.lower()], None
    for schedule in schedules.SCHEDULES:
        suffix = " " + schedule.lower()
        if schedule != "Automatic" and name.lower().endswith(suffix):
            base = by_lower.get(name[: -len(suffix)].strip().lower())
            if base is not None:
                return base, schedule
    raise UnknownSamplerError(suggest(name, names(), "sampler",
                                      also=[*comfyui.COMFYUI_SAMPLERS, *combined_names()])
                              + comfyui.hint(name))


def combined_names() -> list[str]:
    """"<sampler> <schedule type>" for the native samplers: the combined names resolve() accepts."""
    return [f"{n} {s}" for n, i in registered().items() if i.family != "diffusers" and i.uses_schedule
            for s in schedules.SCHEDULES if s != "Automatic"]


def info(name: str) -> SamplerInfo:
    """What a sampler is: kind, calls per step, default schedule, description, options."""
    return resolve(name)[0]
