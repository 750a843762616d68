"""Schedule type names as users type them: the canonical types, ComfyUI's names and other
spellings, and lookup with suggestions (`canonical`). `samplers.schedules` re-exports all of it.

Two conventions meet here. A1111's display names ("Karras", "KL Optimal", "Beta") are matched
ignoring case, spaces, "_" and "-". ComfyUI's KSampler scheduler names ("karras", "kl_optimal",
"beta") are matched exactly first and give ComfyUI's behaviour where it differs from the A1111
namesake ("beta" is ComfyUI's beta, "Beta" and "BETA" A1111's). GITS and Optimal Steps exist in
ComfyUI only as nodes (GITSScheduler, OptimalStepsScheduler), not as KSampler names; their
lowercase spellings ("gits", "optimal_steps"), the node names and the Impact Pack's menu entries
("GITS[coeff=1.2]", "OSS FLUX") all resolve to them.
"""

from __future__ import annotations

from samplers.registry import suggest

SCHEDULES: tuple[str, ...] = (
    "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
    "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
    # Forge's Laplace, then ComfyUI's types that run differently from their A1111 namesakes
    # (schedules_comfyui.py), the one A1111 lacks, and the two ComfyUI nodes' tables.
    "Laplace", "beta", "kl_optimal", "ddim_uniform", "linear_quadratic", "GITS", "Optimal Steps",
)
# ComfyUI's KSampler scheduler names, in its order, and the schedule type each one is here:
# the names matched exactly, so "beta" is ComfyUI's beta and "Beta" A1111's.
COMFYUI_SCHEDULERS: dict[str, str] = {
    "simple": "Simple", "sgm_uniform": "SGM Uniform", "karras": "Karras", "exponential": "Exponential",
    "ddim_uniform": "ddim_uniform", "beta": "beta", "normal": "Normal",
    "linear_quadratic": "linear_quadratic", "kl_optimal": "kl_optimal",
}

# Spellings users type that are not just the canonical name with other case/separators
# (keys as _key writes them). "gits" and "optimal_steps" need none.
_ALIASES = {
    "ays": "Align Your Steps", "ddim uniform": "DDIM", "sgm": "SGM Uniform",
    "gitsscheduler": "GITS", "gits[coeff=1.2]": "GITS",
    "oss": "Optimal Steps", "oss flux": "Optimal Steps", "optimalsteps": "Optimal Steps",
    "optimalstepsscheduler": "Optimal Steps",
}


class UnknownScheduleError(ValueError):
    """A schedule type name that is not one of SCHEDULES."""


def _key(name: str) -> str:
    # "SGM_Uniform", "sgm-uniform" and " sgm  uniform " are the same name.
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


# Loose spellings go to A1111's type where a ComfyUI name collides with one ("BETA" is Beta):
# setdefault keeps the first (A1111) entry of SCHEDULES for each key.
_LOOKUP: dict[str, str] = {}
for _s in SCHEDULES:
    _LOOKUP.setdefault(_key(_s), _s)
_LOOKUP.update(_ALIASES)


def canonical(name: str) -> str:
    """The canonical schedule type for a name ("karras" -> "Karras", "gits" -> "GITS").

    ComfyUI's lowercase scheduler names are matched exactly first and give ComfyUI's
    behaviour ("beta" -> "beta", ComfyUI's; "Beta" -> A1111's); any other spelling is
    matched ignoring case, spaces, "_" and "-". Raises UnknownScheduleError naming the
    closest types of both conventions.
    """
    if not isinstance(name, str):
        raise UnknownScheduleError(f"schedule type must be a string, got {name!r}")
    exact = COMFYUI_SCHEDULERS.get(name.strip())
    if exact is not None:
        return exact
    found = _LOOKUP.get(_key(name))
    if found is None:
        # SCHEDULES holds both conventions' distinct types (ComfyUI's other names are A1111's)
        raise UnknownScheduleError(suggest(name.strip(), list(SCHEDULES), "schedule type"))
    return found
