"""The page's settings: their grid spec, their link form, presets and the sampler menu."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import samplers
from core.limits import MAX_SIDE
from grids import defaults
from grids.spec import SpecError
from ui import catalogue
from ui.config import AppConfig, ModelNotAllowedError
from ui.handlers import FIELDS, apply_preset, settings_from, values_from
from ui.settings import AXIS_CHOICES, NO_AXIS, Settings


def roundtrip(s: Settings) -> tuple[Settings, list[str]]:
    return Settings.from_query(parse_qs(s.to_query(), keep_blank_values=True))


def test_default_grid_is_steps_across_and_one_row_per_sampler() -> None:
    spec = Settings().to_spec()
    assert spec.x.axis == "steps" and list(spec.x.values) == [5, 10, 20, 40]
    assert spec.y.axis == "sampler" and [v.sampler for v in spec.y.values] == list(Settings().samplers)
    assert spec.z is None and spec.model == "builtin" and spec.seed == defaults.SEED


def test_controls_not_on_an_axis_are_fixed_settings() -> None:
    spec = Settings(x_axis="CFG Scale", x_values="3, 7", y_axis="Seed", y_values="1, 2",
                    samplers=("Heun", "Euler"), steps="12, 30", schedule="Karras").to_spec()
    assert spec.sampler == "Heun" and spec.steps == 12 and spec.schedule == "Karras"
    assert list(spec.x.values) == [3.0, 7.0] and list(spec.y.values) == [1, 2]


@pytest.mark.parametrize(("changes", "message"), [
    ({"samplers": ()}, "pick at least one sampler"),
    ({"steps": ""}, "type at least one step count"),
    ({"steps": "5, ten"}, "Step counts: 'ten' is not a whole number"),  # not "Steps: steps: ..."
    ({"x_axis": "CFG Scale", "x_values": ""}, "X axis is CFG Scale: type its values in the X values box"),
    ({"z_axis": "CFG Scale", "z_values": "3, abc"}, "Z axis (CFG Scale): 'abc' is not a number"),
    ({"x_axis": "Sampler"}, "the sampler axis is on both X and Y"),
])
def test_bad_controls_name_the_control_to_fix(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        Settings(**changes).to_spec()


def test_link_round_trips_every_setting() -> None:
    s = Settings(prompt='a "cat", on: mat & 🐱\nnew line', negative_prompt="blurry", model="org/model",
                 samplers=("DPM++ 2M", "Euler a (diffusers)"), steps="10-40 [4]", schedule="Karras",
                 cfg=7.5, eta=0.5, s_noise=1.01, width=512, height=768, seed=2**40, x_axis="Sampler",
                 y_axis="Steps", z_axis="CFG Scale", z_values="3, 7", vary_seeds=True,
                 accurate_reference=True, overlay=True)
    back, warnings = roundtrip(s)
    assert back == s and warnings == []


def test_link_always_carries_the_seed_and_only_changed_settings() -> None:
    assert Settings().to_query() == f"seed={defaults.SEED}"
    assert Settings(cfg=8.0).to_query() == f"cfg=8&seed={defaults.SEED}"


def test_the_checklist_order_is_the_grid_row_order_and_the_default_link_is_short() -> None:
    """Samplers come in the menu's order whatever order they were ticked in, so the grid's rows
    read as the checklist does, and the untouched default selection stays out of the link."""
    values = values_from(Settings(), catalogue.grouped())
    deterministic = len(FIELDS) + catalogue.GROUPS.index("Deterministic")
    values[deterministic] = list(reversed(values[deterministic]))  # ticked bottom-up
    settings = settings_from(values)
    menu = [name for group in catalogue.GROUPS for name in catalogue.grouped()[group]]
    assert list(settings.samplers) == sorted(settings.samplers, key=menu.index)
    assert settings.samplers == defaults.SAMPLERS and settings.to_query() == f"seed={defaults.SEED}"
    rows = [v.sampler for v in settings.to_spec().y.values]
    assert rows == list(defaults.SAMPLERS)


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(max_size=80), cfg=st.floats(0, 100, allow_nan=False),
       seed=st.integers(-1, 2**63), sampler_list=st.lists(st.sampled_from(samplers.names()), max_size=5))
def test_link_round_trip_property(prompt: str, cfg: float, seed: int, sampler_list: list[str]) -> None:
    s = Settings(prompt=prompt, cfg=cfg, seed=seed, samplers=tuple(sampler_list))
    back, warnings = roundtrip(s)
    assert warnings == [] and back == s


def test_bad_link_parameters_keep_defaults_and_say_why() -> None:
    back, warnings = Settings.from_query({"cfg": ["abc"], "w": ["13"], "x": ["Bogus"], "seed": ["1e999"],
                                          "eta": ["nan"], "prompt": ["x" * 5000], "unknown": ["1"]})
    assert back == Settings()
    assert [w.split(" ignored: ")[1] for w in warnings] == [
        "must be a number", f"must be 0 (model default) or a multiple of 8 up to {MAX_SIDE}",
        f"unknown axis; pick one of {', '.join(AXIS_CHOICES)}", "must be a whole number",
        "must be a finite number", "longer than 4000 characters"]


def test_page_values_round_trip_through_settings() -> None:
    groups = catalogue.grouped()
    s = Settings(samplers=("Euler", "DPM++ 2M SDE", "Euler a", "UniPC (diffusers)"), seed=7, width=512)
    back = settings_from(values_from(s, groups))
    # the page lists samplers by group: Deterministic, Ancestral, SDE, diffusers
    assert back.samplers == ("Euler", "Euler a", "DPM++ 2M SDE", "UniPC (diffusers)")
    assert back.seed == 7 and back.width == 512
    assert len(values_from(s, groups)) == len(FIELDS) + len(catalogue.GROUPS)


def test_every_sampler_is_in_exactly_one_group_with_a_description() -> None:
    groups = catalogue.grouped()
    listed = [name for names in groups.values() for name in names]
    assert sorted(listed) == sorted(samplers.names())
    assert "Euler a" in groups["Ancestral"] and "DPM++ 2M SDE" in groups["SDE"]
    assert "Euler (diffusers)" in groups["diffusers"] and "Heun" in groups["Deterministic"]
    # CFG++ samplers have their own group whatever their kind (they want cfg 1-2)
    assert {"Euler CFG++", "Euler a CFG++", "DPM++ 2S a CFG++", "DPM++ 2M CFG++", "res_multistep_cfg_pp",
            "res_multistep_ancestral_cfg_pp", "Gradient Estimation CFG++"} == set(groups["CFG++"])
    assert "seeds_2" in groups["SDE"] and "res_multistep_ancestral" in groups["Ancestral"]
    texts = catalogue.descriptions()
    assert texts["Heun"].endswith("(deterministic, 2 model calls per step)")


def test_the_menu_file_is_what_the_registry_gives() -> None:
    # ui/menu.json lets the page be built before torch loads; after adding or renaming a
    # sampler or schedule, `python -m ui.catalogue` rewrites it
    assert catalogue.grouped() == catalogue.from_registry()["groups"]
    assert catalogue.descriptions() == catalogue.from_registry()["descriptions"]
    assert catalogue.schedule_names() == samplers.schedule_names()


def test_building_the_page_does_not_import_torch() -> None:
    # the page is served before the model (and torch) load: that is what makes it usable in ~2 s
    code = ("import sys, app; demo, models = app.create(app.config_from(app.build_parser().parse_args([])));"
            "print(sorted(m for m in ('torch', 'diffusers', 'samplers', 'pipeline') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("preset", catalogue.PRESETS, ids=lambda p: p.name)
def test_presets_name_real_samplers_and_make_valid_grids(preset: catalogue.Preset) -> None:
    groups = catalogue.grouped()
    *lists, steps, schedule = apply_preset(preset.name, groups)
    chosen = tuple(s for group in lists for s in group)
    assert sorted(chosen) == sorted(preset.samplers)
    spec = Settings(samplers=chosen, steps=steps, schedule=schedule).to_spec()
    assert spec.shape[1] == len(preset.samplers)


def test_public_mode_only_offers_configured_models() -> None:
    public = AppConfig(public=True, models=("builtin",))
    assert public.check_model("builtin") == "builtin"
    for name in ("/etc/passwd", "../assets/builtin", "org/model", "https://x.y/model.safetensors"):
        with pytest.raises(ModelNotAllowedError, match="only runs its own models"):
            public.check_model(name)
    local = AppConfig(public=False)
    assert local.check_model(" org/model ") == "org/model"
    with pytest.raises(ModelNotAllowedError):
        local.check_model("bad\x00name")
    assert public.limits.max_cells < local.limits.max_cells


def test_no_axis_choice_is_only_offered_for_y_and_z() -> None:
    assert NO_AXIS not in AXIS_CHOICES
    assert Settings(y_axis=NO_AXIS, x_axis="Sampler").to_spec().shape == (6, 1, 1)


def test_the_app_and_the_cli_write_the_same_infotext_for_the_same_cell() -> None:
    """The app's Eta 1 / Sigma noise 1 / Eta DDIM 0 are the samplers' defaults: its cells are the
    CLI's cells (which leave them out), with the same A1111 text, and DDIM stays deterministic."""
    import cli
    from grids.spec import expand
    from report.infotext import parameters

    names = ["Heun", "DPM++ 2M SDE", "DDIM", "Euler a"]
    app = expand(Settings(prompt="cat face", samplers=tuple(names), steps="10", seed=3, cfg=5).to_spec())
    args = cli.build_parser().parse_args(["grid", "--out", "x", "--prompt", "cat face", "--seed", "3",
                                          "--cfg", "5", "--x", f"sampler={', '.join(names)}", "--y",
                                          "steps=10"])
    command_line = expand(cli.build_spec(args))
    assert [c.spec for c in app] == [c.spec for c in command_line]
    texts = [parameters(c.spec, "builtin") for c in app]
    assert texts == [parameters(c.spec, "builtin") for c in command_line]
    assert not any("Eta" in t or "Sigma noise" in t for t in texts), texts
