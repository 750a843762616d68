"""The page: controls on the left, the grid and what it measured on the right.

`build_demo(config, models)` lays the page out and wires each control to its
handler (ui/handlers.py holds what the handlers do). Gradio 6 takes theme, CSS
and page JavaScript in `launch()`: `launch_kwargs()` gives them.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from ui import handlers as h
from ui.about import ABOUT_SAMPLERS, INTRO
from ui.catalogue import GROUPS, PRESETS, descriptions, grouped, schedule_names
from ui.config import AppConfig
from ui.models import ModelHolder
from ui.settings import AXIS_CHOICES, NO_AXIS, Settings
from ui.view import display_cell, display_grid, result_updates

QUICK_STEPS = ("4, 8, 12, 16", "5, 10, 20, 40", "10, 20, 40, 80", "1-50 [6]")
TITLE = "Sampler Grid"
# The Soft theme's Montserrat draws a capital E as "Ɛ" ("Ɛuler", "DƐIS"): sampler names need a
# plain sans-serif, and the system's needs no download (the app runs offline).
FONT = ("ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "DejaVu Sans", "sans-serif")

CSS = """
.sg-progress { display: flex; align-items: center; gap: .75em; min-height: 2em; }
.sg-progress progress { flex: 0 0 35%; height: 1em; accent-color: var(--color-accent); }
.sg-progress-text { font-variant-numeric: tabular-nums; }
#sg-grid img, #sg-cell img, #sg-gallery img, #sg-traj-image img { image-rendering: pixelated; }
/* the grid fills the panel's width whatever its column count (display_grid sends it at least
   that wide, so the browser only ever scales it down) */
#sg-grid img { width: 100%; height: auto; max-height: none; object-fit: contain; }
/* sampler names on one line each, the checklist's order being the grid's row order */
.sg-samplers label { white-space: nowrap; }
/* phone: prompt and Generate, then the results, then the other controls (not every control
   before the grid) — the controls column dissolves into the page's column and is reordered */
@media (max-width: 720px) {
  #sg-main { flex-direction: column; flex-wrap: nowrap; }
  #sg-controls { display: contents; }
  #sg-controls > * { order: 3; }
  #sg-controls > #sg-top { order: 1; }
  #sg-results { order: 2; }
  #sg-main > *, #sg-results { width: 100%; max-width: 100%; min-width: 0; align-self: stretch; }
  #sg-grid img { max-width: 100%; }
}
/* the grid starts below the label and the download/fullscreen buttons, which would cover the
   last column's label */
#sg-grid .image-container { padding-top: 2.4rem; }
#sg-grid .image-container > .icon-button-wrapper { top: 0; }
#sg-status { font-size: .9em; opacity: .85; }
.sg-error { color: var(--error-text-color, #b91c1c); font-weight: 600; }
"""


def tooltip_js(texts: dict[str, str]) -> str:
    """Page script: each sampler checkbox gets its description as hover text (and keeps it when
    Gradio redraws the list)."""
    return f"""() => {{
  const texts = {json.dumps(texts)};
  const apply = () => document.querySelectorAll('.sg-samplers label').forEach(l => {{
    const name = l.textContent.trim();
    if (texts[name] && l.title !== texts[name]) l.title = texts[name];
  }});
  new MutationObserver(apply).observe(document.body, {{childList: true, subtree: true}});
  apply();
}}"""


COPY_LINK_JS = """(q) => {
  const url = location.origin + location.pathname + (q ? '?' + q : '');
  if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
  return url;
}"""
SET_URL_JS = """(q) => { history.replaceState(null, '', q ? '?' + q : location.pathname); return []; }"""


def launch_kwargs() -> dict[str, Any]:
    """Theme, CSS and page script for `demo.launch(**launch_kwargs())`."""
    return {"css": CSS, "js": tooltip_js(descriptions()), "theme": gr.themes.Soft(font=FONT)}


def build_demo(config: AppConfig, models: ModelHolder) -> gr.Blocks:
    """The whole page for this configuration."""
    groups = grouped()
    defaults = Settings(model=config.default_model)
    with gr.Blocks(title=TITLE, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        # filled by the page's load event: a value here would be the model's state when the page
        # was built ("not loaded"), shown to every later visitor until the first timer tick
        status = gr.Markdown("", elem_id="sg-status")
        with gr.Row(equal_height=False, elem_id="sg-main"):
            with gr.Column(scale=2, min_width=320, elem_id="sg-controls"):
                c = _controls(config, defaults, groups)
            with gr.Column(scale=3, min_width=320, elem_id="sg-results"):
                r = _results()
        with gr.Accordion("About samplers: ancestral, Karras, SDE, 2M/2S, equal cost", open=False):
            gr.Markdown(ABOUT_SAMPLERS)
        api = _api_components()
        timer = gr.Timer(1.0)
        _wire(demo, config, models, groups, c, r, api, status, timer)
    return demo


def _controls(config: AppConfig, d: Settings, groups: dict[str, list[str]]) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Row(equal_height=True, elem_id="sg-top"):
        with gr.Column(scale=4, min_width=220):
            # no max_length: the box would cut a long paste silently; the grid refuses it and says so
            c["prompt"] = gr.Textbox(d.prompt, label="Prompt", lines=2, elem_id="sg-prompt")
            c["negative_prompt"] = gr.Textbox(d.negative_prompt, label="Negative prompt", lines=1)
        with gr.Column(scale=1, min_width=110):
            c["generate"] = gr.Button("Generate", variant="primary", size="lg", elem_id="sg-generate")
            c["stop"] = gr.Button("Stop", variant="stop", elem_id="sg-stop")
    c["model"] = gr.Dropdown(list(config.models), value=d.model, label="Model",
                             allow_custom_value=not config.public,
                             info=None if config.public else "or type a hub id, folder or .safetensors path")
    with gr.Group():
        c["preset"] = gr.Dropdown([p.name for p in PRESETS], value=None, label="Preset comparison",
                                  info="fills in samplers, steps and schedule")
        c["from_png"] = gr.File(label="Start from an image: drop an A1111 or ComfyUI PNG to fill in its "
                                      "settings for a grid around it",
                                file_types=[".png", ".jpg", ".jpeg", ".webp"], type="filepath", height=140,
                                elem_id="sg-from-png")
        with gr.Row(elem_classes="sg-samplers"):
            for group in GROUPS[:-1]:
                c[f"group:{group}"] = _sampler_group(group, groups, d)
        with gr.Accordion(f"diffusers schedulers ({len(groups['diffusers'])})", open=False) as more:
            c["group:diffusers"] = _sampler_group("diffusers", groups, d)
        c["diffusers_open"] = more
    with gr.Row():
        c["steps"] = gr.Textbox(d.steps, label="Step counts", info='A1111 syntax: "5, 10, 20", "10-40 [4]"',
                                scale=3, elem_id="sg-steps")
        c["quick_steps"] = gr.Dropdown(list(QUICK_STEPS), value=None, label="Quick choice", scale=2)
    with gr.Row():
        c["schedule"] = gr.Dropdown(schedule_names(), value=d.schedule, label="Schedule type", scale=2)
        c["cfg"] = gr.Slider(0, 20, d.cfg, step=0.5, label="CFG scale", scale=3, elem_id="sg-cfg")
    with gr.Row(equal_height=True):
        c["seed"] = gr.Number(d.seed, label="Seed (-1 = random)", precision=0, minimum=-1, scale=4,
                               elem_id="sg-seed")
        c["dice"] = gr.Button("🎲 Random seed", scale=1, size="md")
    with gr.Accordion("Noise and size", open=False):
        with gr.Row():
            c["eta"] = gr.Slider(0, 2, d.eta, step=0.05, label="Eta (ancestral and SDE samplers)",
                                 info="noise each step adds back; 0 makes them deterministic")
            c["eta_ddim"] = gr.Slider(0, 1, d.eta_ddim, step=0.05, label="Eta DDIM",
                                      info="0: deterministic DDIM (A1111's default); 1: DDPM-like")
        with gr.Row():
            c["s_noise"] = gr.Slider(0, 2, d.s_noise, step=0.01, label="Sigma noise (s_noise)")
        with gr.Row():  # flow models only (SD3, Flux): shown once such a model is loaded
            c["shift"] = gr.Slider(0, 10, d.shift, step=0.025, visible=False,
                                   label="Shift (flow models; 0 = the model's own)")
            c["guidance"] = gr.Slider(0, 10, d.guidance, step=0.1, visible=False,
                                      label="Distilled CFG Scale (Flux dev; 0 = 3.5)")
        with gr.Row():
            c["width"] = gr.Slider(0, 2048, d.width, step=8, label="Width (0 = model default)")
            c["height"] = gr.Slider(0, 2048, d.height, step=8, label="Height (0 = model default)")
        c["overlay"] = gr.Checkbox(d.overlay, label="Write each cell's seconds and model calls on the grid")
    with gr.Accordion("Axes: what X, Y and Z vary (default: steps across, one row per sampler)", open=False):
        for pos, label in (("x", "X"), ("y", "Y"), ("z", "Z")):
            with gr.Row():
                choices = [*AXIS_CHOICES, NO_AXIS] if pos != "x" else list(AXIS_CHOICES)
                c[f"{pos}_axis"] = gr.Dropdown(choices, value=getattr(d, f"{pos}_axis"),
                                               label=f"{label} axis", scale=1)
                c[f"{pos}_values"] = gr.Textbox(getattr(d, f"{pos}_values"), label=f"{label} values",
                                                info="not needed for Sampler and Steps", scale=2)
        c["vary_seeds"] = gr.Checkbox(d.vary_seeds, label="Vary seeds (a different seed per cell)")
    return c


def _sampler_group(group: str, groups: dict[str, list[str]], d: Settings) -> gr.CheckboxGroup:
    return gr.CheckboxGroup(groups[group], value=[s for s in d.samplers if s in groups[group]], label=group,
                            elem_classes="sg-samplers", min_width=180)


def _results() -> dict[str, Any]:
    r: dict[str, Any] = {}
    r["progress"] = gr.HTML(h.progress_html(None, "Press Generate to render the grid."),
                            elem_id="sg-progress")
    r["grid"] = gr.Image(label="Grid", type="pil", interactive=False, elem_id="sg-grid", format="png",
                         buttons=["download", "fullscreen"])
    r["verdicts"] = gr.Markdown("")
    r["run"] = gr.State("")
    with gr.Tabs():
        with gr.Tab("Cells"):
            gr.Markdown("Click a cell to see it large, with its A1111 parameters, diffusers code and "
                        "ComfyUI workflow.")
            r["gallery"] = gr.Gallery(show_label=False, columns=6, height="auto", allow_preview=False,
                                      object_fit="contain", buttons=[], elem_id="sg-gallery")
            with gr.Row(equal_height=False):
                r["cell_image"] = gr.Image(label="Cell", type="pil", interactive=False, scale=1,
                                           format="png", elem_id="sg-cell", buttons=["download"])
                with gr.Column(scale=1, min_width=300):
                    r["cell_info"] = gr.Textbox(label="A1111 parameters (paste into PNG Info)", lines=6,
                                                buttons=["copy"], interactive=False, elem_id="sg-cell-info")
                    r["snippet"] = gr.Code(label="diffusers code for this cell", language="python",
                                           elem_id="sg-snippet")
                    r["workflow"] = gr.Code(label="ComfyUI workflow (API format) for this cell: copy it, or "
                                            "load the file in ComfyUI", language="json",
                                            elem_id="sg-workflow")
                    r["workflow_file"] = gr.File(label="ComfyUI workflow file", interactive=False,
                                                 elem_id="sg-workflow-file")
        with gr.Tab("Convergence"):
            with gr.Row():
                r["chart_by"] = gr.Radio(["steps", "model calls"], value="steps", label="Horizontal axis",
                                       elem_id="sg-chart-by")
                r["accurate_reference"] = gr.Checkbox(
                    False, label="Next grid: measure against a high-accuracy reference",
                    info="DPM++ 2M Karras at 200 steps, one extra image per seed and prompt. Without it, "
                         "each row is measured against its own last cell.")
            # no fixed height: Gradio's height clips the legend (the sampler names) off the bottom
            r["chart"] = gr.LinePlot(x="x", y="distance", color="series", color_title="sampler",
                                     x_title="steps", y_title="distance to the row's reference",
                                     label="Convergence: lower is closer to the row's reference",
                                     elem_id="sg-chart")
        with gr.Tab("Trajectory"):
            r["traj"] = gr.Slider(0, 1, 1, step=0.05, label="Fraction of denoising",
                                  info="every cell at the same fraction of its steps", elem_id="sg-traj")
            r["traj_image"] = gr.Image(label="Denoised estimate", type="pil", interactive=False,
                                       elem_id="sg-traj-image")
        with gr.Tab("Downloads"):
            r["files"] = gr.File(label="Grid, cells, manifest, metrics", file_count="multiple",
                                 interactive=False, elem_id="sg-files")
        with gr.Tab("Share"):
            r["query"] = gr.Textbox(visible=False)
            r["copy"] = gr.Button("Copy link", elem_id="sg-copy")
            r["link"] = gr.Textbox(label="Link to this grid (settings and seed)", buttons=["copy"],
                                   elem_id="sg-link")
    r["notice"] = gr.Markdown("")
    r["autorun"] = gr.State(False)
    return r


def _api_components() -> dict[str, Any]:
    with gr.Row(visible=False):
        spec = gr.Textbox(label="spec JSON")
        image = gr.Image(type="filepath", label="grid")
        manifest = gr.JSON(label="manifest")
        button = gr.Button("render")
    return {"spec": spec, "image": image, "manifest": manifest, "button": button}


def _wire(demo: gr.Blocks, config: AppConfig, models: ModelHolder, groups: dict[str, list[str]],
          c: dict[str, Any], r: dict[str, Any], api: dict[str, Any], status: gr.Markdown,
          timer: gr.Timer) -> None:
    c["accurate_reference"] = r["accurate_reference"]  # a setting, shown beside the chart it changes
    controls = [c[f] for f in h.FIELDS] + [c[f"group:{g}"] for g in GROUPS]
    result_outputs = [r["progress"], r["grid"], r["gallery"], r["run"], r["chart"], r["verdicts"], r["files"],
                      r["query"], c["seed"], r["traj_image"], status]

    def generate(request: gr.Request, *values: Any):
        """Stream the grid; a refused input or a failed run is shown in the progress line (where
        the user is looking, replacing the last run's "done"), not only as a toast."""
        session = request.session_hash or ""
        skip = [gr.skip()] * (len(result_outputs) - 2)
        try:
            settings = h.settings_from(list(values))
            if models.needs_loading(settings.model):
                yield [h.progress_html(None, f"Loading the model {settings.model.strip()}… (the grid "
                                             "starts when it is ready)"), *skip, models.status()]
            job, settings = h.start_job(settings, config, models, session)
            query = settings.to_query()
            for snap in h.run_job(job, session):
                if not snap.done:
                    yield [h.progress_html(snap), display_grid(snap.grid), gr.skip(), gr.skip(), gr.skip(),
                           gr.skip(), gr.skip(), query, settings.seed, gr.skip(), models.status()]
                else:
                    run_id = h.remember(snap.outputs)
                    yield [h.progress_html(snap), *result_updates(snap, run_id), query, settings.seed,
                           snap.outputs.trajectory(1.0), models.status()]
        except gr.Error as err:
            yield [h.error_html(err.message), *skip, models.status()]

    def generate_from_link(request: gr.Request, autorun: bool, *values: Any):
        if autorun:
            yield from generate(request, *values)
        else:  # a generator that yields nothing would blank every output (the seed among them)
            yield [gr.skip()] * len(result_outputs)

    # Generate is off while its grid runs (a second press would only queue the same grid again)
    gen = c["generate"].click(lambda: gr.Button(interactive=False), None, c["generate"], queue=False,
                              api_visibility="private").then(
        generate, controls, result_outputs, concurrency_id="render", concurrency_limit=config.concurrency,
        api_visibility="private", show_progress="hidden")
    gen.then(lambda: gr.Button(interactive=True), None, c["generate"], queue=False, api_visibility="private")
    gen.then(None, r["query"], None, js=SET_URL_JS)
    model_outputs = [c["shift"], c["guidance"], *(c[f"group:{g}"] for g in GROUPS)]
    gen.then(lambda: _model_controls(models, groups), None, model_outputs, queue=False,
             api_visibility="private")
    c["stop"].click(_stop, None, r["progress"], queue=False, api_visibility="private")
    c["dice"].click(h.random_seed, None, c["seed"], queue=False, api_visibility="private")
    c["preset"].input(lambda name: _preset(name, groups), c["preset"],
                      [*(c[f"group:{g}"] for g in GROUPS), c["steps"], c["schedule"], c["diffusers_open"]],
                      queue=False, api_visibility="private")
    c["quick_steps"].input(lambda v: v, c["quick_steps"], c["steps"], queue=False, api_visibility="private")
    allowed = tuple(config.models) if config.public else None
    c["from_png"].upload(lambda path, *v: h.settings_from_png(path, list(v), groups, allowed),
                         [c["from_png"], *controls], controls, api_visibility="private")
    r["gallery"].select(_select_cell, r["run"], [r["cell_image"], r["cell_info"], r["snippet"],
                                                  r["workflow"], r["workflow_file"]],
                        api_visibility="private")
    # The axis title and the data as two updates: Gradio's LinePlot given both in one update
    # draws the previous data under the new title (one toggle behind).
    r["chart_by"].change(lambda by: gr.LinePlot(x_title=by), r["chart_by"], r["chart"], queue=False,
                         api_visibility="private").then(
        _chart, [r["run"], r["chart_by"]], r["chart"], api_visibility="private")
    # change, not release: the number box beside the slider (Enter) changes it without a release
    r["traj"].change(_trajectory, [r["run"], r["traj"]], r["traj_image"], trigger_mode="always_last",
                     api_visibility="private")
    r["copy"].click(lambda *v: h.settings_from(list(v)).to_query(), controls, r["query"], queue=False,
                    api_visibility="private").then(None, r["query"], r["link"], js=COPY_LINK_JS)
    api["button"].click(_api_render(config, models), api["spec"], [api["image"], api["manifest"]],
                        api_name="render", concurrency_id="render", concurrency_limit=config.concurrency)
    timer.tick(lambda: _status(models), None, [status, timer], api_visibility="private").then(
        lambda: _model_controls(models, groups), None, model_outputs, queue=False, api_visibility="private",
        show_progress="hidden")  # a spinner over the sampler checklists on every status tick looked busy
    demo.load(lambda: _status(models), None, [status, timer], queue=False, api_visibility="private")
    demo.load(_restore(groups), None, [*controls, r["notice"], r["autorun"]],
              api_visibility="private").then(
        generate_from_link, [r["autorun"], *controls], result_outputs, concurrency_id="render",
        concurrency_limit=config.concurrency, api_visibility="private", show_progress="hidden")


def _stop(request: gr.Request) -> str:
    return h.stop(request.session_hash or "")


def _status(models: ModelHolder) -> tuple[str, Any]:
    text = models.status()
    busy = "loading" in text or "not loaded" in text
    return text, gr.Timer(active=busy)


def _model_controls(models: ModelHolder, groups: dict[str, list[str]]) -> list[Any]:
    """Show Shift / Distilled CFG Scale for the loaded flow model and mark the samplers it refuses."""
    from pipeline.models import loaded_model  # the model is loaded by now (torch already imported)

    show_shift, show_guidance, choices = h.model_controls(loaded_model(), groups)
    return [gr.Slider(visible=show_shift), gr.Slider(visible=show_guidance),
            *(gr.CheckboxGroup(choices=choices[g]) for g in GROUPS)]


def _restore(groups: dict[str, list[str]]):
    def restore(request: gr.Request) -> list[Any]:
        """Controls from the page URL's query (a shared link); without one, nothing changes."""
        query = request.query_params
        pairs = query.multi_items() if hasattr(query, "multi_items") else list(dict(query or {}).items())
        params: dict[str, list[str]] = {}
        for key, value in pairs:
            params.setdefault(key, []).append(value)
        if not params:
            return [gr.skip()] * (len(h.FIELDS) + len(GROUPS) + 2)
        settings, warnings = Settings.from_query(params)
        notice = "\n".join(f"- {w}" for w in warnings)
        return [*h.values_from(settings, groups), notice, True]
    return restore


def _preset(name: str, groups: dict[str, list[str]]) -> list[Any]:
    """A preset's controls; the diffusers accordion opens when the preset ticks samplers in it."""
    values = h.apply_preset(name, groups)
    uses_diffusers = bool(values[GROUPS.index("diffusers")])
    return [*values, gr.Accordion(open=True) if uses_diffusers else gr.skip()]


def _select_cell(run_id: str, evt: gr.SelectData) -> list[Any]:
    """The clicked cell large (nearest-neighbour, as the grid), titled by its labels, with its
    A1111 text, diffusers code and ComfyUI workflow beside it."""
    image, caption, info, snippet, workflow, workflow_file = h.run_of(run_id).cell_view(evt.index)
    return [gr.Image(value=display_cell(image), label=caption or "Cell"), info, snippet, workflow,
            workflow_file]


def _chart(run_id: str, by: str) -> Any:
    if not run_id:
        return gr.skip()
    key = "model_calls" if by == "model calls" else "steps"
    return h.run_of(run_id).chart(key)


def _trajectory(run_id: str, fraction: float) -> Any:
    if not run_id:
        return gr.skip()
    return h.run_of(run_id).trajectory(float(fraction))


def _api_render(config: AppConfig, models: ModelHolder):
    def render(spec_json: str) -> tuple[str, dict]:
        """Render a grid from its spec JSON (the CLI's format); returns the grid PNG and the manifest."""
        return h.render_spec(spec_json, config, models)
    return render
