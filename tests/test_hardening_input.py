"""Bad input, property-based: whatever JSON, axis values or link parameters arrive, the only
failure is the project's own error with a message (SpecError / AxisError), never a crash.

tests/test_axes.py and tests/test_spec.py already check arbitrary axis *text* and spec round
trips; these add arbitrary JSON documents (what the render API receives), arbitrary JSON lists of
axis values, arbitrary link parameters through to a spec, and the app's own input guards.
"""

from __future__ import annotations

import json

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grids.axes import AXES, MAX_AXIS_VALUES, AxisError, parse_values
from grids.spec import GridSpec, SpecError, expand, validate
from ui import handlers
from ui.config import MAX_PROMPT_CHARS, PUBLIC_LIMITS, AppConfig, ModelNotAllowedError
from ui.settings import _KEYS, AXIS_CHOICES, Settings

FIELDS = ("model", "prompt", "negative_prompt", "width", "height", "seed", "cfg", "sampler", "schedule",
          "steps", "eta", "s_noise", "vary_seeds", "x", "y", "z")
WORDS = ("steps", "cfg", "seed", "size", "sampler", "schedule", "model", "prompt_sr", "eta", "Euler",
         "Karras", "builtin", "1-5", "64x64", "nan", "1-10 [3]", "-1", "")
# Every JSON value: JSON integers can be far larger than any float (10**400 has 401 digits).
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-10**400, 10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.sampled_from(WORDS))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(("axis", "values", *FIELDS)) | st.text(max_size=4),
                                      inner, max_size=4), max_leaves=12)
AXIS = st.fixed_dictionaries({"axis": st.sampled_from(sorted(AXES)) | JSON, "values": JSON})
SPECS = (st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8)
         | st.fixed_dictionaries({}, optional={"x": AXIS, "y": AXIS, "z": AXIS, "cfg": JSON, "steps": JSON,
                                               "seed": JSON, "width": JSON, "prompt": st.just("a face")}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=SPECS | JSON)
def test_from_json_on_any_json_raises_only_spec_error(data: object) -> None:
    text = json.dumps(data)  # what the API receives: JSON text (NaN and Infinity included)
    try:
        spec = GridSpec.from_json(text)
        cells = expand(spec)
        validate(cells, PUBLIC_LIMITS, (64, 64), 4)
    except SpecError as err:
        assert str(err)
        return
    assert spec == GridSpec.from_json(spec.to_json())
    assert 1 <= len(cells) <= PUBLIC_LIMITS.max_cells


@pytest.mark.parametrize("field", ["cfg", "eta", "s_noise"])
def test_a_number_too_large_for_a_float_is_a_spec_error(field: str) -> None:
    # found by the property above: float(10**400) raised OverflowError
    with pytest.raises(SpecError, match=f"{field} must be a finite number, got one too large"):
        GridSpec.from_json(f'{{"{field}": 1{"0" * 400}}}')


@settings(max_examples=300, deadline=None)
@given(axis=st.sampled_from(sorted(AXES)),
       values=st.lists(SCALARS | st.lists(SCALARS, max_size=2), max_size=6))
def test_axis_values_as_any_json_list_raise_only_axis_error(axis: str, values: list) -> None:
    try:
        parsed = parse_values(axis, values)
    except AxisError as err:
        assert err.axis == AXES[axis].name and str(err)  # the message belongs to this axis
        return
    assert len(parsed) == len(values) <= MAX_AXIS_VALUES


LINK_VALUES = st.text(max_size=24) | st.sampled_from(
    [*AXIS_CHOICES, "Nothing", "1-5", "Euler", "64x64", "-1", "nan", "1e999", "9" * 30, "Karras", "0"])


@settings(max_examples=300, deadline=None)
@given(params=st.dictionaries(st.sampled_from([*_KEYS.values(), "other"]),
                              st.lists(LINK_VALUES, min_size=1, max_size=3), max_size=10))
def test_any_shared_link_gives_settings_and_then_a_spec_or_a_spec_error(params: dict) -> None:
    settings_, warnings = Settings.from_query(params)  # never raises: bad parameters become warnings
    assert all(isinstance(w, str) and w for w in warnings)
    try:
        settings_.to_spec()
    except SpecError as err:
        assert str(err)


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=40))
def test_public_mode_refuses_every_model_name_it_does_not_list(name: str) -> None:
    config = AppConfig(public=True)
    if name.strip() == "builtin":
        assert config.check_model(name) == "builtin"
        return
    with pytest.raises(ModelNotAllowedError):
        config.check_model(name)


def test_prompts_longer_than_the_page_takes_are_refused_with_their_length() -> None:
    config = AppConfig(public=True)
    config.check_prompts("a" * MAX_PROMPT_CHARS, "")
    with pytest.raises(SpecError, match="prompt is 10,000 characters long; this page takes at most 2,000"):
        config.check_prompts("a" * 10_000, "")
    with pytest.raises(SpecError, match="negative prompt is 2,001 characters"):
        AppConfig().check_prompts("", "b" * 2001)


def test_public_cells_are_at_most_four_times_the_models_default_area() -> None:
    public, local = AppConfig(public=True), AppConfig()
    public.check_cell_size(128, 128, (64, 64))
    public.check_cell_size(256, 64, (64, 64))
    with pytest.raises(SpecError, match=r"4096x4096 cell is larger .* default 64x64 pixels, e\.g\. 128x128"):
        public.check_cell_size(4096, 4096, (64, 64))
    local.check_cell_size(4096, 4096, (64, 64))  # local mode trusts the person at the keyboard


def test_public_axis_labels_are_limited_in_total_so_the_grid_draws_quickly() -> None:
    public = AppConfig(public=True)
    public.check_labels(["a" * 1500, "b" * 1500])
    with pytest.raises(SpecError, match="axis labels add up to 3,001 characters; this public page draws at "
                                        "most 3,000"):
        public.check_labels(["a" * 1500, "b" * 1501])
    AppConfig().check_labels(["a" * 100_000])  # local mode: the owner's own time


def test_page_errors_carry_the_reason_and_never_a_traceback() -> None:
    err = handlers.page_error(SpecError("steps must be between 1 and 1000, got 0"))
    assert isinstance(err, gr.Error) and err.message == "steps must be between 1 and 1000, got 0"
    other = handlers.page_error(KeyError("cells"))
    assert other.message.startswith("the grid failed on the server (KeyError)")
    assert "Traceback" not in other.message and "cells" not in other.message


def test_long_echoes_of_the_input_are_cut_so_the_reason_stays_readable() -> None:
    message = f"unknown sampler '{'Euler' * 2000}' — did you mean 'Euler'?"
    short = handlers.shorten(message)
    assert short.endswith("(10,000 characters) — did you mean 'Euler'?")
    assert len(short) < 200 and short.startswith("unknown sampler 'EulerEuler")
    assert handlers.shorten("x" * 5000).endswith("…") and len(handlers.shorten("x" * 5000)) == 2000


@pytest.mark.parametrize(("index", "value", "message"), [
    (handlers.FIELDS.index("width"), float("nan"), "width must be a whole number of pixels"),
    (handlers.FIELDS.index("height"), "tall", "height must be a whole number of pixels"),
    (handlers.FIELDS.index("seed"), float("inf"), "seed must be a whole number"),
])
def test_impossible_control_values_give_a_page_error(index: int, value: object, message: str) -> None:
    values = handlers.values_from(Settings(), {g: [] for g in handlers.GROUPS})
    values[index] = value
    with pytest.raises(gr.Error, match=message):
        handlers.settings_from(values)
