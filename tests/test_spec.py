"""Grid specs: JSON form, expansion into cells, seeds, schedules, options, limits."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import samplers
from grids import (
    Axis,
    Cell,
    CellSpec,
    GridSpec,
    GridTooLargeError,
    Limits,
    SpecError,
    check_size,
    expand,
    grid_megapixels,
    validate,
)
from grids.axes import MAX_SEED, SamplerValue, Size
from grids.cells import ADAPTIVE_CALLS_ESTIMATE

EXAMPLE = {
    "model": "builtin", "prompt": "a cat", "negative_prompt": "", "width": 64, "height": 64, "seed": 1,
    "cfg": 5, "sampler": "Euler", "schedule": "Automatic", "steps": 20, "eta": None,
    "x": {"axis": "sampler", "values": "Euler, Euler a"}, "y": {"axis": "steps", "values": "5-20 [4]"},
    "z": None, "vary_seeds": False,
}


def _spec(**changes) -> GridSpec:
    return GridSpec(**{"prompt": "a cat", "seed": 1, "width": 64, "height": 64, **changes})


def _cells(**changes) -> list[Cell]:
    return expand(_spec(**changes))


# ---------------------------------------------------------------- JSON form


def test_example_spec_expands_z_then_y_then_x() -> None:
    cells = expand(GridSpec.from_json(EXAMPLE))
    assert [(c.ix, c.iy, c.iz) for c in cells] == [(x, y, 0) for y in range(4) for x in range(2)]
    assert [(c.spec.sampler, c.spec.steps) for c in cells[:4]] == [
        ("Euler", 5), ("Euler a", 5), ("Euler", 10), ("Euler a", 10)]
    assert cells[3].labels == ("Euler a", "Steps: 10", None)
    assert cells[0].spec == CellSpec(
        model="builtin", prompt="a cat", negative_prompt="", width=64, height=64, seed=1, sampler="Euler",
        sampler_options=(), schedule="Automatic", steps=5, cfg=5.0)


def test_from_json_takes_json_text_and_normalises() -> None:
    spec = GridSpec.from_json(json.dumps({**EXAMPLE, "schedule": "karras", "x": {"axis": "CFG Scale",
                                                                              "values": "3-9 [4]"}}))
    assert spec.cfg == 5.0 and type(spec.cfg) is float
    assert spec.schedule == "Karras"
    assert spec.x == Axis("cfg", (3.0, 5.0, 7.0, 9.0))
    assert spec.shape == (4, 4, 1)


def test_to_json_round_trips() -> None:
    spec = GridSpec.from_json({**EXAMPLE, "z": {"axis": "size", "values": "64x64, 64x96"}, "eta": 0.5})
    data = spec.to_json()
    assert data["x"] == {"axis": "sampler", "values": ["Euler", "Euler a"]}
    assert data["y"] == {"axis": "steps", "values": [5, 10, 15, 20]}
    assert data["z"] == {"axis": "size", "values": ["64x64", "64x96"]}
    assert GridSpec.from_json(data) == spec
    assert GridSpec.from_json(json.dumps(data)) == spec
    assert hash(GridSpec.from_json(data)) == hash(spec)


def test_defaults() -> None:
    spec = GridSpec.from_json({"prompt": "p"})
    assert (spec.model, spec.seed, spec.cfg, spec.sampler, spec.schedule, spec.steps) == (
        "builtin", -1, 7.0, "DPM++ 2M", "Automatic", 20)
    assert spec.width is None and spec.height is None and spec.x is None


@pytest.mark.parametrize(("change", "message"), [
    ({"flavour": 1, "colour": 2}, "unknown setting(s) 'flavour', 'colour' in the grid spec; known: model"),
    ({"cfg": "abc"}, "cfg must be a number, got 'abc'"),
    ({"cfg": float("nan")}, "cfg must be a finite number"),
    ({"cfg": 150}, "cfg must be between 0 and 100, got 150"),
    ({"steps": "20"}, "steps must be a whole number, got '20'"),
    ({"steps": 0}, "steps must be between 1 and 1000, got 0"),
    ({"steps": True}, "steps must be a whole number, got True"),
    ({"seed": -2}, "seed must be -1 (random) or from 0 to 18446744073709551615, got -2"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"width": 0}, "width must be between 1 and 16384, got 0"),
    ({"height": "64"}, "height must be a whole number, got '64'"),
    ({"model": ""}, "model cannot be empty"),
    ({"prompt": None}, "prompt must be text, got None"),
    ({"sampler": "Eulr a"}, "unknown sampler 'Eulr a' — did you mean 'Euler a'"),
    ({"schedule": "karas"}, "unknown schedule type 'karas'"),
    ({"eta": "1"}, "eta must be a number, got '1'"),
    ({"s_noise": -1}, "s_noise must be >= 0, got -1"),
    ({"vary_seeds": "yes"}, "vary_seeds must be true or false, got 'yes'"),
    ({"y": {"axis": "sampler", "values": "DDIM"}}, "the sampler axis is on both X and Y"),
    ({"z": {"axis": "Steps", "values": "5"}}, "the steps axis is on both Y and Z"),
    ({"x": {"axis": "steps", "values": "1O"}}, "X axis: steps: '1O' is not a whole number"),
    ({"x": {"axis": "colour", "values": "1"}}, "X axis: unknown axis 'colour'"),
    ({"x": {"axis": "steps"}}, "X axis must be null or an object with \"axis\" and \"values\""),
    ({"x": {"axis": "steps", "values": "5", "extra": 1}}, "X axis must be null or an object"),
    ({"x": "steps"}, "X axis must be null or an object"),
    ({"x": {"axis": "prompt_sr", "values": "dog, cow"}}, "Prompt S/R did not find 'dog' in the prompt"),
])
def test_from_json_errors_say_what_is_wrong(change: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        GridSpec.from_json({**EXAMPLE, **change})
    assert message in str(err.value)


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "the grid spec is not valid JSON"),
    ("[1, 2]", "a grid spec must be a JSON object, got list"),
])
def test_from_json_refuses_non_objects(data: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        GridSpec.from_json(data)


# ---------------------------------------------------------------- expansion


def test_missing_axes_are_one_value_the_fixed_setting() -> None:
    cells = _cells(steps=12, sampler="Euler a")
    assert len(cells) == 1 and cells[0].labels == (None, None, None)
    assert (cells[0].spec.steps, cells[0].spec.sampler) == (12, "Euler a")
    column = _cells(y=Axis("steps", "5, 10"))
    assert [(c.ix, c.iy, c.spec.steps) for c in column] == [(0, 0, 5), (0, 1, 10)]


def test_vary_seeds_follows_a1111s_rule() -> None:
    spec = _spec(seed=100, vary_seeds=True, x=Axis("steps", "5, 10, 15"), y=Axis("cfg", "5, 7"),
                 z=Axis("sampler", "Euler, DDIM"))
    cells = expand(spec)
    assert [c.spec.seed for c in cells] == [100 + c.ix + c.iy * 3 + c.iz * 6 for c in cells]
    assert [c.spec.seed for c in cells] == list(range(100, 112))
    assert {c.spec.seed for c in expand(replace(spec, vary_seeds=False))} == {100}


def test_vary_seeds_adds_to_the_seed_axis_value_and_wraps() -> None:
    cells = _cells(vary_seeds=True, x=Axis("steps", "5, 10"), y=Axis("seed", f"7, {MAX_SEED}"))
    # seed + ix + iy * 2, past 2**64 - 1 wrapping to 0
    assert [c.spec.seed for c in cells] == [7, 8, 1, 2]


def test_random_seed_is_resolved_once_per_grid_and_recorded() -> None:
    spec = _spec(seed=-1, x=Axis("steps", "5, 10, 15"))
    cells = expand(spec, rng=random.Random(3))
    seeds = {c.spec.seed for c in cells}
    assert len(seeds) == 1 and 0 <= seeds.pop() < 2**32
    assert expand(spec, rng=random.Random(3)) == cells
    resolved = spec.resolved(random.Random(3))
    assert resolved.seed == cells[0].spec.seed and expand(resolved) == cells


def test_random_seeds_on_a_seed_axis_are_each_fixed() -> None:
    spec = _spec(x=Axis("seed", "-1, -1, 5"))
    resolved = spec.resolved(random.Random(0))
    a, b, c = resolved.x.values
    assert a != -1 and b != -1 and a != b and c == 5
    assert [cell.labels[0] for cell in expand(resolved)] == [f"Seed: {a}", f"Seed: {b}", "Seed: 5"]


def test_combined_sampler_name_sets_the_schedule() -> None:
    names = "DPM++ 2M Karras, Euler, DPM++ 2M SDE sgm uniform"
    cells = _cells(schedule="Exponential", x=Axis("sampler", names))
    assert [(c.spec.sampler, c.spec.schedule) for c in cells] == [
        ("DPM++ 2M", "Karras"), ("Euler", "Exponential"), ("DPM++ 2M SDE", "SGM Uniform")]
    assert [c.labels[0] for c in cells] == ["DPM++ 2M Karras", "Euler", "DPM++ 2M SDE sgm uniform"]
    fixed = _cells(sampler="DPM++ 2M Karras", x=Axis("steps", "5"))
    assert (fixed[0].spec.sampler, fixed[0].spec.schedule) == ("DPM++ 2M", "Karras")


def test_schedule_axis_wins_over_a_combined_sampler_name() -> None:
    cells = _cells(x=Axis("sampler", "DPM++ 2M Karras"), y=Axis("schedule", "Exponential, Automatic"))
    assert [c.spec.schedule for c in cells] == ["Exponential", "Automatic"]
    cells = _cells(sampler="DPM++ 2M Karras", x=Axis("schedule", "Uniform"))
    assert cells[0].spec.schedule == "Uniform"


def test_eta_and_s_noise_reach_only_samplers_that_take_them() -> None:
    cells = _cells(s_noise=1.01, x=Axis("sampler", "Euler a, Euler, DPM++ 2M, DDIM"), y=Axis("eta", "0, 0.5"))
    options = {(c.spec.sampler, c.iy): c.spec.sampler_options for c in cells}
    assert options[("Euler a", 1)] == (("eta", 0.5), ("s_noise", 1.01))
    assert options[("Euler", 1)] == (("s_noise", 1.01),)
    assert options[("DPM++ 2M", 0)] == options[("DPM++ 2M", 1)] == ()
    assert options[("DDIM", 0)] == ()  # DDIM's default eta: not recorded
    assert options[("DDIM", 1)] == (("eta", 0.5),)  # an Eta axis reaches DDIM too, as in A1111
    for c in cells:
        assert set(dict(c.spec.sampler_options)) <= set(samplers.info(c.spec.sampler).options)


def test_ddim_keeps_its_own_eta_as_in_a1111() -> None:
    """The ancestral eta (1, the app's slider default) does not make DDIM stochastic: DDIM takes
    eta_ddim (default 0), as A1111's two settings "Eta" and "Eta DDIM"."""
    cells = _cells(eta=1.0, s_noise=1.0, x=Axis("sampler", "DDIM, Euler a, DPM++ 2M SDE"))
    assert [c.spec.sampler_options for c in cells] == [(), (), ()]
    cells = _cells(eta=0.5, eta_ddim=0.3, x=Axis("sampler", "DDIM, Euler a"))
    assert [c.spec.sampler_options for c in cells] == [(("eta", 0.3),), (("eta", 0.5),)]


def test_a_default_option_given_or_left_out_is_the_same_cell() -> None:
    """Eta 1 and sigma noise 1 given explicitly (the app) or left out (the CLI): one CellSpec,
    one cache key."""
    given = _cells(eta=1.0, s_noise=1.0, eta_ddim=0.0, x=Axis("sampler", "Heun, DPM++ 2M SDE, DDIM"))
    left_out = _cells(x=Axis("sampler", "Heun, DPM++ 2M SDE, DDIM"))
    assert [c.spec for c in given] == [c.spec for c in left_out]


def test_prompt_search_and_replace() -> None:
    cells = _cells(prompt="a cat on a mat", negative_prompt="no cat",
                   x=Axis("Prompt S/R", "cat, dog, red fox"))
    assert [(c.spec.prompt, c.spec.negative_prompt) for c in cells] == [
        ("a cat on a mat", "no cat"), ("a dog on a mat", "no dog"), ("a red fox on a mat", "no red fox")]
    assert [c.labels[0] for c in cells] == ["Prompt S/R: cat", "Prompt S/R: dog", "Prompt S/R: red fox"]


def test_axes_apply_x_then_y_then_z() -> None:
    cells = _cells(prompt="a cat", negative_prompt="cat", x=Axis("prompt_sr", "cat, dog"),
                   y=Axis("negative_prompt", ["blurry"]))
    assert [(c.spec.prompt, c.spec.negative_prompt) for c in cells] == [
        ("a cat", "blurry"), ("a dog", "blurry")]


def test_size_and_model_axes() -> None:
    cells = _cells(x=Axis("size", "64x64, 96x64"), y=Axis("Checkpoint name", "builtin, other"))
    assert [(c.spec.width, c.spec.height, c.spec.model) for c in cells] == [
        (64, 64, "builtin"), (96, 64, "builtin"), (64, 64, "other"), (96, 64, "other")]
    assert cells[3].labels == ("Size: 96x64", "other", None)


def test_axis_takes_labels_text_or_lists() -> None:
    assert Axis("CFG Scale", "5-7 [3]") == Axis("cfg", [5, 6, 7.0])
    assert Axis("Sampler", "Euler").values == (SamplerValue("Euler", "Euler", None),)
    assert Axis("size", ["64x64"]).values == (Size(64, 64),)
    assert Axis("steps", "5, 10").labels() == ["Steps: 5", "Steps: 10"]


# ---------------------------------------------------------------- cells


def test_cell_key_is_stable_and_covers_every_field() -> None:
    base = _cells()[0].spec
    assert base.key() == replace(base).key() and len(base.key()) == 64
    changes = dict(model="m", prompt="p", negative_prompt="n", width=128, height=128, seed=2, sampler="Euler",
                   sampler_options=(("eta", 0.5),), schedule="Karras", steps=21, cfg=7.5)
    keys = {replace(base, **{k: v}).key() for k, v in changes.items()}
    assert len(keys) == len(changes) and base.key() not in keys
    assert hash(base) == hash(replace(base))


def test_model_calls_estimate() -> None:
    spec = _cells(sampler="Euler", steps=20, cfg=7)[0].spec
    assert (spec.denoiser_calls(), spec.model_calls()) == (20, 40)
    assert replace(spec, cfg=1.0).model_calls() == 20
    assert replace(spec, sampler="Heun").model_calls() == 78  # the last step is one Euler call
    assert replace(spec, sampler="DPM adaptive", steps=5).model_calls() == 2 * ADAPTIVE_CALLS_ESTIMATE


def test_sized_fills_only_missing_sides() -> None:
    spec = expand(GridSpec(prompt="p", seed=1))[0].spec
    assert (spec.width, spec.height) == (None, None)
    assert (spec.sized((512, 768)).width, spec.sized((512, 768)).height) == (512, 768)
    assert replace(spec, width=64).sized((512, 768)).width == 64


# ---------------------------------------------------------------- limits


def test_too_many_cells() -> None:
    cells = _cells(x=Axis("steps", "1-30"), y=Axis("cfg", "1-20"))
    with pytest.raises(GridTooLargeError) as err:
        validate(cells)
    assert str(err.value) == (
        "this grid has 600 cells; the limit is 400 — remove values from the X, Y or Z axis")
    validate(cells, Limits(max_cells=600))


def test_too_many_model_calls() -> None:
    cells = _cells(x=Axis("steps", "1000, 1000"), sampler="Heun")
    message = r"needs about 7,996 model calls; the limit is 5,000 — use fewer"
    with pytest.raises(GridTooLargeError, match=message):
        validate(cells, Limits(max_model_calls=5000))


def test_too_many_megapixels() -> None:
    cells = _cells(width=4096, height=4096, x=Axis("steps", "1-4"), y=Axis("cfg", "1-4"))
    assert grid_megapixels(cells, (512, 512)) == pytest.approx(4.75 * 4096 * 4.25 * 4096 / 1e6)
    message = r"about 338\.7 megapixels; the limit is 200 — use a smaller size"
    with pytest.raises(GridTooLargeError, match=message):
        validate(cells)
    # None sizes count at the model's default.
    default = expand(GridSpec(prompt="p", seed=1, x=Axis("steps", "1-4")))
    assert grid_megapixels(default, (100, 200)) == pytest.approx(4.75 * 100 * 1.25 * 200 / 1e6)


def test_grid_too_large_is_a_spec_error_and_a_value_error() -> None:
    assert issubclass(GridTooLargeError, SpecError) and issubclass(SpecError, ValueError)


@pytest.mark.parametrize(("size", "multiple", "message"), [
    ((100, 64), 8, "width 100 is not a multiple of 8 — try 96 or 104"),
    ((64, 4), 8, "height 4 is not a multiple of 8 — try 8"),
    ((96, 72), 16, "height 72 is not a multiple of 16 — try 64 or 80"),
])
def test_check_size(size: tuple[int, int], multiple: int, message: str) -> None:
    with pytest.raises(SpecError) as err:
        check_size(*size, multiple=multiple)
    assert str(err.value) == message


def test_validate_checks_sizes_with_the_models_multiple() -> None:
    validate(_cells(width=96, height=64))
    with pytest.raises(SpecError, match="width 96 is not a multiple of 64 — try 64 or 128"):
        validate(_cells(width=96, height=64), multiple=64)
    with pytest.raises(SpecError, match="width 100 is not a multiple of 8"):
        validate(expand(GridSpec(prompt="p", seed=1)), model_default_size=(100, 64))


# ---------------------------------------------------------------- properties


_AXIS_VALUES = {
    "steps": st.lists(st.integers(1, 1000), min_size=1, max_size=4),
    "cfg": st.lists(st.floats(0, 100), min_size=1, max_size=4),
    "seed": st.lists(st.integers(-1, MAX_SEED), min_size=1, max_size=4),
    "eta": st.lists(st.floats(0, 1e6), min_size=1, max_size=4),
    "sampler": st.lists(st.sampled_from(["Euler", "euler a", "DPM++ 2M Karras", "DDIM", "Heun"]),
                        min_size=1, max_size=4),
    "schedule": st.lists(st.sampled_from(samplers.schedule_names()), min_size=1, max_size=4),
    "negative_prompt": st.lists(st.text(max_size=8), min_size=1, max_size=4),
    "size": st.lists(st.tuples(st.integers(1, 4096), st.integers(1, 4096)).map(lambda s: f"{s[0]}x{s[1]}"),
                     min_size=1, max_size=4),
    "model": st.lists(st.text(min_size=1, max_size=8).filter(str.strip), min_size=1, max_size=4),
    "prompt_sr": st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
}


@st.composite
def grid_specs(draw) -> GridSpec:
    names = draw(st.lists(st.sampled_from(sorted(_AXIS_VALUES)), max_size=3, unique=True))
    axes = [Axis(n, draw(_AXIS_VALUES[n])) for n in names]
    sr = next((a.values[0] for a in axes if a.axis == "prompt_sr"), "")
    return GridSpec(
        model=draw(st.sampled_from(["builtin", "sd15"])), prompt=draw(st.text(max_size=10)) + sr,
        negative_prompt=draw(st.text(max_size=10)), width=draw(st.none() | st.integers(1, 4096)),
        height=draw(st.none() | st.integers(1, 4096)), seed=draw(st.integers(-1, MAX_SEED)),
        cfg=draw(st.floats(0, 100)),
        sampler=draw(st.sampled_from(["Euler", "DPM++ 2M Karras", "DPM adaptive"])),
        schedule=draw(st.sampled_from(samplers.schedule_names())), steps=draw(st.integers(1, 1000)),
        eta=draw(st.none() | st.floats(0, 10)), s_noise=draw(st.none() | st.floats(0, 10)),
        vary_seeds=draw(st.booleans()), **dict(zip("xyz", axes, strict=False)))


@settings(max_examples=150, deadline=None)
@given(spec=grid_specs())
def test_json_round_trip_property(spec: GridSpec) -> None:
    assert GridSpec.from_json(spec.to_json()) == spec
    assert GridSpec.from_json(json.dumps(spec.to_json())) == spec


@settings(max_examples=60, deadline=None)
@given(spec=grid_specs())
def test_expansion_property(spec: GridSpec) -> None:
    cells = expand(spec, rng=random.Random(0))
    nx, ny, nz = spec.shape
    assert len(cells) == nx * ny * nz
    assert [(c.iz, c.iy, c.ix) for c in cells] == sorted((c.iz, c.iy, c.ix) for c in cells)
    assert all(0 <= c.spec.seed <= MAX_SEED for c in cells)
    for c in cells:
        assert set(dict(c.spec.sampler_options)) <= set(samplers.info(c.spec.sampler).options)
