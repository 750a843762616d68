"""The flow-only settings' checks against the loaded model (a cell's shift, sigmas and
parametrisation on a flow model are decided by the sampling plan, samplers.plan.plan_cell).

This module owns:
- refusing flow-only settings ("shift", "guidance") on SD-family models, "guidance" on a
  flow model without a guidance embedding, and a shift <= 0, each with a one-line message.
"""

from __future__ import annotations

from typing import Any

from core.limits import SpecError
from samplers.flow_schedule import check_shift


class FlowOptionError(SpecError):
    """A flow-only setting on a model that does not take it (or the reverse), or a bad value: bad
    input, reported as the grid's other spec errors are (a ValueError)."""


def cell_flow_settings(spec: Any) -> tuple[float | None, float | None]:
    """The cell's (shift, guidance) settings; None where it leaves them to the model."""
    return getattr(spec, "shift", None), getattr(spec, "guidance", None)


def check_flow_options(spec: Any, model: Any) -> None:
    """Refuse flow-only settings on SD-family models, guidance on a model without a guidance
    embedding, and a shift that is not a positive number."""
    shift, guidance = cell_flow_settings(spec)
    flow = getattr(model, "flow", None)
    if flow is None:
        used = [name for name, value in (("shift", shift), ("guidance", guidance)) if value is not None]
        if used:
            raise FlowOptionError(
                f"{' and '.join(used)} only apply to flow models (SD3 / SD3.5, Flux); "
                f"{model.name!r} is a {model.family} model — remove {'them' if len(used) > 1 else 'it'}")
        return
    if shift is not None:
        try:
            check_shift(shift)
        except ValueError as err:
            raise FlowOptionError(str(err)) from err
    if guidance is not None:
        if not flow.guidance_embeds:
            raise FlowOptionError(
                f"guidance (Flux's distilled guidance) needs a model with a guidance embedding, such as "
                f"FLUX.1-dev; {model.name!r} has none — use cfg instead, or remove guidance")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance != guidance:
            raise FlowOptionError(
                f"guidance must be a number (3.5 is FLUX.1-dev's default), got {guidance!r}")


def check_cells(specs: list[Any], model: Any) -> None:
    """check_flow_options for every cell the model renders (a grid is refused before anything is
    written: no partial files)."""
    for spec in specs:
        if spec.model == model.name:
            check_flow_options(spec, model)


def size_multiple(model: Any) -> int:
    """What image sides must be a multiple of: the VAE factor, times the patch size on SD3 / Flux."""
    return model.vae_scale_factor * (model.flow.patch if getattr(model, "flow", None) else 1)
