"""The sampler menu: samplers grouped the way users think of them, with presets.

Groups: Deterministic, Ancestral and SDE for the native samplers (by their
registry kind), CFG++ for the samplers that guide with CFG++ (whatever their kind:
they want a cfg near 1-2, not 7), and diffusers for the "(diffusers)" equivalents
whatever their kind. Presets are ready-made comparisons; each names samplers, step counts and
a schedule type, all checked against the registry by the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

GROUPS = ("Deterministic", "Ancestral", "SDE", "CFG++", "diffusers")
_KIND_GROUP = {"deterministic": "Deterministic", "ancestral": "Ancestral", "sde": "SDE"}
# The menu as data, written from the registry by `python -m ui.catalogue`; the page reads this
# file so that it can be built before torch is imported (a test checks it matches the registry).
MENU_FILE = Path(__file__).with_name("menu.json")


def from_registry() -> dict[str, Any]:
    """The menu computed from `samplers` (imports torch): groups, hover texts, schedule types."""
    import samplers

    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    texts = {}
    for name in samplers.names():
        info = samplers.info(name)
        group = ("diffusers" if info.family == "diffusers" else "CFG++" if info.cfg_pp
                 else _KIND_GROUP[info.kind])
        groups[group].append(name)
        cost = "1 model call" if info.calls_per_step == 1 else f"{info.calls_per_step} model calls"
        texts[name] = f"{info.description} ({info.kind}, {cost} per step)"
    return {"groups": groups, "descriptions": texts, "schedules": samplers.schedule_names()}


@cache
def _menu() -> dict[str, Any]:
    return json.loads(MENU_FILE.read_text(encoding="utf-8"))


def grouped() -> dict[str, list[str]]:
    """Every registered sampler under its group, in registry order."""
    return {g: list(names) for g, names in _menu()["groups"].items()}


def descriptions() -> dict[str, str]:
    """Each sampler's one-line description plus its kind and cost, for hover text."""
    return dict(_menu()["descriptions"])


def schedule_names() -> list[str]:
    """Schedule types, "Automatic" first, as A1111 lists them."""
    return list(_menu()["schedules"])


def write_menu() -> None:
    """Rewrite MENU_FILE from the registry (run after adding or renaming a sampler)."""
    MENU_FILE.write_text(json.dumps(from_registry(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Preset:
    """A ready-made comparison: which samplers, step counts and schedule type."""

    name: str
    samplers: tuple[str, ...]
    steps: str
    schedule: str
    why: str


PRESETS = (
    Preset("Convergence vs ancestral",
           ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM2", "DPM2 a"), "5, 10, 20, 40, 80",
           "Automatic",
           "Deterministic rows settle on one image as steps grow; ancestral and SDE rows keep changing."),
    Preset("Fast at low steps",
           ("DPM++ 2M", "UniPC", "DEIS", "iPNDM", "res_multistep", "Euler"), "4, 6, 8, 12", "Karras",
           "Multistep solvers that reuse earlier model outputs look finished in a handful of steps."),
    Preset("The DPM++ family",
           ("DPM++ 2M", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"),
           "10, 20, 40", "Automatic",
           "2M reuses the last step, 2S takes two calls a step, SDE variants add Brownian noise."),
    Preset("A1111 vs diffusers",
           ("Euler", "Euler (diffusers)", "DPM++ 2M", "DPM++ 2M (diffusers)", "UniPC", "UniPC (diffusers)"),
           "10, 20, 40", "Automatic",
           "The same method from two implementations: near-identical rows mean both are right."),
    Preset("CFG++ vs plain",
           ("Euler", "Euler CFG++", "DPM++ 2M", "DPM++ 2M CFG++", "res_multistep", "res_multistep_cfg_pp"),
           "10, 20, 30", "Karras",
           "Each sampler beside its CFG++ form. CFG++ wants cfg about 1-2 where plain CFG wants 5-8: "
           "run it twice, or put CFG on the Y axis (e.g. 1.5, 7)."),
    Preset("ComfyUI defaults",
           ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "UniPC"), "10, 20, 30", "Normal",
           "ComfyUI's KSampler on its default workflow's scheduler (normal): euler, euler_ancestral, "
           "dpmpp_2m, dpmpp_2m_sde, dpmpp_sde, uni_pc, under their A1111 names."),
    Preset("Flux favourites",
           ("Euler", "DPM++ 2M", "DEIS", "iPNDM", "res_multistep", "UniPC"), "8, 16, 28", "beta",
           "What ComfyUI users settle on for Flux and SD3: euler, dpmpp_2m, deis, ipndm, res_multistep "
           "and uni_pc on ComfyUI's beta scheduler, 20-30 steps. Pick a flow model; CFG 1 for Flux dev."),
)
PRESET_BY_NAME = {p.name: p for p in PRESETS}


if __name__ == "__main__":
    write_menu()
    print(f"wrote {MENU_FILE}")
