"""What the page's buttons and sliders do: plain functions the Gradio layout wires up.

Each handler takes control values and returns (or, for Generate, yields) values
for its outputs in a fixed order, so it can be tested without a browser. Bad
input raises `gr.Error` with the reason (the page shows it; the last grid stays
on screen). Runs are kept server-side (RUNS, the most recent MAX_RUNS) and the
page holds only their id, so big tensors never travel in page state.
"""

from __future__ import annotations

import html
import logging
import random
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import gradio as gr

from ui.catalogue import GROUPS, PRESET_BY_NAME, grouped
from ui.config import AppConfig
from ui.models import ModelHolder
from ui.settings import Settings

if TYPE_CHECKING:  # ui.runner imports torch; the page is built before torch loads
    from ui.results import RunOutputs
    from ui.runner import GridJob, Snapshot

log = logging.getLogger(__name__)
MAX_RUNS = 16
RUNS: OrderedDict[str, Any] = OrderedDict()  # run id -> ui.results.RunOutputs
JOBS: dict[str, Any] = {}  # browser session -> its running job (for Stop)
_LOCK = threading.Lock()

# Settings fields in the order the page passes its controls; "samplers" comes
# from one checklist per sampler group and is handled apart.
FIELDS = ("prompt", "negative_prompt", "model", "steps", "schedule", "cfg", "eta", "eta_ddim", "s_noise",
          "shift", "guidance", "width", "height", "seed", "x_axis", "x_values", "y_axis", "y_values",
          "z_axis", "z_values", "vary_seeds", "accurate_reference", "overlay")


def settings_from(values: list[Any]) -> Settings:
    """Settings from the page's control values: FIELDS then one sampler list per group.

    The samplers come in the menu's order (groups top to bottom, each in its listed order), not
    the order they were ticked: the grid's rows then read as the checklist does, and the default
    selection is the default (a link leaves it out)."""
    named = dict(zip(FIELDS, values[: len(FIELDS)], strict=True))
    chosen: list[str] = []
    for group, picked in zip(GROUPS, values[len(FIELDS):], strict=False):
        menu = grouped()[group]
        picked = list(picked or [])
        chosen.extend(sorted(picked, key=lambda s: menu.index(s) if s in menu else len(menu)))
    named["seed"] = _seed(named["seed"])
    for side in ("width", "height"):
        named[side] = _whole(side, named[side])
    return Settings(samplers=tuple(chosen), **named)


def values_from(settings: Settings, grouped: dict[str, list[str]]) -> list[Any]:
    """The page's control values for `settings` (the inverse of settings_from)."""
    values = [getattr(settings, f) for f in FIELDS]
    for group in GROUPS:
        values.append([s for s in settings.samplers if s in grouped[group]])
    return values


def _seed(value: Any) -> int:
    if value is None or value == "":
        return -1
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise user_error(f"seed must be a whole number, got {value!r}") from None


def _whole(name: str, value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        raise user_error(f"{name} must be a whole number of pixels, got {value!r}") from None


def model_controls(model: Any, grouped: dict[str, list[str]]) -> tuple[bool, bool, dict[str, list[Any]]]:
    """What the page shows for the loaded model: the Shift control (flow models), the Distilled CFG
    Scale control (models with a guidance embedding, FLUX.1-dev) and each sampler group's choices,
    where a sampler refused on this model is marked (label, name) so that it reads as not usable."""
    flow = getattr(model, "flow", None)
    choices: dict[str, list[Any]] = {g: list(names) for g, names in grouped.items()}
    if flow is not None:
        import samplers

        for group, names in grouped.items():
            choices[group] = [name if samplers.info(name).supports_flow else
                              (f"{name} ⛔ not on {model.family} models", name) for name in names]
    return flow is not None, bool(flow and flow.guidance_embeds), choices


def random_seed() -> int:
    """A new seed from A1111's range."""
    return random.randrange(4294967294)


def apply_preset(name: str, grouped: dict[str, list[str]]) -> list[Any]:
    """Sampler checklists, step counts and schedule for a preset."""
    preset = PRESET_BY_NAME.get(name)
    if preset is None:
        raise user_error(f"unknown preset {name!r}")
    lists = [[s for s in preset.samplers if s in grouped[g]] for g in GROUPS]
    return [*lists, preset.steps, preset.schedule]


def settings_from_png(path: str | None, values: list[Any], grouped: dict[str, list[str]],
                      models: tuple[str, ...] | None = None) -> list[Any]:
    """The page's control values with an A1111 or ComfyUI image's settings laid over them: a grid
    around that image (its prompts, model, seed, size, CFG and schedule; its sampler checked
    beside the ones already checked; half, its own and double its steps). With `models` (public
    mode's list) the image's model is taken only if it is one of them."""
    if not path:
        return values
    from report.infotext_reader import InfotextError, settings_from_image  # imports torch: not at page build

    try:
        _kind, found = settings_from_image(path)
    except InfotextError as err:
        raise gr.Error(f"cannot use that image: {err}") from None
    current = settings_from(values)
    changes: dict[str, Any] = {k: found[k] for k in ("prompt", "negative_prompt", "model", "seed", "cfg",
                                                     "width", "height", "schedule") if k in found}
    if models is not None and changes.get("model") not in models:
        changes.pop("model", None)
    if "sampler" in found:
        changes["samplers"] = tuple(dict.fromkeys([found["sampler"], *current.samplers]))
    if "steps" in found:
        n = int(found["steps"])
        changes["steps"] = ", ".join(str(v) for v in sorted({max(1, n // 2), n, min(2 * n, 1000)}))
    return values_from(replace(current, **changes), grouped)


# ------------------------------------------------------------------ generate


def progress_html(snap: Snapshot | None, message: str = "") -> str:
    """The progress bar: cells, model calls, elapsed and time left."""
    if snap is None:
        return f'<div class="sg-progress idle">{html.escape(message)}</div>'
    p = snap.progress
    frac = p.calls_done / p.calls_total if p.calls_total else 0.0
    if snap.done:
        frac = 1.0 if not snap.status.startswith("stopped") else frac
    eta = p.eta_seconds
    left = "" if eta is None or snap.done else f" · about {eta:.0f} s left"
    text = (f"Cells {p.cells_done}/{p.cells_total} · model calls {p.calls_done:,}/"
            f"{p.calls_total:,} · {p.elapsed:.1f} s{left}")
    status = f" — {html.escape(snap.status)}" if snap.status else ""
    return (f'<div class="sg-progress"><progress value="{frac:.4f}" max="1"></progress>'
            f'<span class="sg-progress-text">{text}{status}</span></div>')


def start_job(settings: Settings, config: AppConfig, models: ModelHolder,
              session: str = "") -> tuple[GridJob, Settings]:
    """Check the settings and build the job; a random seed is fixed first so links reproduce.

    The job is registered for Stop under `session` before the model loads, so a Stop pressed
    while the first grid waits for the model stops that grid (run_job unregisters it)."""
    from ui.runner import GridJob

    if settings.seed == -1:
        settings = replace(settings, seed=random_seed())
    try:
        spec = settings.to_spec()
        job = GridJob(spec, config, models, accurate_reference=settings.accurate_reference,
                      overlay=settings.overlay)
    except Exception as err:
        raise page_error(err) from None
    with _LOCK:
        JOBS[session] = job
    try:
        job.check()
    except Exception as err:
        _forget(session, job)
        raise page_error(err) from None
    return job, settings


def run_job(job: GridJob, session: str) -> Iterator[Snapshot]:
    """The job's snapshots, registered for Stop under the browser session."""
    with _LOCK:
        JOBS[session] = job
    try:
        yield from job.snapshots()
    except Exception as err:
        raise page_error(err) from None
    finally:
        _forget(session, job)


def _forget(session: str, job: GridJob) -> None:
    with _LOCK:
        if JOBS.get(session) is job:
            del JOBS[session]


def stop(session: str) -> str:
    """Stop the session's running grid; finished cells are kept."""
    with _LOCK:
        job = JOBS.get(session)
    if job is None:
        return progress_html(None, "Nothing is running.")
    job.stop()
    return progress_html(None, "Stopping after the current step — finished cells are kept…")


def remember(outputs: RunOutputs) -> str:
    """Keep a finished run's outputs server-side; returns its id for the page state."""
    with _LOCK:
        RUNS[outputs.run_id] = outputs
        while len(RUNS) > MAX_RUNS:
            RUNS.popitem(last=False)
    return outputs.run_id


def run_of(run_id: str | None) -> Any:
    """A remembered run, or gr.Error if it has expired (the server keeps the last MAX_RUNS)."""
    with _LOCK:
        outputs = RUNS.get(run_id or "")
    if outputs is None:
        raise user_error("generate a grid first (older results expire after "
                         f"{MAX_RUNS} newer grids)")
    return outputs


def render_spec(spec_json: str, config: AppConfig, models: ModelHolder) -> tuple[str, dict]:
    """The API: a grid from its spec JSON (the CLI's format) -> (grid PNG path, manifest)."""
    from grids.spec import GridSpec
    from ui.runner import GridJob

    try:
        job = GridJob(GridSpec.from_json(spec_json or ""), config, models)
        job.check()
        outputs = deque(job.snapshots(), maxlen=1)[0].outputs  # the last snapshot carries the files
    except Exception as err:
        raise page_error(err) from None
    return str(outputs.grid_path), outputs.manifest


def user_error(message: str) -> gr.Error:
    """A message for the person at the page (or the API caller): no traceback in the server's
    terminal — it is their input, not our bug; the log gets one line."""
    log.warning("refused: %s", message.splitlines()[0] if message else message)
    return gr.Error(message, print_exception=False)


def page_error(err: Exception) -> gr.Error:
    """What a caller sees when a grid cannot run: bad input (every ValueError carries a message
    that says what to change) as it is, logged as one line; anything else as a short line, its
    traceback only in the server's log, never on the page or in the API's answer."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, ValueError) and str(err):
        return user_error(shorten(str(err)))
    log.error("grid failed", exc_info=err)
    return gr.Error(f"the grid failed on the server ({type(err).__name__}); it was logged — try again, "
                    "or a smaller grid", print_exception=False)


def error_html(message: str) -> str:
    """The progress line as an error: where the user is looking, in place of the last run's "done"."""
    return (f'<div class="sg-progress sg-error" role="alert">⚠ {html.escape(message)}</div>')


_LONG_QUOTE = re.compile(r"'[^'\n]{120,}'")
MAX_MESSAGE = 2000


def shorten(message: str) -> str:
    """A message with long echoes of the caller's input (a 10,000-character sampler name) cut to
    their two ends, so the reason after them stays readable."""
    def cut(m: re.Match[str]) -> str:
        inner = m.group(0)[1:-1]
        return f"'{inner[:60]}…{inner[-20:]}' ({len(inner):,} characters)"

    message = _LONG_QUOTE.sub(cut, message)
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
