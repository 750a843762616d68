"""ComfyUI's KSampler sampler names: which sampler each one runs here.

This module owns the table from ComfyUI's lowercase names ("dpmpp_2m", "euler_ancestral",
"dpmpp_sde_gpu", "uni_pc_bh2", ...) to registered samplers, and the few ComfyUI-named
samplers that behave differently from their A1111 namesakes, registered here under the
ComfyUI name so that "lms" runs as ComfyUI runs it and "LMS" as A1111 does:

- "lms": ComfyUI's last step to sigma 0 returns the denoised estimate (the first-order
  step there); A1111's "LMS" integrates that step with its multistep formula.
- "dpmpp_3m_sde": ComfyUI does not drop the next-to-last sigma; A1111's "DPM++ 3M SDE"
  does on every schedule type.
- "uni_pc_bh2": UniPC with the B(h) = e^h - 1 variant (Zhao et al. 2023, "UniPC", sec. 3.3),
  ComfyUI's second UniPC entry; "uni_pc" is our "UniPC" (bh1, next-to-last sigma dropped,
  as both tools do).

The "_gpu" names differ in ComfyUI only in where its Brownian tree lives; here every SDE
sampler reads the cell's CPU tree, so they are the same sampler as the plain name.
ComfyUI's "ddim" runs its Euler sampler, which is DDIM's update at eta 0 (Song et al. 2021,
eq. 12 in sigma form), so it resolves to "DDIM" (eta 0 by default). docs/SAMPLERS.md has
the table of every difference.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from torch import Tensor

from samplers import lms as _lms_module
from samplers.parametrisation import Parametrisation
from samplers.protocol import SamplerGenerator
from samplers.registry import add_info, register, registered

# ComfyUI's SAMPLER_NAMES in its order, each with the registered sampler it runs here.
COMFYUI_SAMPLERS: dict[str, str] = {
    "euler": "Euler", "euler_cfg_pp": "Euler CFG++", "euler_ancestral": "Euler a",
    "euler_ancestral_cfg_pp": "Euler a CFG++", "heun": "Heun", "heunpp2": "heunpp2",
    "exp_heun_2_x0": "exp_heun_2_x0", "exp_heun_2_x0_sde": "exp_heun_2_x0_sde",
    "dpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a", "lms": "lms", "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive", "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_2s_ancestral_cfg_pp": "DPM++ 2S a CFG++", "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_cfg_pp": "DPM++ 2M CFG++",
    "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun_gpu": "DPM++ 2M SDE Heun",
    "dpmpp_3m_sde": "dpmpp_3m_sde", "dpmpp_3m_sde_gpu": "dpmpp_3m_sde", "ddpm": "DDPM", "lcm": "LCM",
    "ipndm": "iPNDM", "ipndm_v": "ipndm_v", "deis": "DEIS", "res_multistep": "res_multistep",
    "res_multistep_cfg_pp": "res_multistep_cfg_pp", "res_multistep_ancestral": "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral_cfg_pp",
    "gradient_estimation": "Gradient Estimation", "gradient_estimation_cfg_pp": "Gradient Estimation CFG++",
    "er_sde": "ER-SDE", "seeds_2": "seeds_2", "seeds_3": "seeds_3", "sa_solver": "SA-Solver",
    "sa_solver_pece": "SA-Solver PECE", "ddim": "DDIM", "uni_pc": "UniPC", "uni_pc_bh2": "uni_pc_bh2",
}


def runs_as(name: str) -> str | None:
    """The registered sampler a ComfyUI sampler name runs as, or None if it is not one.

    Matched exactly (ComfyUI's names are lowercase identifiers)."""
    return COMFYUI_SAMPLERS.get(name)


def hint(name: str) -> str:
    """For an unknown name close to ComfyUI names, what those run as here, so that a message
    offers both conventions ("dpmpp_2n" -> "ComfyUI's 'dpmpp_2m' is 'DPM++ 2M' here")."""
    close = difflib.get_close_matches(name.lower(), list(COMFYUI_SAMPLERS), n=2, cutoff=0.6)
    pairs = [f"ComfyUI's {c!r} is {COMFYUI_SAMPLERS[c]!r} here" for c in close if COMFYUI_SAMPLERS[c] != c]
    return f" ({'; '.join(pairs)})" if pairs else ""


def comfyui_name(registered_name: str) -> str | None:
    """The ComfyUI KSampler name that runs `registered_name`, or None where ComfyUI has none.

    The first (plain, not "_gpu") name wins; "DDIM" maps to "ddim"."""
    for comfy, ours in COMFYUI_SAMPLERS.items():
        if ours == registered_name:
            return comfy
    return None


@register(
    "lms", kind="deterministic", calls_per_step=1, default_schedule="Uniform",
    description="ComfyUI's LMS: A1111's linear multistep, except that the last step to sigma 0 "
                "lands on the model's denoised estimate.",
)
def lms_comfyui(x: Tensor, sigmas: Tensor, param: Parametrisation, *, order: int = 4) -> SamplerGenerator:
    """Linear multistep (see samplers/lms.py) whose last step to sigma 0 returns D (ComfyUI)."""
    inner = _lms_module.lms(x, sigmas[:-1] if float(sigmas[-1]) == 0 else sigmas, param, order=order)
    x = yield from inner
    if float(sigmas[-1]) == 0:
        denoised = yield x, sigmas[-2]
        x = denoised
    return x


def _variant(base: str, name: str, description: str, *, discard_penultimate: bool | None = None,
             **fixed: Any) -> None:
    """Register `name` as sampler `base` with some options fixed and its own sigma handling."""
    info = registered()[base]
    base_fn: Callable[..., Any] = info.fn

    def fn(x: Tensor, sigmas: Tensor, **inputs_and_options: Any) -> Any:
        # the inputs (noise, param) arrive by name, as samplers.run passes them to `base`
        return base_fn(x, sigmas, **inputs_and_options, **fixed)

    add_info(dataclasses.replace(
        info, name=name, fn=fn, description=description,
        options={k: v for k, v in info.options.items() if k not in fixed},
        discard_penultimate=info.discard_penultimate if discard_penultimate is None else discard_penultimate))


def register_variants() -> None:
    """Register the ComfyUI-named samplers that differ from a registered one by options or sigmas
    (called once from `samplers` after every sampler module is imported)."""
    _variant("DPM++ 3M SDE", "dpmpp_3m_sde", discard_penultimate=False,
             description="ComfyUI's DPM++ 3M SDE: the same solver, run on the schedule as given "
                         "(A1111's drops the next-to-last sigma).")
    _variant("UniPC", "uni_pc_bh2", variant="bh2",
             description="UniPC with the bh2 variant of its order conditions (ComfyUI's uni_pc_bh2); "
                         "often better than bh1 at very few steps.")

