"""Flow-model settings in grid specs, axes, infotext and the checks made against the loaded model:
"shift" (null = the model's own) and "guidance" (Flux's distilled guidance, "Distilled CFG Scale")."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest

from core.limits import SpecError
from grids import GridSpec, expand
from grids.axes import AxisError, parse_values
from grids.spec import Axis
from pipeline.flow_plan import FlowOptionError, check_cells, check_flow_options, size_multiple
from pipeline.models import load_model
from report.infotext import parameters
from report.infotext_reader import parse_parameters, to_cell_settings
from tests.test_engine import cell


def test_shift_and_guidance_are_spec_settings_and_axes():
    spec = GridSpec(model="m", prompt="a cat", seed=1, shift=3, guidance=2.5,
                    x=Axis("Shift", "1, 3, 6"), y=Axis("Distilled CFG Scale", "1, 3.5"))
    assert GridSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    cells = expand(spec)
    assert [(c.spec.shift, c.spec.guidance) for c in cells] == [
        (1.0, 1.0), (3.0, 1.0), (6.0, 1.0), (1.0, 3.5), (3.0, 3.5), (6.0, 3.5)]
    assert cells[0].labels[:2] == ("Shift: 1.0", "Distilled CFG Scale: 1.0")
    plain = expand(GridSpec(model="m", seed=1))[0].spec
    assert (plain.shift, plain.guidance) == (None, None)  # unset: the model's own


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "3"])
def test_shift_must_be_a_positive_number(bad):
    with pytest.raises(SpecError, match="shift"):
        GridSpec(shift=bad)


@pytest.mark.parametrize("text", ["0, 3", "-2", "0-3 [4]"])
def test_shift_axis_refuses_values_at_or_below_zero(text):
    with pytest.raises(AxisError, match="shift must be > 0"):
        parse_values("shift", text)


def test_infotext_writes_forge_fields_and_reads_them_back():
    spec = replace(cell("flux", cfg=1.0, schedule="Simple"), shift=1.5, guidance=2.5)
    text = parameters(spec, "flux-dev", "0123456789")
    assert "Shift: 1.5, Distilled CFG Scale: 2.5" in text
    got = to_cell_settings(parse_parameters(text))
    assert (got["shift"], got["guidance"]) == (1.5, 2.5)
    # unset: nothing written, nothing read (the model's own is used again)
    plain = to_cell_settings(parse_parameters(parameters(cell("sd"), "sd", "")))
    assert "Shift" not in parameters(cell("sd"), "sd", "") and "shift" not in plain


def test_unset_flow_settings_keep_an_sd_cells_key_and_record():
    spec = cell("sd")
    legacy = {k: v for k, v in asdict(spec).items() if k not in ("shift", "guidance")}
    assert spec.fields() == legacy
    assert replace(spec, shift=3.0).key() != spec.key() != replace(spec, guidance=3.5).key()


# ------------------------------------------------------------ checks against the loaded model


def test_flow_only_settings_on_an_sd_model_are_refused_in_one_line(sd_path):
    model = load_model(str(sd_path))
    for changes, named in (({"shift": 3.0}, "shift"), ({"guidance": 3.5}, "guidance"),
                           ({"shift": 2.0, "guidance": 3.5}, "shift and guidance")):
        with pytest.raises(FlowOptionError, match=f"^{named} only apply to flow models") as err:
            check_flow_options(replace(cell(sd_path), **changes), model)
        assert "\n" not in str(err.value) and "SD3" in str(err.value)
    check_flow_options(cell(sd_path), model)  # nothing set: fine
    assert size_multiple(model) == 2


def test_guidance_needs_a_guidance_embedding(flux_schnell_path, flux_path):
    schnell = load_model(str(flux_schnell_path))
    with pytest.raises(FlowOptionError, match="guidance embedding.*FLUX.1-dev"):
        check_cells([replace(cell(flux_schnell_path, cfg=1.0), guidance=3.5)], schnell)
    check_cells([replace(cell(flux_schnell_path, cfg=1.0), shift=2.0)], schnell)
    dev = load_model(str(flux_path))
    check_cells([replace(cell(flux_path, cfg=1.0), guidance=3.5)], dev)
    with pytest.raises(FlowOptionError, match="shift must be a positive number"):
        check_flow_options(replace(cell(flux_path, cfg=1.0), shift=-1.0), dev)
    assert size_multiple(dev) == 4  # VAE factor 2 x Flux's 2x2 packing


def test_a_refused_cell_fails_alone_with_the_message(sd_path, flux_schnell_path):
    from pipeline.render import render

    bad = replace(cell(flux_schnell_path, cfg=1.0), guidance=2.0)
    results = render([bad, cell(sd_path, steps=2)])
    assert not results[0].ok and "guidance embedding" in results[0].error
    assert results[1].ok


def test_app_shows_flow_controls_only_for_flow_models_and_marks_refused_samplers(sd_path, flux_path,
                                                                                 flux_schnell_path):
    from ui import catalogue
    from ui.handlers import model_controls
    from ui.settings import Settings

    groups = catalogue.grouped()
    shift, guidance, choices = model_controls(load_model(str(sd_path)), groups)
    assert (shift, guidance) == (False, False) and choices == groups  # nothing marked on SD models
    shift, guidance, choices = model_controls(load_model(str(flux_path)), groups)
    assert (shift, guidance) == (True, True)
    marked = {value for group in choices.values() for value in group if isinstance(value, tuple)}
    assert ("DDPM (diffusers) ⛔ not on flow models", "DDPM (diffusers)") not in marked  # names the family
    assert ("DDPM (diffusers) ⛔ not on flux models", "DDPM (diffusers)") in marked
    assert "Euler" in choices["Deterministic"] and "Euler a" in choices["Ancestral"]
    assert model_controls(load_model(str(flux_schnell_path)), groups)[:2] == (True, False)
    # 0 on the page means "the model's own": the grid then carries no flow setting
    assert (Settings().to_spec().shift, Settings().to_spec().guidance) == (None, None)
    spec = Settings(shift=2.0, guidance=3.0).to_spec()
    assert (spec.shift, spec.guidance) == (2.0, 3.0)
    assert Settings.from_query({"shift": "2", "guidance": "3"})[0] == Settings(shift=2.0, guidance=3.0)


@pytest.mark.parametrize("which,extra,message", [
    ("sd_path", ["--shift", "3"], "error: shift only apply to flow models"),
    ("sd_path", ["--x", "Distilled CFG Scale=2, 3.5"], "error: guidance only apply to flow models"),
    ("flux_schnell_path", ["--guidance", "3.5"], "error: guidance (Flux's distilled guidance) needs a model"),
    ("flux_path", ["--shift", "0"], "error: shift must be > 0"),
    ("flux_path", ["--x", "shift=1, -2"], "error: X axis: shift must be > 0"),
    ("flux_path", ["--width", "34"], "error: width 34 is not a multiple of 4 — try 32 or 36"),
])
def test_cli_refuses_bad_flow_input_in_one_line_before_writing(request, which, extra, message, tmp_path,
                                                               capsys):
    import cli
    from tests.test_cli import grid_args

    out, model = tmp_path / "o", request.getfixturevalue(which)
    capsys.readouterr()  # building a tiny model prints progress
    assert cli.main(grid_args(model, out, "--cfg", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # refused before anything was written
